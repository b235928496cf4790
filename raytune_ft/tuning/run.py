"""The whole search, as a short sequence of named steps (run_search):

  prepare the data -> start or join Ray -> check what the cluster offers -> open the run folder
  -> build (tuner.py) or restore the Tuner -> fit -> confirm stage -> tidy up
  -> pick the winner -> evaluate it on the test split.

Tokenized data is prepared once, before Ray starts, and handed to every trial through Ray's
object store. The tidy-up runs whatever happens (Ctrl-C, a crash) in a fixed order: stop the
progress footer, stop Ray, set the environment back, prune checkpoints, then mark the end in
search.json, which `report` and `--resume` read.
"""

from __future__ import annotations

import math
import os
import shutil
import socket
import sys
import time
import warnings
from contextlib import ExitStack
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import ray
from ray import tune
from rich.console import Console

from raytune_ft.config import Config, ConfigError
from raytune_ft.data.tokenized import load_tokenized, prepare_tokenized_copies
from raytune_ft.environment import (
    MALLOC_SETTINGS,
    RAY_TRAIN_SETTINGS,
    TUNE_SETTINGS,
    environment,
    not_exported,
    set_defaults,
)
from raytune_ft.report.summary import search_best, search_status, silent_for, summarize_run
from raytune_ft.report.tables import make_console
from raytune_ft.run_folder import (
    CONFIG_FILE,
    Best,
    any_trial_cut_off,
    claim_new_run_dir,
    claim_run_dir,
    ended_trials,
    read_epochs,
    read_search_state,
    write_best,
    write_search_state,
)
from raytune_ft.training.trial import run_trial
from raytune_ft.tuning.checkpoints import PbtCheckpointBound, checkpoint_bytes, prune_ended_trials
from raytune_ft.tuning.cluster import (
    alive_nodes,
    check_storage_is_shared,
    own_local_runtime_address,
    storage_root,
    trial_resources,
)
from raytune_ft.tuning.confirm import CONFIRM_DIR, run_confirm
from raytune_ft.tuning.progress import SearchProgress
from raytune_ft.tuning.run_log import RunFolderLog
from raytune_ft.tuning.study import OptunaStudyLog
from raytune_ft.tuning.tracking import check_tracking_available, tracking_callbacks
from raytune_ft.tuning.tuner import (
    TUNE_DIR,
    algorithm_words,
    build_tuner,
    objective_words,
    planned_trials,
    restore_tuner,
    scheduler_words,
)
from raytune_ft.tuning.warm_start import load_warm_start


@dataclass
class SearchOutcome:
    run_dir: Path
    outcome: str  # finished | interrupted
    best: Best | None = None


@dataclass
class Placement:
    """What the Ray cluster gives the search: where trials write, how many run at once, and
    what Tune reserves for each trial's own process."""

    storage: str
    max_concurrent: int
    resources_per_trial: dict


def run_search(
    config: Config,
    address: str | None = None,
    console: Console | None = None,
    verbose: bool = False,
    quiet: bool = False,
    resume_dir: Path | None = None,
    takeover: bool = False,
) -> SearchOutcome:
    """A new search, or with resume_dir the interrupted search in that run folder (whose
    config.yaml `config` was read from): finished trials stay as they are, unfinished ones
    start again from their latest checkpoint, and the searcher goes on where it stopped.
    takeover: resume a search that seems to run on another machine (the user knows it is lost)."""
    console = console or make_console()
    # This process alone writes the run folder until the search ends (RunFolderLock).
    if resume_dir:
        run_dir = Path(resume_dir).resolve()
        lock = claim_run_dir(run_dir)
    else:
        run_dir, lock = claim_new_run_dir(config.output.dir, config.output.name, config.task)
    try:
        return search_in(run_dir, config, address, console, verbose, quiet, resumed=bool(resume_dir), takeover=takeover)
    finally:
        lock.release()


