"""The search: a Ray Tune Tuner whose trials each run a Ray Train TorchTrainer.

Declared in one place, as Ray Tune's examples read:
  search space (from search.space) -> OptunaSearch (defaults evaluated first)
  -> scheduler (ASHA stops weak trials by epoch) -> Tuner over `run_trial`,
and `run_trial`, the trial driver, starts a TorchTrainer whose workers run
`training_function`. Tokenized data is prepared once, before Ray starts, and handed to
every trial through Ray's object store.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import ray
from ray import tune
from ray.train import CheckpointConfig, ScalingConfig
from ray.train.torch import TorchTrainer
from ray.tune.integration.ray_train import TuneReportCallback
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
from ray.tune.search.optuna import OptunaSearch
from rich.console import Console

from raytune_ft.config import Config, ConfigError
from raytune_ft.data import load_tokenized, prepare_tokenized_data
from raytune_ft.reporting import RayTrainReporter
from raytune_ft.results import CONFIG_FILE, append_epoch, make_console, find_best, print_epochs_table, read_epochs, write_best
from raytune_ft.training import training_function

# The trial driver only waits on its TorchTrainer: it must not hold a CPU, or on a 2-CPU
# machine the drivers take the CPUs their own workers need and nothing ever starts.
# Ray rejects {"cpu": 0} alone; a small memory request makes it a valid bundle.
DRIVER_RESOURCES = {"cpu": 0, "memory": 100 * 1024**2}

# Quiet workers: no per-trial download bars or load reports in the search's console.
WORKER_ENV = {
    "TRANSFORMERS_VERBOSITY": "error",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",
    "TOKENIZERS_PARALLELISM": "false",
}


# ---------------------------------------------------------------------------------------
# Search space, search algorithm, scheduler


def build_param_space(config: Config) -> dict:
    samplers = {
        "loguniform": lambda a: tune.loguniform(*a),
        "uniform": lambda a: tune.uniform(*a),
        "randint": lambda a: tune.randint(int(a[0]), int(a[1])),
        "choice": lambda a: tune.choice(a),
    }
    return {key: samplers[name](args) for key, spec in config.search.space.items() for name, args in spec.items()}


def starting_point(config: Config) -> dict | None:
    """The config's own train.* values, evaluated first, when the space contains them."""
    point = {}
    for key, spec in config.search.space.items():
        (sampler, args), value = next(iter(spec.items())), getattr(config.train, key)
        inside = value in args if sampler == "choice" else (
            args[0] <= value < args[1] if sampler == "randint" else args[0] <= value <= args[1]
        )
        if not inside:
            return None
        point[key] = value
    return point or None


def max_epochs(config: Config) -> int:
    spec = config.search.space.get("num_epochs")
    if not spec:
        return config.train.num_epochs
    sampler, args = next(iter(spec.items()))
    return int(max(args) if sampler == "choice" else (args[1] - 1 if sampler == "randint" else args[1]))


def build_scheduler(config: Config):
    if config.search.scheduler == "asha":
        # One Tune iteration = one reported epoch.
        return ASHAScheduler(
            time_attr="training_iteration",
            max_t=max_epochs(config),
            grace_period=min(config.search.grace_period, max_epochs(config)),
            reduction_factor=config.search.reduction_factor,
        )
    return FIFOScheduler()


def build_search_algorithm(config: Config) -> OptunaSearch | None:
    if not config.search.space:
        return None  # nothing to search: num_samples repeats of the fixed train values
    point = starting_point(config)
    return OptunaSearch(points_to_evaluate=[point] if point else None, seed=config.search.seed)


# ---------------------------------------------------------------------------------------
# The trial driver: one Tune trial = one TorchTrainer run


def ray_train_loop(loop_config: dict) -> None:
    """What each Ray Train worker runs."""
    training_function(loop_config, RayTrainReporter())


