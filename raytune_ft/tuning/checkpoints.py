"""Bounded disk: once a trial has ended, it keeps one checkpoint, its best epoch's model, and
only while it is among the output.keep_checkpoints best ended trials (by default the one best:
the winner's, which export and the test split use). The search prunes as each trial ends
(tuning/run_log.py), and once more when it ends.

While a trial runs, Ray Train (or, for a trial that trains in its own process, Ray Tune) keeps
two checkpoints at most (its best and its latest, which a restart continues from; see
training/trial.py). When the search ends, the trials that ended (finished, stopped early, failed) drop
everything but their best checkpoint, and that one drops the optimizer state only a restart
needs. Cut-off trials keep both: `--resume` needs them.
Under PBT a trial may have run as several Train runs (one per restart, see training/pbt_relay.py), and Ray
Tune holds copies of its checkpoints (what clones start from): an ended trial keeps only its
best checkpoint there too. While a PBT search runs, Tune's copies are bounded as well
(PbtCheckpointBound): a few per trial, not one per epoch.
With search.objectives the trials on the Pareto front keep theirs as well (export --trial): the
front of the ended trials, whose points no longer change, so a trial dropped from it for being
dominated stays dominated once every trial has ended (report/pareto.py).
"""

from __future__ import annotations

import shutil
from collections import deque
from pathlib import Path

from ray import tune

from raytune_ft.report.pareto import pareto_front
from raytune_ft.run_folder import best_epoch, last_trial_events, read_reported_epochs
from raytune_ft.training.checkpointing import TRAINING_STATE_FILE
from raytune_ft.training.trial import train_run_name

ENDED = ("finished", "stopped early", "failed")
# Tune's saved states whose checkpoints PbtCheckpointBound keeps: the run folder holds a copy of
# the newest or, while that copy is under way, of the one before it; one more for a copy skipped.
SAVES_NAMED = 3


def trial_folders(storage: str, trial_id: str) -> list[Path]:
    """Where a trial's TorchTrainer runs wrote (training/trial.run_trial passes <storage>/trials)."""
    trials = Path(storage) / "trials"
    return [trials / train_run_name(trial_id), *sorted(trials.glob(train_run_name(trial_id, "*")))]


def tune_checkpoint_copies(storage: str, trial_id: str) -> list[Path]:
    """Ray Tune's checkpoints of a trial: <storage>/tune/<trial folder>/checkpoint_*. Copies of
    its Ray Train checkpoints under PBT; its only ones if it trained in its own process."""
    return sorted((Path(storage) / "tune").glob(f"*{trial_id}*/checkpoint_*"))


def prune_ended_trials(
    run_dir: Path, storage: str, metric: str, mode: str, kept_trials: int | None = None, objectives: list = ()
) -> list[str]:
    """Each ended trial drops every checkpoint but its best epoch's, and beyond the `kept_trials`
    best ended trials (output.keep_checkpoints; None: all) and the Pareto front of the ended trials
    (objectives: config.objectives) that one too. Returns what could not be deleted, one line each
    (the caller says so)."""
    if "://" in storage:
        return []  # cloud storage: Ray Train's own bound (best + latest per trial) applies
    last_event = last_trial_events(run_dir)
    best_rows = best_checkpointed_rows(run_dir, metric, mode)
    ranked = sorted(best_rows.values(), key=lambda row: row[f"eval_{metric}"], reverse=mode == "max")
    kept = {row["trial_id"] for row in ranked[:kept_trials]} if kept_trials is not None else set(best_rows)
    if objectives and kept_trials != 0:
        ended = [row for trial_id, row in best_rows.items() if last_event.get(trial_id) in ENDED]
        kept |= {row["trial_id"] for row in pareto_front(ended, objectives)}
    # A cut-off trial (resumed later) may restart from another trial's copy (a PBT clone): keep them all.
    keep_copies = "interrupted" in last_event.values()
    problems: list[str] = []
    for trial_id, event in last_event.items():
        if event not in ENDED or (trial_id not in best_rows and event != "failed"):
            continue  # running, cut off, or no epoch says which checkpoint is its best: delete nothing
        keep = best_rows[trial_id]["checkpoint_path"] if trial_id in kept else None
        copies = [] if keep_copies else tune_checkpoint_copies(storage, trial_id)
        trained = [path for folder in trial_folders(storage, trial_id) for path in folder.glob("checkpoint_*")]
        for checkpoint in copies + trained:
            if checkpoint.is_dir() and str(checkpoint) != keep:
                try:
                    shutil.rmtree(checkpoint)
                except OSError as err:
                    problems.append(f"could not delete checkpoint {checkpoint}: {err}")
        if keep:
            (Path(keep) / TRAINING_STATE_FILE).unlink(missing_ok=True)
    return problems


