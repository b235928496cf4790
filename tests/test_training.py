"""training_function alone: on a tiny random BERT, through `raytune-ft train`, and under
`accelerate launch` with two processes."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from conftest import REPO_ROOT, quick_config

from raytune_ft.cli import main
from raytune_ft.config import validate_config
from raytune_ft.data.tokenized import prepare_tokenized_data
from raytune_ft.training.loop import training_function
from raytune_ft.training.reporters import EpochReporter, RunFolderReporter

EPOCH_KEYS = {
    "epoch",
    "eval_accuracy",
    "eval_f1",
    "eval_loss",
    "train_loss",
    "learning_rate",
    "last_learning_rate",
    "examples_trained",
    "examples_evaluated",
    "train_samples_per_second",
    "epoch_seconds",
    "node_id",
    "device",
}


class ListReporter(EpochReporter):
    def __init__(self):
        self.epochs = []

    def report(self, metrics, checkpoint_dir):
        saved = sorted(os.listdir(checkpoint_dir)) if checkpoint_dir else None
        self.epochs.append((metrics, saved))


def test_training_function_reports_every_epoch_with_all_metrics(tiny_bert_dir):
    config = validate_config(quick_config(tiny_bert_dir, train={"num_epochs": 3, "warmup_ratio": 0.1}))
    data_path, _ = prepare_tokenized_data(config)
    reporter = ListReporter()
    training_function({"config": config.model_dump(), "data": str(data_path), "progress_bar": False}, reporter)

    assert [m["epoch"] for m, _ in reporter.epochs] == [1, 2, 3]
    for metrics, _ in reporter.epochs:
        assert EPOCH_KEYS <= set(metrics)
        assert 0 <= metrics["eval_accuracy"] <= 1 and metrics["eval_loss"] > 0
        assert metrics["learning_rate"] == 1e-3
    # The linear schedule ends at zero; warmup means epoch 1 ends below the peak rate too.
    assert reporter.epochs[-1][0]["last_learning_rate"] == 0.0
    # The first epoch always saves a checkpoint with model and tokenizer.
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= set(reporter.epochs[0][1])


def test_run_folder_reporter_keeps_only_the_newest_checkpoint(tmp_path, tiny_bert_dir):
    config = validate_config(quick_config(tiny_bert_dir))
    data_path, _ = prepare_tokenized_data(config)
    reporter = RunFolderReporter(tmp_path, is_main_process=True)
    training_function({"config": config.model_dump(), "data": str(data_path), "progress_bar": False}, reporter)
    rows = [json.loads(line) for line in (tmp_path / "epochs.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]
    assert (tmp_path / "checkpoint" / "model.safetensors").is_file()
    assert not (tmp_path / ".checkpoint-writing").exists()


def test_train_command_writes_a_run_folder(tmp_path, tiny_bert_dir):
    config_path = tmp_path / "c.yaml"
    config_path.write_text(
        yaml.safe_dump(quick_config(tiny_bert_dir, output={"dir": str(tmp_path / "runs"), "name": "one"}))
    )
    result = CliRunner().invoke(main, ["train", str(config_path)])
    assert result.exit_code == 0, result.output
    run_dir = tmp_path / "runs" / "one"
    assert result.output.strip().splitlines()[-1] == f"run folder: {run_dir}"
    assert (run_dir / "config.yaml").is_file()
    assert len((run_dir / "epochs.jsonl").read_text().splitlines()) == 2


def launch(tmp_path, model_dir, name, launcher: list[str]) -> list[dict]:
    config_path = tmp_path / f"{name}.yaml"
    config_path.write_text(
        yaml.safe_dump(quick_config(model_dir, output={"dir": str(tmp_path / "runs"), "name": name}))
    )
    command = [sys.executable, "-m", *launcher, "-m", "raytune_ft.cli", "train", str(config_path)]
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"}
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return [json.loads(line) for line in (tmp_path / "runs" / name / "epochs.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_same_loop_runs_under_accelerate_launch(tmp_path, tiny_bert_dir):
    rows = launch(
        tmp_path,
        tiny_bert_dir,
        "accelerate",
        [
            "accelerate.commands.launch",
            "--cpu",
            "--num_processes",
            "1",
            "--num_machines",
            "1",
            "--mixed_precision",
            "no",
            "--dynamo_backend",
            "no",
        ],
    )
    assert [r["epoch"] for r in rows] == [1, 2]


@pytest.mark.slow
def test_same_loop_trains_data_parallel_with_two_processes(tmp_path, tiny_bert_dir):
    # On CPU, `accelerate launch` starts several processes only through mpirun; its GPU path
    # (--multi_gpu) uses torch.distributed.run, which is what this test launches.
    rows = launch(tmp_path, tiny_bert_dir, "ddp", ["torch.distributed.run", "--nproc_per_node", "2"])
    # Rank 0 alone writes; both epochs come from a 2-process run that together trained on the
    # 64 training examples once and evaluated exactly the 32 validation examples
    # (gather_for_metrics drops the samples DDP pads the last batch with).
    assert [r["epoch"] for r in rows] == [1, 2]
    assert all(r["num_processes"] == 2 for r in rows)
    assert all((r["examples_trained"], r["examples_evaluated"]) == (64, 32) for r in rows)


class ConfigReporter(EpochReporter):
    """Keeps each epoch's metrics and the saved model's config.json."""

    def __init__(self):
        self.epochs, self.model_config = [], None

    def report(self, metrics, checkpoint_dir):
        self.epochs.append(metrics)
        if checkpoint_dir:
            self.model_config = json.loads((Path(checkpoint_dir) / "config.json").read_text())


def test_the_loop_trains_regression_and_evaluates_both_mnli_dev_sets(tmp_path, tiny_bert_dir):
    """STS-B (one score, MSE) and MNLI (3 labels, matched + mismatched) from GLUE-layout folders.

    The raw files are deleted before training: the loop reads only the tokenized data."""
    from test_data_sources import (
        MNLI_DEV_HEADER,
        MNLI_TRAIN_HEADER,
        STSB_HEADER,
        mnli_row,
        write_tsv,
    )

    words = ["cat", "dog", "car", "tree", "house", "river"]

    def stsb_row(i):
        return [
            str(i),
            "main-captions",
            "MSRvid",
            "2012",
            f"{i:04}",
            "none",
            "none",
            f"A {words[i % 6]} is here.",
            f"A {words[(i * 5) % 6]} is there.",
            f"{(i % 6) * 0.8:.3f}",
        ]

    def nli(i, dev):
        labels = ["entailment", "neutral", "contradiction"]
        return mnli_row(i, f"The {words[i % 6]} sleeps.", f"A {words[i % 4]} rests.", labels[i % 3], dev)

    stsb, mnli = tmp_path / "STS-B", tmp_path / "MNLI"
    stsb.mkdir(), mnli.mkdir()
    write_tsv(stsb / "train.tsv", STSB_HEADER, [stsb_row(i) for i in range(24)])
    write_tsv(stsb / "dev.tsv", STSB_HEADER, [stsb_row(i) for i in range(24, 34)])
    write_tsv(mnli / "train.tsv", MNLI_TRAIN_HEADER, [nli(i, False) for i in range(24)])
    write_tsv(mnli / "dev_matched.tsv", MNLI_DEV_HEADER, [nli(i, True) for i in range(10)])
    write_tsv(mnli / "dev_mismatched.tsv", MNLI_DEV_HEADER, [nli(i, True) for i in range(7)])

    results = {}
    for task, folder in (("stsb", stsb), ("mnli", mnli)):
        config = validate_config(
            {
                "task": task,
                "model": {"name_or_path": str(tiny_bert_dir)},
                "data": {"path": str(folder), "max_length": 32},
                "train": {"num_epochs": 1, "batch_size": 8, "learning_rate": 1e-3},
            }
        )
        data_path, _ = prepare_tokenized_data(config)
        for tsv in folder.iterdir():
            tsv.unlink()
        reporter = ConfigReporter()
        training_function({"config": config.model_dump(), "data": str(data_path), "progress_bar": False}, reporter)
        results[task] = reporter

    stsb_metrics = results["stsb"].epochs[0]
    assert {"eval_pearson", "eval_spearmanr", "eval_loss"} <= set(stsb_metrics)
    assert -1 <= stsb_metrics["eval_pearson"] <= 1 and stsb_metrics["eval_loss"] > 0  # MSE of scores
    assert stsb_metrics["examples_evaluated"] == 10
    assert results["stsb"].model_config["problem_type"] == "regression"
    assert len(results["stsb"].model_config["id2label"]) == 1

    mnli_metrics = results["mnli"].epochs[0]
    assert {"eval_accuracy", "eval_loss", "eval_accuracy_mm", "eval_loss_mm"} <= set(mnli_metrics)
    assert (mnli_metrics["examples_evaluated"], mnli_metrics["examples_evaluated_mm"]) == (10, 7)
    assert results["mnli"].model_config["id2label"] == {"0": "entailment", "1": "neutral", "2": "contradiction"}


def test_max_grad_norm_clips_the_gradients_before_every_step(tmp_path, tiny_bert_dir):
    """Clipped to a total norm far below Adam's eps, the updates all but vanish; unclipped,
    the same epoch moves the encoder's weights."""
    from transformers import AutoModel

    def weight_change(max_grad_norm) -> float:
        config = validate_config(quick_config(tiny_bert_dir, train={"num_epochs": 1, "max_grad_norm": max_grad_norm}))
        data_path, _ = prepare_tokenized_data(config)
        run_dir = tmp_path / f"clip-{max_grad_norm}"
        training_function(
            {"config": config.model_dump(), "data": str(data_path), "progress_bar": False},
            RunFolderReporter(run_dir, is_main_process=True),
        )
        before = AutoModel.from_pretrained(tiny_bert_dir).state_dict()
        after = AutoModel.from_pretrained(run_dir / "checkpoint").state_dict()
        return max(
            (after[name] - before[name]).abs().max().item() for name in before if before[name].is_floating_point()
        )

    unclipped, clipped = weight_change(None), weight_change(1e-12)
    assert unclipped > 1e-4
    assert clipped < unclipped / 100