def run_trial(trial_params: dict, *, base_config: dict, data: list, storage_path: str) -> None:
    config = Config(**base_config)
    for key, value in trial_params.items():
        setattr(config.train, key, value)
    resources = config.resources
    trial_id = tune.get_context().get_trial_id()
    trainer = TorchTrainer(
        ray_train_loop,
        train_loop_config={"config": config.model_dump(), "data": data[0], "progress_bar": False},
        scaling_config=ScalingConfig(
            num_workers=resources.num_workers,
            use_gpu=resources.gpus_per_worker > 0,
            resources_per_worker={"CPU": resources.cpus_per_worker, "GPU": resources.gpus_per_worker},
        ),
        run_config=ray.train.RunConfig(
            name=f"train-{trial_id}",
            storage_path=storage_path,
            # The loop only reports checkpoints of improving epochs, so the newest is the best.
            checkpoint_config=CheckpointConfig(num_to_keep=1),
            callbacks=[TuneReportCallback()],
            worker_runtime_env={"env_vars": {**WORKER_ENV, "OMP_NUM_THREADS": str(max(1, int(resources.cpus_per_worker)))}},
        ),
    )
    trainer.fit()


# ---------------------------------------------------------------------------------------
# Live progress and the per-epoch history


class EpochLog(tune.Callback):
    """Appends every reported epoch to epochs.jsonl as it arrives, and prints a line."""

    def __init__(self, run_dir: Path, searched: list[str], metric: str, console: Console):
        self.run_dir, self.searched, self.metric, self.console = run_dir, searched, metric, console

    # The Tuner pickles its callbacks (for restore); a Console holds a lock and cannot be.
    def __getstate__(self):
        return {**self.__dict__, "console": None}

    def __setstate__(self, state):
        self.__dict__.update(state)
        self.console = make_console()

    def on_trial_start(self, iteration, trials, trial, **info):
        params = ", ".join(f"{k}={_fmt(v)}" for k, v in trial.config.items())
        self.console.print(f"[cyan]trial {trial.trial_id}[/] started: {params or 'fixed train values'}")

    def on_trial_result(self, iteration, trials, trial, result, **info):
        row = {"trial_id": trial.trial_id, "epoch": result["epoch"]}
        row.update({k: v for k, v in result.items() if k.startswith(("eval_", "train_")) or k in REPORTED_KEYS})
        row.update(trial.config)  # the searched hyperparameters, under their train.* names
        append_epoch(self.run_dir, row)
        score = row.get(f"eval_{self.metric}")
        self.console.print(
            f"[cyan]trial {trial.trial_id}[/] epoch {row['epoch']}: eval_{self.metric}={score:.4f} "
            f"eval_loss={row['eval_loss']:.4f} ({row['epoch_seconds']:.0f}s, {row['train_samples_per_second']:.0f} samples/s)"
        )

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.console.print(f"[cyan]trial {trial.trial_id}[/] finished")

    def on_trial_error(self, iteration, trials, trial, **info):
        self.console.print(f"[red]trial {trial.trial_id} failed[/]: {_first_error_line(trial)}")


REPORTED_KEYS = (
    "learning_rate", "last_learning_rate", "examples_trained", "examples_evaluated", "examples_evaluated_mm", "epoch_seconds", "node_id", "device", "num_processes", "checkpoint_path",
)


def _fmt(value) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def _first_error_line(trial) -> str:
    path = getattr(trial, "error_file", None) or ""
    try:
        text = Path(path).read_text(encoding="utf-8").strip().splitlines()
        return text[-1][:300] if text else "unknown error"
    except OSError:
        return "unknown error (see the trial's error.txt)"


# ---------------------------------------------------------------------------------------
# The whole search


@dataclass
class SearchOutcome:
    run_dir: Path
    rows: list[dict]
    statuses: dict[str, str] = field(default_factory=dict)
    best: object | None = None
    seconds: float = 0.0


def new_run_dir(config: Config) -> Path:
    name = config.output.name or f"{config.task}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"
    run_dir = (Path(config.output.dir).expanduser() / name).resolve()
    if run_dir.exists() and any(run_dir.iterdir()):
        raise ConfigError(f"output: run folder {run_dir} already exists; choose another output.name or remove it")
    return run_dir