def best_checkpointed_rows(run_dir: Path, metric: str, mode: str) -> dict[str, dict]:
    """Each trial's best epoch among those that saved a checkpoint: {trial_id: row}."""
    rows_by_trial: dict[str, list[dict]] = {}
    # Rows as reported, not merged by epoch: under PBT a clone may run an epoch again that its
    # trial had run before the exploit, and the earlier row may hold the trial's best checkpoint.
    for row in read_reported_epochs(run_dir):
        # Rows whose epoch improved on the run's best so far, a strictly better score each: the
        # best of them is the last improving epoch of its Train run, which Ray Train kept.
        if row.get("best_so_far") and row.get("checkpoint_path"):
            rows_by_trial.setdefault(row["trial_id"], []).append(row)
    best = {trial_id: best_epoch(rows, metric, mode) for trial_id, rows in rows_by_trial.items()}
    return {trial_id: row for trial_id, row in best.items() if row is not None}


def checkpoint_bytes(storage: str) -> int | None:
    """Disk the search's checkpoints take now, Ray Tune's copies (PBT) included (None for cloud storage)."""
    if "://" in storage:
        return None
    folders = [Path(storage) / "trials", *(Path(storage) / "tune").glob("*/checkpoint_*")]
    return sum(path.stat().st_size for folder in folders for path in folder.rglob("*") if path.is_file())


class PbtCheckpointBound(tune.Callback):
    """Under PBT Tune keeps every checkpoint a trial reports (CheckpointConfig() without
    num_to_keep: Ray warns that a small one breaks exploits), one per epoch. This drops, each
    time a trial reports a checkpoint, those of its checkpoints nothing can still use. A
    trial's checkpoint is kept while it is:
    - among the trial's newest `perturbation_interval + 1`. What a clone copies is its donor's
      checkpoint of the donor's last perturbation step (PBT's exploit), and the donor reaches
      its next step within perturbation_interval epochs, where PBT takes a newer one (or none,
      if the donor is no longer in the top quantile);
    - any trial's latest checkpoint as Tune knows it: a trial's own restart, and for a clone
      that has not started yet, the donor's checkpoint it will start from (PBT's exploit makes
      it the clone's latest);
    - the trial's best epoch's (best_checkpointed_rows): what export and the report use;
    - any trial's latest as the last SAVES_NAMED states Tune saved knew it: `--resume` after a
      kill restarts each trial from the checkpoint the saved state names, which is some epochs
      old where epochs are shorter than Tune's 2 s between saves (environment.TUNE_SETTINGS).
    So a trial holds perturbation_interval + 3 + SAVES_NAMED at most (one more while a new one
    is written), whatever the number of epochs; the search's end prunes the rest
    (prune_ended_trials). Local storage only: on cloud storage Tune keeps them all while the
    search runs."""

    def __init__(self, run_dir: Path, storage: str, metric: str, mode: str, perturbation_interval: int, warn):
        self.run_dir, self.storage, self.metric, self.mode = run_dir, storage, metric, mode
        self.newest = perturbation_interval + 1
        self.warn = warn  # a checkpoint that could not be deleted: one line each, once
        self.undeletable: set[str] = set()
        self.trials: list = []  # Tune's trials, as of its latest step
        self.named_by_saves: deque[set[str]] = deque(maxlen=SAVES_NAMED)

    def on_step_begin(self, iteration, trials, **info):
        self.trials = trials

    def get_state(self):
        """Tune calls this each time it saves its state (the file --resume reads): remember the
        checkpoints that state names. Nothing to save of our own (None: no file is written)."""
        self.named_by_saves.append({trial.checkpoint.path for trial in self.trials if trial.checkpoint})
        return None

    def on_checkpoint(self, iteration, trials, trial, checkpoint, **info):
        if "://" in self.storage:
            return
        # Tune calls this before the new checkpoint becomes the trial's latest: keep both.
        in_use = {checkpoint.path, *(other.checkpoint.path for other in trials if other.checkpoint)}
        in_use.update(*self.named_by_saves)
        best = best_checkpointed_rows(self.run_dir, self.metric, self.mode).get(trial.trial_id)
        if best:
            in_use.add(best["checkpoint_path"])
        in_use = {Path(path).as_posix() for path in in_use}
        own = sorted(path for path in Path(trial.storage.trial_fs_path).glob("checkpoint_*") if path.is_dir())
        problems = []
        for path in own[: -self.newest]:
            if path.as_posix() not in in_use | self.undeletable:
                try:
                    shutil.rmtree(path)
                except OSError as err:
                    self.undeletable.add(path.as_posix())
                    problems.append(f"could not delete checkpoint {path}: {err}")
        self.warn(problems)
