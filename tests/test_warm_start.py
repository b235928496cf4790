"""search.warm_start: the ended trials of earlier run folders are handed to Optuna before it
suggests anything, and are not run again; another task, model or metric is refused."""

from __future__ import annotations

import copy

import pytest
from conftest import search_in_process

from raytune_ft.config import ConfigError, validate_config
from raytune_ft.run_folder import read_trial_events
from raytune_ft.tuning.tuner import build_param_space, build_search_algorithm
from raytune_ft.tuning.warm_start import load_warm_start


def warm_config(raw: dict, run_dir, **search) -> dict:
    raw = copy.deepcopy(raw)
    raw["search"].update({"warm_start": str(run_dir), **search})
    return raw


def first_suggestions(raw: dict, count: int = 2) -> tuple[list[dict], object]:
    config = validate_config(raw)
    warm, _ = load_warm_start(config)
    searcher = build_search_algorithm(config, warm_trials=warm)
    searcher.set_search_properties(f"eval_{config.metric}", config.search.mode, build_param_space(config))
    return [searcher.suggest(f"t{index}") for index in range(count)], searcher


def test_a_warm_start_teaches_the_searcher_first_and_runs_no_earlier_trial_again(finished_search):
    _, run_dir, raw = finished_search
    earlier = [event["config"] for event in read_trial_events(run_dir) if event["event"] == "started"]
    cold, _ = first_suggestions(raw)
    warm, searcher = first_suggestions(warm_config(raw, run_dir))
    # Cold: the config's own values first, then a start-up draw. Warm: the two earlier trials are
    # in the study already (finished, with their best epochs), so the model suggests at once.
    assert cold[0] == {"learning_rate": 1e-3, "warmup_ratio": 0.0}
    told = [trial for trial in searcher._ot_study.trials if trial.state.name == "COMPLETE"]
    assert sorted(trial.params["learning_rate"] for trial in told) == sorted(c["learning_rate"] for c in earlier)
    assert not any(point in earlier for point in warm)  # the baseline already ran: not again
    assert warm[0] != cold[1]


def test_values_outside_the_new_space_are_dropped_with_a_note(finished_search):
    _, run_dir, raw = finished_search
    narrower = warm_config(raw, run_dir)
    narrower["search"]["space"]["learning_rate"] = {"loguniform": [1e-5, 9e-4]}  # the baseline's 1e-3 is outside
    narrower["train"]["learning_rate"] = 1e-4
    trials, notes = load_warm_start(validate_config(narrower))
    earlier_rates = [e["config"]["learning_rate"] for e in read_trial_events(run_dir) if e["event"] == "started"]
    assert len(trials) == sum(rate < 9e-4 for rate in earlier_rates)
    assert notes == [
        f"warm start: {len(trials)} ended trials of {run_dir} (1 dropped: values outside this search's space or other fixed values)"
    ]


@pytest.mark.parametrize(
    "change, words",
    [
        ({"task": "sst2", "data": {"path": None, "text_columns": None, "label_names": None}}, "searched task custom"),
        ({"search": {"metric": "loss"}}, "searched search.metric accuracy (max), this search loss"),
    ],
)
def test_a_run_of_another_task_or_metric_is_refused_in_one_line(finished_search, change, words):
    _, run_dir, raw = finished_search
    other = warm_config(raw, run_dir)
    for section, values in change.items():
        if isinstance(values, dict):
            other[section].update({k: v for k, v in values.items()})
            other[section] = {k: v for k, v in other[section].items() if v is not None}
        else:
            other[section] = values
    with pytest.raises(ConfigError) as refused:
        load_warm_start(validate_config(other))
    assert words in str(refused.value) and "\n" not in str(refused.value)


def test_random_search_and_a_folder_that_is_no_run_are_refused(finished_search, tmp_path):
    _, run_dir, raw = finished_search
    with pytest.raises(ConfigError, match="only a model-based search.algorithm"):
        validate_config(warm_config(raw, run_dir, algorithm="random"))
    with pytest.raises(ConfigError, match="is not a run folder"):
        load_warm_start(validate_config(warm_config(raw, tmp_path)))


@pytest.mark.slow
def test_a_warm_started_search_runs_only_new_trials(finished_search, tmp_path):
    _, run_dir, raw = finished_search
    again = warm_config(raw, run_dir, num_samples=1)
    again["output"] = {"dir": str(tmp_path / "runs"), "name": "warm"}
    result = search_in_process(again, tmp_path)
    assert result.exit_code == 0, result.output
    assert f"warm start: 2 ended trials of {run_dir}" in result.output
    earlier = [e["config"] for e in read_trial_events(run_dir) if e["event"] == "started"]
    (new,) = [e["config"] for e in read_trial_events(tmp_path / "runs" / "warm") if e["event"] == "started"]
    assert new not in earlier


def test_an_earlier_pbt_search_is_refused(finished_search, tmp_path):
    """PBT trials change their values as they run: their start values do not say what scored."""
    import shutil

    import yaml

    _, run_dir, raw = finished_search
    pbt_run = tmp_path / "pbt-run"
    shutil.copytree(run_dir, pbt_run, ignore=shutil.ignore_patterns("tune", "trials", "*.db"))
    saved = yaml.safe_load((pbt_run / "config.yaml").read_text())
    saved["search"].update(scheduler="pbt", algorithm="random")
    (pbt_run / "config.yaml").write_text(yaml.safe_dump(saved))
    with pytest.raises(ConfigError, match="is a PBT search"):
        load_warm_start(validate_config(warm_config(raw, pbt_run)))