@pytest.mark.slow
def test_a_half_precision_checkpoint_trains_in_fp32(tmp_path, minilm_path):
    """transformers loads weights in the dtype the checkpoint stores: the packaged MiniLM saved
    in fp16 trained with fp16 weights, and its loss was NaN at the second step (with a message
    blaming the learning rate). The loop loads fp32 weights; mixed_precision decides compute."""
    import torch
    from safetensors import safe_open
    from transformers import AutoModel, AutoTokenizer

    half = tmp_path / "minilm-fp16"
    AutoModel.from_pretrained(minilm_path, dtype=torch.float16).save_pretrained(half)
    AutoTokenizer.from_pretrained(minilm_path).save_pretrained(half)
    config = validate_config(
        quick_config(
            half,
            train={"num_epochs": 1, "batch_size": 8, "learning_rate": 1e-4},
            data={"max_train_samples": 32, "max_eval_samples": 16},
        )
    )
    data_path, _ = prepare_tokenized_data(config)
    dtypes = set()

    class SavedDtypes(ListReporter):
        def report(self, metrics, checkpoint_dir):
            super().report(metrics, checkpoint_dir)
            with safe_open(f"{checkpoint_dir}/model.safetensors", "pt") as weights:
                dtypes.update(weights.get_tensor(name).dtype for name in weights.keys())

    reporter = SavedDtypes()
    training_function({"config": config.model_dump(), "data": str(data_path), "progress_bar": False}, reporter)

    ((metrics, _),) = reporter.epochs
    assert metrics["train_loss"] == pytest.approx(metrics["train_loss"])  # not NaN
    assert 0.3 < metrics["train_loss"] < 1.5 and dtypes == {torch.float32}


