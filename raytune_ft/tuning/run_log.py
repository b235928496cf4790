"""The run folder's records, written as the search goes: a Ray Tune callback.

Every reported epoch goes to epochs.jsonl and every trial start and end to trials.jsonl as
they happen, so the run folder alone tells what happened (also for an interrupted or still
running search), and the search's progress lines are fed the same records.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from ray import tune

from raytune_ft.config import Config
from raytune_ft.report.summary import trial_devices
from raytune_ft.run_folder import (
    DEV_PREDICTIONS,
    HEARTBEAT_EVERY,
    append_epoch,
    append_predictions,
    append_trial_event,
    read_reported_epochs,
    read_search_state,
    replace_epoch,
    write_search_state,
)
from raytune_ft.tuning.progress import SearchProgress

# Where a trial's start-up went, in the order it happens: timestamps of its first epoch's row
# (the trial driver, the Ray Train worker and the loop's StartupTimeline set them).
STARTUP_PHASES = (
    "driver_started_at", "worker_started_at", "loop_started_at", "data_ready_at", "model_ready_at", "first_step_at",
)  # fmt: skip

# What the loop reports besides eval_* / train_* metrics, kept in each epochs.jsonl row.
REPORTED_KEYS = (
    "learning_rate", "last_learning_rate", "optimizer_steps", "step_batch_size", "effective_batch_size",
    "trainable_parameters", "total_parameters",
    "examples_trained", "examples_trained_per_process", "examples_evaluated", "examples_evaluated_mm",
    "epoch_seconds", "device_seconds", "node_id", "device", "num_processes", "checkpoint_path",
    "gpu_memory_peak_gib", "gpu_memory_reserved_peak_gib", "gpu_ids",  # with GPUs only
    *STARTUP_PHASES,  # epoch 1 (or the first after a restart)
    "best_so_far", "resumed_from_epoch",
)  # fmt: skip


class RunFolderLog(tune.Callback):
    """Appends every reported epoch to epochs.jsonl (one row per trial and epoch: an epoch a
    restart says or trains again replaces its row) and every trial start and end to trials.jsonl.
    `ended`: trials a resumed search found ended in trials.jsonl, which Tune's saved state may not
    know of yet; their trial drivers only say their last epoch again (training/trial.py), unlogged."""

    def __init__(
        self,
        run_dir: Path,
        config: Config,
        progress: SearchProgress | None = None,
        pbt: bool = False,
        ended: set[str] = frozenset(),
        on_trial_end: Callable[[], None] | None = None,
    ):
        self.run_dir, self.progress, self.ended = run_dir, progress, ended
        self.on_trial_end = on_trial_end  # after trials.jsonl says a trial ended (checkpoint pruning)
        self.logged = {(row["trial_id"], row["epoch"]) for row in read_reported_epochs(run_dir)}
        self.default_epochs = config.train.num_epochs
        self.pbt = pbt  # every epoch reaches Tune with its checkpoint before PBT restarts a trial
        self.device_type, self.devices = trial_devices(config.resources)
        self.started: dict[str, float] = {}
        self.epochs_done: dict[str, int] = {}
        self.heartbeat_at = 0.0  # the first turn of the loop writes one

    def on_step_end(self, iteration, trials, **info):
        # Tune's loop turns many times a second: a sign of life in search.json every HEARTBEAT_EVERY s,
        # for a resume from another machine to tell a running search from one whose machine was lost.
        now = time.time()
        if now - self.heartbeat_at >= HEARTBEAT_EVERY:
            self.heartbeat_at = now
            write_search_state(self.run_dir, {**read_search_state(self.run_dir), "heartbeat_at": now})

    def on_trial_start(self, iteration, trials, trial, **info):
        if trial.trial_id in self.ended:
            return
        if trial.trial_id in self.started:
            # PBT paused it, or restarted it from a stronger trial's checkpoint with new values.
            checkpoint = trial.checkpoint.path if trial.checkpoint else None
            append_trial_event(
                self.run_dir,
                {
                    "event": "restarted",
                    "trial_id": trial.trial_id,
                    "time": time.time(),
                    "config": trial.config,
                    "from_checkpoint": checkpoint,
                },
            )
            return
        self.started[trial.trial_id] = time.time()
        event = {
            "event": "started",
            "trial_id": trial.trial_id,
            "time": self.started[trial.trial_id],
            "config": trial.config,
            "planned_epochs": self._planned(trial),
            "device_type": self.device_type,
            "devices": self.devices,
        }
        append_trial_event(self.run_dir, event)
        if self.progress:
            self.progress.trial_started(event)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        # The dev predictions go to predictions.jsonl only: taken out of the result in place (Tune
        # allows it), so Tune's saved state and result files do not carry them every few seconds.
        examples = result.pop(DEV_PREDICTIONS, None)
        if trial.trial_id in self.ended:
            return
        if result.get("restored") and self.pbt:
            # Under PBT every epoch reached Tune with its checkpoint before any restart, so the
            # epoch a restart says again is not new; for a clone it is its donor's epoch (the
            # donor's row has it), which the clone now goes on from.
            self.epochs_done[trial.trial_id] = result["epoch"]
            return
        row = {"trial_id": trial.trial_id, "epoch": result["epoch"]}
        row.update({k: v for k, v in result.items() if k.startswith(("eval_", "train_")) or k in REPORTED_KEYS})
        if result.get("checkpoint_dir_name") and not row.get("checkpoint_path"):
            # A trial that trains in its own process hands its checkpoints to Tune, which keeps them in its trial folder.
            row["checkpoint_path"] = Path(trial.storage.trial_fs_path, result["checkpoint_dir_name"]).as_posix()
        # The searched hyperparameters, under their train.* names, as the trial ran them: Tune's
        # result["config"] (PBT may already have given trial.config new values for its restart).
        row.update(result.get("config") or trial.config)
        row["reported_at"] = time.time()  # places the epoch on the search's timeline (compute spent so far)
        self._log_epoch(row, restored=bool(result.get("restored")), examples=examples)
        self.epochs_done[trial.trial_id] = result["epoch"]
        if self.progress:
            self.progress.epoch_reported(row)

    def _log_epoch(self, row: dict, restored: bool, examples: dict | None) -> None:
        key = (row["trial_id"], row["epoch"])
        if key not in self.logged:
            append_epoch(self.run_dir, row)
            self.logged.add(key)
        elif not restored:  # trained again: its checkpoint after a restart is this one
            replace_epoch(self.run_dir, row)
        else:
            return  # a restored epoch said again that is already logged: nothing new
        if examples:  # the dev predictions behind the row (the last row of an epoch counts)
            append_predictions(self.run_dir, row["trial_id"], row["epoch"], examples)

    def on_trial_complete(self, iteration, trials, trial, **info):
        if trial.trial_id in self.ended:
            return
        # Tune calls this both for trials that ran all their epochs and for those the scheduler stopped.
        done = self.epochs_done.get(trial.trial_id, 0)
        self._ended(trial, "finished" if done >= self._planned(trial) else "stopped early")

    def on_trial_error(self, iteration, trials, trial, **info):
        if trial.trial_id in self.ended:
            return
        self._ended(trial, "failed", error=_first_error_line(trial))

    def on_experiment_end(self, trials, **info):
        # Also called when the search is interrupted (Ctrl-C): trials still running end here.
        for trial in trials:
            if trial.trial_id in self.started:
                self._ended(trial, "interrupted")

    def _ended(self, trial, status: str, error: str | None = None) -> None:
        started = self.started.pop(trial.trial_id, None)
        now = time.time()
        wall = now - started if started is not None else 0.0
        event = {
            "event": status,
            "trial_id": trial.trial_id,
            "time": now,
            "config": trial.config,
            "epochs_done": self.epochs_done.get(trial.trial_id, 0),
            "wall_seconds": wall,
            "device_type": self.device_type,
            "devices": self.devices,
            "device_seconds": wall * self.devices,
        }
        if error:
            event["error"] = error
        append_trial_event(self.run_dir, event)
        if self.progress:
            self.progress.trial_ended(event)
        if self.on_trial_end and status != "interrupted":
            self.on_trial_end()

    def _planned(self, trial) -> int:
        return int(trial.config.get("num_epochs", self.default_epochs))


def _first_error_line(trial) -> str:
    path = getattr(trial, "error_file", None) or ""
    try:
        text = Path(path).read_text(encoding="utf-8").strip().splitlines()
        return text[-1][:300] if text else "unknown error"
    except OSError:
        return "unknown error (see the trial's error.txt)"
