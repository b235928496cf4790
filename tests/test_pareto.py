"""search.objectives: two goals at once (the search metric and a cost). The config's refusals, the
Pareto front on hand-made trials, what Optuna and the dashboard's study are told, and one real
search whose report, best.json and export give the front."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest
from click.testing import CliRunner
from conftest import error_of, quick_config, search_in_process
from ray.tune.search.optuna import OptunaSearch
from transformers import AutoModelForSequenceClassification

import raytune_ft
from raytune_ft.cli import main
from raytune_ft.config import ConfigError, validate_config
from raytune_ft.report.pareto import best_on_front, dominates, pareto_front, trial_points
from raytune_ft.run_folder import read_epochs
from raytune_ft.tuning.checkpoints import prune_ended_trials
from raytune_ft.tuning.study import study_url
from raytune_ft.tuning.tuner import TUNE_DIR, build_param_space, build_search_algorithm

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


# ---------------------------------------------------------------------------------------
# The front, on hand-made trials

F1_COST = [("eval_f1", "max"), ("device_seconds", "min")]
LOSS_PARAMS = [("eval_loss", "min"), ("trainable_parameters", "min")]


def point(trial_id: str, epoch: int, metric: float, cost: float, objectives=F1_COST, **more) -> dict:
    (metric_key, _), (cost_key, _) = objectives
    return {"trial_id": trial_id, "epoch": epoch, metric_key: metric, cost_key: cost, **more}


def front_ids(points: list[dict], objectives=F1_COST) -> list[str]:
    return [row["trial_id"] for row in pareto_front(points, objectives)]


def test_the_front_drops_dominated_trials_and_lists_the_best_metric_first():
    points = [
        point("cheap", 1, 0.70, 10),
        point("dominated", 1, 0.68, 15),  # worse than cheap on both
        point("best", 1, 0.90, 40),
        point("middle", 1, 0.80, 20),
        point("costly", 1, 0.85, 50),  # worse than best on both
    ]
    assert front_ids(points) == ["best", "middle", "cheap"]


def test_equal_on_one_objective_the_other_decides():
    points = [point("a", 1, 0.80, 20), point("same-f1-dearer", 1, 0.80, 30), point("same-cost-worse", 1, 0.70, 20)]
    assert front_ids(points) == ["a"]


def test_trials_with_the_same_values_are_both_on_the_front():
    points = [point("first", 1, 0.80, 20), point("twin", 1, 0.80, 20), point("cheap", 1, 0.60, 5)]
    assert front_ids(points) == ["first", "twin", "cheap"]


def test_minimized_metric_and_minimized_cost():
    points = [
        point("low-loss", 1, 0.30, 4_000, LOSS_PARAMS),
        point("few-params", 1, 0.50, 500, LOSS_PARAMS),
        point("worse", 1, 0.55, 900, LOSS_PARAMS),
        point("between", 1, 0.40, 1_000, LOSS_PARAMS),
    ]
    assert front_ids(points, LOSS_PARAMS) == ["low-loss", "between", "few-params"]


def test_each_trial_counts_at_its_best_epoch_the_earliest_of_equal_ones():
    rows = [
        point("t1", 1, 0.70, 10),
        point("t1", 2, 0.80, 20),  # its best: the point is (0.80, 20), not its last epoch
        point("t1", 3, 0.75, 30),
        point("t2", 1, 0.60, 12),
        point("t2", 2, 0.60, 24),  # as good as epoch 1, dearer: epoch 1 counts
        {"trial_id": "t3", "epoch": 1, "eval_f1": 0.99},  # no cost: not a point
    ]
    points = trial_points(rows, F1_COST)
    assert [(row["trial_id"], row["epoch"]) for row in points] == [("t1", 2), ("t2", 1)]
    assert front_ids(points) == ["t1", "t2"]


def test_the_winner_is_the_front_member_best_on_the_metric_with_the_front_beside_it():
    rows = [
        point("t1", 1, 0.80, 30, learning_rate=1e-3, checkpoint_path="/c/t1-1"),
        point("t2", 1, 0.80, 20, learning_rate=2e-4, checkpoint_path="/c/t2-1"),  # as good, cheaper
        point("t3", 1, 0.60, 5, learning_rate=5e-5, checkpoint_path="/c/t3-1"),
        point("t4", 1, 0.50, 50, learning_rate=1e-5, checkpoint_path="/c/t4-1"),
    ]
    best = best_on_front(rows, F1_COST, ["learning_rate"])
    assert (best.trial_id, best.checkpoint, best.config) == ("t2", "/c/t2-1", {"learning_rate": 2e-4})
    assert best.pareto_front == [
        {
            "trial_id": "t2",
            "epoch": 1,
            "config": {"learning_rate": 2e-4},
            "values": {"eval_f1": 0.80, "device_seconds": 20},
            "checkpoint": "/c/t2-1",
        },
        {
            "trial_id": "t3",
            "epoch": 1,
            "config": {"learning_rate": 5e-5},
            "values": {"eval_f1": 0.60, "device_seconds": 5},
            "checkpoint": "/c/t3-1",
        },
    ]
    assert best.to_json()["pareto_front"] == best.pareto_front
    assert best_on_front([], F1_COST, []) is None


# ---------------------------------------------------------------------------------------
# What Optuna is told (its real study, as in test_searcher.py)


def searcher_for(algorithm: str, objectives: list[str] = ("accuracy", "device_seconds")):
    raw = quick_config("unused-model", train={"num_epochs": 3}, search={"space": SPACE, "algorithm": algorithm})
    raw["search"]["objectives"] = list(objectives)
    config = validate_config(raw)
    searcher = build_search_algorithm(config)
    searcher.set_search_properties(None, None, build_param_space(config))
    return searcher


def run(searcher, trial_id: str, epochs: list[tuple[float, float]], error: bool = False) -> None:
    """A trial reporting (eval_accuracy, device_seconds) per epoch, then ending, in Tune's order."""
    config = searcher.suggest(trial_id)
    results = [
        {
            "epoch": epoch,
            "eval_accuracy": score,
            "device_seconds": cost,
            **{f"config/{k}": v for k, v in config.items()},
        }
        for epoch, (score, cost) in enumerate(epochs, 1)
    ]
    for result in results:
        searcher.on_trial_result(trial_id, result)
    searcher.on_trial_complete(trial_id, None if error else results[-1], error=error)


