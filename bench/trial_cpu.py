"""Where a search's CPU goes, process by process: a short `raytune-ft search` run end to end.

Each round runs `python -m raytune_ft.cli search configs/quickstart.yaml` cut down to a 2-trial
FIFO search of the real MiniLM (built-in paraphrase data, 64 train rows, 1 epoch: the trials
are almost all start-up) while sampling the CPU time of every process under it ten times a
second. Ray workers rename
themselves after the actor they host (`ray::RayTrainWorker`, `ray::TrainController`, ...), so
the CPU seconds are summed per actor class. With `--baseline PATH` (a checkout of another
commit, e.g. `git worktree add /tmp/base HEAD~1`) every round runs the baseline first and this
checkout second, alternating, so the two see the same machine; the ratios are this ÷ baseline.

    python bench/trial_cpu.py --rounds 5 [--baseline /tmp/base]

Prints a table per tree and `BENCH {json}` with each round's wall and CPU seconds and the CPU
seconds per process kind.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import psutil
from cli_search import REPO, cli_search_command

# configs/quickstart.yaml cut down to 2 trials that are almost all start-up.
SEARCH_VALUES = {
    "data.max_length": 48,
    "data.max_train_samples": 64,
    "data.max_eval_samples": 32,
    "train.learning_rate": 5e-5,
    "train.num_epochs": 1,
    "train.batch_size": 16,
    "search.space": "{learning_rate: {loguniform: [1.0e-5, 1.0e-4]}}",
    "search.num_samples": 2,
    "search.scheduler": "fifo",
    "output.name": "cpu",
    "output.keep_checkpoints": "false",
    "tracking.tensorboard": "false",
}


def process_kind(command: str) -> str:
    if command.startswith("ray::"):
        # "ray::RayTrainWorker.init_train_context": the actor's class, not the method it runs now
        return command.split()[0].split(".")[0]
    if "raytune_ft.cli" in command:
        return "search command"
    if "ray-dashboard-" in command:
        return "dashboard heads"
    return re.sub(r"\s.*", "", command).rsplit("/", 1)[-1]


def one_search(tree: Path, out: Path) -> dict:
    """Runs the search from `tree`; wall seconds and CPU seconds per process kind."""
    run_dir = out / "runs" / "cpu"
    shutil.rmtree(run_dir, ignore_errors=True)
    # HOME: Ray's token and the tokenized-data cache stay out of the user's home.
    env = {**os.environ, "PYTHONPATH": str(tree), "HOME": str(out / "home"), "HF_HUB_OFFLINE": "1"}
    started = time.time()
    search = subprocess.Popen(
        cli_search_command("quickstart.yaml", {**SEARCH_VALUES, "output.dir": out / "runs"}),
        cwd=tree,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    root = psutil.Process(search.pid)
    seen: dict[int, list] = {}  # pid -> [kind, cpu seconds]
    while search.poll() is None:
        try:
            processes = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            break
        for process in processes:
            try:
                times = process.cpu_times()
                kind = process_kind(" ".join(process.cmdline()))
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue
            entry = seen.setdefault(process.pid, [kind, 0.0])
            if entry[0] == "ray::IDLE" or not entry[0].startswith("ray::"):
                entry[0] = kind  # a Ray worker takes its actor's name once it hosts one
            entry[1] = times.user + times.system
        time.sleep(0.1)
    wall = time.time() - started
    if search.returncode != 0 or not (run_dir / "best.json").is_file():
        raise SystemExit(f"the search from {tree} failed (exit {search.returncode})")
    per_kind: dict[str, list] = defaultdict(lambda: [0, 0.0])
    for kind, cpu in seen.values():
        per_kind[kind][0] += 1
        per_kind[kind][1] += cpu
    return {
        "wall_s": round(wall, 1),
        "cpu_s": round(sum(cpu for _, cpu in per_kind.values()), 1),
        "per_kind": {kind: {"processes": n, "cpu_s": round(cpu, 1)} for kind, (n, cpu) in per_kind.items()},
    }


def medians_per_kind(results: list[dict], field: str) -> dict[str, float]:
    """The median of `field` per process kind over the searches (0 where a search had none),
    largest first."""
    kinds = {kind for result in results for kind in result["per_kind"]}
    medians = {kind: statistics.median(r["per_kind"].get(kind, {field: 0})[field] for r in results) for kind in kinds}
    return dict(sorted(medians.items(), key=lambda item: -item[1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--baseline", type=Path, default=None, help="another checkout, run first in every round")
    args = parser.parse_args()

    out = Path(tempfile.mkdtemp(prefix="trial-cpu-"))
    (out / "home").mkdir()
    trees = {"baseline": args.baseline.resolve(), "this": REPO} if args.baseline else {"this": REPO}
    runs: dict[str, list] = {name: [] for name in trees}
    for round_number in range(1, args.rounds + 1):
        for name, tree in trees.items():
            runs[name].append(one_search(tree, out))
            print(
                f"round {round_number} {name}: wall {runs[name][-1]['wall_s']} s, CPU {runs[name][-1]['cpu_s']} s",
                flush=True,
            )

    summary = {
        "bench": "trial_cpu",
        "rounds": args.rounds,
        "trials_per_search": 2,
        "trees": {name: str(tree) for name, tree in trees.items()},
    }
    for name, results in runs.items():
        cpu_per_kind = medians_per_kind(results, "cpu_s")
        processes_per_kind = medians_per_kind(results, "processes")
        print(f"\n{name} ({trees[name]}): median CPU seconds per process kind over {len(results)} searches")
        for kind, cpu in cpu_per_kind.items():
            print(f"  {cpu:6.1f} s  x{processes_per_kind[kind]:<4g} {kind}")
        summary[name] = {
            "wall_s": [r["wall_s"] for r in results],
            "cpu_s": [r["cpu_s"] for r in results],
            "median_wall_s": statistics.median(r["wall_s"] for r in results),
            "median_cpu_s": statistics.median(r["cpu_s"] for r in results),
            "median_cpu_s_per_kind": cpu_per_kind,
            "processes_per_kind": processes_per_kind,
        }
    if args.baseline:
        for key in ("wall_s", "cpu_s"):
            pairs = [this / base for this, base in zip(summary["this"][key], summary["baseline"][key])]
            summary[f"this_over_baseline_{key}"] = [round(p, 3) for p in pairs]
            summary[f"median_this_over_baseline_{key}"] = round(statistics.median(pairs), 3)
        print(
            f"\nthis / baseline, per round: wall {summary['this_over_baseline_wall_s']}, CPU {summary['this_over_baseline_cpu_s']}"
        )
    print("BENCH " + json.dumps(summary))


if __name__ == "__main__":
    main()
