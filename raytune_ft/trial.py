"""The trial driver: one Tune trial = one TorchTrainer run, in a module of its own.

Ray pickles a trainable by reference, so every trial driver process imports the module that
defines it. Under ASHA (the default scheduler), PBT and the confirm stage each trial gets a
new driver process, and Tune lets its imports finish before the trial counts as started, so
they cost CPU and wall time between trials: raytune_ft.search would bring Optuna, rich, the
tracking callbacks, datasets, evaluate and transformers (13-15 s in a fresh process on a slow
day here, against 5-7 s for this module). This module imports only what starting a
TorchTrainer needs.
"""

from __future__ import annotations

import time

import ray
from ray import tune
from ray.train import CheckpointConfig, FailureConfig, ScalingConfig
from ray.train.torch import TorchTrainer
from ray.train.v2._internal.callbacks import DatasetsCallback
from ray.tune.integration.ray_train import TuneReportCallback

from raytune_ft.checkpoints import train_run_name
from raytune_ft.config import Config
from raytune_ft.divergence import TrainingDiverged
from raytune_ft.pbt import TuneRelay, new_segment, start_checkpoint
from raytune_ft.worker import ray_train_loop

# Quiet workers: no per-trial download bars or load reports in the search's console.
WORKER_ENV = {
    "TRANSFORMERS_VERBOSITY": "error",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",
    "TOKENIZERS_PARALLELISM": "false",
}


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


def run_trial(trial_params: dict, *, base_config: dict, data: list, storage_path: str, relay_to_tune: bool = False) -> None:
    """relay_to_tune (PBT): epochs reach Tune through this driver, with their checkpoints (pbt.py)."""
    driver_started_at = time.time()  # start-up timeline (bench/overhead.py): Ray Train's part begins here
    config = Config(**base_config)
    for key, value in trial_params.items():
        setattr(config.train, key, value)
    resources = config.resources
    trial_id = tune.get_context().get_trial_id()
    relay = TuneRelay() if relay_to_tune else None
    trainer = TrainerWithoutRayData(
        ray_train_loop,
        # data[0]: the tokenized data per max_length (one, unless max_length is searched).
        # start_from (PBT): the checkpoint Tune restarted this trial with (its own or a clone's donor's).
        train_loop_config={"config": config.model_dump(), "data": data[0][config.max_length], "progress_bar": False,
                           "start_from": start_checkpoint() if relay else None,
                           "timeline": {"driver_started_at": driver_started_at}},
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
            worker_runtime_env={"env_vars": {**WORKER_ENV, "OMP_NUM_THREADS": str(max(1, int(resources.cpus_per_worker)))}},
        ),
    )
    result = relay.fit(trainer) if relay else trainer.fit()
    # A diverged loss comes back as the workers' return value (worker.py): the trial fails with it, once.
    if result.return_value and "diverged" in result.return_value:
        raise TrainingDiverged(result.return_value["diverged"])


def run_confirm_trial(params: dict, **trial_kwargs) -> None:
    """A confirm run (confirm.py) is a search trial with its candidate's values and a new seed."""
    run_trial({key: value for key, value in params.items() if key != "candidate"}, **trial_kwargs)
