"""The search: a Ray Tune Tuner whose trials each run the training loop.

Declared in one place, as Ray Tune's examples read:
  search space (from search.space) -> OptunaSearch (defaults evaluated first)
  -> scheduler (ASHA stops weak trials by epoch) -> Tuner over `run_trial`,
and `run_trial` (trial.py) runs `training_function` in the trial's own process (one worker)
or in the workers of a Ray Train TorchTrainer (several). Tokenized data is prepared once,
before Ray starts, and handed to every trial through Ray's object store.
"""

from __future__ import annotations

import math
import os
import socket
import time
import warnings
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import optuna
import ray
from ray import tune
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
from ray.tune.search import BasicVariantGenerator, Searcher
from ray.tune.search.optuna import OptunaSearch
from rich.console import Console

from raytune_ft.checkpoints import checkpoint_bytes, prune_ended_trials
from raytune_ft.cluster import (
    MALLOC_SETTINGS,
    check_storage_is_shared,
    environment,
    own_local_runtime_address,
    storage_root,
    trial_resources,
)
from raytune_ft.config import Config, ConfigError, inside_space
from raytune_ft.data import load_tokenized, prepare_tokenized_lengths
from raytune_ft.pbt import build_pbt_scheduler
from raytune_ft.progress import SearchProgress
from raytune_ft.results import (
    CONFIG_FILE,
    Best,
    append_epoch,
    any_trial_cut_off,
    append_trial_event,
    find_best,
    make_console,
    read_epochs,
    read_search_state,
    write_best,
    write_search_state,
)
from raytune_ft.summary import search_status, trial_devices
from raytune_ft.tracking import check_tracking_available, tracking_callbacks
from raytune_ft.trial import run_trial


# ---------------------------------------------------------------------------------------
# Search space, search algorithm, scheduler


def build_param_space(config: Config) -> dict:
    samplers = {
        "loguniform": lambda a: tune.loguniform(*a),
        "uniform": lambda a: tune.uniform(*a),
        "randint": lambda a: tune.randint(int(a[0]), int(a[1])),
        "choice": lambda a: tune.choice(a),
    }
    if config.search.algorithm == "grid":  # every combination (config.py checked: choice lists only)
        samplers["choice"] = lambda a: tune.grid_search(a)
    return {key: samplers[name](args) for key, spec in config.search.space.items() for name, args in spec.items()}


def planned_trials(config: Config) -> int:
    """How many trials the search runs: num_samples, or for grid num_samples passes over the grid."""
    if config.search.algorithm != "grid":
        return config.search.num_samples
    return config.search.num_samples * math.prod(len(spec["choice"]) for spec in config.search.space.values())


def points_to_evaluate(config: Config) -> list[dict]:
    """The points tried first: the config's list (completed with train.* values), or else
    the config's own train.* values when the space holds them."""
    defaults = {key: config.train_value(key) for key in config.search.space}
    if config.search.points_to_evaluate is not None:
        return [{**defaults, **point} for point in config.search.points_to_evaluate]
    if not all(inside_space(config.search.space[key], value) for key, value in defaults.items()):
        return []
    return [defaults] if defaults else []


def max_epochs(config: Config) -> int:
    spec = config.search.space.get("num_epochs")
    if not spec:
        return config.train.num_epochs
    sampler, args = next(iter(spec.items()))
    return int(max(args) if sampler == "choice" else (args[1] - 1 if sampler == "randint" else args[1]))


def build_scheduler(config: Config):
    """ASHA and PBT get their own metric (config.scheduler_metric, eval_loss by default), which may
    differ from the search's: so Tune's TuneConfig gets none, and the searcher gets the search's."""
    metric, mode = config.scheduler_metric
    if config.search.scheduler == "pbt":
        return build_pbt_scheduler(config, build_param_space(config), metric, mode)
    if config.search.scheduler == "asha":
        # One Tune iteration = one reported epoch.
        return ASHAScheduler(
            metric=metric,
            mode=mode,
            # The trial's own epoch count, not Tune's iteration count: a trial restarted by
            # a resumed search goes on at epoch k+1, while Tune counts its reports from 1 again.
            time_attr="epoch",
            max_t=max_epochs(config),
            grace_period=min(config.search.grace_period, max_epochs(config)),
            reduction_factor=config.search.reduction_factor,
        )
    return FIFOScheduler()


