"""model.pooling: mean: a classifier on the mean of the encoder's token vectors (the way
sentence-embedding checkpoints were trained), trained by the same loop, saved, restored,
exported, and loadable without raytune-ft."""

import json
import os
import shutil
import subprocess
import sys
from contextlib import contextmanager

import pytest
import torch
import yaml
from click.testing import CliRunner
from conftest import quick_config
from test_training import launch
from transformers import AutoModel, AutoModelForSequenceClassification, AutoTokenizer

from raytune_ft.cli import main
from raytune_ft.config import validate_config
from raytune_ft.data import prepare_tokenized_data
from raytune_ft.mean_pooling import MeanPoolingForSequenceClassification
from raytune_ft.reporting import EpochReporter
from raytune_ft.sources import trained_with_mean_pooling
from raytune_ft.training import training_function

LABELS = {"num_labels": 2, "id2label": {0: "different", 1: "paraphrase"}, "label2id": {"different": 0, "paraphrase": 1}}


def test_sentence_transformers_checkpoints_that_mean_pool_are_recognised(minilm_path, tiny_bert_dir):
    # all-MiniLM-L6-v2 ships its sentence-transformers pooling config; a plain BERT folder has none.
    assert trained_with_mean_pooling(minilm_path)
    assert not trained_with_mean_pooling(str(tiny_bert_dir))
    assert not trained_with_mean_pooling("bert-base-uncased")  # a hub id: not looked up


def test_a_new_classifier_keeps_the_pretrained_encoder_and_drops_its_pooler(tiny_bert_dir):
    model = MeanPoolingForSequenceClassification.from_encoder(str(tiny_bert_dir), **LABELS)
    pretrained = AutoModel.from_pretrained(tiny_bert_dir)
    theirs = {name: value for name, value in pretrained.state_dict().items() if not name.startswith("pooler.")}
    ours = {name.removeprefix("encoder."): value for name, value in model.state_dict().items() if name.startswith("encoder.")}
    assert ours.keys() == theirs.keys()
    assert all(torch.equal(ours[name], theirs[name]) for name in theirs)
    assert model.encoder.pooler is None
    assert model.classifier.out_features == 2 and model.config.id2label == LABELS["id2label"]


def test_padding_does_not_change_a_prediction(tiny_bert_dir):
    model = MeanPoolingForSequenceClassification.from_encoder(str(tiny_bert_dir), **LABELS).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert_dir)
    short, long = "a short one", "a much longer sentence, with many more tokens than the short one has"
    with torch.no_grad():
        alone = model(**tokenizer([short], return_tensors="pt")).logits[0]
        padded = model(**tokenizer([short, long], padding=True, return_tensors="pt")).logits[0]
    assert torch.allclose(alone, padded, atol=1e-5), (alone, padded)


