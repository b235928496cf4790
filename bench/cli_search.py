"""What the benchmarks share: one `raytune-ft search` run through the real CLI."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run_cli_search(config_file: str, values: dict, lock: str | None = None) -> float:
    """Runs `raytune-ft search configs/<config_file> --quiet --set key=value ...` and returns its
    wall seconds. lock: flock this file around the run (a shared machine's lock, per run: others'
    jobs may run between runs, not during one)."""
    command = [sys.executable, "-m", "raytune_ft.cli", "search", str(REPO / "configs" / config_file), "--quiet"]
    command += [part for key, value in values.items() for part in ("--set", f"{key}={value}")]
    if lock:
        command = ["flock", lock, *command]
    print(" ".join(command), flush=True)
    started = time.time()
    subprocess.run(command, check=True, env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})
    return time.time() - started