def scheduler_words(config: Config) -> str:
    """The scheduler, and what it ranks trials on where that is not the search's metric."""
    metric, _ = config.scheduler_metric
    if config.search.scheduler == "fifo" or metric == f"eval_{config.metric}":
        return config.search.scheduler
    return f"{config.search.scheduler} (ranks trials on {metric})"


def build_search_algorithm(config: Config, max_concurrent: int = 0) -> Searcher | BasicVariantGenerator | None:
    if not config.search.space or config.search.algorithm == "grid":
        return None  # Tune's own generator: the grid, or num_samples repeats of the fixed train values
    if config.search.algorithm == "random":
        # Tune ignores max_concurrent_trials for a generator passed in (seen: all trials started at once).
        return BasicVariantGenerator(
            points_to_evaluate=points_to_evaluate(config) or None, random_state=config.search.seed, max_concurrent=max_concurrent
        )
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # not "A new study created in memory" in our output
    sampler = optuna.samplers.TPESampler(
        seed=config.search.seed,
        multivariate=config.search.multivariate,
        n_startup_trials=config.search.n_startup_trials,
    )
    return OptunaSearch(points_to_evaluate=points_to_evaluate(config) or None, sampler=sampler,
                        metric=f"eval_{config.metric}", mode=config.search.mode)


def tune_max_concurrent_trials(search_alg, max_concurrent: int) -> int | None:
    """TuneConfig's limit on trials at a time: None for a BasicVariantGenerator, which holds the limit
    itself (Tune would ignore this one and warn that it does)."""
    return None if isinstance(search_alg, BasicVariantGenerator) else max_concurrent


# ---------------------------------------------------------------------------------------
# The run folder's records, written as the search goes


class RunFolderLog(tune.Callback):
    """Appends every reported epoch to epochs.jsonl and every trial start and end to
    trials.jsonl, as they happen, so the run folder alone tells what happened (also for an
    interrupted or still running search)."""

    def __init__(self, run_dir: Path, config: Config, progress: SearchProgress | None = None, pbt: bool = False):
        self.run_dir, self.progress = run_dir, progress
        self.default_epochs = config.train.num_epochs
        self.pbt = pbt  # every epoch reaches Tune with its checkpoint before PBT restarts a trial
        self.device_type, self.devices = trial_devices(config.resources)
        self.started: dict[str, float] = {}
        self.epochs_done: dict[str, int] = {}

    def on_trial_start(self, iteration, trials, trial, **info):
        if trial.trial_id in self.started:
            # PBT paused it, or restarted it from a stronger trial's checkpoint with new values.
            checkpoint = trial.checkpoint.path if trial.checkpoint else None
            append_trial_event(self.run_dir, {"event": "restarted", "trial_id": trial.trial_id, "time": time.time(),
                                              "config": trial.config, "from_checkpoint": checkpoint})
            return
        self.started[trial.trial_id] = time.time()
        event = {
            "event": "started", "trial_id": trial.trial_id, "time": self.started[trial.trial_id],
            "config": trial.config, "planned_epochs": self._planned(trial),
            "device_type": self.device_type, "devices": self.devices,
        }
        append_trial_event(self.run_dir, event)
        if self.progress:
            self.progress.trial_started(event)

    def on_trial_result(self, iteration, trials, trial, result, **info):
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
        append_epoch(self.run_dir, row)
        self.epochs_done[trial.trial_id] = result["epoch"]
        if self.progress:
            self.progress.epoch_reported(row)

    def on_trial_complete(self, iteration, trials, trial, **info):
        # Tune calls this both for trials that ran all their epochs and for those the scheduler stopped.
        done = self.epochs_done.get(trial.trial_id, 0)
        self._ended(trial, "finished" if done >= self._planned(trial) else "stopped early")

    def on_trial_error(self, iteration, trials, trial, **info):
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
            "event": status, "trial_id": trial.trial_id, "time": now, "config": trial.config,
            "epochs_done": self.epochs_done.get(trial.trial_id, 0), "wall_seconds": wall,
            "device_type": self.device_type, "devices": self.devices, "device_seconds": wall * self.devices,
        }
        if error:
            event["error"] = error
        append_trial_event(self.run_dir, event)
        if self.progress:
            self.progress.trial_ended(event)

    def _planned(self, trial) -> int:
        return int(trial.config.get("num_epochs", self.default_epochs))