def test_a_reused_trial_process_frees_the_previous_runs_model(tiny_bert_dir, monkeypatch):
    """Under mixed precision Accelerate wraps the model's forward in a reference cycle: after a
    run returns, its model lives on until the cycle collector runs. The trial driver frees it
    when the next trial starts in the process (free_previous_run), so a trial process serving
    trial after trial does not keep the last trial's model and optimizer on the GPU."""
    import gc
    import weakref

    from accelerate.state import AcceleratorState

    from raytune_ft.training import loop
    from raytune_ft.training.model import AutoModelForSequenceClassification

    models = []
    load = AutoModelForSequenceClassification.from_pretrained

    def load_and_watch(*args, **kwargs):
        model = load(*args, **kwargs)
        models.append(weakref.ref(model))
        return model

    monkeypatch.setattr(AutoModelForSequenceClassification, "from_pretrained", load_and_watch)
    raw = quick_config(tiny_bert_dir, train={"num_epochs": 1, "mixed_precision": "bf16"})
    config = validate_config({**raw, "output": {"keep_checkpoints": False}})
    data_path, _ = prepare_tokenized_data(config)
    # Accelerate keeps one state per process; this process's other tests trained in fp32.
    AcceleratorState._reset_state(reset_partial_state=True)
    gc.collect()
    gc.disable()  # only the explicit collection below may free cycles
    try:
        loop_config = {"config": config.model_dump(), "data": str(data_path), "progress_bar": False}
        training_function(loop_config, EpochReporter())
        assert models[0]() is not None  # the run has returned, its model is still alive (in a cycle)
        loop.free_previous_run()
        assert models[0]() is None
    finally:
        gc.enable()
        AcceleratorState._reset_state(reset_partial_state=True)


