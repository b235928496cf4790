"""Population Based Training.

PBT (Ray Tune's PopulationBasedTraining) trains a population of trials and, every
`search.perturbation_interval` epochs, restarts the weakest ones from a copy of the strongest
ones' checkpoints with perturbed learning_rate / warmup_ratio (exploit, then explore).

It takes a trial's checkpoint from what the trial last reported to Ray Tune. A one-worker
trial trains in its Tune trial's own process (trial.py) and reports each epoch with its
checkpoint straight to Tune (reporting.TuneReporter); restarted, it goes on from
tune.get_checkpoint(), its own or its donor's. Nothing below is needed for it.

A trial with several workers runs a Ray Train TorchTrainer, whose epochs reach Tune from the
Ray Train controller (TuneReportCallback) as metrics only, so under PBT its driver relays each
epoch itself (`TuneRelay`): the controller passes the epoch's metrics and Ray Train checkpoint
through a queue, and the driver reports both to Tune, which copies the checkpoint into the
trial's Tune folder. That copy is what a clone starts from, even after the donor's own Train
run has dropped the original.

A trial driver started with a Tune checkpoint (its own, after PBT paused it or a search was
resumed; or a donor's, after an exploit) starts a new Ray Train run from it, under a new name
(`train_run_name(trial_id, segment)`): under the trial's old name Ray Train would continue the
trial's own latest checkpoint instead of the donor's.
"""

from __future__ import annotations

import threading
import uuid
from typing import Any

from ray import tune
from ray.train.v2.api.callback import UserCallback
from ray.tune.schedulers import PopulationBasedTraining
from ray.util.queue import Empty, Queue

from raytune_ft.config import PBT_MUTATIONS, Config


def build_pbt_scheduler(config: Config, param_space: dict, metric: str, mode: str) -> PopulationBasedTraining:
    mutations, bounds = {}, {}
    for key in PBT_MUTATIONS:
        if key not in config.search.space:
            continue
        sampler, args = next(iter(config.search.space[key].items()))
        if sampler == "choice":
            mutations[key] = args  # PBT moves to a neighbouring value of the list
        else:
            # PBT multiplies by 0.8 or 1.2 (or resamples): clipped back into the range below.
            mutations[key], bounds[key] = param_space[key], args

    def keep_inside_space(new_config: dict) -> dict:
        for key, (low, high) in bounds.items():
            new_config[key] = min(max(new_config[key], low), high)
        return new_config

    return PopulationBasedTraining(
        metric=metric,  # which trials are strong: config.scheduler_metric
        mode=mode,
        time_attr="epoch",  # the trial's own epoch: a clone goes on at its donor's epoch + 1
        perturbation_interval=config.search.perturbation_interval,
        hyperparam_mutations=mutations,
        quantile_fraction=config.search.quantile_fraction,
        custom_explore_fn=keep_inside_space,
        synch=config.search.synch,
    )


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
                # The loop says the epoch it restarted from again (training.py, "restored"): a
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
