"""A configuration that cannot train ends as a failed trial with its reason; the search goes on."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
import yaml
from conftest import quick_config, search_in_process

from raytune_ft.cli import EXIT_RUN_FAILED
from raytune_ft.config import validate_config
from raytune_ft.data.tokenized import prepare_tokenized_data
from raytune_ft.training.divergence import DivergenceGuard, TrainingDiverged
from raytune_ft.training.loop import training_function
from raytune_ft.training.reporters import EpochReporter


class Ignore(EpochReporter):
    def report(self, metrics, checkpoint_dir):
        pass


def test_guard_passes_a_loss_that_falls_and_noise_around_it():
    guard = DivergenceGuard(learning_rate=5e-5)
    for step in range(200):
        guard.check(0.7 * math.exp(-step / 50) + 0.05 * (step % 3), epoch=1)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_guard_stops_a_non_finite_loss(bad):
    guard = DivergenceGuard(learning_rate=1.0)
    guard.check(0.69, epoch=1)
    with pytest.raises(TrainingDiverged, match="training loss is"):
        guard.check(bad, epoch=1)


def test_guard_stops_a_loss_that_blows_up_without_nan():
    guard = DivergenceGuard(learning_rate=1.0)
    guard.check(0.69, epoch=1)
    with pytest.raises(TrainingDiverged, match="diverged at epoch 2"):
        for _ in range(DivergenceGuard.WINDOW):
            guard.check(40.0, epoch=2)


def test_losses_checked_every_few_steps_stop_a_run_at_most_that_many_steps_later():
    """The loop keeps step losses on the device and checks them every CHECK_EVERY steps: the
    guard sees the same losses in the same order, so it fires on the same loss, at most
    CHECK_EVERY - 1 steps after a check per step would have."""
    import torch
    from accelerate import Accelerator

    from raytune_ft.training.loop import StepLosses

    losses = [0.69, 0.7, 0.68, *[40.0] * 30]
    per_step = DivergenceGuard(learning_rate=1.0)
    with pytest.raises(TrainingDiverged) as at_once:
        for step, loss in enumerate(losses):
            fired_at = step
            per_step.check(loss, epoch=1)
    batched = StepLosses(DivergenceGuard(learning_rate=1.0), Accelerator(cpu=True))
    with pytest.raises(TrainingDiverged) as later:
        for step, loss in enumerate(losses):
            stopped_at = step
            batched.add(torch.tensor(loss), epoch=1)
    assert str(later.value) == str(at_once.value)  # the same rule on the same losses
    assert fired_at <= stopped_at < fired_at + StepLosses.CHECK_EVERY
    assert stopped_at > fired_at  # one sync per CHECK_EVERY steps, not per step


def test_the_last_steps_of_an_epoch_are_checked_at_its_end():
    import torch
    from accelerate import Accelerator

    from raytune_ft.training.loop import StepLosses

    batched = StepLosses(DivergenceGuard(learning_rate=1.0), Accelerator(cpu=True))
    batched.add(torch.tensor(0.69), epoch=1)
    batched.add(torch.tensor(float("nan")), epoch=1)  # fewer than CHECK_EVERY: not checked yet
    with pytest.raises(TrainingDiverged, match="training loss is nan at epoch 1"):
        batched.check(epoch=1)


# lr=1.0 kills a MiniLM (loss 30-80), but on the tiny BERT its loss hovers around the guard's
# 10x line, on one side with one torch thread and on the other with two. 9.0 (the highest the
# config allows) is 14x over the line from the first ten steps, with one thread and with two.
DIVERGING_LR = 9.0


def test_the_loop_with_too_high_a_learning_rate_diverges(tiny_bert_dir):
    config = validate_config(
        quick_config(
            tiny_bert_dir, train={"learning_rate": DIVERGING_LR, "batch_size": 4}, output={"keep_checkpoints": False}
        )
    )
    data_path, _ = prepare_tokenized_data(config)
    with pytest.raises(TrainingDiverged, match=f"learning_rate={DIVERGING_LR:g}"):
        training_function({"config": config.model_dump(), "data": str(data_path), "progress_bar": False}, Ignore())


@pytest.mark.slow
def test_a_diverging_trial_fails_with_its_reason_and_the_search_goes_on(tiny_bert_dir, tmp_path):
    raw = quick_config(
        tiny_bert_dir,
        train={"batch_size": 4},
        search={
            "space": {"learning_rate": {"loguniform": [1e-4, DIVERGING_LR]}},
            "points_to_evaluate": [{"learning_rate": DIVERGING_LR}, {"learning_rate": 1e-3}],
            "num_samples": 2,
            "scheduler": "fifo",
            "metric": "accuracy",
        },
        output={"dir": str(tmp_path / "runs"), "name": "diverge", "keep_checkpoints": False},
    )
    result = search_in_process(raw, tmp_path)
    assert result.exit_code == 0, result.output  # one trial worked: the search succeeded

    run_dir = tmp_path / "runs" / "diverge"
    events = [json.loads(line) for line in (run_dir / "trials.jsonl").read_text().splitlines()]
    ended = {e["trial_id"]: e for e in events if e["event"] != "started"}
    lr_of = {e["trial_id"]: e["config"]["learning_rate"] for e in events if e["event"] == "started"}
    by_lr = {lr_of[trial_id]: event for trial_id, event in ended.items()}
    assert by_lr[DIVERGING_LR]["event"] == "failed" and "diverged" in json.dumps(by_lr[DIVERGING_LR])
    # Tune starts a failed trial again (resources.max_failures: a dead process looks the same),
    # but the second attempt failed at once with the first one's reason instead of diverging again.
    assert [e["event"] for e in events if lr_of.get(e["trial_id"]) == DIVERGING_LR] == [
        "started",
        "restarted",
        "failed",
    ]
    error_file = next((run_dir / "tune").glob(f"run_trial_{by_lr[DIVERGING_LR]['trial_id']}_*/error.txt")).read_text()
    reasons = [
        line
        for line in error_file.splitlines()
        if line.startswith("raytune_ft.training.divergence.TrainingDiverged: training loss")
    ]
    assert len(reasons) == 2 and reasons[1] == reasons[0] + " (in an earlier attempt; not trained again)", reasons
    assert by_lr[1e-3]["event"] == "finished"
    best = json.loads((run_dir / "best.json").read_text())
    assert best["config"]["learning_rate"] == 1e-3


@pytest.mark.slow
def test_two_workers_of_a_diverging_trial_stop_together(tiny_bert_dir, tmp_path):
    """Each DDP rank checks the mean loss over both, so both stop at the same step. A rank that
    stopped alone would leave the other waiting in its gradient all-reduce: the search would hang,
    so it runs in a process of its own with a deadline."""
    raw = quick_config(
        tiny_bert_dir,
        train={"batch_size": 2, "learning_rate": DIVERGING_LR, "num_epochs": 3},
        search={"space": {}, "num_samples": 1, "scheduler": "fifo", "metric": "accuracy"},
        resources={"num_workers": 2, "cpus_per_worker": 1},
        output={"dir": str(tmp_path / "runs"), "name": "diverge-ddp", "keep_checkpoints": False},
    )
    config_path = tmp_path / "diverge-ddp.yaml"
    config_path.write_text(yaml.safe_dump(raw))
    done = subprocess.run(
        [sys.executable, "-m", "raytune_ft.cli", "search", str(config_path), "--quiet"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == EXIT_RUN_FAILED, done.stdout + done.stderr  # its only trial failed
    assert "no trial reported a result" in done.stderr

    events = [
        json.loads(line) for line in (tmp_path / "runs" / "diverge-ddp" / "trials.jsonl").read_text().splitlines()
    ]
    (ended,) = [e for e in events if e["event"] != "started"]
    assert ended["event"] == "failed" and "TrainingDiverged: training loss" in ended["error"], ended
