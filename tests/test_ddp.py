"""Data parallel inside a trial: 2 Ray Train workers on CPU (gloo) through the same Accelerate loop."""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import pytest
import torch
from conftest import quick_config, search_in_process
from torch.utils.data import DataLoader
from transformers import AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding

from raytune_ft.config import validate_config
from raytune_ft.data.tokenized import load_tokenized, prepare_tokenized_data

# A 2-worker Ray Train search.
pytestmark = pytest.mark.slow


def test_two_workers_split_the_data_and_report_what_one_process_measures(tiny_bert_dir, tmp_path):
    raw = quick_config(
        tiny_bert_dir,
        train={"num_epochs": 1},
        search={"space": {}, "num_samples": 1, "scheduler": "fifo"},
        resources={"num_workers": 2, "cpus_per_worker": 1},
        output={"dir": str(tmp_path / "runs"), "name": "ddp"},
    )
    started = time.time()
    result = search_in_process(raw, tmp_path)
    assert result.exit_code == 0, result.output
    # Rank 0 hands each checkpoint folder to Ray Train, which copies it to storage in the
    # background and then deletes it; the other rank's empty folder is deleted at once.
    assert not leftover_checkpoint_folders(since=started, hidden_size=32)

    run_dir = tmp_path / "runs" / "ddp"
    (row,) = [json.loads(line) for line in (run_dir / "epochs.jsonl").read_text().splitlines()]
    # Each of the two ranks trained on its own half of the 64 examples.
    assert row["num_processes"] == 2
    assert row["examples_trained_per_process"] == [32, 32]
    assert row["examples_evaluated"] == 32

    # Evaluate the saved model in one plain process, with no Accelerate, no Ray.
    checkpoint = json.loads((run_dir / "best.json").read_text())["checkpoint"]
    model = AutoModelForSequenceClassification.from_pretrained(checkpoint).eval()
    data_path, _ = prepare_tokenized_data(validate_config(raw))
    validation = load_tokenized(data_path)["validation"]
    loader = DataLoader(
        validation, batch_size=8, collate_fn=DataCollatorWithPadding(AutoTokenizer.from_pretrained(checkpoint))
    )
    correct, losses = 0, []
    with torch.no_grad():
        for batch in loader:
            logits = model(**{k: v for k, v in batch.items() if k != "labels"}).logits
            correct += int((logits.argmax(-1) == batch["labels"]).sum())
            losses.append(torch.nn.functional.cross_entropy(logits, batch["labels"], reduction="none"))
    assert row["eval_accuracy"] == correct / len(validation)
    assert abs(row["eval_loss"] - torch.cat(losses).mean().item()) < 1e-4


def leftover_checkpoint_folders(since: float, hidden_size: int) -> list[Path]:
    """The loop's local checkpoint folders made since then that are still there (another search
    on this machine may have its own: only those holding this test's model count, or empty ones)."""
    folders = [
        path for path in Path(tempfile.gettempdir()).glob("raytune-ft-ckpt-*") if path.stat().st_mtime >= since - 1
    ]
    return [
        path
        for path in folders
        if not (path / "config.json").is_file()
        or json.loads((path / "config.json").read_text()).get("hidden_size") == hidden_size
    ]