def told(searcher) -> list[tuple[str, list | None]]:
    return [(trial.state.name, trial.values) for trial in searcher._ot_study.trials]


@pytest.mark.parametrize("algorithm", ["tpe", "gp"])
def test_optuna_is_told_the_best_epochs_metric_and_its_cost(algorithm):
    searcher = searcher_for(algorithm)
    assert [d.name for d in searcher._ot_study.directions] == ["MAXIMIZE", "MINIMIZE"]
    run(searcher, "t1", [(0.70, 10.0), (0.80, 20.0), (0.75, 30.0)])  # best at epoch 2: its cost then
    run(searcher, "t2", [(0.60, 12.0)])  # stopped by the scheduler: complete all the same
    run(searcher, "t3", [(0.65, 11.0)], error=True)
    assert told(searcher) == [("COMPLETE", [0.80, 20.0]), ("COMPLETE", [0.60, 12.0]), ("FAIL", None)]
    searcher.suggest("t4")  # the sampler models the two objectives (its start-up trials are done)


def test_optuna_is_told_the_trainable_parameters_with_a_minimized_loss():
    searcher = searcher_for("tpe", ["loss", "trainable_parameters"])
    config = searcher.suggest("t1")
    for epoch, loss in enumerate([0.6, 0.5, 0.55], 1):
        result = {"epoch": epoch, "eval_loss": loss, "trainable_parameters": 1000, "config/learning_rate": config}
        searcher.on_trial_result("t1", result)
    searcher.on_trial_complete("t1", result)
    assert [d.name for d in searcher._ot_study.directions] == ["MINIMIZE", "MINIMIZE"]
    assert told(searcher) == [("COMPLETE", [0.5, 1000])]


