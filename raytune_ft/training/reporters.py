"""The one small interface through which the training loop reports each epoch.

`training_function` calls `reporter.report(metrics, checkpoint_dir)` once per epoch on
every process and does not care where it runs: inside Ray Train workers (a search trial with
several workers), in a Ray Tune trial's own process (a one-worker trial), alone
(`raytune-ft train`), or under `accelerate launch`. Before it starts, it asks
`reporter.restore_point()` for a checkpoint to continue from (Ray Tune or Ray Train hands back
the latest one after a failure or when an interrupted search is resumed; under PBT the trial
driver hands over the one Ray Tune restarted the trial with).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path

from raytune_ft.run_folder import DEV_PREDICTIONS
from raytune_ft.training.checkpointing import TRAINING_STATE_FILE


class EpochReporter:
    """The base: reports nowhere, never resumes. Subclasses say where epochs go."""

    # True where runs can be restarted (the search): every epoch then hands over a checkpoint
    # with the training state; otherwise only improving epochs hand over the model.
    resumable = False
    restored_from: str | None = None  # the checkpoint restore_point() handed out, as its storage path

    def report(self, metrics: dict, checkpoint_dir: str | None) -> None:
        """Called on every process once per epoch; checkpoint_dir is set on rank 0 only.
        metrics["best_so_far"] is 1.0 for an epoch that improved on the run's best."""

    def restore_point(self) -> AbstractContextManager[str | None]:
        """A local folder holding the checkpoint to continue from, or None to start afresh."""
        return nullcontext(None)

    def checkpoint_folder(self) -> AbstractContextManager[str]:
        """A new local folder for one epoch's checkpoint, deleted once report() is done with it."""
        return tempfile.TemporaryDirectory(prefix="raytune-ft-ckpt-")

    @contextmanager
    def _opened(self, checkpoint):
        """A Ray checkpoint (or None) as a local folder; restored_from says where it is stored."""
        if checkpoint is None:
            yield None
            return
        self.restored_from = checkpoint.path
        with checkpoint.as_directory() as folder:
            yield folder


class RayTrainReporter(EpochReporter):
    """Hands metrics and checkpoints to Ray Train (and through it to Ray Tune)."""

    resumable = True

    def __init__(self, start_from=None, upload_in_background: bool = False):
        # A ray.train.Checkpoint to start from when this Train run has none of its own yet
        # (PBT: a trial restarted from its own or from a stronger trial's checkpoint).
        self.start_from = start_from
        # Ray Train copies each checkpoint to storage in a thread of its own while the next
        # epoch trains, then deletes the local folder (the copy is waited for when the run ends).
        self.upload_in_background = upload_in_background
        self._handed_over: str | None = None  # the folder Ray Train now owns and deletes

    @contextmanager
    def checkpoint_folder(self):
        if not self.upload_in_background:
            with super().checkpoint_folder() as folder:
                yield folder
            return
        folder = tempfile.mkdtemp(prefix="raytune-ft-ckpt-")
        try:
            yield folder
        finally:
            if self._handed_over != folder:  # no checkpoint this epoch, or report() never got it
                shutil.rmtree(folder, ignore_errors=True)

    def report(self, metrics: dict, checkpoint_dir: str | None) -> None:
        import ray.train

        checkpoint = ray.train.Checkpoint.from_directory(checkpoint_dir) if checkpoint_dir else None
        mode = (
            ray.train.CheckpointUploadMode.ASYNC if self.upload_in_background else ray.train.CheckpointUploadMode.SYNC
        )
        # A barrier across workers: every rank must call it, only rank 0's metrics reach Tune.
        ray.train.report(metrics, checkpoint=checkpoint, checkpoint_upload_mode=mode)
        if checkpoint is not None and self.upload_in_background:
            self._handed_over = checkpoint_dir  # Ray Train deletes it once uploaded

    def restore_point(self):
        import ray.train

        # Ray Train's latest checkpoint of this trial: after a worker died (FailureConfig), or
        # when a resumed search restarts the trial's TorchTrainer under the same name; else the
        # one this run was given to start from.
        return self._opened(ray.train.get_checkpoint() or self.start_from)


class TuneReporter(EpochReporter):
    """Hands metrics and checkpoints straight to Ray Tune: the loop runs in the trial's own
    process (one worker, no Ray Train worker group; see trial.py)."""

    resumable = True

    def report(self, metrics: dict, checkpoint_dir: str | None) -> None:
        from ray import tune

        checkpoint = tune.Checkpoint.from_directory(checkpoint_dir) if checkpoint_dir else None
        tune.report(metrics, checkpoint=checkpoint)

    def restore_point(self):
        from ray import tune

        # Tune's latest checkpoint of this trial: after its process died (FailureConfig), or
        # when a resumed search restarts it.
        return self._opened(tune.get_checkpoint())


class RunFolderReporter(EpochReporter):
    """For a plain run: appends each epoch to epochs.jsonl and keeps the best checkpoint."""

    def __init__(self, run_dir: Path, is_main_process: bool, trial_id: str = "train"):
        self.run_dir = Path(run_dir)
        self.is_main_process = is_main_process
        self.trial_id = trial_id
        self.best_checkpoint: Path | None = None

    def report(self, metrics: dict, checkpoint_dir: str | None) -> None:
        if not self.is_main_process:
            return
        row = {"trial_id": self.trial_id, **{k: v for k, v in metrics.items() if k != DEV_PREDICTIONS}}
        if checkpoint_dir and metrics.get("best_so_far"):
            # Keep the best epoch's model; a plain run is never resumed, so no training state.
            target = self.run_dir / "checkpoint"
            staging = self.run_dir / ".checkpoint-writing"
            shutil.rmtree(staging, ignore_errors=True)
            shutil.copytree(checkpoint_dir, staging, ignore=shutil.ignore_patterns(TRAINING_STATE_FILE))
            shutil.rmtree(target, ignore_errors=True)
            staging.rename(target)
            self.best_checkpoint = target
            row["checkpoint_path"] = str(target)
        with (self.run_dir / "epochs.jsonl").open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(row) + "\n")
