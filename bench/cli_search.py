"""What the benchmarks share: one `raytune-ft search` run through the real CLI, the rows it
wrote, and the same trials run as the plain training loop in this process."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from raytune_ft.run_folder import read_reported_epochs, read_trial_events
from raytune_ft.training.reporters import EpochReporter

REPO = Path(__file__).resolve().parents[1]


def set_options(values: dict) -> list[str]:
    """`--set key=value` for each of values: the config overrides of a raytune-ft command."""
    return [part for key, value in values.items() for part in ("--set", f"{key}={value}")]


def cli_search_command(config_file: str, values: dict) -> list[str]:
    """`python -m raytune_ft.cli search configs/<config_file> --quiet --set key=value ...`"""
    command = [sys.executable, "-m", "raytune_ft.cli", "search", str(REPO / "configs" / config_file), "--quiet"]
    return command + set_options(values)


def run_cli_search(config_file: str, values: dict, lock: str | None = None) -> float:
    """Runs `raytune-ft search configs/<config_file> --quiet --set key=value ...` and returns its
    wall seconds. lock: flock this file around the run (a shared machine's lock, per run: others'
    jobs may run between runs, not during one)."""
    command = cli_search_command(config_file, values)
    if lock:
        command = ["flock", lock, *command]
    print(" ".join(command), flush=True)
    started = time.time()
    subprocess.run(command, check=True, env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})
    return time.time() - started


def run_cli_search_once(config_file: str, values: dict, run_dir: Path, lock: str | None = None) -> dict:
    """run_cli_search, unless run_dir holds a search that finished in an earlier invocation with
    the same --out (one cut off later, or re-read to summarise it again): then it is read, not
    re-run. Returns {"wall_seconds", "reused"}."""
    state_file = run_dir / "search.json"
    state = json.loads(state_file.read_text()) if state_file.exists() else {}
    if state.get("outcome") == "finished":
        print(f"{run_dir}: finished earlier, read as it is", flush=True)
        return {"wall_seconds": round(state["ended_at"] - state["started_at"], 1), "reused": True}
    shutil.rmtree(run_dir, ignore_errors=True)  # an unfinished earlier attempt
    return {"wall_seconds": round(run_cli_search(config_file, values, lock), 1), "reused": False}


def cpu_seconds_counter(events: list[dict]):
    """A function of a moment: the CPU-seconds a search's ended trials had taken by then, each
    trial's lifetime before it (start-up included) times its CPUs (events: trials.jsonl's)."""
    starts = {e["trial_id"]: e["time"] for e in events if e["event"] == "started"}
    ends = {e["trial_id"]: (e["time"], e["devices"]) for e in events if e["event"] != "started"}

    def cpu_seconds_until(moment: float) -> float:
        return sum(max(0.0, min(moment, ends[t][0]) - start) * ends[t][1] for t, start in starts.items() if t in ends)

    return cpu_seconds_until


def search_rows(run_dir: Path) -> list[dict]:
    """A finished search's epoch rows, each with its trial's start time (trials.jsonl)."""
    rows, events = read_reported_epochs(run_dir), read_trial_events(run_dir)
    starts = {e["trial_id"]: e["time"] for e in events if e["event"] == "started"}
    for row in rows:
        row["trial_start"] = starts[row["trial_id"]]
    return rows


class Collect(EpochReporter):
    def __init__(self):
        self.rows = []

    def report(self, metrics, checkpoint_dir):
        self.rows.append(metrics)


def run_plain_trials(config, trials: int) -> dict:
    """`trials` runs of training_function with `config` in this process, no Ray: the baseline."""
    from raytune_ft.data.tokenized import prepare_tokenized_data
    from raytune_ft.training.loop import training_function

    data_path, _ = prepare_tokenized_data(config)
    walls, rows = [], []
    for _ in range(trials):
        reporter = Collect()
        started = time.time()
        training_function({"config": config.model_dump(), "data": str(data_path), "progress_bar": False}, reporter)
        walls.append(time.time() - started)
        rows.append({**reporter.rows[0], "trial_start": started})
    return {"wall": sum(walls), "trial_walls": walls, "rows": rows}