def test_the_front_of_the_ended_trials_keeps_its_checkpoints(tmp_path):
    """keep_checkpoints best keeps the winner's model; with objectives the front's too. A trial
    dominated only by a running trial's current best keeps its model: that best may still change."""
    points = {  # trial: (accuracy, device_seconds) at its one epoch, and whether it has ended
        "winner": (0.90, 40.0, True),
        "cheap": (0.70, 10.0, True),
        "dominated": (0.65, 30.0, True),
        "under-running": (0.80, 35.0, True),  # dominated by "running" alone
        "running": (0.85, 20.0, False),
    }
    rows, events = [], []
    for trial_id, (accuracy, cost, ended) in points.items():
        checkpoint = tmp_path / "trials" / f"train-{trial_id}" / "checkpoint_e1"
        checkpoint.mkdir(parents=True)
        rows.append(point(trial_id, 1, accuracy, cost, [("eval_accuracy", "max"), ("device_seconds", "min")]))
        rows[-1].update(best_so_far=1.0, checkpoint_path=str(checkpoint))
        events += [{"event": "started", "trial_id": trial_id}] + [{"event": "finished", "trial_id": trial_id}] * ended
    (tmp_path / "epochs.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    (tmp_path / "trials.jsonl").write_text("".join(json.dumps(event) + "\n" for event in events))
    objectives = validate_config({"search": {"objectives": ["accuracy", "device_seconds"]}}).objectives

    assert prune_ended_trials(tmp_path, str(tmp_path), "accuracy", "max", 1, objectives) == []

    remaining = sorted(path.parent.name for path in (tmp_path / "trials").glob("*/checkpoint_*"))
    assert remaining == ["train-cheap", "train-running", "train-under-running", "train-winner"]


# ---------------------------------------------------------------------------------------
# One real search of two goals: 4 trials of a tiny BERT, ASHA, TPE on (eval_loss, device_seconds)


@pytest.fixture(scope="module")
def pareto_search(tmp_path_factory, tiny_bert_dir):
    tmp_path = tmp_path_factory.mktemp("pareto")
    raw = quick_config(
        tiny_bert_dir,
        search={
            "space": {"learning_rate": {"loguniform": [1e-4, 3e-3]}},
            "num_samples": 4,
            "algorithm": "tpe",
            "scheduler": "asha",
            "objectives": ["loss", "device_seconds"],  # a tiny model's accuracies tie at chance, its losses differ
        },
        tracking={"tensorboard": False},
        output={"dir": str(tmp_path / "runs"), "name": "pareto"},
    )
    result = search_in_process(raw, tmp_path)
    assert result.exit_code == 0, result.output
    return result, tmp_path / "runs" / "pareto"


OBJECTIVES = [("eval_loss", "min"), ("device_seconds", "min")]


@pytest.mark.slow
def test_best_json_lists_the_front_of_non_dominated_trials_with_their_models(pareto_search):
    _, run_dir = pareto_search
    best = json.loads((run_dir / "best.json").read_text())
    points = trial_points(read_epochs(run_dir), OBJECTIVES)
    assert len(points) == 4
    front = best["pareto_front"]
    assert front and best["trial_id"] == front[0]["trial_id"]  # the winner: the front's best on eval_loss
    assert best["metrics"]["eval_loss"] == min(point["eval_loss"] for point in points)
    by_trial = {point["trial_id"]: point for point in points}
    for member in front:
        assert member["values"] == {key: by_trial[member["trial_id"]][key] for key, _ in OBJECTIVES}
        assert not any(dominates(other, by_trial[member["trial_id"]], OBJECTIVES) for other in points)
        assert Path(member["checkpoint"]).is_dir()  # kept for export --trial
    off_front = [point for point in points if point["trial_id"] not in {m["trial_id"] for m in front}]
    assert all(any(dominates(other, point, OBJECTIVES) for other in points) for point in off_front)


@pytest.mark.slow
def test_each_epoch_row_holds_the_trials_device_seconds_so_far(pareto_search):
    _, run_dir = pareto_search
    spent: dict[str, float] = {}
    for row in sorted(read_epochs(run_dir), key=lambda row: (row["trial_id"], row["epoch"])):
        spent[row["trial_id"]] = spent.get(row["trial_id"], 0.0) + row["epoch_seconds"] * 1  # 1 CPU core per trial
        assert row["device_seconds"] == pytest.approx(spent[row["trial_id"]])


@pytest.mark.slow
def test_optuna_learnt_both_objectives_and_the_dashboard_study_has_two_directions(pareto_search):
    _, run_dir = pareto_search
    points = {point["trial_id"]: point for point in trial_points(read_epochs(run_dir), OBJECTIVES)}
    study = optuna.load_study(study_name=run_dir.name, storage=study_url(run_dir))
    assert [direction.name for direction in study.directions] == ["MINIMIZE", "MINIMIZE"]
    assert study.metric_names == ["eval_loss", "device_seconds"]
    for trial in study.trials:  # stopped by ASHA or not: complete, with its best epoch's pair
        point = points[trial.user_attrs["trial_id"]]
        assert trial.state.name == "COMPLETE" and trial.values == [point["eval_loss"], point["device_seconds"]]
    searcher = OptunaSearch()
    searcher.restore_from_dir(str(run_dir / TUNE_DIR))
    assert len(searcher._ot_study.directions) == 2
    told = sorted(tuple(trial.values) for trial in searcher._ot_study.trials)
    assert told == sorted((point["eval_loss"], point["device_seconds"]) for point in points.values())


@pytest.mark.slow
def test_the_report_shows_the_front_as_a_table_and_a_plot(pareto_search):
    result, run_dir = pareto_search
    assert "Pareto front: the trials no other trial beats on both eval_loss" in result.output
    assert "--trial ID" in result.output
    assert (run_dir / "plots" / "pareto.png").stat().st_size > 10_000
    assert "Pareto front" in (run_dir / "report.html").read_text()
    report = json.loads(CliRunner().invoke(main, ["report", str(run_dir), "--format", "json", "--no-plots"]).output)
    assert report["pareto_front"] == json.loads((run_dir / "best.json").read_text())["pareto_front"]


@pytest.mark.slow
def test_export_writes_the_model_of_the_front_member_asked_for(pareto_search, tmp_path):
    _, run_dir = pareto_search
    best = json.loads((run_dir / "best.json").read_text())
    member = best["pareto_front"][-1]  # the cheapest on the front (the winner where the front is one trial)
    out = tmp_path / "member"
    exported = CliRunner().invoke(main, ["export", str(run_dir), "--out", str(out), "--trial", member["trial_id"]])
    assert exported.exit_code == 0, exported.output
    assert f"exported trial {member['trial_id']}" in exported.output
    assert AutoModelForSequenceClassification.from_pretrained(out).num_labels == 2
    assert json.loads((out / "raytune_ft_best.json").read_text())["trial_id"] == member["trial_id"]
    refused = CliRunner().invoke(main, ["export", str(run_dir), "--out", str(tmp_path / "none"), "--trial", "nope"])
    assert refused.exit_code == 2
    assert "--trial nope: it is not a trial of this search; trials of" in refused.output


def test_export_trial_takes_a_kept_checkpoint_and_names_the_trials_that_have_one(tmp_path):
    """On a hand-made run folder: a front member whose checkpoint was deleted is refused with the
    trials that can be exported; a trial off the front whose checkpoint was kept is exported."""
    run_dir = tmp_path / "run"
    config = validate_config({"search": {"space": SPACE, "objectives": ["accuracy", "device_seconds"]}})
    rows = []
    for trial_id, kept in (("winner", True), ("gone", False), ("off-front", True)):
        checkpoint = run_dir / "trials" / f"train-{trial_id}" / "checkpoint_e1"
        if kept:
            checkpoint.mkdir(parents=True)
            (checkpoint / "config.json").write_text("{}")
        rows.append(
            {**point(trial_id, 1, 0.8, 10.0, config.objectives), "best_so_far": 1.0, "checkpoint_path": str(checkpoint)}
        )
    (run_dir / "config.yaml").write_text(config.to_yaml())
    (run_dir / "epochs.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    members = [{"trial_id": row["trial_id"], "checkpoint": row["checkpoint_path"]} for row in rows[:2]]
    (run_dir / "best.json").write_text(json.dumps({**members[0], "config": {}, "pareto_front": members}))

    with pytest.raises(
        ConfigError, match=r"--trial gone: it kept no checkpoint .*; trials of .* checkpoint: winner, off-front"
    ):
        raytune_ft.export(run_dir, tmp_path / "gone", trial_id="gone")
    out = raytune_ft.export(run_dir, tmp_path / "off-front", trial_id="off-front")
    assert json.loads((out / "raytune_ft_best.json").read_text())["trial_id"] == "off-front"
    assert (out / "config.json").is_file()
