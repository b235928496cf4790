"""The trial driver: what one Tune trial runs, in a module of its own.

A trial with one worker trains right here, in the Tune trial's own process; one with several
workers (or `resources.ray_train: always`) starts a Ray Train TorchTrainer whose workers train.
A TorchTrainer starts a controller and its workers as new processes for every trial, ~10-15 s
on 2 CPUs before the loop's first step (BENCHMARKS.md), which for a single worker buys
nothing that Tune does not give itself: a trial that fails restarts from its latest
checkpoint (tune.FailureConfig), and a resumed search goes on from it.

Ray pickles a trainable by reference, so every trial driver process imports the module that
defines it. A trial that finds no driver process to reuse (the first trials of a search, a
TorchTrainer trial under ASHA or PBT) gets a new one, and Tune lets its imports finish before
the trial counts as started, so they cost CPU and wall time between trials:
raytune_ft.tuning would bring Optuna, rich, the tracking callbacks and more (13-15 s in a
fresh process on a slow day here, against 5-7 s for this module). This module imports only
what a trial needs.
"""

from __future__ import annotations

import os
import time

import ray
from ray import tune
from ray.train import CheckpointConfig, FailureConfig, ScalingConfig
from ray.train.torch import TorchTrainer
from ray.train.v2._internal.callbacks import DatasetsCallback
from ray.tune.integration.ray_train import TuneReportCallback

from raytune_ft.config import Config
from raytune_ft.environment import THREADS_VARIABLE, WORKER_ENV
from raytune_ft.training.divergence import TrainingDiverged
from raytune_ft.training.pbt_relay import TuneRelay, new_segment, start_checkpoint
from raytune_ft.training.worker import ray_train_loop


class TrainerWithoutRayData(TorchTrainer):
    """A TorchTrainer that starts no Ray Data machinery when it is given no Ray Data datasets.

    Ray Train 2.60 starts a DatasetManager actor for every run, datasets or not: one more
    process per trial to start, ~3 CPU-s on 2 cores (BENCHMARKS.md). Our loop reads the
    tokenized data from the object store (train_loop_config), never
    ray.train.get_dataset_shard(). Ray is pinned (pyproject.toml): _create_default_callbacks is
    its internal hook for this list.
    """

    def _create_default_callbacks(self):
        callbacks = super()._create_default_callbacks()
        if self.datasets:
            return callbacks
        return [callback for callback in callbacks if not isinstance(callback, DatasetsCallback)]


def train_run_name(trial_id: str, segment: str | None = None) -> str:
    """The name of a trial's Ray Train run: a restarted trial finds its checkpoints under it.
    Under PBT each start of the trial is a run of its own, named with a segment (pbt_relay.py)."""
    return f"train-{trial_id}" + (f"-{segment}" if segment else "")


def threads_per_worker(config: Config) -> int:
    """Torch threads of a training process: as many as it has CPUs (at least one)."""
    return max(1, int(config.resources.cpus_per_worker))


# In a trial that trains in its own process: marks a diverged loss (_DivergedMark).
DIVERGED_MARK = "diverged.txt"