def search_in(
    run_dir: Path,
    config: Config,
    address: str | None,
    console: Console,
    verbose: bool,
    quiet: bool,
    resumed: bool,
    takeover: bool = False,
) -> SearchOutcome:
    """The search's steps, in a run folder this process holds (new, or resumed)."""
    storage = storage_root(config, run_dir)
    if resumed:
        check_resumable(run_dir, f"{storage}/{TUNE_DIR}", takeover)
    else:
        check_storage_unused(storage)
    check_tracking_available(config)
    # Earlier searches' trials for the searcher (read and checked before Ray starts).
    warm_trials, warm_notes = load_warm_start(config) if not resumed else ([], [])
    # Data first: bad data is reported before Ray starts and before the run folder exists.
    data_paths = prepare_data(config, console, quiet)
    ray_runtime = start_ray(address, verbose)
    placement = check_cluster(config, storage, resumed, ray_runtime)
    state = open_run_folder(config, run_dir, resume=resumed)
    progress = SearchProgress(console, config.metric, config.search.mode, planned_trials(config), quiet=quiet)
    set_defaults({**TUNE_SETTINGS, **RAY_TRAIN_SETTINGS})
    # Tune advises reuse_actors for PBT: one-worker trials have it (tuner.reuses_trial_processes);
    # a TorchTrainer trial cannot be reset and restarts in a new driver by design (training/pbt_relay.py).
    warnings.filterwarnings("ignore", message="Consider boosting PBT performance")
    outcome, confirmed = "failed", None
    try:
        ended = ended_trials(run_dir) if resumed else {}
        trial_kwargs = trial_arguments(config, data_paths, placement.storage, ended)
        trainable = tune.with_resources(tune.with_parameters(run_trial, **trial_kwargs), placement.resources_per_trial)
        under_pbt = config.search.scheduler == "pbt"
        # Prune as trials end, not only when the search ends; under PBT a paused clone may still
        # restart from an ended donor's checkpoint (the one of its last perturbation step, which
        # need not be its latest), so there only at the end, and PbtCheckpointBound meanwhile.
        prune = None if under_pbt else partial(prune_checkpoints, config, run_dir, placement.storage)
        run_log = RunFolderLog(run_dir, config, progress, pbt=under_pbt, ended=set(ended), on_trial_end=prune)
        # optuna.db, for `raytune-ft dashboard` (tuning/study.py), whatever the search algorithm.
        callbacks = [run_log, OptunaStudyLog(run_dir, config), *tracking_callbacks(config, run_dir)]
        if under_pbt:
            callbacks.append(pbt_checkpoint_bound(config, run_dir, placement.storage))
        if resumed:
            tuner = restore_tuner(trainable, placement.storage, callbacks)
            _say(console, quiet, f"resuming the search in {run_dir}")
        else:
            announce(config, placement.max_concurrent, console, quiet)
            for note in warm_notes:
                _say(console, quiet, note)
            tuner = build_tuner(config, trainable, placement.storage, callbacks, placement.max_concurrent, warm_trials)
        progress.start()
        tuner.fit()
        # Tune returns normally after a Ctrl-C; the trials it cut off were marked interrupted.
        outcome = "interrupted" if any_trial_cut_off(run_dir) else "finished"
        if outcome == "finished" and config.confirm.top_k:
            progress.stop()
            confirmed = run_confirm(
                config,
                run_dir,
                trial_kwargs=trial_kwargs,
                console=console,
                quiet=quiet,
                resources_per_trial=placement.resources_per_trial,
                max_concurrent=placement.max_concurrent,
                storage=placement.storage,
            )
            outcome = confirmed.outcome
    except KeyboardInterrupt:
        outcome = "interrupted"
        raise
    finally:
        tidy_up(config, run_dir, state, outcome, progress, ray_runtime, placement.storage)

    best = pick_winner(config, run_dir, confirmed)
    if best is not None and config.test.evaluate and outcome == "finished":
        from raytune_ft.tuning.holdout import evaluate_winner_on_test

        evaluate_winner_on_test(config, best, data_paths[config.for_trial(best.config).data_key][0], run_dir)
    return SearchOutcome(run_dir=run_dir, outcome=outcome, best=best)


# ---------------------------------------------------------------------------------------
# The steps


def prepare_data(config: Config, console: Console, quiet: bool) -> dict[tuple[str, int], tuple[Path, bool]]:
    """The data tokenized for every model and max_length a trial can use, and a test split checked if asked for."""
    data_paths = prepare_tokenized_copies(config)
    for (model, length), (data_path, was_cached) in data_paths.items():
        which = []  # what tells the copies apart: the searched ones of model and max_length
        if len(config.models()) > 1:
            which.append(f"model {model}")
        if len(config.max_lengths()) > 1:
            which.append(f"max_length {length}")
        at = f" ({', '.join(which)})" if which else ""
        _say(console, quiet, f"tokenized data{at}: {data_path} ({'cache hit' if was_cached else 'tokenized now'})")
    if config.test.evaluate:
        # Imported here, not at the top: holdout brings in evaluate and accelerate (seconds
        # of imports on 2 CPUs) that a search without a test split never uses.
        from raytune_ft.tuning.holdout import check_test_split

        (data_path, _), *_ = data_paths.values()  # every copy holds the same splits
        check_test_split(config, data_path)
    return data_paths


