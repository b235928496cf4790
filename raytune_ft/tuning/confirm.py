"""The confirm stage: the search's best configs trained again with new seeds, the winner by the mean.

Fine-tuning on small GLUE sets is seed-sensitive: the search's best trial is often only its
luckiest. With `confirm.top_k` > 0, once the search has finished:

1. candidates: the top_k distinct configs, ranked by each trial's best epoch on the search
   metric (epochs.jsonl), and the baseline (the config's own values) if not among them;
2. seeds: `confirm.seeds` train.seed values that no search trial used, the same for every
   candidate (so candidates are compared on equal draws); with `seeds: auto`, 3 of them first and
   more while the leader is not separated (confirm_seeds.py);
3. a second Ray Tune run over the same trial driver (run_trial): FIFO, a grid over
   (candidate, seed), or the auto searcher; its records go to <run>/confirm/ (epochs.jsonl and
   trials.jsonl, the same records as the search's);
4. each run scores its best epoch, as search trials do; a candidate scores the mean over its
   new seeds (± the sample standard deviation), the search trial not included (it was picked
   for being good, so it would bias the mean). The winner is the best mean among candidates
   whose runs all finished (a run that failed counts against its config); the model it
   exports is the winner's best run on dev: its search trial or one of its confirm runs.
   Each candidate is also compared with the baseline seed by seed: the mean of the per-seed
   differences with a 95% t interval, and a verdict (beyond seed noise or within it).

confirm.json holds the table; best.json names the winning run, its checkpoint, and the mean.
A stage cut off (Ctrl-C, a kill) goes on with `--resume` run by run: finished runs stay, cut-off
ones start again from their latest checkpoint.
"""

from __future__ import annotations

import json
import shutil
import statistics
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

from ray import tune
from ray.tune.schedulers import FIFOScheduler
from rich.console import Console

from raytune_ft.config import Config
from raytune_ft.report.baseline import candidates_words, paired_seed_interval, verdict_of
from raytune_ft.run_folder import (
    CONFIRM_FILE,
    Best,
    any_trial_cut_off,
    best_epoch,
    ended_trials,
    find_best,
    read_epochs,
    read_trial_events,
    write_json_atomically,
)
from raytune_ft.training.trial import run_confirm_trial
from raytune_ft.tuning.confirm_seeds import FIRST_SEEDS, AddSeedsUntilSeparated
from raytune_ft.tuning.progress import SearchProgress
from raytune_ft.tuning.run_log import RunFolderLog
from raytune_ft.tuning.tuner import restore_tuner, tune_trial_settings

CONFIRM_DIR = "confirm"  # the confirm runs' epochs.jsonl and trials.jsonl
CONFIRM_TUNE_NAME = "tune-confirm"  # Ray Tune's experiment folder for the stage, beside the search's tune/


@dataclass
class ConfirmOutcome:
    outcome: str  # finished | interrupted
    best: Best | None  # the confirmed winner's exported run; None when no candidate finished


# ---------------------------------------------------------------------------------------
# What to re-run: candidates and seeds (from the search's epochs.jsonl alone)


def best_rows_by_trial(rows: list[dict], metric: str, mode: str) -> dict[str, dict]:
    """Each trial's best epoch on the metric (trials without a score are left out)."""
    by_trial: dict[str, list[dict]] = {}
    for row in rows:
        by_trial.setdefault(row["trial_id"], []).append(row)
    best = {trial_id: best_epoch(trial_rows, metric, mode) for trial_id, trial_rows in by_trial.items()}
    return {trial_id: row for trial_id, row in best.items() if row is not None}


def confirmed_keys(config: Config) -> list[str]:
    """The searched keys a candidate config is made of: all but seed, which the stage replaces."""
    return [name for name in config.search.space if name != "seed"]


