"""Probe: which processes Ray starts for one trial, and when, with no training in the way.

N Tune trials, one at a time and a new trial driver each (as under ASHA, the tool's default
scheduler), each a TorchTrainer with one worker whose loop only imports torch and transformers,
as ours does first. Afterwards Ray's state API lists every worker process of the run: the actor
it hosted, when the raylet launched it, when it registered (Python and ray imported), when it
ended. Prints that timeline per trial, then `BENCH {json}` with the actors started per trial and
each trial's driver start -> loop start and driver wall.

The Ray Train settings the search changes (search.py) are applied here the same way, so the
probe shows what a trial costs as the tool runs it; `--with-preemption-watcher` leaves Ray's
default for that one (a PreemptionWatcher actor per trial, as the search had before 2026-12-02):

    python bench/trial_processes.py --trials 3 [--with-preemption-watcher]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from collections import Counter
from pathlib import Path

import ray
from ray import tune
from ray.train import RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer
from ray.util.state import list_actors, list_workers

from raytune_ft.environment import RAY_TRAIN_SETTINGS  # what a search sets before its trials start


def loop(loop_config: dict) -> None:
    """A Train worker's loop that only imports what ours imports first, and says when it ran."""
    started = time.time()
    import torch  # noqa: F401
    from transformers import AutoModelForSequenceClassification  # noqa: F401

    stamp = {"trial": loop_config["trial"], "loop_started_at": started, "imports_done_at": time.time()}
    with open(loop_config["stamps"], "a", encoding="utf-8") as stamps:
        stamps.write(json.dumps(stamp) + "\n")


def trial(params: dict, stamps: str, storage: str) -> None:
    driver_started_at = time.time()
    TorchTrainer(
        loop,
        train_loop_config={"trial": params["trial"], "stamps": stamps},
        scaling_config=ScalingConfig(num_workers=1, resources_per_worker={"CPU": 1}),
        run_config=RunConfig(
            name=f"probe-{params['trial']}",
            storage_path=storage,
            worker_runtime_env={"env_vars": {"OMP_NUM_THREADS": "1"}},
        ),
    ).fit()
    tune.report({"driver_started_at": driver_started_at, "driver_ended_at": time.time()})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--with-preemption-watcher", action="store_true", help="Ray's default: one per trial")
    args = parser.parse_args()
    for name, value in RAY_TRAIN_SETTINGS.items():
        if not (args.with_preemption_watcher and name == "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER"):
            os.environ.setdefault(name, value)

    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # no experiment box in the output
    work = Path(tempfile.mkdtemp(prefix="trial-processes-"))
    stamps = work / "stamps.jsonl"
    ray.init(num_cpus=2, log_to_driver=False)
    started = time.time()
    results = tune.Tuner(
        tune.with_parameters(trial, stamps=str(stamps), storage=str(work)),
        param_space={"trial": tune.grid_search(list(range(args.trials)))},
        tune_config=tune.TuneConfig(max_concurrent_trials=1, reuse_actors=False),
        run_config=tune.RunConfig(name="probe", storage_path=str(work), verbose=0),
    ).fit()
    wall = time.time() - started

    class_of_pid = {a.pid: a.class_name for a in list_actors(limit=10_000, detail=True, raise_on_missing_output=False)}
    processes = sorted(
        (
            w
            for w in list_workers(limit=10_000, detail=True, raise_on_missing_output=False)
            if w.worker_type == "WORKER"
        ),
        key=lambda w: w.worker_launch_time_ms or 0,
    )
    ray.shutdown()

    loop_stamps = {s["trial"]: s for s in map(json.loads, stamps.read_text().splitlines())}
    trials = sorted(
        ({**r.metrics, **loop_stamps[r.config["trial"]]} for r in results), key=lambda t: t["driver_started_at"]
    )
    # One trial at a time: a trial's processes are its driver's (Tune's ImplicitFunc) and the
    # ones launched after it, up to the next trial's driver.
    per_trial: list[Counter] = []
    print(f"{'launched':>9} {'ready':>7} {'ended':>7}  process (seconds after the search started)")
    for process in processes:
        name = class_of_pid.get(process.pid, "(idle worker)")
        if name == "ImplicitFunc":
            per_trial.append(Counter())
        if per_trial and name != "(idle worker)":
            per_trial[-1][name] += 1
        launched, ready, ended = (
            f"{ms / 1000 - started:.2f}" if ms else "alive"
            for ms in (process.worker_launch_time_ms, process.worker_launched_time_ms, process.end_time_ms)
        )
        print(f"{launched:>9} {ready:>7} {ended:>7}  {name}")

    driver_to_loop = [t["loop_started_at"] - t["driver_started_at"] for t in trials]
    driver_wall = [t["driver_ended_at"] - t["driver_started_at"] for t in trials]
    for i, t in enumerate(trials):
        print(
            f"trial {i}: driver -> loop start {driver_to_loop[i]:.2f} s, loop imports "
            f"{t['imports_done_at'] - t['loop_started_at']:.2f} s, driver wall {driver_wall[i]:.2f} s"
        )
    summary = {
        "bench": "trial_processes",
        "trials": args.trials,
        "preemption_watcher": args.with_preemption_watcher,
        "wall_seconds": round(wall, 2),
        "actors_per_trial": [dict(sorted(c.items())) for c in per_trial],
        "driver_to_loop_seconds": [round(s, 2) for s in driver_to_loop],
        "driver_wall_seconds": [round(s, 2) for s in driver_wall],
        "median_driver_wall_seconds": round(statistics.median(driver_wall), 2),
    }
    print("BENCH " + json.dumps(summary))


if __name__ == "__main__":
    main()
