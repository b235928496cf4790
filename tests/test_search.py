"""One real Ray Tune search on the local Ray runtime: 2 trials x 2 epochs of a tiny BERT."""

import json
from pathlib import Path

import pytest
import ray
import yaml
from click.testing import CliRunner
from conftest import checkpoint_folders, quick_config, search_in_process
from transformers import AutoModelForSequenceClassification

from raytune_ft.cli import main
from raytune_ft.tuning.run_log import STARTUP_PHASES

# `finished_search` (conftest.py) runs the search once per session; the report tests read it too.


def read_rows(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "epochs.jsonl").read_text().splitlines()]


def test_search_succeeds_and_names_the_run_folder(finished_search):
    result, run_dir, _ = finished_search
    assert result.exit_code == 0, result.output
    assert result.output.strip().splitlines()[-1] == f"run folder: {run_dir}"
    assert not ray.is_initialized()  # the CLI shut its Ray runtime down


def test_every_trial_reports_every_epoch(finished_search):
    _, run_dir, _ = finished_search
    rows = read_rows(run_dir)
    trials = {row["trial_id"] for row in rows}
    assert len(trials) == 2
    assert sorted((row["trial_id"], row["epoch"]) for row in rows) == sorted((t, e) for t in trials for e in (1, 2))
    for row in rows:
        for key in (
            "eval_accuracy",
            "eval_f1",
            "eval_loss",
            "train_loss",
            "learning_rate",
            "warmup_ratio",
            "train_samples_per_second",
            "epoch_seconds",
            "node_id",
            "device",
        ):
            assert key in row, key
        assert row["examples_trained"] == 64 and row["examples_evaluated"] == 32


def test_each_trials_first_epoch_says_where_its_start_up_went(finished_search):
    _, run_dir, _ = finished_search
    events = [json.loads(line) for line in (run_dir / "trials.jsonl").read_text().splitlines()]
    started = {e["trial_id"]: e["time"] for e in events if e["event"] == "started"}
    phases = list(STARTUP_PHASES)
    for row in read_rows(run_dir):
        if row["epoch"] == 1:
            times = [row[phase] for phase in phases]
            assert times == sorted(times), dict(zip(phases, times))  # one after the other, in this order
            assert started[row["trial_id"]] - 5 < times[0] and times[-1] < row["reported_at"]
        else:
            assert not set(phases) & set(row)  # said once per trial, with its first epoch


def test_the_config_values_are_one_of_the_trials(finished_search):
    _, run_dir, raw = finished_search
    # Optuna suggests them first, but two trials start at once: their order in the files varies.
    started = [json.loads(line) for line in (run_dir / "trials.jsonl").read_text().splitlines()]
    configs = [event["config"] for event in started if event["event"] == "started"]
    assert {"learning_rate": raw["train"]["learning_rate"], "warmup_ratio": 0.0} in configs


def test_best_json_is_the_best_reported_epoch(finished_search):
    _, run_dir, _ = finished_search
    rows = read_rows(run_dir)
    best = json.loads((run_dir / "best.json").read_text())
    top = max(row["eval_accuracy"] for row in rows)
    assert best["metrics"]["eval_accuracy"] == top
    assert (best["trial_id"], best["metrics"]["epoch"]) in {
        (r["trial_id"], r["epoch"]) for r in rows if r["eval_accuracy"] == top
    }
    assert set(best["config"]) == {"learning_rate", "warmup_ratio"}
    assert Path(best["checkpoint"], "model.safetensors").is_file()


def test_only_the_winners_best_checkpoint_is_kept_by_default(finished_search):
    result, run_dir, _ = finished_search
    rows = read_rows(run_dir)
    winner = json.loads((run_dir / "best.json").read_text())["trial_id"]
    for trial_id in {row["trial_id"] for row in rows}:
        kept = checkpoint_folders(run_dir, trial_id)
        if trial_id != winner:
            assert kept == []  # output.keep_checkpoints: best
            continue
        best_row = [row for row in rows if row["trial_id"] == trial_id and row["best_so_far"]][-1]
        assert [str(path) for path in kept] == [best_row["checkpoint_path"]]
        # The optimizer state only a restart needs is gone once the trial has ended.
        assert sorted(p.name for p in kept[0].iterdir() if p.suffix == ".pt") == []
    state = json.loads((run_dir / "search.json").read_text())
    on_disk = sum(
        p.stat().st_size for folder in run_dir.rglob("checkpoint_*") for p in folder.rglob("*") if p.is_file()
    )
    assert state["checkpoint_bytes"] == on_disk
    assert "MB on disk" in result.output


def test_run_folder_holds_the_resolved_config(finished_search):
    _, run_dir, raw = finished_search
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert saved["search"]["num_samples"] == 2
    assert saved["model"]["name_or_path"] == raw["model"]["name_or_path"]


def test_export_writes_a_model_transformers_can_load(finished_search, tmp_path):
    _, run_dir, _ = finished_search
    out = tmp_path / "best"
    result = CliRunner().invoke(main, ["export", str(run_dir), "--out", str(out)])
    assert result.exit_code == 0, result.output
    model = AutoModelForSequenceClassification.from_pretrained(out)
    assert model.config.id2label == {0: "different", 1: "paraphrase"}
    assert json.loads((out / "raytune_ft_best.json").read_text())["trial_id"]


def test_report_reprints_the_table(finished_search):
    _, run_dir, _ = finished_search
    result = CliRunner().invoke(main, ["report", str(run_dir)])
    assert result.exit_code == 0, result.output
    trial_ids = {row["trial_id"] for row in read_rows(run_dir)}
    assert all(trial_id in result.output for trial_id in trial_ids)
    assert "★" in result.output


@pytest.mark.slow
def test_gradient_clipping_can_be_searched_against_none(tmp_path, tiny_bert_dir):
    """max_grad_norm: {choice: [null, ...]}: null (no clipping) is a value like any other, in the
    trials, in best.json, in the table and on the plots. (1e-6: a tiny BERT's gradients are
    below 1.0, which would clip nothing.)"""
    raw = quick_config(
        tiny_bert_dir,
        train={"num_epochs": 1},
        search={
            "space": {"max_grad_norm": {"choice": [None, 1e-6]}},
            "algorithm": "grid",
            "num_samples": 1,
            "scheduler": "fifo",
            "metric": "loss",
            "mode": "min",
        },
        tracking={"tensorboard": False},
        output={"dir": str(tmp_path / "runs"), "name": "clip", "keep_checkpoints": False},
    )
    result = search_in_process(raw, tmp_path)
    assert result.exit_code == 0, result.output
    run_dir = tmp_path / "runs" / "clip"
    rows = read_rows(run_dir)
    assert {r["max_grad_norm"] for r in rows} == {None, 1e-6}
    # Clipping changes the training: the two trials end with different dev losses.
    assert len({r["eval_loss"] for r in rows}) == 2
    best = json.loads((run_dir / "best.json").read_text())
    assert "max_grad_norm" in best["config"]

    report = CliRunner().invoke(main, ["report", str(run_dir)])
    assert report.exit_code == 0, report.output
    table_rows = [line for line in report.output.splitlines() if "│ finished │" in line]
    assert (
        len(table_rows) == 2
        and any("null" in line for line in table_rows)
        and any("1.00e-06" in line for line in table_rows)
    )
    assert (run_dir / "plots" / "hyperparameters.png").stat().st_size > 10_000