def top_candidates(rows: list[dict], config: Config) -> list[dict]:
    """The top_k distinct configs by their trial's best epoch (ties: the earliest reported)."""
    key = f"eval_{config.metric}"
    ranked = sorted(
        best_rows_by_trial(rows, config.metric, config.search.mode).values(),
        key=lambda row: row[key],
        reverse=config.search.mode == "max",
    )
    candidates, seen = [], set()
    for row in ranked:
        params = {name: row[name] for name in confirmed_keys(config) if name in row}
        identity = json.dumps(params, sort_keys=True)
        if identity in seen:  # two trials of the same config (a search with no space)
            continue
        seen.add(identity)
        candidates.append(
            {
                "candidate": len(candidates),
                "config": params,
                "search": {
                    "trial_id": row["trial_id"],
                    "seed": row.get("seed", config.train.seed),
                    "epoch": row["epoch"],
                    "score": row[key],
                },
            }
        )
        if len(candidates) == config.confirm.top_k:
            break
    add_baseline(candidates, ranked, config)
    return candidates


def add_baseline(candidates: list[dict], ranked: list[dict], config: Config) -> None:
    """The baseline (the search trial that ran the config's own values) is re-run too, with the
    same new seeds, so that each candidate is compared with it seed by seed: marked if it is
    among the top configs, else added after them. Nothing is added where no trial ran it."""
    own = {name: config.value_of(name) for name in confirmed_keys(config)}
    for candidate in candidates:
        if candidate["config"] == own:
            candidate["baseline"] = True
            return
    row = next((row for row in ranked if {name: row.get(name) for name in own} == own), None)
    if row is None:
        return
    key = f"eval_{config.metric}"
    search = {
        "trial_id": row["trial_id"],
        "seed": row.get("seed", config.train.seed),
        "epoch": row["epoch"],
        "score": row[key],
    }
    candidates.append(
        {"candidate": len(candidates), "config": own, "baseline": True, "added_as_baseline": True, "search": search}
    )


def seed_count(config: Config) -> int:
    """New seeds to draw: confirm.seeds, or with auto confirm.max_seeds (the most it may use)."""
    return config.confirm.max_seeds if config.confirm.seeds == "auto" else config.confirm.seeds


def search_seeds(rows: list[dict], config: Config) -> set[int]:
    return {config.train.seed} | {row["seed"] for row in rows if "seed" in row}


def new_seeds(used: set[int], start: int, count: int) -> list[int]:
    """`count` seeds after `start` that are not in `used`."""
    seeds, seed = [], start
    while len(seeds) < count:
        seed += 1
        if seed not in used:
            seeds.append(seed)
    return seeds


# ---------------------------------------------------------------------------------------
# The second Ray Tune run


def _candidate_value(configs: list[dict], key: str, trial_config: dict):
    return configs[trial_config["candidate"]][key]


