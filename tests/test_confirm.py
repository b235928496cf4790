"""The confirm stage: the search's top configs trained again with new seeds in a second Ray Tune
run, mean ± std per config, and a winner by the mean that best.json, export and report name.

`confirmed_search` (conftest.py) runs the search once: 2 trials, then the top 2 configs x 2
new seeds, 2 epochs each, on the local Ray runtime."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import quick_config

from raytune_ft.cli import main
from raytune_ft.config import ConfigError, validate_config
from raytune_ft.tuning.confirm import confirm_results, new_seeds, search_seeds, top_candidates


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def best_score(rows: list[dict], trial_id: str) -> float:
    """The search metric of a trial's best epoch: confirmed_search minimizes eval_loss."""
    return min(row["eval_loss"] for row in rows if row["trial_id"] == trial_id)


@pytest.fixture(scope="module")
def confirmed(confirmed_search):
    result, run_dir, _ = confirmed_search
    assert result.exit_code == 0, result.output
    return result, run_dir, json.loads((run_dir / "confirm.json").read_text())


# ---------------------------------------------------------------------------------------
# The stage, on a real search


@pytest.mark.slow
def test_the_top_configs_are_the_search_trials_in_order_of_their_best_epoch(confirmed):
    _, run_dir, confirm = confirmed
    rows = read_jsonl(run_dir / "epochs.jsonl")
    trials = sorted({row["trial_id"] for row in rows}, key=lambda t: best_score(rows, t))
    assert [c["search"]["trial_id"] for c in confirm["candidates"]] == trials
    for candidate in confirm["candidates"]:
        trial_rows = [row for row in rows if row["trial_id"] == candidate["search"]["trial_id"]]
        assert candidate["config"] == {"learning_rate": trial_rows[0]["learning_rate"]}
        assert candidate["search"]["score"] == best_score(rows, candidate["search"]["trial_id"])


@pytest.mark.slow
def test_each_config_ran_again_with_new_seeds_the_search_did_not_use(confirmed):
    _, run_dir, confirm = confirmed
    assert confirm["seeds"] == [43, 44] and confirm["search_seeds"] == [42]
    started = [e for e in read_jsonl(run_dir / "confirm" / "trials.jsonl") if e["event"] == "started"]
    assert len(started) == 4
    for candidate in confirm["candidates"]:
        mine = [e for e in started if e["config"]["candidate"] == candidate["candidate"]]
        assert sorted(e["config"]["seed"] for e in mine) == [43, 44]
        assert all(e["config"]["learning_rate"] == candidate["config"]["learning_rate"] for e in mine)
        assert [run["status"] for run in candidate["runs"]] == ["finished", "finished"]
    # The seed really changed the run: same config, different training losses.
    rows = read_jsonl(run_dir / "confirm" / "epochs.jsonl")
    assert len(rows) == 8  # 4 runs x 2 epochs, in the confirm folder, not the search's epochs.jsonl
    first = confirm["candidates"][0]["runs"]
    losses = [
        next(r["train_loss"] for r in rows if r["trial_id"] == run["trial_id"] and r["epoch"] == 1) for run in first
    ]
    assert losses[0] != losses[1]


@pytest.mark.slow
def test_mean_and_std_are_over_each_runs_best_epoch(confirmed):
    _, run_dir, confirm = confirmed
    rows = read_jsonl(run_dir / "confirm" / "epochs.jsonl")
    for candidate in confirm["candidates"]:
        scores = [best_score(rows, run["trial_id"]) for run in candidate["runs"]]
        assert [run["score"] for run in candidate["runs"]] == scores
        assert candidate["mean"] == pytest.approx(statistics.fmean(scores))
        assert candidate["std"] == pytest.approx(statistics.stdev(scores))


@pytest.mark.slow
def test_the_winner_has_the_best_mean_and_exports_its_best_run(confirmed):
    _, run_dir, confirm = confirmed
    means = [c["mean"] for c in confirm["candidates"]]
    winner = confirm["candidates"][confirm["winner"]]
    assert winner["mean"] == min(means) and winner["winner"]
    # Its exported model: the best run of the winning config, on dev (search trial or confirm run).
    search_rows = read_jsonl(run_dir / "epochs.jsonl")
    runs = {
        winner["search"]["trial_id"]: best_score(search_rows, winner["search"]["trial_id"]),
        **{run["trial_id"]: run["score"] for run in winner["runs"]},
    }
    best = json.loads((run_dir / "best.json").read_text())
    assert runs[best["trial_id"]] == min(runs.values())
    assert best["metrics"]["eval_loss"] == min(runs.values())
    assert best["config"]["learning_rate"] == winner["config"]["learning_rate"]
    assert best["confirmed"]["mean"] == winner["mean"] and best["confirmed"]["seeds"] == [43, 44]
    assert Path(best["checkpoint"], "model.safetensors").is_file()
    assert confirm["exported"]["trial_id"] == best["trial_id"]


