"""The search space, Optuna's options and the points tried first, without a Ray runtime."""

import pytest
from conftest import quick_config

from raytune_ft.config import ConfigError, load_config, validate_config
from raytune_ft.tuning.tuner import build_param_space, build_search_algorithm, points_to_evaluate

SPACE = {
    "learning_rate": {"loguniform": [1e-5, 1e-3]},
    "num_epochs": {"randint": [1, 4]},
    "warmup_ratio": {"uniform": [0.0, 0.2]},
    "batch_size": {"choice": [8, 16, 32]},
    "weight_decay": {"uniform": [0.0, 0.1]},
    "max_grad_norm": {"choice": [None, 1.0]},  # null: no clipping
    "seed": {"randint": [0, 1000]},
}


def suggestions(search: dict, count: int = 12) -> list[dict]:
    """What Optuna suggests for `count` trials when each reports a score that depends on lr."""
    config = validate_config(quick_config("unused-model", train={"num_epochs": 2}, search={"space": SPACE, **search}))
    searcher = build_search_algorithm(config)
    searcher.set_search_properties("eval_accuracy", "max", build_param_space(config))
    seen = []
    for index in range(count):
        trial_id = f"t{index}"
        point = searcher.suggest(trial_id)
        seen.append(point)
        searcher.on_trial_complete(trial_id, {"eval_accuracy": -abs(point["learning_rate"] - 2e-4)})
    return seen


def test_the_same_seed_gives_the_same_search():
    assert suggestions({"seed": 7}) == suggestions({"seed": 7})
    assert suggestions({"seed": 7}) != suggestions({"seed": 8})


def test_multivariate_tpe_and_startup_trials_change_the_suggestions():
    plain = suggestions({"algorithm": "tpe", "seed": 3, "n_startup_trials": 3})
    assert suggestions({"algorithm": "tpe", "seed": 3, "n_startup_trials": 3, "multivariate": True}) != plain
    # With many startup trials every suggestion is random: the first 3 agree, later ones differ.
    random_only = suggestions({"algorithm": "tpe", "seed": 3, "n_startup_trials": 12})
    assert random_only[1:3] == plain[1:3] and random_only[3:] != plain[3:]


def test_all_train_keys_can_be_searched_and_stay_in_their_space():
    for point in suggestions({"seed": 1}):
        assert set(point) == set(SPACE)
        assert 1e-5 <= point["learning_rate"] <= 1e-3 and point["num_epochs"] in (1, 2, 3)
        assert point["batch_size"] in (8, 16, 32) and 0 <= point["seed"] < 1000


def test_the_config_values_come_first_by_default():
    first = suggestions({"seed": 1})[0]
    assert first == {
        "learning_rate": 1e-3,
        "num_epochs": 2,
        "warmup_ratio": 0.0,
        "batch_size": 16,
        "weight_decay": 0.0,
        "max_grad_norm": None,
        "seed": 42,
    }


def test_points_to_evaluate_from_the_config_come_first():
    points = [{"learning_rate": 3e-5, "num_epochs": 1}, {"learning_rate": 1e-4, "num_epochs": 3}]
    seen = suggestions({"seed": 1, "points_to_evaluate": points})
    assert [{k: p[k] for k in ("learning_rate", "num_epochs")} for p in seen[:2]] == points
    # Keys a point leaves out take the config's train.* values.
    assert seen[0]["batch_size"] == 16 and seen[0]["seed"] == 42


def test_a_partial_point_needs_train_values_inside_the_space():
    space = {"learning_rate": {"loguniform": [1e-5, 1e-3]}, "num_epochs": {"randint": [3, 5]}}
    with pytest.raises(ConfigError, match=r"search.points_to_evaluate\[0\]: give num_epochs"):
        validate_config(quick_config("m", search={"space": space, "points_to_evaluate": [{"learning_rate": 1e-4}]}))


def test_an_empty_list_skips_the_default_point():
    config = validate_config(quick_config("m", search={"space": SPACE, "points_to_evaluate": []}))
    assert points_to_evaluate(config) == []