def run_trial(
    trial_params: dict,
    *,
    base_config: dict,
    data: list,
    storage_path: str,
    relay_to_tune: bool = False,
    ended: dict | None = None,
    model_folders: dict | None = None,
) -> None:
    """relay_to_tune (PBT): epochs reach Tune through this driver, with their checkpoints (pbt.py).
    ended (a resumed search): {trial_id: last epoch row} of the trials the run folder records as
    ended; Tune saves its own state every few seconds, so a search killed just after a trial ended
    restores that trial as unfinished. Such a trial says its last epoch again and ends, untrained.
    model_folders: {model: absolute folder} for models named by a relative folder (./my-bert),
    which this process, in a working directory of its own, would not find (tuning/run.py)."""
    driver_started_at = time.time()  # start-up timeline (bench/overhead.py): the trial's part begins here
    trial_id = tune.get_context().get_trial_id()
    if ended and trial_id in ended:
        tune.report({**ended[trial_id], "already_ended": True})
        return
    config = Config(**base_config).for_trial(trial_params)
    # data[0]: the tokenized data per model and max_length (Config.data_key; one, unless searched).
    own_data = data[0][config.data_key]
    config.model.name_or_path = (model_folders or {}).get(config.model.name_or_path, config.model.name_or_path)
    if config.trains_in_trial_process:
        train_in_trial_process(config, own_data, driver_started_at)
        return
    resources = config.resources
    relay = TuneRelay() if relay_to_tune else None
    trainer = TrainerWithoutRayData(
        ray_train_loop,
        # start_from (PBT): the checkpoint Tune restarted this trial with (its own or a clone's donor's).
        train_loop_config={
            "config": config.model_dump(),
            "data": own_data,
            "progress_bar": False,
            "start_from": start_checkpoint() if relay else None,
            # Each epoch's checkpoint is copied to storage while the next epoch trains; under PBT
            # the relay hands it to Tune first, so there it is copied before training goes on.
            "upload_in_background": not relay,
            "timeline": {"driver_started_at": driver_started_at},
        },
        scaling_config=ScalingConfig(
            num_workers=resources.num_workers,
            use_gpu=resources.gpus_per_worker > 0,
            resources_per_worker={"CPU": resources.cpus_per_worker, "GPU": resources.gpus_per_worker},
        ),
        run_config=ray.train.RunConfig(
            name=train_run_name(trial_id, new_segment() if relay else None),
            storage_path=storage_path,
            # Every epoch reports a checkpoint; Ray Train keeps the best one (the newest epoch
            # that improved) and the latest one, which a restart continues from.
            checkpoint_config=CheckpointConfig(
                num_to_keep=1, checkpoint_score_attribute="best_so_far", checkpoint_score_order="max"
            ),
            # A dead worker: the worker group starts again from the latest checkpoint.
            failure_config=FailureConfig(max_failures=resources.max_failures),
            callbacks=[relay.callback() if relay else TuneReportCallback()],
            worker_runtime_env={"env_vars": {**WORKER_ENV, THREADS_VARIABLE: str(threads_per_worker(config))}},
        ),
    )
    result = relay.fit(trainer) if relay else trainer.fit()
    # A diverged loss comes back as the workers' return value (worker.py): the trial fails with it, once.
    if result.return_value and "diverged" in result.return_value:
        raise TrainingDiverged(result.return_value["diverged"])


def train_in_trial_process(config: Config, data, driver_started_at: float) -> None:
    """The loop in this process; its epochs and checkpoints go straight to Tune."""
    diverged = _DivergedMark()
    if diverged.reason:
        raise TrainingDiverged(f"{diverged.reason} (in an earlier attempt; not trained again)")
    # Before the imports below: transformers reads its verbosity when it is first imported.
    os.environ.update(WORKER_ENV)
    import torch

    from raytune_ft.training.loop import free_previous_run, training_function
    from raytune_ft.training.reporters import TuneReporter

    # This process may have run an earlier trial (Tune reuses trial processes): let go of it.
    free_previous_run()

    # What a Ray Train worker gets from OMP_NUM_THREADS (THREADS_VARIABLE).
    torch.set_num_threads(threads_per_worker(config))
    loop_config = {
        "config": config.model_dump(),
        "data": data,
        "progress_bar": False,
        "timeline": {"driver_started_at": driver_started_at, "worker_started_at": driver_started_at},
    }
    try:
        training_function(loop_config, TuneReporter())
    except TrainingDiverged as error:
        diverged.write(str(error))
        raise


class _DivergedMark:
    """A file in the trial's folder of the search's storage that says its loss diverged.

    Tune starts a failed trial again (tune.FailureConfig: a dead process and a raised error
    look the same to it), and the loop would only diverge again; an attempt that finds the mark
    fails at once instead. It goes to the storage folder (local or cloud), not the trial's
    working directory: that one is new for every attempt.
    """

    def __init__(self):
        storage = tune.get_context().get_storage()
        self.filesystem, self.path = storage.storage_filesystem, f"{storage.trial_fs_path}/{DIVERGED_MARK}"

    @property
    def reason(self) -> str | None:
        from pyarrow.fs import FileType

        if self.filesystem.get_file_info(self.path).type == FileType.NotFound:
            return None
        with self.filesystem.open_input_stream(self.path) as stream:
            return stream.read().decode("utf-8")

    def write(self, reason: str) -> None:
        with self.filesystem.open_output_stream(self.path) as stream:
            stream.write(reason.encode("utf-8"))


def run_confirm_trial(params: dict, **trial_kwargs) -> None:
    """A confirm run (tuning/confirm.py) is a search trial with its candidate's values and a new seed."""
    run_trial({key: value for key, value in params.items() if key != "candidate"}, **trial_kwargs)