def run_confirm(
    config: Config,
    run_dir: Path,
    *,
    trial_kwargs: dict,
    resources_per_trial: dict,
    max_concurrent: int,
    storage: str,
    console: Console,
    quiet: bool = False,
) -> ConfirmOutcome:
    """Re-runs the search's top_k configs with new seeds (Ray must be up); writes confirm.json."""
    search_rows = read_epochs(run_dir)
    candidates = top_candidates(search_rows, config)
    if not candidates:
        return ConfirmOutcome("finished", None)
    auto = config.confirm.seeds == "auto"
    seeds = new_seeds(search_seeds(search_rows, config), config.train.seed, seed_count(config))
    configs = [candidate["config"] for candidate in candidates]
    # A grid over (candidate, seed), or with seeds: auto a searcher that adds seeds while needed.
    search_alg = AddSeedsUntilSeparated(configs, seeds, f"eval_{config.metric}", config.search.mode) if auto else None
    param_space = (
        {}
        if auto
        else {
            "candidate": tune.grid_search(list(range(len(candidates)))),
            "seed": tune.grid_search(seeds),
            **{key: tune.sample_from(partial(_candidate_value, configs, key)) for key in confirmed_keys(config)},
        }
    )
    confirm_dir = Path(run_dir) / CONFIRM_DIR
    # A stage cut off earlier (Ctrl-C, a kill) goes on run by run where Ray Tune saved its state;
    # the candidates and seeds come from the finished search, so they are the same again.
    resumed = confirm_dir.is_dir() and tune.Tuner.can_restore(f"{storage}/{CONFIRM_TUNE_NAME}")
    if not resumed:  # (leftovers of an attempt cut off before Tune saved any state go)
        shutil.rmtree(confirm_dir, ignore_errors=True)
        confirm_dir.mkdir(parents=True)
        if "://" not in storage:
            shutil.rmtree(Path(storage) / CONFIRM_TUNE_NAME, ignore_errors=True)
    runs = len(candidates) * len(seeds)
    if not quiet:
        again = "resumed: " if resumed else ""
        how_many = f"{FIRST_SEEDS} to {len(seeds)} new seeds as needed (auto)" if auto else f"{len(seeds)} new seeds"
        console.print(
            f"confirm: {again}{candidates_words(candidates)} x {how_many} ({', '.join(map(str, seeds))}): "
            f"{'up to ' if auto else ''}{runs} runs, {max_concurrent} at a time"
        )
    progress = SearchProgress(console, config.metric, config.search.mode, runs, quiet=quiet)
    # Runs trials.jsonl records as ended are not trained again (Tune's state may lag, tuning/run.py).
    ended = ended_trials(confirm_dir) if resumed else {}
    trainable = tune.with_resources(
        # Plain runs from scratch, also after a PBT search (its schedule of values is not replayed).
        tune.with_parameters(run_confirm_trial, **{**trial_kwargs, "relay_to_tune": False, "ended": ended}),
        resources_per_trial,
    )
    callbacks = [RunFolderLog(confirm_dir, config, progress, ended=set(ended))]
    if resumed:
        tuner = restore_tuner(trainable, storage, callbacks, CONFIRM_TUNE_NAME, param_space)
    else:
        tuner = tune.Tuner(
            trainable,
            param_space=param_space,
            tune_config=tune.TuneConfig(
                metric=f"eval_{config.metric}",
                mode=config.search.mode,
                search_alg=search_alg,
                scheduler=FIFOScheduler(),
                num_samples=runs if auto else 1,
                max_concurrent_trials=max_concurrent,
                # Every run goes to its end (FIFO): one trial process serves run after run, with no
                # process start and imports between them.
                reuse_actors=True,
            ),
            run_config=tune.RunConfig(
                name=CONFIRM_TUNE_NAME,
                storage_path=storage,
                callbacks=callbacks,
                verbose=0,
                **tune_trial_settings(config),
            ),
        )
    progress.start()
    try:
        tuner.fit()
    finally:
        progress.stop()
    if any_trial_cut_off(confirm_dir):
        return ConfirmOutcome("interrupted", None)
    events = read_trial_events(confirm_dir)
    document, best = confirm_results(config, candidates, seeds, search_rows, read_epochs(confirm_dir), events)
    write_json_atomically(Path(run_dir) / CONFIRM_FILE, document)
    return ConfirmOutcome("finished", best)


# ---------------------------------------------------------------------------------------
# Scores, the winner, and what it exports


