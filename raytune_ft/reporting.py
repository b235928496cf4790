"""The one small interface through which the training loop reports each epoch.

`training_function` calls `reporter.report(metrics, checkpoint_dir)` once per epoch on
every process and does not care where it runs: inside Ray Train workers (the search),
alone (`raytune-ft train`), or under `accelerate launch`.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Protocol


class EpochReporter(Protocol):
    def report(self, metrics: dict, checkpoint_dir: str | None) -> None:
        """Called on every process once per epoch; checkpoint_dir is set on rank 0 only."""


class RayTrainReporter:
    """Hands metrics and checkpoints to Ray Train (and through it to Ray Tune)."""

    def report(self, metrics: dict, checkpoint_dir: str | None) -> None:
        import ray.train

        checkpoint = ray.train.Checkpoint.from_directory(checkpoint_dir) if checkpoint_dir else None
        # A barrier across workers: every rank must call it, only rank 0's metrics reach Tune.
        ray.train.report(metrics, checkpoint=checkpoint)


class RunFolderReporter:
    """For a plain run: appends each epoch to epochs.jsonl and keeps the best checkpoint."""

    def __init__(self, run_dir: Path, is_main_process: bool, trial_id: str = "train"):
        self.run_dir = Path(run_dir)
        self.is_main_process = is_main_process
        self.trial_id = trial_id
        self.best_checkpoint: Path | None = None

    def report(self, metrics: dict, checkpoint_dir: str | None) -> None:
        if not self.is_main_process:
            return
        row = {"trial_id": self.trial_id, **metrics}
        if checkpoint_dir:
            # The loop only hands over checkpoints of improving epochs: keep the newest.
            target = self.run_dir / "checkpoint"
            staging = self.run_dir / ".checkpoint-writing"
            shutil.rmtree(staging, ignore_errors=True)
            shutil.copytree(checkpoint_dir, staging)
            shutil.rmtree(target, ignore_errors=True)
            staging.rename(target)
            self.best_checkpoint = target
            row["checkpoint_path"] = str(target)
        with (self.run_dir / "epochs.jsonl").open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(row) + "\n")
