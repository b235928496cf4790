"""Benchmark (analysis of finished searches): which epoch-1 score best predicts a trial's final
score, i.e. what should ASHA and PBT rank trials on early (search.scheduler_metric)?

Two answers from the same trials:
1. rank correlation: each epoch-1 score against the trial's best dev score (--target: F1 on MRPC);
2. replay: ASHA searches replayed on the recorded epochs, ranking once on eval_loss and once on
   the target with the same trials in the same order (--replays of them): the best target score
   each found and the trial-epochs it spent.

Reads the epochs.jsonl of the run folders given (e.g. bench/efficiency.py's), keeps every trial
that trained two epochs or more, and ranks those trials by their epoch-1 eval_loss, target (and
eval_accuracy) against their best target score over all their epochs: Spearman's rank
correlation for each. A trial that ran in several searches (the same values and
the same epoch-1 result, e.g. a grid folder copied into several --out folders, or TPE's first
suggestions with the same seed) counts once. The last line is `BENCH {json}`.

    python bench/early_ranking.py /tmp/benchout/eff2000/{grid,random}/ /tmp/benchout/eff2000-grace2/tpe+asha/ /tmp/benchout/eff2000-s{1,2}-g2/tpe+asha/

The replay draws --trials distinct trials at random from those that ran all their planned
epochs, starts them in a random order --concurrent at a time, lets every epoch take one time
unit (plus a little noise, so that which of two trials running together reports first is a coin
toss, as it is on a real machine), and applies Ray Tune's ASHA rule (async_hyperband._Bracket:
rungs at grace * reduction_factor**k below max_t; stop a trial that is below the
(1 - 1/reduction_factor) quantile of what its rung has recorded). Unlike a real search the
trials are drawn at random, not suggested by TPE from earlier results.

Give it searches that chose no trial by an epoch-1 score: FIFO ones (grid, random) and ASHA
with a grace period of 2 epochs or more. Under ASHA with grace 1 the trials that went on are
those the epoch-1 score ranked high, which narrows that score's spread among them and so
understates how well it predicts (trials stopped after epoch 1 have no final score).
"""

from __future__ import annotations

import argparse
import heapq
import json
import random
import statistics
from pathlib import Path

import numpy as np

from raytune_ft.run_folder import read_reported_epochs
from raytune_ft.training.metrics import spearman


def predictors(target: str) -> list[tuple[str, int]]:
    """The epoch-1 scores compared, each with the sign that makes higher predict better."""
    return [("eval_loss", -1), *((name, 1) for name in dict.fromkeys([target, "eval_accuracy"]))]


def unique_trials(run_dirs: list[Path]) -> list[dict[int, dict]]:
    """Every trial's rows by epoch; a trial found in several run folders counts once (above)."""
    trials, seen = [], set()
    for run_dir in run_dirs:
        by_trial: dict[str, dict[int, dict]] = {}
        for row in read_reported_epochs(run_dir):
            by_trial.setdefault(row["trial_id"], {})[row["epoch"]] = row
        for epochs in by_trial.values():
            first = epochs.get(1)
            if first is None:
                continue
            key = (
                round(first["learning_rate"], 10),
                first["num_epochs"],
                round(first["warmup_ratio"], 8),
                round(first["eval_loss"], 6),
            )
            if key not in seen:
                seen.add(key)
                trials.append(epochs)
    return trials


def is_complete(epochs: dict[int, dict]) -> bool:
    """Whether the trial reported every epoch it planned (no scheduler stopped it)."""
    return sorted(epochs) == list(range(1, epochs[1]["num_epochs"] + 1))


def asha_rungs(grace: int, reduction_factor: float, max_t: int) -> list[float]:
    """The milestones of Ray Tune's single ASHA bracket, highest first."""
    count = 0
    while grace * reduction_factor**count < max_t:
        count += 1
    return [grace * reduction_factor**k for k in reversed(range(count))]


def replay_asha(
    trials: list[dict[int, dict]],
    order_noise: list[list[float]],
    metric: str,
    sign: int,
    target: str,
    concurrent: int,
    rungs: list[float],
    reduction_factor: float,
) -> tuple[float, int]:
    """One ASHA search over `trials` (started in list order), ranking on sign * metric:
    (the best `target` reported, trial-epochs)."""
    recorded: dict[float, dict[int, float]] = {milestone: {} for milestone in rungs}
    quantile = (1 - 1 / reduction_factor) * 100
    events: list[tuple[float, int, int]] = []  # (time the epoch is reported, trial, epoch)
    waiting = list(range(len(trials)))
    best, spent = float("-inf"), 0

    def start(index: int, now: float) -> None:
        heapq.heappush(events, (now + 1 + order_noise[index][0], index, 1))

    for _ in range(min(concurrent, len(waiting))):
        start(waiting.pop(0), 0.0)
    while events:
        now, index, epoch = heapq.heappop(events)
        row = trials[index][epoch]
        spent += 1
        best = max(best, row[target])
        score = sign * row[metric]
        stop = False
        for milestone in rungs:  # as async_hyperband._Bracket.on_result
            if epoch < milestone or index in recorded[milestone]:
                continue
            values = list(recorded[milestone].values())
            if values and score < np.percentile(values, quantile):
                stop = True
            recorded[milestone][index] = score
            break
        if not stop and epoch < len(trials[index]):
            heapq.heappush(events, (now + 1 + order_noise[index][epoch], index, epoch + 1))
        elif waiting:
            start(waiting.pop(0), now)
    return best, spent


