"""training_function alone: on a tiny random BERT, through `raytune-ft train`, and under
`accelerate launch` with two processes."""

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml
from click.testing import CliRunner

from conftest import quick_config
from raytune_ft.cli import main
from raytune_ft.config import validate_config
from raytune_ft.data import prepare_tokenized_data
from raytune_ft.reporting import RunFolderReporter
from raytune_ft.training import training_function

EPOCH_KEYS = {
    "epoch", "eval_accuracy", "eval_f1", "eval_loss", "train_loss", "learning_rate", "last_learning_rate",
    "examples_trained", "examples_evaluated", "train_samples_per_second", "epoch_seconds", "node_id", "device",
}


class ListReporter:
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
    config_path.write_text(yaml.safe_dump(quick_config(tiny_bert_dir, output={"dir": str(tmp_path / "runs"), "name": "one"})))
    result = CliRunner().invoke(main, ["train", str(config_path)])
    assert result.exit_code == 0, result.output
    run_dir = tmp_path / "runs" / "one"
    assert result.output.strip().splitlines()[-1] == f"run folder: {run_dir}"
    assert (run_dir / "config.yaml").is_file()
    assert len((run_dir / "epochs.jsonl").read_text().splitlines()) == 2


def launch(tmp_path, model_dir, name, launcher: list[str]) -> list[dict]:
    config_path = tmp_path / f"{name}.yaml"
    config_path.write_text(yaml.safe_dump(quick_config(model_dir, output={"dir": str(tmp_path / "runs"), "name": name})))
    command = [sys.executable, "-m", *launcher, "-m", "raytune_ft.cli", "train", str(config_path)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    return [json.loads(line) for line in (tmp_path / "runs" / name / "epochs.jsonl").read_text().splitlines()]


def test_same_loop_runs_under_accelerate_launch(tmp_path, tiny_bert_dir):
    rows = launch(tmp_path, tiny_bert_dir, "accelerate", [
        "accelerate.commands.launch", "--cpu", "--num_processes", "1", "--num_machines", "1",
        "--mixed_precision", "no", "--dynamo_backend", "no",
    ])
    assert [r["epoch"] for r in rows] == [1, 2]


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
