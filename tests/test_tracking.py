"""Experiment tracking (TensorBoard from the real search, MLflow through its callback) and the
live progress display."""

import io
import json
import struct
import sys
from pathlib import Path

import pytest
from rich.console import Console

from raytune_ft.config import ConfigError, validate_config
from raytune_ft.report.summary import device_unit, trial_devices
from raytune_ft.tuning.progress import SearchProgress
from raytune_ft.tuning.tracking import (
    MLflowLog,
    NoTensorBoard,
    TensorBoardLog,
    check_tracking_available,
    tracking_callbacks,
)


def read_scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    """Scalars from TensorBoard event files (TFRecord framing: length, crc, event, crc)."""
    from tensorboardX.proto import event_pb2

    scalars: dict[str, list[tuple[int, float]]] = {}
    for path in folder.glob("events.out.tfevents.*"):
        data, pos = path.read_bytes(), 0
        while pos < len(data):
            (length,) = struct.unpack("<Q", data[pos : pos + 8])
            event = event_pb2.Event.FromString(data[pos + 12 : pos + 12 + length])
            pos += 12 + length + 4
            for value in event.summary.value:
                # Scalars carry a simple_value; the HParams summaries only their tag.
                point = (event.step, value.simple_value) if value.HasField("simple_value") else None
                scalars.setdefault(value.tag, []).extend([point] if point else [])
    return scalars


def test_tensorboard_has_every_trial_and_epoch_in_one_place(finished_search):
    _, run_dir, _ = finished_search
    rows = [json.loads(line) for line in (run_dir / "epochs.jsonl").read_text().splitlines()]
    for trial_id in {row["trial_id"] for row in rows}:
        scalars = read_scalars(run_dir / "tensorboard" / trial_id)
        expected = sorted((r["epoch"], r["eval_accuracy"]) for r in rows if r["trial_id"] == trial_id)
        assert sorted(scalars["eval/accuracy"]) == [(e, pytest.approx(v)) for e, v in expected]
        for tag in ("eval/loss", "eval/f1", "train/loss", "train/learning_rate", "time/epoch_seconds"):
            assert [step for step, _ in sorted(scalars[tag])] == [1, 2], tag
        assert "_hparams_/session_start_info" in scalars  # the HParams tab: hyperparameters vs metrics
    # Tune's own TensorBoard logger stays off: one place to point TensorBoard at.
    assert not list((run_dir / "tune").rglob("events.out.tfevents.*"))


class FakeTrial:
    """What a LoggerCallback uses of a Tune trial."""

    def __init__(self, trial_id: str, config: dict):
        self.trial_id, self.config = trial_id, config


def test_mlflow_logs_one_run_per_trial_with_params_and_epoch_metrics(tmp_path):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    callback = MLflowLog(uri, "my-search")
    callback.setup()
    trial = FakeTrial("abc123", {"learning_rate": 3e-5})
    callback.log_trial_start(trial)
    for epoch, accuracy in ((1, 0.7), (2, 0.8)):
        callback.log_trial_result(
            epoch, trial, {"epoch": epoch, "eval_accuracy": accuracy, "train_loss": 0.5, "node_id": "x"}
        )
    callback.log_trial_end(trial)

    client = MlflowClient(tracking_uri=uri)
    (run,) = client.search_runs([client.get_experiment_by_name("my-search").experiment_id])
    assert run.info.run_name == "abc123" and run.info.status == "FINISHED"
    assert run.data.params == {"learning_rate": "3e-05"}
    history = client.get_metric_history(run.info.run_id, "eval/accuracy")
    assert [(m.step, m.value) for m in history] == [(1, 0.7), (2, 0.8)]
    assert "train/loss" in run.data.metrics


def test_mlflow_configured_but_not_installed_is_a_one_line_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "mlflow", None)  # makes `import mlflow` fail
    config = validate_config({"tracking": {"mlflow": True}})
    with pytest.raises(ConfigError, match=r'tracking.mlflow: MLflow is not installed; pip install -e "\.\[mlflow\]"'):
        check_tracking_available(config)


