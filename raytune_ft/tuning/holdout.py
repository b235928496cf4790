"""The test split, evaluated once, for the final winner only.

Dev metrics chose the winner (and, with a confirm stage, its mean over seeds); a number
measured on the data that did the choosing is optimistic. With `test.evaluate: true` the
winner's checkpoint is evaluated once on data.test_file, after the search and the confirm
stage, with the training loop's own evaluation pass (training/loop.evaluate_on), and the result
is written to test.json, apart from the dev metrics: chosen on dev, reported on test.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch
from accelerate import Accelerator
from torch.utils.data import DataLoader
from transformers import AutoTokenizer, DataCollatorWithPadding
from transformers.utils import logging as hf_logging

from raytune_ft.config import Config, ConfigError
from raytune_ft.data.sources import resolve_model_path
from raytune_ft.data.tokenized import load_tokenized
from raytune_ft.run_folder import TEST_FILE, Best, write_json_atomically
from raytune_ft.tasks import EVAL_SUFFIXES
from raytune_ft.training.loop import eval_batch_size, evaluate_on
from raytune_ft.training.metrics import GlueMetric
from raytune_ft.training.model import load_model


def check_test_split(config: Config, data_path: Path) -> None:
    """Before the search starts: a test split to evaluate, with labels."""
    tokenized = load_tokenized(data_path)
    if "test" not in tokenized:
        raise ConfigError("test.evaluate: the data has no test split; give a labelled one with data.test_file")
    if "labels" not in tokenized["test"].column_names:
        raise ConfigError(
            f"test.evaluate: {config.data.test_file} has no labels (no {config.data.label_column!r} column, or -1 in "
            "every row as in GLUE's own test files); give a labelled test file, e.g. examples held out of the training data"
        )


def evaluate_winner_on_test(config: Config, best: Best, data_path: Path, run_dir: Path) -> dict:
    """One evaluation pass of the winner's checkpoint over the test split; writes test.json."""
    if not best.checkpoint or not Path(best.checkpoint).is_dir():
        raise RuntimeError(
            f"the winner's checkpoint {best.checkpoint!r} is not a local folder; cannot evaluate the test split"
        )
    task = config.task_spec()
    use_gpu = config.resources.gpus_per_worker > 0 and torch.cuda.is_available()
    # The same precision as the dev metrics that chose the winner (the loop's Accelerator).
    accelerator = Accelerator(cpu=not use_gpu, mixed_precision=config.train.mixed_precision)
    remote_code = config.model.trust_remote_code
    tokenizer = AutoTokenizer.from_pretrained(best.checkpoint, trust_remote_code=remote_code)
    # fp32 weights, as the loop loads them; no "Loading weights" bar below the search's summary.
    bars_were_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        trial_config = config.for_trial(best.config)  # LoRA: its adapters go back on its pretrained model
        model_path = resolve_model_path(trial_config.model.name_or_path)
        model = load_model(trial_config, model_path, best.checkpoint, trainable=False)
    finally:
        if bars_were_on:
            hf_logging.enable_progress_bar()
    test_split = load_tokenized(data_path)["test"]
    dataloader = DataLoader(
        test_split,
        batch_size=eval_batch_size(config.train, accelerator.device),
        collate_fn=DataCollatorWithPadding(tokenizer=tokenizer),
    )
    dataloader, model = accelerator.prepare(dataloader, model)
    started = time.perf_counter()
    scores, loss, count = evaluate_on(dataloader, model, GlueMetric(task.metric_names), accelerator, task.is_regression)
    dev_keys = [
        f"eval_{name}{suffix}"
        for suffix in (EVAL_SUFFIXES[split] for split in task.eval_splits)
        for name in [*task.metric_names, "loss"]
    ]
    document = {
        "split": "test",
        "file": config.data.test_file,
        "examples": count,
        "max_length": best.config.get("max_length", config.max_length),
        "metrics": {**{f"test_{name}": value for name, value in scores.items()}, "test_loss": loss},
        "trial_id": best.trial_id,
        "epoch": best.metrics.get("epoch"),
        "config": best.config,
        "checkpoint": best.checkpoint,
        "chosen_on": f"eval_{config.metric}",
        "dev_metrics": {key: best.metrics[key] for key in dev_keys if key in best.metrics},
        "confirmed": best.confirmed,
        "evaluated_at": time.time(),
        "seconds": time.perf_counter() - started,
    }
    write_json_atomically(Path(run_dir) / TEST_FILE, document)
    return document
