"""confirm.seeds: auto: the confirm stage adds seeds to the leader and the configs it is not yet
separated from (a paired t interval over the seeds), and stops once it is, or at max_seeds."""

from __future__ import annotations

import json

import pytest
from conftest import search_in_process, two_config_search
from ray.tune.search import Searcher

from raytune_ft.config import ConfigError, validate_config
from raytune_ft.tuning.confirm_seeds import AddSeedsUntilSeparated

SEEDS = [43, 44, 45, 46, 47, 48]


def searcher(candidates: int = 3) -> AddSeedsUntilSeparated:
    return AddSeedsUntilSeparated(
        [{"learning_rate": 10.0**-k} for k in range(candidates)], SEEDS, "eval_accuracy", "max"
    )


def run_round(search: AddSeedsUntilSeparated, score) -> list[tuple[int, int]]:
    """Every run the searcher hands out until it is done, each ended at once with score(candidate, seed)."""
    handed, trial = [], 0
    while (config := search.suggest(f"t{trial}")) not in (None, Searcher.FINISHED):
        handed.append((config["candidate"], config["seed"]))
        search.on_trial_complete(f"t{trial}", {"epoch": 1, "eval_accuracy": score(config["candidate"], config["seed"])})
        trial += 1
    return handed


def test_seeds_go_to_the_leader_and_its_close_rivals_until_it_separates():
    search = searcher()
    # Candidate 0 leads; 1 is close and noisy, 2 is far behind.
    noise = {43: 0.01, 44: -0.01, 45: 0.0, 46: 0.002, 47: -0.002, 48: 0.001}
    scores = {0: lambda s: 0.85 + noise[s] / 5, 1: lambda s: 0.84 - noise[s], 2: lambda s: 0.70}
    handed = run_round(search, lambda c, s: scores[c](s))
    seeds_of = {c: [seed for candidate, seed in handed if candidate == c] for c in range(3)}
    assert seeds_of[2] == SEEDS[:3]  # separated from the leader after the first three
    assert seeds_of[0] == seeds_of[1] == SEEDS[: len(seeds_of[0])] and len(seeds_of[0]) > 3  # paired, more seeds
    assert search.suggest("last") is Searcher.FINISHED


def test_a_clear_leader_needs_no_more_than_three_seeds():
    search = searcher()
    run_round(search, lambda c, s: [0.90, 0.70, 0.60][c] + (s - 44) * 0.001)
    assert search.suggest("next") is Searcher.FINISHED and search.given == 3


def test_seeds_stop_at_max_seeds_when_nothing_separates():
    search = searcher(2)
    handed = run_round(search, lambda c, s: 0.8 + (0.01 if (c + s) % 2 else -0.01))  # a coin toss
    assert search.suggest("next") is Searcher.FINISHED
    assert sorted({seed for _, seed in handed}) == SEEDS  # every seed up to max_seeds, no more


def test_auto_seeds_validate():
    assert validate_config({"confirm": {"top_k": 2, "seeds": "auto", "max_seeds": 5}}).confirm.seeds == "auto"
    with pytest.raises(ConfigError, match="confirm.seeds"):
        validate_config({"confirm": {"top_k": 2, "seeds": 1}})


@pytest.mark.slow
def test_a_confirm_stage_with_auto_seeds_runs_and_reports(tiny_bert_dir, tmp_path):
    raw = two_config_search(
        tiny_bert_dir, tmp_path, "auto", train={"num_epochs": 1}, confirm={"top_k": 2, "seeds": "auto", "max_seeds": 4}
    )
    result = search_in_process(raw, tmp_path)
    assert result.exit_code == 0, result.output
    confirm = json.loads((tmp_path / "runs" / "auto" / "confirm.json").read_text())
    per_candidate = [len(candidate["runs"]) for candidate in confirm["candidates"]]
    assert all(3 <= runs <= 4 for runs in per_candidate), per_candidate
    assert confirm["winner"] is not None and "3 to 4 new seeds as needed (auto)" in result.output
