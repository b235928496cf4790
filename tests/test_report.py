"""`raytune-ft report` on a real search's run folder (conftest.finished_search): the run-folder
records it is built from, the tables, JSON, plots and report.html; then the same run folder
as it looked mid-search, cut off, and with a trial that the scheduler stopped early."""

import base64
import json
import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest
import yaml
from click.testing import CliRunner

from raytune_ft.cli import main
from raytune_ft.report.summary import summarize_run
from raytune_ft.report.tables import summary_lines

PLOTS = ("curves.png", "best_so_far.png", "hyperparameters.png")


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))


def trial_ids(run_dir: Path) -> list[str]:
    return sorted({row["trial_id"] for row in read_jsonl(run_dir / "epochs.jsonl")})


@pytest.fixture(scope="module")
def reported(finished_search):
    """`raytune-ft report` (tables + plots + report.html), once for the tests below."""
    _, run_dir, _ = finished_search
    result = CliRunner().invoke(main, ["report", str(run_dir)])
    assert result.exit_code == 0, result.output
    return result, run_dir


# ---------------------------------------------------------------------------------------
# What the search recorded


def test_trials_jsonl_records_every_trial_start_end_and_cost(finished_search):
    _, run_dir, _ = finished_search
    events = read_jsonl(run_dir / "trials.jsonl")
    for trial_id in trial_ids(run_dir):
        mine = [event for event in events if event["trial_id"] == trial_id]
        assert [event["event"] for event in mine] == ["started", "finished"]
        started, ended = mine
        assert started["planned_epochs"] == 2 and set(started["config"]) == {"learning_rate", "warmup_ratio"}
        assert ended["epochs_done"] == 2
        assert ended["wall_seconds"] == pytest.approx(ended["time"] - started["time"])
        assert ended["device_type"] == "cpu" and ended["devices"] == 1.0
        assert ended["device_seconds"] == pytest.approx(ended["wall_seconds"]) and ended["wall_seconds"] > 1
    state = json.loads((run_dir / "search.json").read_text())
    assert state["outcome"] == "finished" and state["ended_at"] > state["started_at"]


def test_search_shows_progress_then_the_summary(finished_search):
    result, run_dir, _ = finished_search
    out = result.output
    for trial_id in trial_ids(run_dir):
        assert f"trial {trial_id} finished after 2 epochs" in out
    assert "2/2 trials done · 2 finished · 0 running · best eval_accuracy=" in out
    assert re.search(r"compute: [\d,]+ CPU core-seconds over 2 trials; search wall time \d+s", out)
    assert f"report: {run_dir / 'report.html'}" in out
    assert "Configuration for experiment" not in out  # Ray's own console output stays out


# ---------------------------------------------------------------------------------------
# The report


def test_report_table_lists_every_trial_with_status_epochs_and_cost(reported):
    result, run_dir = reported
    out = result.output
    best = json.loads((run_dir / "best.json").read_text())
    for trial_id in trial_ids(run_dir):
        row = next(line for line in out.splitlines() if trial_id in line and "finished" in line)
        assert "2/2" in row
        assert ("★" in row) == (trial_id == best["trial_id"])
    assert "CPU core-s" in out and "Per-epoch history" in out
    assert out.strip().splitlines()[-1] == f"run folder: {run_dir.resolve()}"


def test_report_writes_valid_plots_with_real_content(reported):
    _, run_dir = reported
    for name in PLOTS:
        path = run_dir / "plots" / name
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
        pixels = matplotlib.image.imread(path)[..., :3]
        assert pixels.shape[0] >= 300 and pixels.shape[1] >= 500, name
        # Not a blank canvas: curves, markers and text cover a fair part of it, in several colours.
        not_white = (pixels < 0.95).any(axis=-1).mean()
        assert 0.02 < not_white < 0.6, (name, not_white)
        assert pixels.std() > 0.05, name
        assert len(np.unique((pixels * 255).astype(np.uint8).reshape(-1, 3), axis=0)) > 50, name


