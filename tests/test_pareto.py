"""search.objectives: two goals at once (the search metric and a cost). The config's refusals, the
Pareto front on hand-made trials, what Optuna and the dashboard's study are told, and one real
search whose report, best.json and export give the front."""

from __future__ import annotations

import pytest

from raytune_ft.config import ConfigError, validate_config


def error_of(raw: dict) -> str:
    with pytest.raises(ConfigError) as info:
        validate_config(raw)
    message = str(info.value)
    assert "\n" not in message
    return message


SPACE = {"learning_rate": {"loguniform": [1e-5, 1e-3]}}


def test_the_first_objective_is_the_search_metric_and_sets_it():
    config = validate_config({"search": {"objectives": ["loss", "device_seconds"]}})
    assert (config.metric, config.search.mode) == ("loss", "min")
    assert config.objectives == [("eval_loss", "min"), ("device_seconds", "min")]
    config = validate_config({"search": {"objectives": ["f1", "trainable_parameters"], "metric": "f1"}})
    assert config.objectives == [("eval_f1", "max"), ("trainable_parameters", "min")]
    assert validate_config({}).objectives == []


@pytest.mark.parametrize(
    "search, words",
    [
        ({"objectives": ["f1"]}, "give two names, the search metric and then a cost"),
        ({"objectives": ["f1", "accuracy"]}, "device_seconds, trainable_parameters"),
        ({"objectives": ["device_seconds", "f1"]}, "e.g. [f1, device_seconds]"),
        ({"objectives": ["f1", "wall_seconds"]}, "got ['f1', 'wall_seconds']"),
        ({"objectives": ["accuracy", "device_seconds"], "metric": "f1"}, "set search.metric: accuracy"),
        ({"objectives": ["matthews", "device_seconds"]}, "'matthews' is not a metric of task mrpc"),
        ({"objectives": ["f1", "device_seconds"], "scheduler": "pbt", "space": SPACE}, "not with search.scheduler pbt"),
        ({"objectives": ["f1", "device_seconds"], "warm_start": "runs/earlier"}, "search.warm_start: not with"),
    ],
)
def test_objectives_that_cannot_work_are_refused_in_one_line(search, words):
    message = error_of({"search": search})
    assert words in message
    assert message.startswith("config: search.")


def test_a_confirm_stage_is_refused_with_objectives():
    message = error_of({"search": {"objectives": ["f1", "device_seconds"]}, "confirm": {"top_k": 2}})
    assert message.startswith("config: confirm.top_k:") and "remove one of them" in message


@pytest.mark.parametrize("algorithm", ["gp", "tpe", "random", "grid"])
def test_every_algorithm_and_asha_or_fifo_take_objectives(algorithm):
    space = {"learning_rate": {"choice": [1e-4, 1e-3]}}
    for scheduler in ("asha", "fifo"):
        search = {"objectives": ["f1", "device_seconds"], "algorithm": algorithm, "scheduler": scheduler}
        assert validate_config({"search": {**search, "space": space}}).search.algorithm == algorithm
