"""Benchmark: what fixed-shape batches and torch.compile cost or save on the CPU, against the
default dynamic padding, same run, same data, same seeds.

Real MRPC (../shared/data/glue/MRPC), the real MiniLM, `raytune-ft train` once per way and seed in a
process of its own (bench/ways.py): data.padding longest (the default: a batch is as wide as its
longest pair), data.padding max_length (every batch max_length wide), and max_length with
train.torch_compile (inductor; compiles in the first steps). Per way: train samples/s of the first
epoch (with any compile time) and of the later epochs (the steady state), and the epoch's seconds.
Last line: `BENCH {json}`.

    python bench/padding.py --out /tmp/benchout/padding --train-samples 400 --epochs 2 --seeds 1 2
"""

from __future__ import annotations

import json
import statistics
import sys

from ways import arguments, run_all

WAYS = {
    "longest": ["data.padding=longest"],
    "max_length": ["data.padding=max_length"],
    "max_length+compile": ["data.padding=max_length", "train.torch_compile=true"],
}


def summarize(runs: list[dict]) -> dict:
    summary = {}
    for way in WAYS:
        mine = [run for run in runs if run["way"] == way]
        first = [run["rows"][0] for run in mine]
        later = [row for run in mine for row in run["rows"][1:]]
        summary[way] = {
            "runs": len(mine),
            "first_epoch_samples_per_second": statistics.mean(row["train_samples_per_second"] for row in first),
            "first_epoch_seconds": statistics.mean(row["epoch_seconds"] for row in first),
            "later_samples_per_second": statistics.mean(row["train_samples_per_second"] for row in later)
            if later
            else None,
            "f1_mean": statistics.mean(run["rows"][-1]["eval_f1"] for run in mine),
        }
    base = summary["longest"]["later_samples_per_second"]
    for way in summary.values():
        way["later_vs_longest"] = (
            way["later_samples_per_second"] / base if base and way["later_samples_per_second"] else None
        )
    return summary


def main() -> None:
    args = arguments(__doc__, epochs=2).parse_args()
    runs, wall = run_all(WAYS, args)
    print("BENCH " + json.dumps({"ways": summarize(runs), "runs": runs, "wall_seconds": wall, "args": sys.argv[1:]}))


if __name__ == "__main__":
    main()
