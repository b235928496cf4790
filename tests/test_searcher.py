"""The searcher learns from the score that picks the winner: each trial's best epoch, every epoch
as an intermediate value; a trial the scheduler stopped is told as pruned under TPE (as complete
with its best epoch under GP, which leaves pruned trials out). On Optuna's real study."""

from __future__ import annotations

import pytest
from conftest import quick_config
from ray.tune.search.optuna import OptunaSearch

from raytune_ft.config import validate_config
from raytune_ft.run_folder import read_epochs
from raytune_ft.tuning.tuner import TUNE_DIR, build_param_space, build_search_algorithm

SPACE = {"learning_rate": {"loguniform": [1e-5, 1e-3]}}


def searcher_for(algorithm: str, space: dict = SPACE):
    config = validate_config(
        quick_config("unused-model", train={"num_epochs": 3}, search={"space": space, "algorithm": algorithm})
    )
    searcher = build_search_algorithm(config)
    searcher.set_search_properties("eval_accuracy", "max", build_param_space(config))
    return searcher


def run(searcher, trial_id: str, scores: list[float]) -> None:
    """A trial that reports `scores` (epochs 1, 2, ...) and then ends, with Tune's calls in Tune's
    order; Tune hands searchers a flattened result ("config/<key>")."""
    config = searcher.suggest(trial_id)
    results = [
        {"epoch": epoch, "eval_accuracy": score, **{f"config/{k}": v for k, v in config.items()}}
        for epoch, score in enumerate(scores, 1)
    ]
    for result in results:
        searcher.on_trial_result(trial_id, result)
    searcher.on_trial_complete(trial_id, results[-1])


def told(searcher) -> list[tuple[str, float | None, dict[int, float]]]:
    return [(trial.state.name, trial.value, dict(trial.intermediate_values)) for trial in searcher._ot_study.trials]


@pytest.mark.parametrize("algorithm", ["tpe", "gp"])
def test_a_trial_is_told_its_best_epoch_not_its_last(algorithm):
    searcher = searcher_for(algorithm)
    run(searcher, "t1", [0.70, 0.80, 0.75])  # peaked at epoch 2, then overfit
    assert told(searcher) == [("COMPLETE", 0.80, {1: 0.70, 2: 0.80, 3: 0.75})]


def test_a_stopped_trial_is_told_as_pruned_under_tpe():
    searcher = searcher_for("tpe")
    run(searcher, "t1", [0.60])  # the scheduler stopped it after epoch 1 of 3
    # Pruned, with its last intermediate value as Optuna's value for it.
    assert told(searcher) == [("PRUNED", 0.60, {1: 0.60})]


def test_a_stopped_trial_is_told_its_best_epoch_under_gp():
    searcher = searcher_for("gp")
    run(searcher, "t1", [0.60, 0.55])
    assert told(searcher) == [("COMPLETE", 0.60, {1: 0.60, 2: 0.55})]


def test_a_trial_is_stopped_early_by_its_own_searched_epoch_count():
    searcher = searcher_for("tpe", {**SPACE, "num_epochs": {"choice": [4]}})
    run(searcher, "t1", [0.60, 0.62, 0.64])  # 3 epochs is train.num_epochs, but this trial planned 4
    assert told(searcher) == [("PRUNED", 0.64, {1: 0.60, 2: 0.62, 3: 0.64})]


def test_a_failed_trial_is_told_as_failed():
    searcher = searcher_for("tpe")
    searcher.suggest("t1")
    searcher.on_trial_result("t1", {"epoch": 1, "eval_accuracy": 0.5})
    searcher.on_trial_complete("t1", None, error=True)
    assert [state for state, _, _ in told(searcher)] == ["FAIL"]


def test_a_real_search_teaches_optuna_each_trials_best_epoch(finished_search):
    _, run_dir, _ = finished_search
    searcher = OptunaSearch()
    searcher.restore_from_dir(str(run_dir / TUNE_DIR))
    rows = read_epochs(run_dir)
    best_by_trial = sorted(
        max(row["eval_accuracy"] for row in rows if row["trial_id"] == trial)
        for trial in {row["trial_id"] for row in rows}
    )
    study = searcher._ot_study.trials
    assert sorted(trial.value for trial in study) == best_by_trial
    assert all(trial.state.name == "COMPLETE" and sorted(trial.intermediate_values) == [1, 2] for trial in study)