@pytest.mark.parametrize(
    "points, message",
    [
        ([{"dropout": 0.1}], "search.points_to_evaluate[0].dropout: not a searched key"),
        ([{"learning_rate": 1.0}], "search.points_to_evaluate[0].learning_rate: 1.0 is outside"),
        ([{"batch_size": 12}], "search.points_to_evaluate[0].batch_size: 12 is outside"),
    ],
)
def test_points_outside_the_space_are_refused(points, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        validate_config(quick_config("m", search={"space": SPACE, "points_to_evaluate": points}))


def test_grid_and_random_algorithms():
    from ray.tune.search import BasicVariantGenerator

    from raytune_ft.tuning.tuner import planned_trials, tune_max_concurrent_trials

    grid = load_config(
        None,
        [
            "search.algorithm=grid",
            "search.num_samples=1",
            "search.space={learning_rate: {choice: [1.0e-5, 3.0e-5]}, num_epochs: {choice: [1, 2, 3]}}",
        ],
    )
    assert build_param_space(grid) == {
        "learning_rate": {"grid_search": [1e-5, 3e-5]},
        "num_epochs": {"grid_search": [1, 2, 3]},
    }
    assert build_search_algorithm(grid) is None and planned_trials(grid) == 6
    random = build_search_algorithm(
        load_config(None, ["search.algorithm=random", "search.space={learning_rate: {loguniform: [1.0e-5, 1.0e-4]}}"]),
        2,
    )
    assert isinstance(random, BasicVariantGenerator) and random.max_concurrent == 2
    # Tune ignores (and warns about) its own max_concurrent_trials beside a generator passed in; the
    # generator limits itself, grid (Tune's generator) and TPE (wrapped in a ConcurrencyLimiter) need it.
    tpe = build_search_algorithm(load_config(None, ["search.space={learning_rate: {loguniform: [1.0e-5, 1.0e-4]}}"]), 2)
    assert [tune_max_concurrent_trials(alg, 2) for alg in (random, None, tpe)] == [None, 2, 2]
    with pytest.raises(ConfigError, match="grid needs a choice list"):
        load_config(None, ["search.algorithm=grid", "search.space={learning_rate: {loguniform: [1.0e-5, 1.0e-4]}}"])
    with pytest.raises(ConfigError, match="algorithm"):
        load_config(None, ["search.algorithm=bayes"])


@pytest.mark.parametrize("algorithm", ["gp", "tpe"])
def test_an_8_trial_search_is_model_based_after_its_start_up(algorithm):
    """n_startup_trials defaults to a quarter of num_samples (2 of 8): from the third suggestion
    on, the model's, not the random ones Optuna's own default (10) would give all 8 trials."""
    from raytune_ft.tuning.tuner import startup_trials

    config = validate_config(quick_config("m", search={"space": SPACE, "num_samples": 8}))
    assert startup_trials(config) == 2
    model_based = suggestions({"algorithm": algorithm, "seed": 3, "num_samples": 8}, count=8)
    random_only = suggestions({"algorithm": algorithm, "seed": 3, "num_samples": 8, "n_startup_trials": 100}, count=8)
    assert model_based[:2] == random_only[:2] and model_based[2:] != random_only[2:]
    if algorithm == "tpe":  # TPE learned that the score rises as learning_rate nears 2e-4: its picks sit closer
        distance = [sum(abs(p["learning_rate"] - 2e-4) for p in points[2:]) for points in (model_based, random_only)]
        assert distance[0] < distance[1]  # (gp, in these 7 dimensions after 2 points, still explores)


@pytest.mark.parametrize(("num_samples", "startup"), [(1, 2), (4, 2), (8, 2), (16, 4), (40, 10), (200, 10)])
def test_startup_trials_grow_with_the_budget_from_2_to_10(num_samples, startup):
    from raytune_ft.tuning.tuner import startup_trials

    config = validate_config(quick_config("m", search={"space": SPACE, "num_samples": num_samples}))
    assert startup_trials(config) == startup


def test_the_gaussian_process_sampler_searches_the_same_space():
    points = suggestions({"algorithm": "gp", "seed": 5}, count=6)
    assert points == suggestions({"algorithm": "gp", "seed": 5}, count=6)
    for point in points:
        assert set(point) == set(SPACE) and 1e-5 <= point["learning_rate"] <= 1e-3
