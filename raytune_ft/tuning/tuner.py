"""The search set-up, as Ray Tune's examples declare one: `build_tuner` puts the param space,
the searcher, the scheduler, TuneConfig and RunConfig together on one screen.

  search space (from search.space) -> OptunaSearch (the config's own values evaluated first)
  -> scheduler (ASHA stops weak trials by epoch; PBT; FIFO) -> Tuner over the trial driver,

and the trial driver (training/trial.py) runs `training_function` in the trial's own process (one
worker) or in the workers of a Ray Train TorchTrainer (several). The functions above
build_tuner each make one of its parts from the config.
"""

from __future__ import annotations

import math

import optuna
from ray import tune
from ray.tune.schedulers import FIFOScheduler
from ray.tune.search import BasicVariantGenerator, Searcher

from raytune_ft.config import Config, inside_space
from raytune_ft.tuning.leader import LeaderKeepingASHA, SearchLeader
from raytune_ft.tuning.pbt import build_pbt_scheduler
from raytune_ft.tuning.searcher import BestEpochOptunaSearch

TUNE_DIR = "tune"  # Ray Tune's experiment folder, under the search's storage


def build_tuner(
    config: Config, trainable, storage: str, callbacks: list, max_concurrent: int, warm_trials: list = ()
) -> tune.Tuner:
    """The Tuner of a new search; `trainable` is the trial driver with its resources; warm_trials:
    earlier searches' trials for the searcher to learn from first (tuning/warm_start.py)."""
    search_alg = build_search_algorithm(config, max_concurrent, warm_trials)
    return tune.Tuner(
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
        run_config=tune.RunConfig(
            name=TUNE_DIR, storage_path=storage, callbacks=callbacks, verbose=0, **tune_trial_settings(config)
        ),
    )