# Ray Train settings a search changes unless the user set them. Tune hands these variables on
# to the trial drivers, and Ray Train to its controllers and workers.
RAY_TRAIN_SETTINGS = {
    # The controller polls its workers every 2 s by default, and each trial's end waits for the
    # next poll: 0.5 s cut a trial's last report -> trial end from 3.0 s to 1.0 s.
    "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.5",
    # Ray Train starts one more actor process per trial, a PreemptionWatcher, which only hands
    # node-drain notices to the training function. Our loop does not read them: a lost node is a
    # worker failure, restarted from the latest checkpoint (FailureConfig). One process less per
    # trial, though no shorter start-up was measured (BENCHMARKS.md, "The processes of a trial").
    "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0",
}

# What the loop reports besides eval_* / train_* metrics, kept in each epochs.jsonl row.
REPORTED_KEYS = (
    "learning_rate", "last_learning_rate",
    "examples_trained", "examples_trained_per_process", "examples_evaluated", "examples_evaluated_mm",
    "epoch_seconds", "node_id", "device", "num_processes", "checkpoint_path",
    "gpu_memory_peak_gib",  # on a GPU only
    # epoch 1: where start-up went
    "driver_started_at", "worker_started_at", "loop_started_at", "data_ready_at", "model_ready_at", "first_step_at",
    "best_so_far", "resumed_from_epoch",
)


def reuses_trial_processes(config: Config) -> bool:
    """Whether one trial process serves trial after trial: no process start and imports (torch,
    transformers: seconds) per trial. With FIFO every trial runs to its end. With ASHA, a trial
    that trains in its own process waits inside tune.report() for Tune's go-ahead after every
    epoch, so when ASHA stops it, it leaves at once as the next trial starts; when PBT pauses it
    (to restart it from a stronger trial's checkpoint, or to wait for the others under synch),
    the same, and its restart may run in that process or another one. A TorchTrainer's driver
    would still be inside trainer.fit() with its workers training: Tune's reset waits 2 s for it
    and otherwise fails the next trial."""
    return config.search.scheduler == "fifo" or (config.search.scheduler in ("asha", "pbt") and config.trains_in_trial_process)


def tune_trial_settings(config: Config) -> dict:
    """Restarts and checkpoints of trials that train in their own process are Tune's to keep
    (those of a TorchTrainer are Ray Train's, trial.py): as Ray Train would, a trial whose
    process dies starts again from its latest checkpoint, and Tune keeps the best one (the
    newest epoch that improved) and the latest one. Under PBT Tune keeps them all while the
    search runs: a weak trial restarts from a strong one's checkpoint, which may no longer be
    that trial's latest by the time the clone starts (Ray warns of num_to_keep <= 2 with PBT);
    prune_ended_trials bounds them once the search ends."""
    if not config.trains_in_trial_process:
        return {}
    keep_all = config.search.scheduler == "pbt"
    return {
        "failure_config": tune.FailureConfig(max_failures=config.resources.max_failures),
        "checkpoint_config": tune.CheckpointConfig() if keep_all else tune.CheckpointConfig(
            num_to_keep=1, checkpoint_score_attribute="best_so_far", checkpoint_score_order="max"
        ),
    }


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
    outcome: str  # finished | interrupted
    best: Best | None = None


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