def test_tensorboard_off_still_keeps_tunes_own_logger_out(tmp_path):
    from ray.tune.logger.tensorboardx import TBXLoggerCallback

    on = tracking_callbacks(validate_config({}), tmp_path)
    off = tracking_callbacks(validate_config({"tracking": {"tensorboard": False}}), tmp_path)
    assert [type(c) for c in on] == [TensorBoardLog] and [type(c) for c in off] == [NoTensorBoard]
    # Tune adds its own TensorBoard logger only when no TBXLoggerCallback is among the callbacks.
    assert isinstance(off[0], TBXLoggerCallback)
    trial = FakeTrial("t1", {})
    off[0].log_trial_start(trial)
    off[0].log_trial_result(1, trial, {"epoch": 1, "eval_accuracy": 0.5})
    off[0].log_trial_end(trial)
    assert not list(tmp_path.iterdir())


def test_device_seconds_count_gpus_when_trials_use_them():
    gpu = validate_config({"resources": {"num_workers": 2, "cpus_per_worker": 4, "gpus_per_worker": 1}}).resources
    shared = validate_config({"resources": {"cpus_per_worker": 4, "gpus_per_worker": 0.25}}).resources
    cpu = validate_config({"resources": {"num_workers": 2, "cpus_per_worker": 3}}).resources
    assert trial_devices(gpu) == ("gpu", 2) and device_unit("gpu") == "GPU-seconds"
    assert trial_devices(shared) == ("gpu", 0.25)
    assert trial_devices(cpu) == ("cpu", 6) and device_unit("cpu") == "CPU core-seconds"


def test_tracking_section_defaults_and_typos():
    config = validate_config({})
    assert config.tracking.tensorboard and not config.tracking.mlflow and config.tracking.mlflow_tracking_uri is None
    with pytest.raises(ConfigError, match="did you mean 'tracking.tensorboard'"):
        validate_config({"tracking": {"tensorbord": False}})


# ---------------------------------------------------------------------------------------
# Live progress


def feed(progress: SearchProgress) -> None:
    progress.start()
    progress.trial_started({"trial_id": "aaa", "config": {"learning_rate": 1e-4}, "planned_epochs": 2})
    progress.trial_started({"trial_id": "bbb", "config": {"learning_rate": 3e-5}, "planned_epochs": 2})
    progress.epoch_reported(
        {
            "trial_id": "aaa",
            "epoch": 1,
            "eval_accuracy": 0.75,
            "eval_loss": 0.5,
            "epoch_seconds": 3,
            "train_samples_per_second": 20,
        }
    )
    progress.trial_ended({"trial_id": "aaa", "event": "stopped early", "epochs_done": 1, "wall_seconds": 5})
    progress.trial_ended(
        {"trial_id": "bbb", "event": "failed", "error": "CUDA out of memory", "epochs_done": 0, "wall_seconds": 2}
    )
    progress.stop()


def test_progress_in_a_log_prints_events_and_a_status_line_per_ended_trial():
    out = io.StringIO()
    feed(SearchProgress(Console(file=out, width=200), "accuracy", "max", num_samples=4))
    text = out.getvalue()
    assert "trial aaa epoch 1: eval_accuracy=0.7500" in text
    assert "1/4 trials done · 1 stopped early · 1 running · best eval_accuracy=0.7500 (trial aaa)" in text
    assert "trial bbb failed: CUDA out of memory" in text


def test_progress_quiet_prints_only_failures():
    out = io.StringIO()
    feed(SearchProgress(Console(file=out, width=200), "accuracy", "max", num_samples=4, quiet=True))
    assert out.getvalue().strip() == "trial bbb failed: CUDA out of memory"


def test_progress_in_a_terminal_draws_bars_and_leaves_the_event_lines():
    out = io.StringIO()
    feed(
        SearchProgress(
            Console(file=out, width=200, force_terminal=True, color_system=None), "accuracy", "max", num_samples=4
        )
    )
    text = out.getvalue()
    assert "trial aaa stopped early after 1 epoch (5s)" in text and "trial bbb failed" in text
    assert "━" in text  # the bars were drawn (and removed again: the footer is transient)