@pytest.mark.slow
def test_export_copies_the_confirmed_winners_model(confirmed, tmp_path):
    _, run_dir, _ = confirmed
    best = json.loads((run_dir / "best.json").read_text())
    out = tmp_path / "winner"
    result = CliRunner().invoke(main, ["export", str(run_dir), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert json.loads((out / "raytune_ft_best.json").read_text())["trial_id"] == best["trial_id"]
    assert (out / "model.safetensors").read_bytes() == Path(best["checkpoint"], "model.safetensors").read_bytes()


@pytest.mark.slow
def test_search_and_report_show_the_confirm_table(confirmed):
    result, run_dir, confirm = confirmed
    winner = confirm["candidates"][confirm["winner"]]
    for output in (result.output, CliRunner().invoke(main, ["report", str(run_dir), "--no-plots"]).output):
        # The config's own learning rate (1e-3) was searched first: the baseline is among the two.
        assert "Confirm: the top 2 configs (the baseline among them) with new seeds" in output
        assert "confirm: the top 2 configs (the baseline among them) x 2 new seeds (43, 44): winner config" in output
        assert "vs baseline" in output
        assert f"search trial {winner['search']['trial_id']}) mean eval_loss={winner['mean']:.4f}" in output
        assert f"43: {winner['runs'][0]['score']:.4f}" in output
    document = json.loads(CliRunner().invoke(main, ["report", str(run_dir), "--format", "json", "--no-plots"]).output)
    assert document["confirm"] == confirm
    (baseline,) = [candidate for candidate in confirm["candidates"] if candidate.get("baseline")]
    assert baseline["config"] == {"learning_rate": 1e-3}
    (other,) = [candidate for candidate in confirm["candidates"] if not candidate.get("baseline")]
    assert other["vs_baseline"]["pairs"] == 2 and len(other["vs_baseline"]["interval"]) == 2
    assert [t["trial_id"] for t in document["trials"] if t["winner"]] == [winner["search"]["trial_id"]]


# ---------------------------------------------------------------------------------------
# The rules, on records written by hand


def row(trial_id, epoch, score, **params):
    return {"trial_id": trial_id, "epoch": epoch, "eval_accuracy": score, **params}


def test_candidates_are_distinct_configs_ranked_by_their_best_epoch():
    config = validate_config(
        quick_config("m", search={"space": {"learning_rate": {"loguniform": [1e-5, 1e-2]}}}, confirm={"top_k": 2})
    )
    rows = [
        row("a", 1, 0.9, learning_rate=1e-3),
        row("a", 2, 0.5, learning_rate=1e-3),
        row("b", 1, 0.7, learning_rate=1e-4),
        row("c", 1, 0.8, learning_rate=1e-3),
        row("d", 1, 0.6, learning_rate=3e-5),
    ]
    candidates = top_candidates(rows, config)
    assert [(c["search"]["trial_id"], c["search"]["score"], c["config"]) for c in candidates] == [
        ("a", 0.9, {"learning_rate": 1e-3}),
        ("b", 0.7, {"learning_rate": 1e-4}),
    ]  # c repeats a's config


def test_a_searched_seed_is_not_part_of_a_candidate_config():
    space = {"learning_rate": {"loguniform": [1e-5, 1e-2]}, "seed": {"randint": [0, 100]}}
    config = validate_config(quick_config("m", search={"space": space}, confirm={"top_k": 2}))
    rows = [
        row("a", 1, 0.9, learning_rate=1e-3, seed=7),
        row("b", 1, 0.8, learning_rate=1e-3, seed=9),
        row("c", 1, 0.7, learning_rate=1e-4, seed=7),
    ]
    candidates = top_candidates(rows, config)
    assert [(c["search"]["trial_id"], c["config"], c["search"]["seed"]) for c in candidates] == [
        ("a", {"learning_rate": 1e-3}, 7),
        ("c", {"learning_rate": 1e-4}, 7),
    ]  # b is a's config with another seed
    assert new_seeds(search_seeds(rows, config), config.train.seed, 3) == [43, 44, 45]


def test_new_seeds_skip_every_seed_the_search_used():
    assert new_seeds({42}, 42, 3) == [43, 44, 45]
    assert new_seeds({42, 43, 45}, 42, 3) == [44, 46, 47]


def test_a_config_with_a_failed_seed_ranks_below_complete_ones():
    config = validate_config(
        quick_config(
            "m", search={"space": {"learning_rate": {"loguniform": [1e-5, 1e-2]}}}, confirm={"top_k": 2, "seeds": 2}
        )
    )
    candidates = top_candidates([row("a", 1, 0.9, learning_rate=1e-3), row("b", 1, 0.8, learning_rate=1e-4)], config)
    events = [
        {"event": "started", "trial_id": "x1", "config": {"candidate": 0, "seed": 43, "learning_rate": 1e-3}},
        {"event": "started", "trial_id": "x2", "config": {"candidate": 0, "seed": 44, "learning_rate": 1e-3}},
        {"event": "started", "trial_id": "y1", "config": {"candidate": 1, "seed": 43, "learning_rate": 1e-4}},
        {"event": "started", "trial_id": "y2", "config": {"candidate": 1, "seed": 44, "learning_rate": 1e-4}},
        {"event": "finished", "trial_id": "x1"},
        {"event": "failed", "trial_id": "x2", "error": "diverged"},
        {"event": "finished", "trial_id": "y1"},
        {"event": "finished", "trial_id": "y2"},
    ]
    confirm_rows = [row("x1", 1, 0.95), row("x2", 1, 0.5), row("y1", 1, 0.7), row("y2", 1, 0.72)]
    document, best = confirm_results(config, candidates, [43, 44], [], confirm_rows, events)
    a, b = document["candidates"]
    assert a["scores"] == [0.95] and not a["complete"] and a["std"] is None and a["runs"][1]["error"] == "diverged"
    assert b["mean"] == pytest.approx(0.71) and b["complete"]
    assert document["winner"] == 1 and (a["rank"], b["rank"]) == (2, 1)
    assert best.trial_id == "y2" and best.config == {"learning_rate": 1e-4, "seed": 44}


def test_confirm_needs_two_or_more_seeds():
    with pytest.raises(ConfigError, match="confirm.seeds"):
        validate_config(quick_config("m", confirm={"top_k": 2, "seeds": 1}))


def test_the_baseline_is_re_run_with_the_same_seeds_and_each_config_is_compared_with_it_seed_by_seed():
    config = validate_config(
        quick_config(
            "m", search={"space": {"learning_rate": {"loguniform": [1e-5, 1e-2]}}}, confirm={"top_k": 2, "seeds": 3}
        )
    )
    # The config's own value (learning_rate 1e-3, trial c) ranks third: it joins as a candidate.
    rows = [
        row("a", 1, 0.9, learning_rate=3e-4),
        row("b", 1, 0.8, learning_rate=1e-4),
        row("c", 1, 0.7, learning_rate=1e-3),
    ]
    candidates = top_candidates(rows, config)
    assert [(c["search"]["trial_id"], c.get("baseline", False)) for c in candidates] == [
        ("a", False),
        ("b", False),
        ("c", True),
    ]
    scores = {0: [0.86, 0.87, 0.88], 1: [0.80, 0.83, 0.79], 2: [0.80, 0.82, 0.81]}  # per candidate, seeds 43-45
    events, confirm_rows = [], []
    for candidate, values in scores.items():
        for seed, score in zip([43, 44, 45], values):
            trial_id = f"r{candidate}-{seed}"
            events += [
                {"event": "started", "trial_id": trial_id, "config": {"candidate": candidate, "seed": seed}},
                {"event": "finished", "trial_id": trial_id},
            ]
            confirm_rows.append(row(trial_id, 1, score))
    document, _ = confirm_results(config, candidates, [43, 44, 45], rows, confirm_rows, events)
    a, b, baseline = document["candidates"]
    # a - baseline per seed: +0.06, +0.05, +0.07: mean 0.06 ± t(2) = 4.303 x sd 0.01 / sqrt(3)
    assert a["vs_baseline"]["mean_difference"] == pytest.approx(0.06)
    low, high = a["vs_baseline"]["interval"]
    assert (low, high) == pytest.approx((0.06 - 4.303 * 0.01 / 3**0.5, 0.06 + 4.303 * 0.01 / 3**0.5), abs=1e-6)
    assert a["vs_baseline"]["verdict"] == "better than the baseline beyond seed noise" and low > 0
    # b - baseline: 0.00, +0.01, -0.02: no clear difference.
    assert b["vs_baseline"]["verdict"] == "within seed noise of the baseline"
    assert "vs_baseline" not in baseline and document["winner"] == 0
