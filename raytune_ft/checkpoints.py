"""Bounded disk: once a trial has ended, it keeps one checkpoint, its best epoch's model.

While a trial runs, Ray Train keeps two checkpoints at most (its best and its latest, which a
restart continues from; see search.run_trial). When the search ends, the trials that ended
(finished, stopped early, failed) drop everything but their best checkpoint, and that one
drops the optimizer state only a restart needs. Cut-off trials keep both: `--resume` needs them.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from raytune_ft.reporting import TRAINING_STATE_FILE
from raytune_ft.results import last_trial_events, read_epochs

ENDED = ("finished", "stopped early", "failed")


def train_run_name(trial_id: str) -> str:
    """The name of a trial's Ray Train run: a restarted trial finds its checkpoints under it."""
    return f"train-{trial_id}"


def trial_folder(storage: str, trial_id: str) -> Path:
    """Where a trial's TorchTrainer writes (search.run_trial passes <storage>/trials)."""
    return Path(storage) / "trials" / train_run_name(trial_id)


def prune_ended_trials(run_dir: Path, storage: str) -> None:
    if "://" in storage:
        return  # cloud storage: Ray Train's own bound (best + latest per trial) applies
    last_event = last_trial_events(run_dir)
    best_checkpoint: dict[str, str] = {}
    for row in read_epochs(run_dir):
        if row.get("best_so_far") and row.get("checkpoint_path"):
            best_checkpoint[row["trial_id"]] = row["checkpoint_path"]
    for trial_id, event in last_event.items():
        folder = trial_folder(storage, trial_id)
        keep = best_checkpoint.get(trial_id)
        if event not in ENDED or not folder.is_dir() or (keep is None and event != "failed"):
            continue  # unknown best (no epoch reported it): delete nothing
        for checkpoint in folder.glob("checkpoint_*"):
            if checkpoint.is_dir() and str(checkpoint) != keep:
                shutil.rmtree(checkpoint, ignore_errors=True)
        if keep:
            (Path(keep) / TRAINING_STATE_FILE).unlink(missing_ok=True)


def checkpoint_bytes(storage: str) -> int | None:
    """Disk the search's checkpoints take now (None for cloud storage)."""
    if "://" in storage:
        return None
    folder = Path(storage) / "trials"
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file()) if folder.is_dir() else 0
