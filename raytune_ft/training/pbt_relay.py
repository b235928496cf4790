"""PBT for trials with several workers: the trial driver relays each epoch to Ray Tune.

A trial with several workers runs a Ray Train TorchTrainer, whose epochs reach Tune from the
Ray Train controller (TuneReportCallback) as metrics only, so under PBT (tuning/pbt.py) its
driver relays each epoch itself (`TuneRelay`): the controller passes the epoch's metrics and
Ray Train checkpoint through a queue, and the driver reports both to Tune, which copies the
checkpoint into the trial's Tune folder. That copy is what a clone starts from, even after the
donor's own Train run has dropped the original.

A trial driver started with a Tune checkpoint (its own, after PBT paused it or a search was
resumed; or a donor's, after an exploit) starts a new Ray Train run from it, under a new name
(`train_run_name(trial_id, segment)` in trial.py): under the trial's old name Ray Train would
continue the trial's own latest checkpoint instead of the donor's.
"""

from __future__ import annotations

import threading
import uuid
from typing import Any

from ray import tune
from ray.train.v2.api.callback import UserCallback
from ray.util.queue import Empty, Queue


def new_segment() -> str:
    """A name for one start of a trial's driver under PBT (see the module's docstring)."""
    return uuid.uuid4().hex[:8]


def start_checkpoint():
    """The Ray Train checkpoint this start of the trial goes on from: the Tune checkpoint
    Tune restored the trial with (its own or a donor's), or None for a fresh trial."""
    import ray.train

    checkpoint = tune.get_checkpoint()
    return ray.train.Checkpoint(checkpoint.path, checkpoint.filesystem) if checkpoint else None


class RelayEpochs(UserCallback):
    """Runs in the Ray Train controller: hands each reported epoch (rank 0's metrics and the
    checkpoint) to the trial driver, and waits until the driver has reported it to Tune, so
    that Ray Train does not delete the checkpoint while Tune is still copying it."""

    def __init__(self, epochs: Queue, reported: Queue):
        self.epochs, self.reported = epochs, reported

    def after_report(self, run_context, metrics: list[dict[str, Any]], checkpoint) -> None:
        self.epochs.put((dict(metrics[0]), checkpoint))
        try:
            self.reported.get(timeout=600)
        except Empty:
            pass  # the driver is gone or stuck: Ray ends this run with it


class TuneRelay:
    """The trial driver's side: runs trainer.fit() in a thread and reports each relayed epoch
    to Tune with its checkpoint."""

    def __init__(self):
        # Small actors (no CPU), like the queue TuneReportCallback uses.
        self.epochs = Queue(maxsize=1, actor_options={"num_cpus": 0})
        self.reported = Queue(maxsize=1, actor_options={"num_cpus": 0})

    def callback(self) -> RelayEpochs:
        return RelayEpochs(self.epochs, self.reported)

    def fit(self, trainer):
        """trainer.fit() in a thread while this one hands its epochs to Tune; trainer.fit()'s Result."""
        failure: list[BaseException] = []
        results = []

        def fit() -> None:
            try:
                results.append(trainer.fit())
            except BaseException as error:  # raised again in the driver's thread, below
                failure.append(error)

        # A daemon: when Tune stops or pauses the trial (tune.report below exits), the driver
        # process ends and takes the Train run (its controller and workers) with it.
        thread = threading.Thread(target=fit, name="raytune-ft-trainer-fit", daemon=True)
        thread.start()
        while thread.is_alive() or not self.epochs.empty():
            try:
                metrics, checkpoint = self.epochs.get(timeout=0.5)
            except Empty:
                continue
            if checkpoint is None:
                # The loop says the epoch it restarted from again (loop.py, "restored"): a
                # clone's new starting point. Tune has its checkpoint already.
                tune.report(metrics)
            else:
                metrics["checkpoint_path"] = checkpoint.path
                tune.report(metrics, checkpoint=tune.Checkpoint(checkpoint.path, checkpoint.filesystem))
            self.reported.put(True)
        thread.join()
        if failure:
            raise failure[0]
        return results[0]