def concurrent_trials(config: Config) -> int:
    """How many trials fit at once in what the Ray cluster has."""
    if config.resources.max_concurrent_trials:
        return config.resources.max_concurrent_trials
    available = ray.cluster_resources()
    per_trial_cpus = config.resources.cpus_per_worker * config.resources.num_workers
    fits = int(available.get("CPU", 0) // per_trial_cpus)
    if config.resources.gpus_per_worker > 0:
        per_trial_gpus = config.resources.gpus_per_worker * config.resources.num_workers
        fits = min(fits, int(math.floor(available.get("GPU", 0) / per_trial_gpus + 1e-9)))
    if fits < 1:
        raise ConfigError(
            f"resources: one trial needs {per_trial_cpus:g} CPU and "
            f"{config.resources.gpus_per_worker * config.resources.num_workers:g} GPU, the Ray cluster has "
            f"{available.get('CPU', 0):g} CPU and {available.get('GPU', 0):g} GPU; lower resources.*"
        )
    return fits


def run_search(config: Config, address: str | None = None, console: Console | None = None, verbose: bool = False) -> SearchOutcome:
    console = console or make_console()
    started = time.perf_counter()
    run_dir = new_run_dir(config)
    # Data first: bad data is reported before Ray starts and before the run folder exists.
    data_path, was_cached = prepare_tokenized_data(config)
    console.print(f"tokenized data: {data_path} ({'cache hit' if was_cached else 'tokenized now'})")

    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / CONFIG_FILE).write_text(config.to_yaml(), encoding="utf-8")

    # address "local": always a fresh Ray runtime of our own, never a cluster some other
    # process started with `ray start` on this machine (ray.init() would attach to that).
    ray.init(address=address or "local", log_to_driver=verbose, configure_logging=verbose)
    try:
        max_concurrent = concurrent_trials(config)
        # Into the object store once; every trial's workers read the same copy.
        data_ref = ray.put(load_tokenized(data_path, in_memory=True))
        searched = list(config.search.space)
        trainable = tune.with_resources(
            tune.with_parameters(
                run_trial, base_config=config.model_dump(), data=[data_ref], storage_path=str(run_dir / "trials")
            ),
            DRIVER_RESOURCES,
        )
        console.print(
            f"searching {', '.join(searched) or 'nothing (fixed values)'}: {config.search.num_samples} trials, "
            f"{max_concurrent} at a time, scheduler {config.search.scheduler}, metric eval_{config.metric} ({config.search.mode})"
        )
        tuner = tune.Tuner(
            trainable,
            param_space=build_param_space(config),
            tune_config=tune.TuneConfig(
                metric=f"eval_{config.metric}",
                mode=config.search.mode,
                search_alg=build_search_algorithm(config),
                scheduler=build_scheduler(config),
                num_samples=config.search.num_samples,
                max_concurrent_trials=max_concurrent,
            ),
            run_config=tune.RunConfig(
                name="tune",
                storage_path=str(run_dir),
                callbacks=[EpochLog(run_dir, searched, config.metric, console)],
                verbose=0,
            ),
        )
        result_grid = tuner.fit()
        statuses = _trial_statuses(result_grid, read_epochs(run_dir), config)
    finally:
        ray.shutdown()

    rows = read_epochs(run_dir)
    outcome = SearchOutcome(run_dir=run_dir, rows=rows, statuses=statuses, seconds=time.perf_counter() - started)
    outcome.best = find_best(rows, config.metric, config.search.mode, searched)
    if outcome.best is not None:
        write_best(run_dir, outcome.best)
    return outcome


def _trial_statuses(result_grid, rows: list[dict], config: Config) -> dict[str, str]:
    """finished / stopped early (by the scheduler) / failed, per trial id."""
    epochs_done: dict[str, int] = {}
    for row in rows:
        epochs_done[row["trial_id"]] = max(epochs_done.get(row["trial_id"], 0), row["epoch"])
    statuses = {}
    for result in result_grid:
        trial_id = result.metrics.get("trial_id") if result.metrics else None
        trial_id = trial_id or Path(result.path).name
        if result.error is not None:
            statuses[trial_id] = "failed"
            continue
        planned = (result.config or {}).get("num_epochs", config.train.num_epochs)
        statuses[trial_id] = "finished" if epochs_done.get(trial_id, 0) >= planned else "stopped early"
    return statuses


def print_summary(outcome: SearchOutcome, config: Config, console: Console | None = None) -> None:
    console = console or make_console()
    print_epochs_table(outcome.rows, config.metric, config.search.mode, list(config.search.space), outcome.statuses, console)
    if outcome.best:
        best = outcome.best
        console.print(
            f"best: trial {best.trial_id} epoch {best.metrics['epoch']} eval_{config.metric}="
            f"{best.metrics[f'eval_{config.metric}']:.4f} with {best.config or 'the fixed train values'}"
        )
    console.print(f"search took {outcome.seconds:.0f}s")