def start_ray(address: str | None, verbose: bool) -> ExitStack:
    """Join the cluster at `address`, or start a fresh local Ray runtime of our own; closing
    the returned stack sets back the environment the local runtime was started with."""
    # address "local": always a fresh Ray runtime of our own, never a cluster some other
    # process started with `ray start` on this machine (ray.init() would attach to that).
    local_runtime = ExitStack()
    if not address:
        local_runtime.enter_context(own_local_runtime_address())
        # Ray starts the runtime's processes now; its trial processes inherit these.
        local_runtime.enter_context(environment(not_exported(MALLOC_SETTINGS)))
    ray.init(address=address or "local", log_to_driver=verbose, configure_logging=verbose)
    return local_runtime


def check_cluster(config: Config, storage: str, resumed: bool, ray_runtime: ExitStack) -> Placement:
    """What the cluster must offer is checked before the run folder exists; on a refusal Ray stops
    and nothing is left behind (the storage folder the shared-storage check made goes too)."""
    made_here = outermost_missing(Path(storage)) if "://" not in storage else None
    try:
        if not resumed:  # (a resumed search was checked before its data was prepared)
            check_storage_is_shared(config, storage)
        return Placement(storage, concurrent_trials(config), trial_resources(config))
    except BaseException:
        ray.shutdown()
        ray_runtime.close()
        if made_here and made_here.is_dir() and not any(path.is_file() for path in made_here.rglob("*")):
            shutil.rmtree(made_here)
        raise


def outermost_missing(path: Path) -> Path | None:
    """The outermost folder on the way to path that does not exist yet (None: path exists)."""
    missing = None
    for folder in [path, *path.parents]:
        if folder.exists():
            break
        missing = folder
    return missing


def open_run_folder(config: Config, run_dir: Path, resume: bool) -> dict:
    """config.yaml and search.json for a new search; for a resumed one, its search.json marked
    as running again. No end mark in search.json + this process gone = interrupted."""
    if resume:
        state = read_search_state(run_dir)
        state["resumed_at"] = [*state.get("resumed_at", []), time.time()]
    else:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / CONFIG_FILE).write_text(config.to_yaml(), encoding="utf-8")
        state = {"started_at": time.time()}
    state.update(ended_at=None, outcome=None, pid=os.getpid(), hostname=socket.gethostname())
    write_search_state(run_dir, state)
    return state


def trial_arguments(config: Config, data_paths: dict, storage: str, ended: dict) -> dict:
    """What every trial driver gets besides its hyperparameters (tune.with_parameters); ended:
    the trials a resumed search must not train again (training/trial.run_trial)."""
    # Into the object store once; every trial's workers read the same copy (models whose
    # tokenizers tokenize alike share one: the same cache folder).
    refs = {path: ray.put(load_tokenized(path, in_memory=True)) for path, _ in set(data_paths.values())}
    data_refs = {key: refs[path] for key, (path, _) in data_paths.items()}
    return {
        "base_config": config.model_dump(),
        "data": [data_refs],
        "storage_path": f"{storage}/trials",
        "relay_to_tune": config.search.scheduler == "pbt",
        "ended": ended,
        "model_folders": relative_model_folders(config),
    }


def relative_model_folders(config: Config) -> dict[str, str]:
    """{model: its absolute folder} for the models named by a relative folder (./my-bert): found
    from here, but a trial's process runs in a working directory of its own (Ray Tune's)."""
    folders = {}
    for model in config.models():
        path = Path(os.path.expandvars(model)).expanduser()
        if not path.is_absolute() and path.is_dir():  # (data/sources.resolve_model_path checked it)
            folders[model] = str(path.resolve())
    return folders


def announce(config: Config, max_concurrent: int, console: Console, quiet: bool) -> None:
    searched = ", ".join(config.search.space) or "nothing (fixed values)"
    _say(
        console,
        quiet,
        f"searching {searched}: {planned_trials(config)} trials ({algorithm_words(config)}), {max_concurrent} at a time, "
        f"scheduler {scheduler_words(config)}, {objective_words(config)}",
    )
    if config.search.scheduler == "pbt" and planned_trials(config) > max_concurrent:
        _say(
            console,
            quiet,
            f"note: PBT ranks and copies only trials running together: {max_concurrent} at a time; "
            "the later trials start as earlier ones end (lower search.num_samples or give more resources)",
        )


def tidy_up(
    config: Config,
    run_dir: Path,
    state: dict,
    outcome: str,
    progress: SearchProgress,
    ray_runtime: ExitStack,
    storage: str,
) -> None:
    """Whatever ended the search: stop, prune, and mark the end (in this order)."""
    progress.stop()
    ray.shutdown()
    ray_runtime.close()
    prune_checkpoints(config, run_dir, storage)
    # The confirm runs: each keeps its best epoch (the winner is picked by the mean over a candidate's runs).
    warn_all(prune_ended_trials(run_dir / CONFIRM_DIR, storage, config.metric, config.search.mode))
    state = {**state, **read_search_state(run_dir)}  # with the heartbeats written since it started
    state.update(ended_at=time.time(), outcome=outcome, checkpoint_bytes=checkpoint_bytes(storage))
    write_search_state(run_dir, state)


