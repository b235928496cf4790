"""The test split: evaluated once, for the final winner only, reported apart from the dev
metrics that chose it; a test split without labels is refused before Ray starts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from conftest import files_config, quick_config, search_in_process
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from raytune_ft.cli import main
from raytune_ft.config import ConfigError, validate_config
from raytune_ft.data.raw import load_raw_dataset


@pytest.fixture(scope="module")
def tested(confirmed_search):
    result, run_dir, raw = confirmed_search
    assert result.exit_code == 0, result.output
    return result, run_dir, raw, json.loads((run_dir / "test.json").read_text())


@pytest.mark.slow
def test_the_confirmed_winner_is_evaluated_on_the_test_split(tested):
    _, run_dir, raw, test = tested
    best = json.loads((run_dir / "best.json").read_text())
    assert (test["trial_id"], test["checkpoint"], test["epoch"]) == (
        best["trial_id"],
        best["checkpoint"],
        best["metrics"]["epoch"],
    )
    assert test["examples"] == 48 and test["file"] == raw["data"]["test_file"]
    assert set(test["metrics"]) == {"test_accuracy", "test_f1", "test_loss"}
    # Apart from the dev metrics that chose it, which stay as they were.
    assert test["chosen_on"] == "eval_loss"
    assert test["dev_metrics"] == {k: best["metrics"][k] for k in ("eval_accuracy", "eval_f1", "eval_loss")}
    assert test["confirmed"]["mean"] == best["confirmed"]["mean"]


@pytest.mark.slow
def test_test_metrics_are_what_the_winners_model_scores_on_the_test_file(tested):
    """Recomputed here without raytune-ft: the checkpoint, the tokenizer, the rows of the file."""
    _, _, raw, test = tested
    rows = [json.loads(line) for line in Path(raw["data"]["test_file"]).read_text().splitlines()]
    tokenizer = AutoTokenizer.from_pretrained(test["checkpoint"])
    model = AutoModelForSequenceClassification.from_pretrained(test["checkpoint"]).eval()
    batch = tokenizer(
        [r["sentence1"] for r in rows],
        [r["sentence2"] for r in rows],
        truncation=True,
        max_length=raw["data"]["max_length"],
        padding=True,
        return_tensors="pt",
    )
    labels = torch.tensor([r["label"] for r in rows])
    with torch.no_grad():
        logits = model(**batch).logits
    accuracy = (logits.argmax(-1) == labels).float().mean().item()
    assert test["metrics"]["test_accuracy"] == pytest.approx(accuracy)
    assert test["metrics"]["test_loss"] == pytest.approx(F.cross_entropy(logits, labels).item(), rel=1e-3)


@pytest.mark.slow
def test_search_and_report_show_the_test_result_on_its_own_line(tested):
    result, run_dir, _, test = tested
    line = f"test (chosen on dev by eval_loss, reported on test, evaluated once): test_accuracy={test['metrics']['test_accuracy']:.4f}"
    assert line in result.output
    # The evaluation after the search loads the winner quietly: no progress bar after the summary.
    assert "Loading weights" not in result.output + (result.stderr or "")
    report = CliRunner().invoke(main, ["report", str(run_dir), "--no-plots"])
    assert line in report.output
    document = json.loads(CliRunner().invoke(main, ["report", str(run_dir), "--format", "json", "--no-plots"]).output)
    assert document["test"] == test


def test_evaluate_needs_a_test_file_and_checkpoints():
    with pytest.raises(ConfigError, match="test.evaluate: needs a labelled test split; give it with data.test_file"):
        validate_config(quick_config("m", test={"evaluate": True}))
    raw = quick_config("m", test={"evaluate": True}, output={"keep_checkpoints": False})
    raw["data"] = {
        "train_file": "t.jsonl",
        "validation_file": "d.jsonl",
        "test_file": "x.jsonl",
        "text_columns": ["sentence1", "sentence2"],
    }
    with pytest.raises(ConfigError, match="test.evaluate: the winner is evaluated from its checkpoint"):
        validate_config(raw)


@pytest.mark.parametrize("labels", ["-1", "none"])
def test_a_test_split_without_labels_is_refused_before_the_search(labels, tiny_bert_dir, tmp_path):
    raw = files_config(
        tiny_bert_dir,
        tmp_path / "data",
        test={"evaluate": True},
        output={"dir": str(tmp_path / "runs"), "name": "unlabelled"},
    )
    test_file = Path(raw["data"]["test_file"])
    rows = [json.loads(line) for line in test_file.read_text().splitlines()]
    for item in rows:  # as in GLUE's own test files: -1 everywhere, or no label column at all
        if labels == "-1":
            item["label"] = -1
        else:
            del item["label"]
    test_file.write_text("".join(json.dumps(item) + "\n" for item in rows))
    result = search_in_process(raw, tmp_path)
    assert result.exit_code == 2, result.output
    message = result.output.strip().splitlines()[-1]
    assert message.startswith(f"error: test.evaluate: {test_file} has no labels")
    assert not (tmp_path / "runs").exists()  # refused before the run folder (and Ray)
    # Without test.evaluate the same file is an unlabelled test split, as before.
    raw["test"]["evaluate"] = False
    assert "label" not in load_raw_dataset(validate_config(raw))["test"].column_names
