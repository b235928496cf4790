"""Benchmark: do trials really run max_concurrent_trials at a time, for every searcher?

Ray's OptunaSearch has been reported to start trials one at a time in some set-ups (ray issue
46965). This reads finished searches' run folders (trials.jsonl: when each trial started and
ended) and reports, per search: the limit (resources.max_concurrent_trials), the time-weighted
mean number of trials running while trials were still waiting to start (from the first start to
the last start: the span in which the limit should be reached), the share of that span spent at
the limit, and the same mean over the whole search. A searcher that starts trials one at a time
shows a mean near 1 in the first span. Last line: `BENCH {json}`.

    python bench/concurrency.py /tmp/benchout/samplers/gp-8-s0 /tmp/benchout/samplers/random-8-s0 ...
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from raytune_ft.config import load_config
from raytune_ft.run_folder import CONFIG_FILE, read_trial_events

ENDS = ("finished", "stopped early", "failed", "interrupted")


def running_over_time(events: list[dict]) -> list[tuple[float, int]]:
    """(moment, trials running from then on), at every start and end."""
    changes = []
    for event in events:
        if event["event"] == "started":
            changes.append((event["time"], 1))
        elif event["event"] in ENDS:
            changes.append((event["time"], -1))
    steps, running = [], 0
    for moment, change in sorted(changes):
        running += change
        steps.append((moment, running))
    return steps


def mean_running(steps: list[tuple[float, int]], start: float, end: float, limit: int) -> tuple[float, float]:
    """Time-weighted mean of trials running within [start, end], and the share of it at the limit."""
    if end <= start:
        return float("nan"), float("nan")
    total = at_limit = 0.0
    for (moment, running), (following, _) in zip(steps, steps[1:]):
        low, high = max(moment, start), min(following, end)
        if high > low:
            total += running * (high - low)
            at_limit += (high - low) * (running >= limit)
    return total / (end - start), at_limit / (end - start)


def measure(run_dir: Path) -> dict:
    config = load_config(run_dir / CONFIG_FILE)
    events = read_trial_events(run_dir)
    limit = config.resources.max_concurrent_trials
    steps = running_over_time(events)
    starts = [event["time"] for event in events if event["event"] == "started"]
    ends = [event["time"] for event in events if event["event"] in ENDS]
    filling, share = mean_running(steps, min(starts), max(starts), limit)
    overall, _ = mean_running(steps, min(starts), max(ends), limit)
    return {
        "run": run_dir.name,
        "algorithm": config.search.algorithm,
        "scheduler": config.search.scheduler,
        "trials": len(starts),
        "limit": limit,
        "mean_running_while_trials_waited": round(filling, 3),
        "share_at_limit_while_trials_waited": round(share, 3),
        "mean_running_overall": round(overall, 3),
        "peak": max(running for _, running in steps),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dirs", nargs="+", type=Path)
    args = parser.parse_args()
    rows = [measure(run_dir) for run_dir in args.run_dirs]
    print(
        f"{'run':24} {'algorithm':9} {'trials':>6} {'limit':>5} {'mean while waiting':>18} {'at limit':>8} {'overall':>7}"
    )
    for row in rows:
        print(
            f"{row['run']:24} {row['algorithm']:9} {row['trials']:>6} {row['limit']:>5} "
            f"{row['mean_running_while_trials_waited']:>18.3f} {row['share_at_limit_while_trials_waited']:>8.3f} "
            f"{row['mean_running_overall']:>7.3f}"
        )
    print("BENCH " + json.dumps({"bench": "concurrency", "searches": rows}))


if __name__ == "__main__":
    main()