def prune_checkpoints(config: Config, run_dir: Path, storage: str) -> None:
    """output.keep_checkpoints: the best ended trials keep their best epoch's checkpoint, the rest none
    (search.objectives: the trials on the Pareto front keep theirs too)."""
    warn_all(
        prune_ended_trials(
            run_dir, storage, config.metric, config.search.mode, config.output.kept_trials, config.objectives
        )
    )


def pbt_checkpoint_bound(config: Config, run_dir: Path, storage: str) -> PbtCheckpointBound:
    """Under PBT, what Tune keeps of each trial while the search runs: a few checkpoints, not one per epoch."""
    interval = config.search.perturbation_interval
    return PbtCheckpointBound(run_dir, storage, config.metric, config.search.mode, interval, warn_all)


def warn_all(problems: list[str]) -> None:
    for problem in problems:
        print(f"warning: {problem}", file=sys.stderr)


def pick_winner(config: Config, run_dir: Path, confirmed) -> Best | None:
    """The best epoch of the search (search.objectives: with the Pareto front), or with a confirm
    stage the config with the best mean over new seeds; written to best.json."""
    best = search_best(config, read_epochs(run_dir))
    if confirmed is not None and confirmed.best is not None:
        best = confirmed.best
    if best is not None:
        comparison = summarize_run(run_dir).baseline
        best.against_baseline = comparison.to_json() if comparison else None
        write_best(run_dir, best)
    return best


def concurrent_trials(config: Config) -> int:
    """How many trials fit at once in what the Ray cluster has (refused where not even one does)."""
    fits = trials_that_fit(config)
    return config.resources.max_concurrent_trials or fits


def trials_that_fit(config: Config) -> int:
    """Trials the cluster can run at once; a trial none of its nodes can hold a worker of, or that
    the whole cluster cannot hold, is refused now: Tune would wait for resources forever."""
    resources = config.resources
    worker = {"CPU": resources.cpus_per_worker, "GPU": resources.gpus_per_worker}
    nodes = [node.get("Resources", {}) for node in alive_nodes()]
    available = ray.cluster_resources()
    fits = min(
        int(math.floor(available.get(kind, 0) / (need * resources.num_workers) + 1e-9))
        for kind, need in worker.items()
        if need > 0
    )
    holds_a_worker = any(all(node.get(kind, 0) + 1e-9 >= need for kind, need in worker.items()) for node in nodes)
    if fits < 1 or not holds_a_worker:
        biggest = max(nodes, key=lambda node: (node.get("CPU", 0), node.get("GPU", 0)), default={})
        raise ConfigError(
            f"resources: one trial needs {resources.num_workers} worker(s) of {worker['CPU']:g} CPU and {worker['GPU']:g} GPU; "
            f"the Ray cluster has {available.get('CPU', 0):g} CPU and {available.get('GPU', 0):g} GPU, its biggest node "
            f"{biggest.get('CPU', 0):g} CPU and {biggest.get('GPU', 0):g} GPU; lower resources.*"
        )
    return fits


def check_storage_unused(storage: str) -> None:
    """A new search must not write into another search's results (output.storage_path/<name>
    used before): their trials and checkpoints would mix, and the first one's could be pruned."""
    if "://" not in storage and (Path(storage) / TUNE_DIR).exists():
        raise ConfigError(
            f"output.storage_path: {storage} already holds another search's results; "
            "choose another output.name, or remove that folder"
        )


def check_resumable(run_dir: Path, tune_dir: str, takeover: bool = False) -> None:
    state = read_search_state(run_dir)
    if search_status(state) == "running":
        if state.get("hostname") == socket.gethostname():
            raise ConfigError(
                f"--resume {run_dir}: its search is still running (process {state.get('pid')}); wait or stop it first"
            )
        if not takeover:
            raise ConfigError(
                f"--resume {run_dir}: its search runs on {state.get('hostname')} (process {state.get('pid')}, "
                f"last heard from {silent_for(state):.0f} s ago); wait, or if that machine is gone, add --takeover"
            )
    if state.get("outcome") == "finished":
        raise ConfigError(
            f"--resume {run_dir}: this search finished; start a new one (another output.name) to search more"
        )
    if not tune.Tuner.can_restore(tune_dir):
        why = (
            "it was lost or not copied with the run folder; report still reads the results, a new search goes on"
            if read_epochs(run_dir)
            else "the search stopped before its first trial, start it anew"
        )
        raise ConfigError(f"--resume {run_dir}: no Ray Tune state under {tune_dir}; {why}")


def _say(console: Console, quiet: bool, line: str) -> None:
    if not quiet:
        console.print(line)
