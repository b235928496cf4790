"""The Python API (raytune_ft.search, load_run, export, train) on a real search: the same run
folder as the CLI's, read back as DataFrames, and the CLI's one-line errors as one exception type."""

from __future__ import annotations

import io

import pytest
from conftest import quick_config
from rich.console import Console

import raytune_ft


@pytest.fixture(scope="module")
def api_search(tmp_path_factory, tiny_bert_dir):
    tmp_path = tmp_path_factory.mktemp("api")
    raw = quick_config(
        tiny_bert_dir,
        search={
            "space": {"learning_rate": {"choice": [1e-3, 3e-4]}},
            "algorithm": "grid",
            "scheduler": "fifo",
            "num_samples": 1,
            "metric": "loss",
            "mode": "min",
        },
        tracking={"tensorboard": False},
        output={"dir": str(tmp_path / "runs"), "name": "api"},
    )
    console = Console(file=io.StringIO(), width=160)
    result = raytune_ft.search(raw, overrides=["train.num_epochs=1"], quiet=True, console=console)
    return result, console.file.getvalue(), tmp_path


def test_search_returns_the_run_as_dataframes_and_a_winner(api_search):
    result, printed, _ = api_search
    assert result.status == "finished"
    assert sorted(result.trials["learning_rate"]) == [3e-4, 1e-3]
    assert set(result.trials["status"]) == {"finished"} and result.trials["winner"].sum() == 1
    assert len(result.epochs) == 2 and set(result.epochs["epoch"]) == {1}  # the override took effect
    best = result.best
    assert best.trial_id == result.trials.index[result.trials["winner"]][0]
    assert best.metrics["eval_loss"] == result.epochs["eval_loss"].min()
    assert result.report_files["report"].endswith("report.html")
    assert "search finished: 2 trials" in printed  # the summary went to the console given


def test_load_run_reads_the_same_folder_and_export_writes_a_loadable_model(api_search):
    from transformers import AutoModelForSequenceClassification

    result, _, tmp_path = api_search
    again = raytune_ft.load_run(result.run_dir)
    assert again.best.trial_id == result.best.trial_id
    assert list(again.trials.index) == list(result.trials.index)

    out = again.export(tmp_path / "exported")
    model = AutoModelForSequenceClassification.from_pretrained(out)
    assert model.config.id2label == {0: "different", 1: "paraphrase"}


def test_errors_are_one_type_with_the_clis_one_line_message(tmp_path, tiny_bert_dir):
    with pytest.raises(raytune_ft.ConfigError, match=r"^config: train.learning_rate: .*greater than 0") as bad_value:
        raytune_ft.search(quick_config(tiny_bert_dir), overrides=["train.learning_rate=-1"])
    assert isinstance(bad_value.value, raytune_ft.RaytuneFtError) and bad_value.value.exit_code == 2
    assert "\n" not in str(bad_value.value)

    with pytest.raises(raytune_ft.ConfigError, match="is not a run folder"):
        raytune_ft.load_run(tmp_path)
    with pytest.raises(raytune_ft.ConfigError, match="has no best.json"):
        raytune_ft.export(tmp_path, tmp_path / "out")


def test_train_runs_the_loop_once_without_a_search(tmp_path, tiny_bert_dir):
    raw = quick_config(tiny_bert_dir, output={"dir": str(tmp_path), "name": "plain"})
    result = raytune_ft.train(raw, overrides=["train.num_epochs=1"])
    assert result.run_dir == (tmp_path / "plain").resolve()
    assert list(result.epochs["epoch"]) == [1] and result.status == "unknown"
    assert (result.run_dir / "checkpoint" / "config.json").is_file()  # the best epoch's model