def replay(pool: list[dict[int, dict]], args) -> dict:
    short = args.target.removeprefix("eval_")
    rankings = (("eval_loss", -1), (args.target, 1))
    rng = random.Random(args.seed)
    max_t = max(len(trial) for trial in pool)
    rungs = asha_rungs(args.grace, args.reduction_factor, max_t)
    outcomes = {name: {"best": [], "spent": []} for name, _ in rankings}
    for _ in range(args.replays):
        trials = rng.sample(pool, args.trials)
        noise = [[rng.uniform(0, 0.05) for _ in range(max_t)] for _ in trials]
        for name, sign in rankings:
            best, spent = replay_asha(
                trials, noise, name, sign, args.target, args.concurrent, rungs, args.reduction_factor
            )
            outcomes[name]["best"].append(best)
            outcomes[name]["spent"].append(spent)
    loss, other = outcomes["eval_loss"]["best"], outcomes[args.target]["best"]
    return {
        "pool_trials": len(pool),
        "replays": args.replays,
        "trials_per_search": args.trials,
        "concurrent": args.concurrent,
        "grace": args.grace,
        "reduction_factor": args.reduction_factor,
        "rungs": rungs,
        f"pool_best_{short}": round(max(row[args.target] for trial in pool for row in trial.values()), 4),
        **{
            f"ranked_on_{name}": {
                f"mean_best_{short}": round(statistics.mean(values["best"]), 4),
                "mean_trial_epochs": round(statistics.mean(values["spent"]), 2),
            }
            for name, values in outcomes.items()
        },
        "loss_better_equal_worse": [
            sum(a > b for a, b in zip(loss, other)),
            sum(a == b for a, b in zip(loss, other)),
            sum(a < b for a, b in zip(loss, other)),
        ],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dirs", nargs="+", type=Path, help="run folders (each with an epochs.jsonl)")
    parser.add_argument("--replays", type=int, default=10000, help="ASHA searches replayed per ranking")
    parser.add_argument("--trials", type=int, default=8, help="trials per replayed search")
    parser.add_argument("--concurrent", type=int, default=2)
    parser.add_argument("--grace", type=int, default=1)
    parser.add_argument("--reduction-factor", type=float, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--target", default="eval_f1", help="the search's metric: eval_f1 (MRPC), eval_accuracy (SST-2)"
    )
    args = parser.parse_args()
    run_dirs = [path for path in args.run_dirs if (path / "epochs.jsonl").exists()]
    every_trial = unique_trials(run_dirs)
    trials = [epochs for epochs in every_trial if len(epochs) >= 2]
    final = [max(row[args.target] for row in epochs.values()) for epochs in trials]
    correlations = {
        name: round(spearman(np.array([sign * epochs[1][name] for epochs in trials]), np.array(final)), 3)
        for name, sign in predictors(args.target)
    }
    print(
        f"{len(trials)} trials with 2+ epochs from {len(run_dirs)} run folders; "
        f"Spearman of the epoch-1 score against the best {args.target}:"
    )
    for name, value in correlations.items():
        print(f"  {name:14} {value:+.3f}")
    replayed = replay([epochs for epochs in every_trial if is_complete(epochs)], args)
    print(
        f"ASHA replayed {args.replays} times on {replayed['pool_trials']} complete trials "
        f"({args.trials} per search, {args.concurrent} at a time, grace {args.grace}):"
    )
    short = args.target.removeprefix("eval_")
    for name in ("eval_loss", args.target):
        result = replayed[f"ranked_on_{name}"]
        print(
            f"  ranked on {name:13} mean best {short} {result[f'mean_best_{short}']:.4f}, "
            f"mean trial-epochs {result['mean_trial_epochs']:.2f}"
        )
    print(f"  loss better / equal / worse than {short}: " + " / ".join(map(str, replayed["loss_better_equal_worse"])))
    print(
        "BENCH "
        + json.dumps(
            {
                "bench": "early_ranking",
                "run_dirs": [str(path) for path in run_dirs],
                "trials": len(trials),
                "target": f"best {args.target}",
                "spearman_epoch1": correlations,
                "replay": replayed,
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