def test_gradient_accumulation_takes_the_steps_and_schedule_of_the_bigger_batch(tiny_bert_dir):
    """Batch 4 with 2 accumulated batches against batch 8: the same optimizer steps (60 examples
    are 15 batches of 4, the last step takes one: 8 steps an epoch, as 8 batches of 8), the same
    schedule, the same examples. And with gradient checkpointing on, the same again."""
    epochs = {}
    for batch_size, accumulated, checkpointing in [(8, 1, False), (4, 2, False), (4, 2, True)]:
        train = {"num_epochs": 2, "warmup_ratio": 0.1, "batch_size": batch_size}
        train |= {"gradient_accumulation_steps": accumulated, "gradient_checkpointing": checkpointing}
        config = validate_config(quick_config(tiny_bert_dir, data={"max_train_samples": 60}, train=train))
        data_path, _ = prepare_tokenized_data(config)
        reporter = ListReporter()
        training_function({"config": config.model_dump(), "data": str(data_path), "progress_bar": False}, reporter)
        epochs[(batch_size, accumulated, checkpointing)] = [metrics for metrics, _ in reporter.epochs]

    big = epochs[(8, 1, False)]
    assert [row["optimizer_steps"] for row in big] == [8, 16]
    for rows in epochs.values():
        for row, big_row in zip(rows, big):
            assert row["optimizer_steps"] == big_row["optimizer_steps"]
            assert row["last_learning_rate"] == pytest.approx(big_row["last_learning_rate"])
            assert row["examples_trained"] == 60 and row["effective_batch_size"] == 8
    assert rows[-1]["last_learning_rate"] == 0.0  # the schedule ended where it should, not halfway


def test_fixed_shape_padding_pads_every_batch_to_max_length(tiny_bert_dir):
    """data.padding: max_length: every training batch is max_length tokens wide (the shapes
    torch.compile and XLA want); by default a batch is as wide as its longest example."""
    widths = {}
    for padding in ("longest", "max_length"):
        config = validate_config(quick_config(tiny_bert_dir, data={"padding": padding}, train={"num_epochs": 1}))
        data_path, _ = prepare_tokenized_data(config)
        reporter = ListReporter()
        training_function({"config": config.model_dump(), "data": str(data_path), "progress_bar": False}, reporter)
        widths[padding] = reporter.epochs[0][0]["train_longest_sequence"]
    assert widths["max_length"] == 48 and widths["longest"] < 48


@pytest.mark.slow
def test_a_batch_that_runs_out_of_memory_is_halved_and_the_effective_batch_kept(tmp_path):
    """train.auto_batch_size, with a real out-of-memory error: the real MiniLM in a process whose
    address space is capped (4.5 GiB: a batch of 512 pairs of 64 tokens needs ~7 GiB, 128 ~3.8
    GiB). The run starts again with 256, then 128 pairs per step and 4 steps accumulated: one
    optimizer step of 512 examples, as asked, where it would have failed."""
    import resource

    limit = int(4.5 * 2**30)

    def cap_memory():
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    values = ["train.batch_size=512", "train.auto_batch_size=true", "data.max_train_samples=512"]
    values += ["train.num_epochs=1", "output.keep_checkpoints=false", f"output.dir={tmp_path}"]
    command = [sys.executable, "-m", "raytune_ft.cli", "train", "configs/quickstart.yaml"]
    command += [arg for value in values for arg in ("--set", value)]
    done = subprocess.run(command, capture_output=True, text=True, preexec_fn=cap_memory, cwd=REPO_ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "out of memory with a batch of 512: again with 256" in done.stdout
    (epochs_file,) = tmp_path.glob("*/epochs.jsonl")
    (row,) = [json.loads(line) for line in epochs_file.read_text().splitlines()]
    assert row["step_batch_size"] < 512 and row["effective_batch_size"] == 512
    assert row["optimizer_steps"] == 1 and row["examples_trained"] == 512
