"""Every search says whether its best trial beat the baseline (the config's own train values, the
first trial) beyond the dev set's noise: a paired bootstrap over the dev examples, from the two
trials' predictions. The verdict logic on hand-made trials, then on a real search's run folder."""

from __future__ import annotations

import json

import numpy as np
import pytest

from raytune_ft.report.baseline import BETTER, WITHIN, WORSE, compare_with_baseline, paired_interval
from raytune_ft.run_folder import read_epochs, read_predictions, read_trial_events
from raytune_ft.training.scores import accuracy, binary_f1


def labelled(size: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 2, size)


def right_on(labels: np.ndarray, share: float, seed: int) -> list[int]:
    """Predictions that are right on about `share` of the examples (which ones: by seed)."""
    wrong = np.random.default_rng(seed).random(len(labels)) > share
    return np.where(wrong, 1 - labels, labels).tolist()


def trials(labels: np.ndarray, predictions: dict[str, list[int]], metric=accuracy) -> tuple[dict, dict]:
    """best_epochs and predictions as the run folder would give them, each trial's best at epoch 2."""
    best_epochs = {
        trial_id: {"epoch": 2, "eval_accuracy": metric(np.asarray(values), labels)}
        for trial_id, values in predictions.items()
    }
    examples = {
        (trial_id, 2): {"predictions": values, "labels": labels.tolist()} for trial_id, values in predictions.items()
    }
    return best_epochs, examples


def test_a_winner_far_ahead_is_better_beyond_noise():
    labels = labelled(400)
    best_epochs, examples = trials(labels, {"base": right_on(labels, 0.6, 1), "win": right_on(labels, 0.9, 2)})
    comparison = compare_with_baseline("accuracy", "max", best_epochs, "base", "win", examples)
    assert comparison.verdict == BETTER
    low, high = comparison.interval
    assert 0 < low < comparison.difference < high
    assert comparison.difference == pytest.approx(
        best_epochs["win"]["eval_accuracy"] - best_epochs["base"]["eval_accuracy"]
    )
    assert comparison.examples == 400 and comparison.tied == []


def test_two_examples_apart_on_408_is_within_noise_and_the_trial_is_tied():
    labels = labelled(408)
    base = right_on(labels, 0.8, 1)
    win = list(base)
    for index in [i for i, (p, y) in enumerate(zip(base, labels)) if p != y][:2]:
        win[index] = int(labels[index])  # right on two more pairs: +0.0049
    best_epochs, examples = trials(labels, {"base": base, "win": win})
    comparison = compare_with_baseline("accuracy", "max", best_epochs, "base", "win", examples)
    assert comparison.difference == pytest.approx(2 / 408)
    assert comparison.verdict == WITHIN
    assert comparison.interval[0] <= 0 <= comparison.interval[1]
    assert comparison.tied == ["base"]


def test_a_trial_that_scores_lower_beyond_noise_is_worse():
    labels = labelled(400)
    best_epochs, examples = trials(labels, {"base": right_on(labels, 0.9, 1), "other": right_on(labels, 0.6, 2)})
    comparison = compare_with_baseline("accuracy", "max", best_epochs, "base", "other", examples)
    assert comparison.verdict == WORSE and comparison.interval[1] < 0


def test_lower_is_better_flips_the_verdict():
    labels = labelled(400)
    best_epochs, examples = trials(labels, {"base": right_on(labels, 0.9, 1), "win": right_on(labels, 0.6, 2)})
    comparison = compare_with_baseline("accuracy", "min", best_epochs, "base", "win", examples)
    assert comparison.verdict == BETTER  # a lower score is the improvement when mode is min


def test_f1_is_compared_on_f1_not_on_accuracy():
    labels = labelled(300)
    first, second = right_on(labels, 0.85, 1), right_on(labels, 0.7, 2)
    difference, (low, high) = paired_interval(
        "f1", {"predictions": first, "labels": labels.tolist()}, {"predictions": second, "labels": labels.tolist()}
    )
    assert difference == pytest.approx(binary_f1(np.asarray(first), labels) - binary_f1(np.asarray(second), labels))
    assert low < difference < high


def test_the_baseline_as_winner_and_a_missing_baseline_say_so():
    labels = labelled(100)
    best_epochs, examples = trials(labels, {"base": right_on(labels, 0.9, 1), "other": right_on(labels, 0.5, 2)})
    same = compare_with_baseline("accuracy", "max", best_epochs, "base", "base", examples)
    assert same.verdict.startswith("the winner is the baseline") and same.difference == 0
    missing = compare_with_baseline("accuracy", "max", best_epochs, None, "base", examples)
    assert missing.verdict.startswith("no baseline") and missing.baseline is None
    # The baseline trial failed before its first epoch was scored: no best epoch to compare.
    unscored = compare_with_baseline("accuracy", "max", {"other": best_epochs["other"]}, "base", "other", examples)
    assert unscored.verdict.startswith("no baseline score: its trial base") and unscored.baseline is None
    unrecorded = compare_with_baseline("accuracy", "max", best_epochs, "base", "other", {})
    assert unrecorded.verdict.startswith("noise unknown") and unrecorded.interval is None


def test_a_real_search_records_dev_predictions_and_states_the_verdict(finished_search):
    result, run_dir, raw = finished_search
    assert result.exit_code == 0, result.output
    rows, predictions = read_epochs(run_dir), read_predictions(run_dir)
    # One prediction row per reported epoch; they give back the epoch's own score.
    assert set(predictions) == {(row["trial_id"], row["epoch"]) for row in rows}
    for row in rows:
        examples = predictions[(row["trial_id"], row["epoch"])]
        assert len(examples["labels"]) == row["examples_evaluated"] == 32
        assert accuracy(np.asarray(examples["predictions"]), np.asarray(examples["labels"])) == row["eval_accuracy"]
        assert "dev_predictions" not in row  # kept out of epochs.jsonl
    # ...and out of Ray Tune's own records of each result (its saved state is written every 2 s).
    tune_records = [path for path in (run_dir / "tune").rglob("*") if path.name in ("result.json", "progress.csv")]
    assert tune_records and not any("dev_predictions" in path.read_text() for path in tune_records)
    assert not any("dev_predictions" in path.read_text() for path in (run_dir / "tune").glob("experiment_state*.json"))
    best = json.loads((run_dir / "best.json").read_text())
    comparison = best["against_baseline"]
    # The trial that ran the config's own values (learning_rate 1e-3, warmup_ratio 0), suggested first.
    own_values = {"learning_rate": raw["train"]["learning_rate"], "warmup_ratio": 0.0}
    starts = [event for event in read_trial_events(run_dir) if event["event"] == "started"]
    (baseline,) = [event["trial_id"] for event in starts if event["config"] == own_values]
    assert comparison["baseline"]["trial_id"] == baseline
    assert comparison["winner"]["trial_id"] == best["trial_id"]
    if best["trial_id"] == baseline:
        assert comparison["verdict"].startswith("the winner is the baseline")
    else:
        assert comparison["verdict"] in (BETTER, WITHIN) and comparison["examples"] == 32
    assert "against the baseline" in result.output