def confirm_results(
    config: Config,
    candidates: list[dict],
    seeds: list[int],
    search_rows: list[dict],
    confirm_rows: list[dict],
    events: list[dict],
) -> tuple[dict, Best | None]:
    """confirm.json's content, and the Best that best.json should name."""
    key, mode = f"eval_{config.metric}", config.search.mode
    confirm_best = best_rows_by_trial(confirm_rows, config.metric, mode)
    ended = {event["trial_id"]: event for event in events if event["event"] != "started"}
    for candidate in candidates:
        candidate["runs"] = []
    # One run per trial: a run cut off and resumed has started twice.
    for event in {event["trial_id"]: event for event in events if event["event"] == "started"}.values():
        trial_id, row = event["trial_id"], confirm_best.get(event["trial_id"])
        end = ended.get(trial_id, {})
        run = {
            "trial_id": trial_id,
            "seed": event["config"]["seed"],
            "status": end.get("event", "unknown"),
            "epoch": row["epoch"] if row else None,
            "score": row[key] if row else None,
        }
        if end.get("error"):
            run["error"] = end["error"]
        candidates[event["config"]["candidate"]]["runs"].append(run)

    for candidate in candidates:
        candidate["runs"].sort(key=lambda run: run["seed"])
        scores = [run["score"] for run in candidate["runs"] if run["status"] == "finished" and run["score"] is not None]
        candidate["scores"] = scores
        candidate["mean"] = statistics.fmean(scores) if scores else None
        candidate["std"] = statistics.stdev(scores) if len(scores) >= 2 else None
        candidate["complete"] = bool(candidate["runs"]) and len(scores) == len(candidate["runs"])

    compare_by_seed(candidates, mode)
    # Complete candidates first (a failed seed counts against a config), then by mean.
    sign = 1 if mode == "max" else -1
    scored = [c for c in candidates if c["mean"] is not None]
    ranking = sorted(scored, key=lambda c: (not c["complete"], -sign * c["mean"], c["candidate"]))
    for rank, candidate in enumerate(ranking, start=1):
        candidate["rank"] = rank
    winner = ranking[0] if ranking else None
    best = _exported_run(config, winner, search_rows, confirm_rows) if winner else None
    for candidate in candidates:
        candidate["winner"] = candidate is winner
    document = {
        "metric": key,
        "mode": mode,
        "top_k": config.confirm.top_k,
        "seeds": sorted({run["seed"] for candidate in candidates for run in candidate["runs"]}),  # those run
        "search_seeds": sorted(search_seeds(search_rows, config)),
        "searched": confirmed_keys(config),
        "candidates": candidates,
        "winner": winner["candidate"] if winner else None,
        "exported": {
            "trial_id": best.trial_id,
            "seed": best.config.get("seed"),
            "epoch": best.metrics.get("epoch"),
            "score": best.metrics.get(key),
            "checkpoint": best.checkpoint,
        }
        if best
        else None,
        "device_seconds": sum(event.get("device_seconds", 0.0) for event in ended.values()),
        "device_type": next((event.get("device_type") for event in ended.values()), None),
    }
    return document, best


def compare_by_seed(candidates: list[dict], mode: str) -> None:
    """Each candidate against the baseline candidate, paired by seed: the mean of (its score -
    the baseline's) over the seeds both finished, with a 95% t interval and the verdict."""
    baseline = next((candidate for candidate in candidates if candidate.get("baseline")), None)
    if baseline is None:
        return
    base_scores = {run["seed"]: run["score"] for run in baseline["runs"] if run["status"] == "finished"}
    for candidate in candidates:
        if candidate is baseline:
            continue
        differences = [
            run["score"] - base_scores[run["seed"]]
            for run in candidate["runs"]
            if run["status"] == "finished" and run["score"] is not None and base_scores.get(run["seed"]) is not None
        ]
        if not differences:
            continue
        mean, interval = paired_seed_interval(differences)
        candidate["vs_baseline"] = {
            "mean_difference": mean,
            "interval": interval,
            "pairs": len(differences),
            "verdict": verdict_of(interval, mode, noise="seed noise"),
        }


def _exported_run(config: Config, winner: dict, search_rows: list[dict], confirm_rows: list[dict]) -> Best:
    """The winning config's best run on dev (search trial or confirm run; ties: the search trial)."""
    finished = {run["trial_id"]: run["seed"] for run in winner["runs"] if run["status"] == "finished"}
    search_trial = winner["search"]["trial_id"]
    search_best = best_rows_by_trial(
        [r for r in search_rows if r["trial_id"] == search_trial], config.metric, config.search.mode
    )
    confirm_best = best_rows_by_trial(
        [r for r in confirm_rows if r["trial_id"] in finished], config.metric, config.search.mode
    )
    rows = [*search_best.values(), *confirm_best.values()]  # the search trial first, for ties
    best = find_best(rows, config.metric, config.search.mode, searched=[])
    seed = finished.get(best.trial_id, winner["search"]["seed"])
    return replace(
        best,
        config={**winner["config"], "seed": seed},
        confirmed={
            "candidate": winner["candidate"],
            "metric": f"eval_{config.metric}",
            "mean": winner["mean"],
            "std": winner["std"],
            "seeds": [run["seed"] for run in winner["runs"]],
            "scores": winner["scores"],
            "search_trial_id": search_trial,
        },
    )