def test_a_saved_model_loads_without_raytune_ft_only_with_trust_remote_code(tiny_bert_dir, tmp_path):
    model = MeanPoolingForSequenceClassification.from_encoder(str(tiny_bert_dir), **LABELS).eval()
    model.save_pretrained(tmp_path / "saved")
    AutoTokenizer.from_pretrained(tiny_bert_dir).save_pretrained(tmp_path / "saved")
    with torch.no_grad():
        expected = model(**AutoTokenizer.from_pretrained(tiny_bert_dir)(["two words"], return_tensors="pt")).logits[0]

    # A fresh interpreter that never imports raytune_ft: the model's code travels in the folder.
    script = f"""
import json, sys, torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer
folder = {str(tmp_path / "saved")!r}
try:
    AutoModelForSequenceClassification.from_pretrained(folder)
    refused = False
except ValueError:
    refused = True
model = AutoModelForSequenceClassification.from_pretrained(folder, trust_remote_code=True).eval()
with torch.no_grad():
    logits = model(**AutoTokenizer.from_pretrained(folder)(["two words"], return_tensors="pt")).logits[0]
print("RESULT " + json.dumps({{"refused": refused, "class": type(model).__name__, "logits": logits.tolist(),
                              "raytune_ft_imported": "raytune_ft" in sys.modules}}))
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, stdin=subprocess.DEVNULL,
                          cwd=tmp_path, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    # (transformers' refused prompt leaves its question on stdout without a line end)
    loaded = json.loads(done.stdout.rsplit("RESULT ", 1)[-1])
    # Without trust_remote_code transformers refuses it instead of building a [CLS] classifier.
    assert loaded["refused"] is True
    assert loaded["class"] == "MeanPoolingForSequenceClassification"
    assert not loaded["raytune_ft_imported"]
    assert torch.allclose(torch.tensor(loaded["logits"]), expected, atol=1e-5)


def test_regression_gets_one_score_and_the_squared_error(tiny_bert_dir):
    model = MeanPoolingForSequenceClassification.from_encoder(str(tiny_bert_dir), num_labels=1, problem_type="regression")
    batch = AutoTokenizer.from_pretrained(tiny_bert_dir)(["one", "two more"], padding=True, return_tensors="pt")
    scores = torch.tensor([0.5, 4.0])
    outputs = model.eval()(**batch, labels=scores)
    assert outputs.logits.shape == (2, 1)
    assert outputs.loss.item() == pytest.approx(((outputs.logits.squeeze(-1) - scores) ** 2).mean().item())


def test_mean_pooling_trains_data_parallel_with_two_processes(tmp_path, tiny_bert_dir):
    # No parameter may go without a gradient under DDP: the unused [CLS] pooler is gone.
    rows = launch(tmp_path, tiny_bert_dir, "ddp-mean", ["torch.distributed.run", "--nproc_per_node", "2"],
                  model={"pooling": "mean"})
    assert [r["epoch"] for r in rows] == [1, 2]
    assert all(r["num_processes"] == 2 for r in rows)
    assert all((r["examples_trained"], r["examples_evaluated"]) == (64, 32) for r in rows)


class CheckpointKeeper(EpochReporter):
    """Keeps every epoch's metrics and checkpoint; starts from `start_from` when given."""

    resumable = True

    def __init__(self, keep_dir, start_from=None):
        self.keep_dir, self.start_from, self.epochs = keep_dir, start_from, []

    @contextmanager
    def restore_point(self):
        yield self.start_from

    def report(self, metrics, checkpoint_dir):
        if checkpoint_dir:
            shutil.copytree(checkpoint_dir, self.keep_dir / f"epoch-{metrics['epoch']}")
        self.epochs.append(metrics)


def test_a_mean_pooling_run_restarts_from_its_checkpoint_where_it_stopped(tiny_bert_dir, tmp_path):
    config = validate_config(quick_config(tiny_bert_dir, model={"pooling": "mean"}))
    data_path, _ = prepare_tokenized_data(config)
    loop_config = {"config": config.model_dump(), "data": str(data_path), "progress_bar": False}
    whole = CheckpointKeeper(tmp_path / "whole")
    training_function(loop_config, whole)
    saved = json.loads((tmp_path / "whole" / "epoch-1" / "config.json").read_text())
    assert saved["architectures"] == ["MeanPoolingForSequenceClassification"]

    resumed = CheckpointKeeper(tmp_path / "resumed", start_from=str(tmp_path / "whole" / "epoch-1"))
    training_function(loop_config, resumed)
    # The restored epoch is said again, then epoch 2 trains on the same head and scores the same.
    assert [m["epoch"] for m in resumed.epochs] == [1, 2]
    assert resumed.epochs[1]["eval_loss"] == pytest.approx(whole.epochs[1]["eval_loss"], abs=1e-5)
    assert resumed.epochs[1]["train_loss"] == pytest.approx(whole.epochs[1]["train_loss"], abs=1e-5)


def test_search_with_mean_pooling_exports_a_model_that_loads_with_its_code(tiny_bert_dir, tmp_path):
    raw = quick_config(
        tiny_bert_dir,
        model={"pooling": "mean"},
        search={"space": {}, "num_samples": 1, "scheduler": "fifo"},
        tracking={"tensorboard": False},
        output={"dir": str(tmp_path / "runs"), "name": "mean"},
    )
    (tmp_path / "mean.yaml").write_text(yaml.safe_dump(raw))
    searched = CliRunner().invoke(main, ["search", str(tmp_path / "mean.yaml")])
    assert searched.exit_code == 0, searched.output
    exported = CliRunner().invoke(main, ["export", str(tmp_path / "runs" / "mean"), "--out", str(tmp_path / "best")])
    assert exported.exit_code == 0, exported.output

    assert (tmp_path / "best" / "mean_pooling.py").is_file()
    model = AutoModelForSequenceClassification.from_pretrained(tmp_path / "best", trust_remote_code=True)
    assert type(model).__name__ == "MeanPoolingForSequenceClassification"
    assert model.config.id2label == LABELS["id2label"]
    assert os.path.isfile(tmp_path / "best" / "raytune_ft_best.json")