def test_report_html_is_self_contained(reported):
    _, run_dir = reported
    text = (run_dir / "report.html").read_text()
    for trial_id in trial_ids(run_dir):
        assert trial_id in text
    images = re.findall(r"src='data:image/png;base64,([A-Za-z0-9+/=]+)'", text)
    assert len(images) == len(PLOTS)
    assert all(base64.b64decode(data)[:4] == b"\x89PNG" for data in images)
    assert "http" not in text.split("<h2>Config</h2>")[0]  # nothing fetched from elsewhere
    assert "CPU core-seconds" in text and "Per-epoch history" in text


def test_report_json_parses_and_agrees_with_the_run_folder(finished_search):
    _, run_dir, _ = finished_search
    result = CliRunner().invoke(main, ["report", str(run_dir), "--format", "json", "--no-plots"])
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    best = json.loads((run_dir / "best.json").read_text())
    assert document["status"] == "finished" and document["metric"] == "eval_accuracy"
    assert sorted(trial["trial_id"] for trial in document["trials"]) == trial_ids(run_dir)
    assert [trial["trial_id"] for trial in document["trials"] if trial["winner"]] == [best["trial_id"]]
    assert all(trial["status"] == "finished" and trial["epochs_done"] == 2 for trial in document["trials"])
    cost = document["cost"]
    assert cost["unit"] == "CPU core-seconds" and cost["saved_device_seconds_estimate"] == 0
    assert cost["device_seconds"] == pytest.approx(sum(t["device_seconds"] for t in document["trials"]))
    assert len(document["epochs"]) == 4 and document["files"] == {}


def test_best_so_far_follows_the_reported_epochs_and_the_compute_spent(finished_search):
    _, run_dir, _ = finished_search
    summary = summarize_run(run_dir)
    points = summary.compute_curve()
    scores = [row["eval_accuracy"] for row in read_jsonl(run_dir / "epochs.jsonl")]
    assert [p["trial_epochs"] for p in points] == [1, 2, 3, 4]
    assert [p["best"] for p in points] == [max(scores[: i + 1]) for i in range(4)]
    spent = [p["device_seconds"] for p in points]
    assert 0 < spent[0] and spent == sorted(spent) and spent[-1] <= summary.device_seconds + 1e-6


# ---------------------------------------------------------------------------------------
# The same run folder mid-search, cut off, and with a trial stopped early


def copy_records(run_dir: Path, target: Path) -> Path:
    target.mkdir()
    for name in ("config.yaml", "epochs.jsonl", "trials.jsonl", "search.json"):
        shutil.copy(run_dir / name, target / name)
    return target


def as_if_mid_search(run_dir: Path, target: Path, pid: int) -> str:
    """The run folder as it was before the last trial's last epoch and end were written."""
    copy_records(run_dir, target)
    rows, events = read_jsonl(target / "epochs.jsonl"), read_jsonl(target / "trials.jsonl")
    last = events[-1]["trial_id"]
    write_jsonl(target / "epochs.jsonl", [r for r in rows if not (r["trial_id"] == last and r["epoch"] == 2)])
    write_jsonl(target / "trials.jsonl", events[:-1])
    state = json.loads((target / "search.json").read_text())
    state.update(ended_at=None, outcome=None, pid=pid, hostname=socket.gethostname())
    (target / "search.json").write_text(json.dumps(state))
    return last


def test_report_on_a_running_search(finished_search, tmp_path):
    _, run_dir, _ = finished_search
    target = tmp_path / "running"
    cut = as_if_mid_search(run_dir, target, pid=os.getpid())  # this process is alive: still running
    summary = summarize_run(target)
    assert summary.status == "running"
    trial = next(t for t in summary.trials if t.trial_id == cut)
    assert trial.status == "running" and trial.epochs_done == 1 and trial.planned_epochs == 2
    assert trial.wall_seconds > 0  # counted up to now
    result = CliRunner().invoke(main, ["report", str(target)])
    assert result.exit_code == 0, result.output
    assert "search running" in result.output and "1 running" in result.output
    assert all((target / "plots" / name).is_file() for name in PLOTS)


