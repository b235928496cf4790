"""What a search's checkpoints hold, and so what each epoch writes: the optimizer state (AdamW:
twice the model's size) only where training may go on from the checkpoint; a restart from a
checkpoint without it trains afresh."""

from __future__ import annotations

import shutil
from contextlib import nullcontext
from pathlib import Path

import pytest
import torch
from conftest import quick_config

from raytune_ft.config import validate_config
from raytune_ft.data.tokenized import prepare_tokenized_data
from raytune_ft.training.checkpointing import TRAINING_STATE_FILE
from raytune_ft.training.loop import training_function
from raytune_ft.training.reporters import EpochReporter

PBT = {"scheduler": "pbt", "space": {"learning_rate": {"loguniform": [1e-4, 1e-3]}}}


class KeptCheckpoints(EpochReporter):
    """A search's reporter (resumable) that keeps a copy of every epoch's checkpoint, and
    restarts from `restart_from` if given."""

    resumable = True

    def __init__(self, folder: Path, restart_from: Path | None = None):
        self.folder, self.restart_from = folder, restart_from
        self.rows: list[dict] = []
        self.copies: list[Path | None] = []

    def report(self, metrics, checkpoint_dir):
        self.rows.append(metrics)
        copy = None
        if checkpoint_dir:
            copy = self.folder / f"epoch-{metrics['epoch']}"
            shutil.copytree(checkpoint_dir, copy)
        self.copies.append(copy)

    def restore_point(self):
        return nullcontext(str(self.restart_from) if self.restart_from else None)

    def states(self) -> list[dict]:
        return [torch.load(copy / TRAINING_STATE_FILE, weights_only=True) for copy in self.copies]


def run_loop(tiny_bert_dir, reporter: EpochReporter, **sections) -> None:
    config = validate_config(quick_config(tiny_bert_dir, train={"num_epochs": 3}, **sections))
    data_path, _ = prepare_tokenized_data(config)
    training_function({"config": config.model_dump(), "data": str(data_path), "progress_bar": False}, reporter)


@pytest.mark.parametrize(
    "sections, with_optimizer",
    [
        ({}, [True, True, False]),  # the last epoch: nothing goes on from it
        ({"output": {"save_optimizer": False}}, [False, False, False]),
        ({"search": PBT}, [True, True, False]),  # a clone of a last epoch would start past the end
    ],
    ids=["default", "save_optimizer-false", "pbt"],
)
def test_the_optimizer_state_is_saved_only_where_training_may_go_on(tiny_bert_dir, tmp_path, sections, with_optimizer):
    reporter = KeptCheckpoints(tmp_path)
    run_loop(tiny_bert_dir, reporter, **sections)

    states = reporter.states()
    assert [state["epoch"] for state in states] == [1, 2, 3]
    assert ["optimizer" in state for state in states] == with_optimizer
    assert ["lr_scheduler" in state for state in states] == with_optimizer
    for copy in reporter.copies:  # the model is always there
        assert {"config.json", "model.safetensors", "tokenizer.json"} <= {path.name for path in copy.iterdir()}
    sizes = [(copy / TRAINING_STATE_FILE).stat().st_size for copy in reporter.copies]
    model_size = (reporter.copies[0] / "model.safetensors").stat().st_size
    for size, saved in zip(sizes, with_optimizer):
        # AdamW keeps two moments per weight: the state is about twice the model, or a few KB.
        assert (size > 1.5 * model_size) if saved else (size < 0.05 * model_size)


def test_a_restart_from_a_checkpoint_without_optimizer_state_trains_afresh(tiny_bert_dir, tmp_path):
    first = KeptCheckpoints(tmp_path / "first")
    run_loop(tiny_bert_dir, first, output={"save_optimizer": False})

    # A dead worker restarts from epoch 1's checkpoint: it holds no optimizer to go on with.
    restarted = KeptCheckpoints(tmp_path / "restarted", restart_from=first.copies[0])
    run_loop(tiny_bert_dir, restarted, output={"save_optimizer": False})

    assert [row["epoch"] for row in restarted.rows] == [1, 2, 3]
    assert not any(row.get("restored") for row in restarted.rows)
    # From the pretrained model again, with the same seeds: the same run as the first.
    for again, before in zip(restarted.rows, first.rows):
        assert again["eval_loss"] == pytest.approx(before["eval_loss"], abs=1e-6)


def test_a_restart_from_the_last_epoch_trains_nothing_again(tiny_bert_dir, tmp_path):
    first = KeptCheckpoints(tmp_path / "first")
    run_loop(tiny_bert_dir, first)

    # Killed after its last epoch was saved (no optimizer state there): say that epoch again, train none.
    restarted = KeptCheckpoints(tmp_path / "restarted", restart_from=first.copies[-1])
    run_loop(tiny_bert_dir, restarted)

    assert [(row["epoch"], row.get("restored")) for row in restarted.rows] == [(3, True)]
    assert restarted.rows[0]["eval_loss"] == first.rows[-1]["eval_loss"]