def restore_tuner(
    trainable, storage: str, callbacks: list, name: str = TUNE_DIR, param_space: dict | None = None
) -> tune.Tuner:
    """The Tuner of an interrupted search (or confirm stage: name), from the state Ray Tune saved in
    its storage. param_space: where the space holds functions (Tune saves placeholders for them)."""
    # Failed trials (a diverged loss, a bug) stay failed: running them again gives the same.
    tuner = tune.Tuner.restore(
        f"{storage}/{name}", trainable, resume_unfinished=True, resume_errored=False, param_space=param_space
    )
    # The restored run config holds the callbacks pickled by the first run: use this run's.
    tuner._local_tuner.get_run_config().callbacks = callbacks
    return tuner


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
    defaults = {key: config.value_of(key) for key in config.search.space}
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
    differ from the search's: so Tune's TuneConfig gets none, and the searcher gets the search's.
    Neither stops the trial that leads on the search's metric (tuning/leader.py)."""
    metric, mode = config.scheduler_metric
    leader = SearchLeader(f"eval_{config.metric}", config.search.mode)
    if config.search.scheduler == "pbt":
        return build_pbt_scheduler(config, build_param_space(config), metric, mode, leader)
    if config.search.scheduler == "asha":
        # One Tune iteration = one reported epoch.
        return LeaderKeepingASHA(
            leader=leader,
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


def algorithm_words(config: Config) -> str:
    """The search algorithm, and when Optuna's model takes over from random suggestions."""
    if config.search.algorithm in ("tpe", "gp") and config.search.space:
        # Optuna's gp (log expected hypervolume improvement) and tpe both model two objectives.
        goals = ", multi-objective" if config.objectives else ""
        return f"{config.search.algorithm}{goals}, model-based once {startup_trials(config)} have finished"
    return config.search.algorithm


def objective_words(config: Config) -> str:
    """What the search optimizes: its metric, or with search.objectives the metric and the cost."""
    if not config.objectives:
        return f"metric eval_{config.metric} ({config.search.mode})"
    pairs = " and ".join(f"{key} ({mode})" for key, mode in config.objectives)
    return f"objectives {pairs}, the Pareto front of both"


def build_search_algorithm(
    config: Config, max_concurrent: int = 0, warm_trials: list = ()
) -> Searcher | BasicVariantGenerator | None:
    if not config.search.space or config.search.algorithm == "grid":
        return None  # Tune's own generator: the grid, or num_samples repeats of the fixed train values
    if config.search.algorithm == "random":
        # Tune ignores max_concurrent_trials for a generator passed in (seen: all trials started at once).
        return BasicVariantGenerator(
            points_to_evaluate=points_to_evaluate(config) or None,
            random_state=config.search.seed,
            max_concurrent=max_concurrent,
        )
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # not "A new study created in memory" in our output
    # Points an earlier search already ran (warm start) are not run again.
    ran = [warm.params for warm in warm_trials]
    points = [point for point in points_to_evaluate(config) if point not in ran]
    # Told each trial's best epoch, as the winner is picked (tuning/searcher.py); with
    # search.objectives, that epoch's metric and cost (a study of two directions).
    return BestEpochOptunaSearch(
        planned_epochs=config.train.num_epochs,
        tell_stopped_as_pruned=config.search.algorithm == "tpe",  # GPSampler ignores pruned trials
        warm_trials=warm_trials,
        objectives=config.objectives,
        points_to_evaluate=points or None,
        sampler=build_optuna_sampler(config),
        metric=f"eval_{config.metric}",
        mode=config.search.mode,
    )


def build_optuna_sampler(config: Config) -> optuna.samplers.BaseSampler:
    search = config.search
    if search.algorithm == "gp":
        # deterministic_objective=False: two trainings of one config differ (data order, dropout).
        return optuna.samplers.GPSampler(seed=search.seed, n_startup_trials=startup_trials(config))
    return optuna.samplers.TPESampler(
        seed=search.seed, multivariate=search.multivariate, n_startup_trials=startup_trials(config)
    )


def startup_trials(config: Config) -> int:
    """Finished trials Optuna waits for before its model suggests the next one: the config's
    n_startup_trials, or else a quarter of the budget, 2 to 10. The points tried first count among
    them (Ray's OptunaSearch enqueues them as trials). Suggestions made while fewer have finished
    are random: an 8-trial search, 2 at a time, is the baseline and 2 random trials, then 5 the
    model suggests."""
    if config.search.n_startup_trials is not None:
        return config.search.n_startup_trials
    return max(2, min(10, config.search.num_samples // 4))


def tune_max_concurrent_trials(search_alg, max_concurrent: int) -> int | None:
    """TuneConfig's limit on trials at a time: None for a BasicVariantGenerator, which holds the limit
    itself (Tune would ignore this one and warn that it does)."""
    return None if isinstance(search_alg, BasicVariantGenerator) else max_concurrent


def reuses_trial_processes(config: Config) -> bool:
    """Whether one trial process serves trial after trial: no process start and imports (torch,
    transformers: seconds) per trial. With FIFO every trial runs to its end. With ASHA, a trial
    that trains in its own process waits inside tune.report() for Tune's go-ahead after every
    epoch, so when ASHA stops it, it leaves at once as the next trial starts; when PBT pauses it
    (to restart it from a stronger trial's checkpoint, or to wait for the others under synch),
    the same, and its restart may run in that process or another one. A TorchTrainer's driver
    would still be inside trainer.fit() with its workers training: Tune's reset waits 2 s for it
    and otherwise fails the next trial."""
    return config.search.scheduler == "fifo" or (
        config.search.scheduler in ("asha", "pbt") and config.trains_in_trial_process
    )


def tune_trial_settings(config: Config) -> dict:
    """Restarts and checkpoints of trials that train in their own process are Tune's to keep
    (those of a TorchTrainer are Ray Train's, training/trial.py): as Ray Train would, a trial whose
    process dies starts again from its latest checkpoint, and Tune keeps the best one (the
    newest epoch that improved) and the latest one. Under PBT, Tune is told to keep them all: a
    weak trial restarts from a strong one's checkpoint, which may no longer be that trial's latest
    by the time the clone starts (Ray warns of num_to_keep <= 2 with PBT); PbtCheckpointBound
    drops those nothing can use while the search runs, and prune_ended_trials when it ends."""
    if not config.trains_in_trial_process:
        return {}
    keep_all = config.search.scheduler == "pbt"
    return {
        "failure_config": tune.FailureConfig(max_failures=config.resources.max_failures),
        "checkpoint_config": tune.CheckpointConfig()
        if keep_all
        else tune.CheckpointConfig(
            num_to_keep=1, checkpoint_score_attribute="best_so_far", checkpoint_score_order="max"
        ),
    }