def run_search(
    config: Config,
    address: str | None = None,
    console: Console | None = None,
    verbose: bool = False,
    quiet: bool = False,
    resume_dir: Path | None = None,
) -> SearchOutcome:
    """A new search, or with resume_dir the interrupted search in that run folder (whose
    config.yaml `config` was read from): finished trials stay as they are, unfinished ones
    start again from their latest checkpoint, and the searcher goes on where it stopped."""
    console = console or make_console()
    run_dir = Path(resume_dir).resolve() if resume_dir else new_run_dir(config)
    check_tracking_available(config)
    # Data first: bad data is reported before Ray starts and before the run folder exists.
    data_paths = prepare_tokenized_lengths(config)
    if not quiet:
        for length, (data_path, was_cached) in data_paths.items():
            at = f" (max_length {length})" if len(data_paths) > 1 else ""
            console.print(f"tokenized data{at}: {data_path} ({'cache hit' if was_cached else 'tokenized now'})")
    if config.test.evaluate:
        # Imported here, not at the top: holdout brings in evaluate and accelerate (seconds
        # of imports on 2 CPUs) that a search without a test split never uses.
        from raytune_ft.holdout import check_test_split

        check_test_split(config, data_paths[config.max_length][0])

    # address "local": always a fresh Ray runtime of our own, never a cluster some other
    # process started with `ray start` on this machine (ray.init() would attach to that).
    local_address = ExitStack()
    if not address:
        local_address.enter_context(own_local_runtime_address())
        # Ray starts the runtime's processes now; its trial processes inherit these.
        local_address.enter_context(environment({k: v for k, v in MALLOC_SETTINGS.items() if k not in os.environ}))
    ray.init(address=address or "local", log_to_driver=verbose, configure_logging=verbose)
    try:
        # What the cluster must offer is checked before the run folder exists.
        storage = storage_root(config, run_dir)
        if resume_dir:
            check_resumable(run_dir, f"{storage}/tune")
        else:
            check_storage_is_shared(config, storage)
        max_concurrent = concurrent_trials(config)
        resources_per_trial = trial_resources(config)
    except BaseException:
        ray.shutdown()
        local_address.close()
        raise

    if resume_dir:
        state = read_search_state(run_dir)
        state["resumed_at"] = [*state.get("resumed_at", []), time.time()]
    else:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / CONFIG_FILE).write_text(config.to_yaml(), encoding="utf-8")
        state = {"started_at": time.time()}
    state.update(ended_at=None, outcome=None, pid=os.getpid(), hostname=socket.gethostname())
    # No end mark in search.json + this process gone = interrupted; `report` relies on it.
    write_search_state(run_dir, state)
    outcome, confirmed = "failed", None
    progress = SearchProgress(console, config.metric, config.search.mode, planned_trials(config), quiet=quiet)

    # Ray's new console output always prints an experiment box and a TensorBoard hint that points
    # into Ray's temporary session folder; SearchProgress is the search's output instead.
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    # Tune saves which trials finished every 10 s or more; a search killed without warning
    # would then run a just-finished trial again when resumed. Its state is small: every 2 s.
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "2")
    # ...and saves it again whenever a trial has reported num_to_keep checkpoints (one per epoch
    # here), warning each time that this may be slow: it takes milliseconds, the warning a screen.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    for name, value in RAY_TRAIN_SETTINGS.items():
        os.environ.setdefault(name, value)
    # Tune advises reuse_actors for PBT: one-worker trials have it (reuses_trial_processes); a
    # TorchTrainer trial cannot be reset and restarts in a new driver by design (pbt.py).
    warnings.filterwarnings("ignore", message="Consider boosting PBT performance")
    try:
        # Into the object store once; every trial's workers read the same copy.
        data_refs = {length: ray.put(load_tokenized(path, in_memory=True)) for length, (path, _) in data_paths.items()}
        searched = list(config.search.space)
        under_pbt = config.search.scheduler == "pbt"
        trial_kwargs = {"base_config": config.model_dump(), "data": [data_refs], "storage_path": f"{storage}/trials",
                        "relay_to_tune": under_pbt}
        trainable = tune.with_resources(tune.with_parameters(run_trial, **trial_kwargs), resources_per_trial)
        callbacks = [RunFolderLog(run_dir, config, progress, pbt=under_pbt), *tracking_callbacks(config, run_dir)]
        if resume_dir:
            # Failed trials (a diverged loss, a bug) stay failed: running them again gives the same.
            tuner = tune.Tuner.restore(f"{storage}/tune", trainable, resume_unfinished=True, resume_errored=False)
            # The restored run config holds the callbacks pickled by the first run: use this run's.
            tuner._local_tuner.get_run_config().callbacks = callbacks
            if not quiet:
                console.print(f"resuming the search in {run_dir}")
        else:
            if not quiet:
                console.print(
                    f"searching {', '.join(searched) or 'nothing (fixed values)'}: {planned_trials(config)} trials "
                    f"({config.search.algorithm}), {max_concurrent} at a time, scheduler {scheduler_words(config)}, metric eval_{config.metric} ({config.search.mode})"
                )
                if under_pbt and planned_trials(config) > max_concurrent:
                    console.print(
                        f"note: PBT ranks and copies only trials running together: {max_concurrent} at a time; "
                        "the later trials start as earlier ones end (lower search.num_samples or give more resources)"
                    )
            search_alg = build_search_algorithm(config, max_concurrent)
            tuner = tune.Tuner(
                trainable,
                param_space=build_param_space(config),
                tune_config=tune.TuneConfig(
                    # No metric here: the scheduler and the searcher each have their own (build_scheduler).
                    search_alg=search_alg,
                    scheduler=build_scheduler(config),
                    num_samples=config.search.num_samples,
                    max_concurrent_trials=tune_max_concurrent_trials(search_alg, max_concurrent),
                    reuse_actors=reuses_trial_processes(config),
                ),
                run_config=tune.RunConfig(name="tune", storage_path=storage, callbacks=callbacks, verbose=0,
                                          **tune_trial_settings(config)),
            )
        progress.start()
        tuner.fit()
        # Tune returns normally after a Ctrl-C; the trials it cut off were marked interrupted.
        outcome = "interrupted" if any_trial_cut_off(run_dir) else "finished"
        if outcome == "finished" and config.confirm.top_k:
            from raytune_ft.confirm import run_confirm  # it imports this module

            progress.stop()
            confirmed = run_confirm(config, run_dir, trial_kwargs=trial_kwargs, resources_per_trial=resources_per_trial,
                                    max_concurrent=max_concurrent, storage=storage, console=console, quiet=quiet)
            outcome = confirmed.outcome
    except KeyboardInterrupt:
        outcome = "interrupted"
        raise
    finally:
        progress.stop()
        ray.shutdown()
        local_address.close()
        prune_ended_trials(run_dir, storage, config.metric, config.search.mode)
        prune_ended_trials(run_dir / "confirm", storage, config.metric, config.search.mode)  # the confirm stage's runs too
        state.update(ended_at=time.time(), outcome=outcome, checkpoint_bytes=checkpoint_bytes(storage))
        write_search_state(run_dir, state)

    best = find_best(read_epochs(run_dir), config.metric, config.search.mode, searched)
    if confirmed is not None and confirmed.best is not None:
        best = confirmed.best  # the config with the best mean over new seeds
    if best is not None:
        write_best(run_dir, best)
        if config.test.evaluate and outcome == "finished":
            from raytune_ft.holdout import evaluate_winner_on_test

            winner_length = best.config.get("max_length", config.max_length)
            evaluate_winner_on_test(config, best, data_paths[winner_length][0], run_dir)
    return SearchOutcome(run_dir=run_dir, outcome=outcome, best=best)


def check_resumable(run_dir: Path, tune_dir: str) -> None:
    state = read_search_state(run_dir)
    if search_status(state) == "running":
        raise ConfigError(f"--resume {run_dir}: its search is still running (process {state.get('pid')}); wait or stop it first")
    if state.get("outcome") == "finished":
        raise ConfigError(f"--resume {run_dir}: this search finished; start a new one (another output.name) to search more")
    if not tune.Tuner.can_restore(tune_dir):
        raise ConfigError(f"--resume {run_dir}: no Ray Tune state under {tune_dir}; the search stopped before its first trial, start it anew")
