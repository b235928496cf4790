"""Did the search beat the model the user would have trained anyway, or only get lucky?

The config's own train values run as the search's first trial (the baseline). The winner's best
epoch is compared with the baseline's best epoch on the same dev examples: the difference on
search.metric, and a 95% paired bootstrap interval of that difference, resampling the dev
examples (both trials' predictions on each resampled example; predictions.jsonl). On a small dev
set the interval is wide: on MRPC's 408 pairs one pair is 0.25 points of accuracy. The verdict:

  better than the baseline beyond dev-set noise   the whole interval is an improvement
  within dev-set noise of the baseline            the interval holds 0
  worse than the baseline beyond dev-set noise    the whole interval is a loss

Trials whose best epoch is within noise of the winner's the same way are "tied" (≈ in the table).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from raytune_ft.training.scores import METRIC_FUNCTIONS

RESAMPLES = 1000
TIE_CHECKED = 10  # the trials closest to the winner that are checked for a tie
BETTER, WITHIN, WORSE = (
    "better than the baseline beyond dev-set noise",
    "within dev-set noise of the baseline",
    "worse than the baseline beyond dev-set noise",
)
METHOD = f"95% paired bootstrap interval over the dev examples, {RESAMPLES} resamples"


@dataclass
class BaselineComparison:
    metric: str  # search.metric, e.g. "f1"
    winner: dict  # {"trial_id", "epoch", "score"}
    baseline: dict | None  # the same for the baseline trial; None: no trial ran the config's values
    difference: float | None = None  # winner - baseline on the metric
    interval: list[float] | None = None  # 95% interval of that difference (None: no predictions)
    examples: int | None = None  # dev examples the interval resamples
    verdict: str = ""
    tied: list[str] = field(default_factory=list)  # trials within noise of the winner (the winner not among them)
    method: str = METHOD

    def to_json(self) -> dict:
        return asdict(self)


def paired_interval(
    metric: str, first: dict, second: dict, seed: int = 0, resamples: int = RESAMPLES
) -> tuple[float, list[float]] | None:
    """metric(first) - metric(second) on the same examples, with its 95% bootstrap interval;
    None when the two were not scored on the same examples (another dev subset)."""
    labels = np.asarray(first["labels"])
    if metric not in METRIC_FUNCTIONS or len(labels) == 0 or not np.array_equal(labels, np.asarray(second["labels"])):
        return None  # (eval_loss: the per-example losses are not kept)
    score = METRIC_FUNCTIONS[metric]
    one, two = np.asarray(first["predictions"]), np.asarray(second["predictions"])
    difference = score(one, labels) - score(two, labels)
    rng = np.random.default_rng(seed)
    samples = np.empty(resamples)
    for index in range(resamples):
        picked = rng.integers(0, len(labels), len(labels))
        samples[index] = score(one[picked], labels[picked]) - score(two[picked], labels[picked])
    low, high = np.percentile(samples, [2.5, 97.5])
    return float(difference), [float(low), float(high)]


def compare_with_baseline(
    metric: str, mode: str, best_epochs: dict[str, dict], baseline_id: str | None, winner_id: str, predictions: dict
) -> BaselineComparison:
    """best_epochs: {trial_id: its best epoch's row}; predictions: read_predictions(run_dir)."""
    key = f"eval_{metric}"

    def point(trial_id: str) -> dict:
        row = best_epochs[trial_id]
        return {"trial_id": trial_id, "epoch": row["epoch"], "score": row[key]}

    def examples(trial_id: str) -> dict | None:
        return predictions.get((trial_id, best_epochs[trial_id]["epoch"]))

    if baseline_id is not None and baseline_id not in best_epochs:
        comparison = BaselineComparison(metric, point(winner_id), None)
        comparison.verdict = (
            f"no baseline score: its trial {baseline_id} has no scored epoch (failed, or still in its first)"
        )
        return comparison
    comparison = BaselineComparison(metric, point(winner_id), point(baseline_id) if baseline_id else None)
    winner_examples = examples(winner_id)
    # Ties: among the trials closest to the winner (a bootstrap each; a large dev set makes them slow).
    closest = sorted(best_epochs, key=lambda trial_id: abs(best_epochs[trial_id][key] - best_epochs[winner_id][key]))
    for trial_id in closest[: TIE_CHECKED + 1]:
        other = examples(trial_id)
        if trial_id == winner_id or winner_examples is None or other is None:
            continue
        compared = paired_interval(metric, winner_examples, other)
        if compared and compared[1][0] <= 0 <= compared[1][1]:  # the interval holds no difference
            comparison.tied.append(trial_id)
    if baseline_id is None:
        comparison.verdict = "no baseline: no trial ran the config's own train values (outside the search space)"
        return comparison
    comparison.difference = comparison.winner["score"] - comparison.baseline["score"]
    if baseline_id == winner_id:
        comparison.verdict = "the winner is the baseline: no searched configuration scored higher"
        return comparison
    baseline_examples = examples(baseline_id)
    compared = (
        paired_interval(metric, winner_examples, baseline_examples) if winner_examples and baseline_examples else None
    )
    if compared is None:
        comparison.verdict = "noise unknown: no dev predictions recorded for both trials"
        if metric not in METRIC_FUNCTIONS:
            comparison.verdict = f"noise unknown: search.metric {metric} is not scored per example; a task metric is"
        return comparison
    comparison.difference, comparison.interval = compared
    comparison.examples = len(winner_examples["labels"])
    comparison.verdict = verdict_of(comparison.interval, mode)
    return comparison


# Two-sided 95% quantiles of Student's t for 1-10 degrees of freedom; beyond, a Cornish-Fisher
# expansion around the normal's 1.96 (within 0.002 of the exact value from 11 on).
T_95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228}


def t_quantile_95(degrees: int) -> float:
    if degrees in T_95:
        return T_95[degrees]
    z = 1.959964
    return z + (z**3 + z) / (4 * degrees) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * degrees**2)


def paired_seed_interval(differences: list[float]) -> tuple[float, list[float] | None]:
    """Mean of per-seed differences (a config minus the baseline, trained with the same seed) and
    its 95% t interval over the seeds; no interval from fewer than 2 pairs."""
    count = len(differences)
    mean = float(np.mean(differences))
    if count < 2:
        return mean, None
    half = t_quantile_95(count - 1) * float(np.std(differences, ddof=1)) / count**0.5
    return mean, [mean - half, mean + half]


def verdict_of(interval: list[float] | None, mode: str, noise: str = "dev-set noise") -> str:
    """The plain verdict for an interval of (a config - the baseline)."""
    if interval is None:
        return "noise unknown: fewer than 2 paired runs"
    low, high = sorted(bound if mode == "max" else -bound for bound in interval)
    if low > 0:
        return f"better than the baseline beyond {noise}"
    return f"worse than the baseline beyond {noise}" if high < 0 else f"within {noise} of the baseline"


def candidates_words(candidates: list[dict]) -> str:
    """The confirm stage's configs in words: "the top 3 configs and the baseline", or "the top 3
    configs (the baseline among them)"."""
    added = sum(1 for candidate in candidates if candidate.get("added_as_baseline"))
    top = len(candidates) - added
    words = f"the top {top} config{'s' if top != 1 else ''}"
    if added:
        return f"{words} and the baseline"
    return f"{words} (the baseline among them)" if any(c.get("baseline") for c in candidates) else words
