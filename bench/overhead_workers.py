"""Benchmark: what a several-worker trial costs through raytune-ft against plain DDP.

A trial with resources.num_workers > 1 is a Ray Train TorchTrainer: a controller, a placement
group, one worker process per worker and a gloo process group, then training_function in
every worker (DDP through Accelerate). Without the tool the same training is the course's
way of running on several processes: `torchrun --nproc_per_node W -m raytune_ft.cli train`.
The same work (MiniLM on real MRPC, a seeded train subset, the full dev set, fixed values,
1 epoch) is run N times both ways, one run at a time, each process with 1 CPU thread:
  (a) plain: torchrun N times, one after another (what a user would script without the tool);
  (b) search: `raytune-ft search` with N trials of W workers, one trial at a time.
Reports (b)/(a) for wall time and in-trial samples/s (all workers together), and the start-up
from launch (plain: torchrun started; search: Tune's trial start) to the first optimizer
step, with the search's split into Train's workers, the loop's imports, data, model and
the first step. Last line: `BENCH {json}`.

    python bench/overhead_workers.py --trials 3 --train-samples 1600 --workers 2
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cli_search import REPO, set_options
from overhead import overrides, run_search, samples_per_second, search_start, startup

from raytune_ft.run_folder import read_epochs


def run_plain_ddp(args, out_dir: Path) -> dict:
    """`torchrun --nproc_per_node W -m raytune_ft.cli train` once per trial, one after another."""
    walls, rows = [], []
    for index in range(args.trials):
        values = overrides(args, out_dir, f"plain-{index}", 1)  # the search.* values are unused by `train`
        command = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node",
            str(args.workers),
            "-m",
            "raytune_ft.cli",
            "train",
            str(REPO / "configs" / "mrpc.yaml"),
        ]
        command += set_options(values)
        print(" ".join(command), flush=True)
        started = time.time()
        # 1 thread per process, as a Ray Train worker with 1 CPU gets (torchrun's own default too).
        subprocess.run(
            command, check=True, env={**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
        )
        walls.append(time.time() - started)
        row = read_epochs(out_dir / f"plain-{index}")[0]
        rows.append({**row, "trial_start": started})
    return {"wall": sum(walls), "trial_walls": walls, "rows": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--train-samples", type=int, default=400)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    args.scheduler = "asha"  # the tool's default scheduler (overrides() reads it)
    out_dir = Path(tempfile.mkdtemp(prefix="bench-overhead-workers-"))

    plain = run_plain_ddp(args, out_dir)
    search = run_search(
        args,
        out_dir,
        "search-workers",
        1,
        extra={"resources.num_workers": args.workers, "resources.cpus_per_worker": 1},
    )

    summary = {
        "bench": "overhead_workers",
        "trials": args.trials,
        "train_samples": args.train_samples,
        "workers": args.workers,
        "scheduler": args.scheduler,
        "plain_wall_s": round(plain["wall"], 1),
        "plain_trial_walls_s": [round(w, 1) for w in plain["trial_walls"]],
        "search_wall_s": round(search["wall"], 1),
        "search_over_plain_wall": round(search["wall"] / plain["wall"], 3),
        "plain_samples_per_s": round(samples_per_second(plain), 2),
        "search_samples_per_s": round(samples_per_second(search), 2),
        "search_over_plain_samples_per_s": round(samples_per_second(search) / samples_per_second(plain), 3),
        "startup_plain_s": startup(plain["rows"]),
        "startup_search_s": startup(search["rows"]),
        "search_launch_to_first_trial_s": search_start(search),
        "processes_plain": [r["num_processes"] for r in plain["rows"]],
        "processes_search": [r["num_processes"] for r in search["rows"]],
        "dev_accuracy_plain": [round(r["eval_accuracy"], 4) for r in plain["rows"]],
        "dev_accuracy_search": [round(r["eval_accuracy"], 4) for r in search["rows"]],
    }
    print("BENCH " + json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()