def test_report_before_the_first_epoch_is_reported(finished_search, tmp_path):
    _, run_dir, _ = finished_search
    target = tmp_path / "starting"
    as_if_mid_search(run_dir, target, pid=os.getpid())
    (target / "epochs.jsonl").write_text("")
    write_jsonl(target / "trials.jsonl", [e for e in read_jsonl(target / "trials.jsonl") if e["event"] == "started"])
    result = CliRunner().invoke(main, ["report", str(target), "--format", "json"])
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert [t["status"] for t in document["trials"]] == ["running", "running"] and document["best"] is None
    assert document["files"]["plots"] == [] and Path(document["files"]["report"]).is_file()


def test_report_on_a_search_killed_without_a_chance_to_say_so(finished_search, tmp_path):
    _, run_dir, _ = finished_search
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    target = tmp_path / "killed"
    cut = as_if_mid_search(run_dir, target, pid=int(gone.stdout))
    summary = summarize_run(target)
    assert summary.status == "interrupted"
    trial = next(t for t in summary.trials if t.trial_id == cut)
    assert trial.status == "interrupted"
    # Its cost stops at the last thing it reported, not at the time the report is made.
    reported_at = max(r["reported_at"] for r in trial.epochs)
    assert trial.wall_seconds == pytest.approx(reported_at - trial.started_at)


def test_early_stopping_savings_are_estimated_from_measured_epoch_times(finished_search, tmp_path):
    _, run_dir, _ = finished_search
    target = copy_records(run_dir, tmp_path / "stopped")
    events = read_jsonl(target / "trials.jsonl")
    stopped = events[0]["trial_id"]
    for event in events:  # as if it had planned 5 epochs and the scheduler stopped it after 2
        if event["trial_id"] == stopped:
            event["planned_epochs"] = 5
            event["event"] = "stopped early" if event["event"] == "finished" else event["event"]
    write_jsonl(target / "trials.jsonl", events)
    summary = summarize_run(target)
    trial = next(t for t in summary.trials if t.trial_id == stopped)
    assert trial.status == "stopped early"
    mean_epoch = np.mean([row["epoch_seconds"] for row in trial.epochs])
    assert trial.saved_device_seconds == pytest.approx(3 * mean_epoch * 1.0)
    assert summary.saved_device_seconds == pytest.approx(trial.saved_device_seconds)
    line = next(line for line in summary_lines(summary) if line.startswith("early stopping saved about"))
    assert "estimate" in line
    result = CliRunner().invoke(main, ["report", str(target)])
    assert result.exit_code == 0 and "stopped early" in result.output and "3/5" not in result.output
    assert "2/5" in result.output


def test_summary_says_no_checkpoints_were_kept_when_they_were_turned_off(finished_search, tmp_path):
    _, run_dir, _ = finished_search
    kept = next(line for line in summary_lines(summarize_run(run_dir)) if line.startswith("checkpoints:"))
    assert "MB on disk (the winner's best epoch, for export and the test split" in kept
    target = copy_records(run_dir, tmp_path / "no-checkpoints")
    config = yaml.safe_load((target / "config.yaml").read_text())
    config["output"]["keep_checkpoints"] = False
    (target / "config.yaml").write_text(yaml.safe_dump(config))
    lines = [line for line in summary_lines(summarize_run(target)) if line.startswith("checkpoints:")]
    assert lines == ["checkpoints: none kept (output.keep_checkpoints: false; nothing to export or restart from)"]


def test_report_rejects_a_folder_that_is_not_a_run_folder(tmp_path):
    result = CliRunner().invoke(main, ["report", str(tmp_path)])
    assert result.exit_code == 2 and "is not a run folder" in result.output
