"""Every search records its trials in an Optuna study in the run folder (optuna.db), whatever the
search algorithm; `raytune-ft dashboard RUN_DIR` serves it with optuna-dashboard on 127.0.0.1."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import optuna
import pytest
from conftest import quick_config, search_in_process

from raytune_ft.run_folder import read_epochs, read_trial_events
from raytune_ft.tuning.study import study_url

STATES = {"finished": "COMPLETE", "stopped early": "PRUNED", "failed": "FAIL"}


def recorded(run_dir: Path) -> dict[str, optuna.trial.FrozenTrial]:
    study = optuna.load_study(study_name=run_dir.name, storage=study_url(run_dir))
    return {trial.user_attrs["trial_id"]: trial for trial in study.trials}


def check_study_against_run_folder(run_dir: Path, metric: str = "eval_accuracy") -> dict:
    """One Optuna trial per Tune trial, with its values, one intermediate value per reported
    epoch, its end as trials.jsonl says it, and its best epoch as the value of a finished one."""
    trials = recorded(run_dir)
    events = read_trial_events(run_dir)
    starts = {event["trial_id"]: event["config"] for event in events if event["event"] == "started"}
    ends = {event["trial_id"]: event["event"] for event in events if event["event"] in STATES}
    assert set(trials) == set(starts)
    rows = read_epochs(run_dir)
    for trial_id, trial in trials.items():
        assert trial.params == starts[trial_id]
        epochs = {row["epoch"]: row[metric] for row in rows if row["trial_id"] == trial_id}
        assert trial.intermediate_values == epochs
        assert trial.state.name == STATES[ends[trial_id]]
        if trial.state.name == "COMPLETE":
            assert trial.value == max(epochs.values())
    return ends


def test_a_search_records_its_trials_and_epochs_in_an_optuna_study(finished_search):
    _, run_dir, _ = finished_search
    assert set(check_study_against_run_folder(run_dir).values()) == {"finished"}
    study = optuna.load_study(study_name=run_dir.name, storage=study_url(run_dir))
    assert study.metric_names == ["eval_accuracy"]  # the dashboard's axis title


@pytest.mark.slow
def test_random_search_with_asha_records_stopped_trials_as_pruned(tiny_bert_dir, tmp_path):
    raw = quick_config(
        tiny_bert_dir,
        train={"num_epochs": 3},
        search={
            "space": {"learning_rate": {"loguniform": [1e-5, 3e-3]}},
            "algorithm": "random",
            "num_samples": 4,
            "scheduler": "asha",
            "grace_period": 1,
            "metric": "accuracy",
        },
        resources={"max_concurrent_trials": 2},
        output={"dir": str(tmp_path / "runs"), "name": "random"},
        tracking={"tensorboard": False},
    )
    result = search_in_process(raw, tmp_path)
    assert result.exit_code == 0, result.output
    ends = check_study_against_run_folder(tmp_path / "runs" / "random")
    assert len(ends) == 4


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_the_dashboard_serves_the_study_on_localhost_and_stops(finished_search):
    _, run_dir, _ = finished_search
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "raytune_ft.cli", "dashboard", str(run_dir), "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline, studies = time.time() + 60, None
        while studies is None:
            assert server.poll() is None, server.stdout.read()
            assert time.time() < deadline, "the dashboard did not answer"
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=2) as response:
                    studies = json.loads(response.read())
            except OSError:
                time.sleep(0.5)
        assert [study["study_name"] for study in studies["study_summaries"]] == [run_dir.name]
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert server.returncode is not None


def test_the_dashboard_without_its_extra_or_a_study_says_what_to_do(finished_search, tmp_path):
    _, run_dir, _ = finished_search
    # optuna-dashboard not installed: importing it fails as it would then.
    blocked = "import sys; sys.modules['optuna_dashboard'] = None; from raytune_ft.cli import main; main()"
    missing = subprocess.run(
        [sys.executable, "-c", blocked, "dashboard", str(run_dir)], capture_output=True, text=True, timeout=120
    )
    assert missing.returncode == 2
    assert missing.stderr.strip().splitlines()[-1] == (
        "error: raytune-ft dashboard needs optuna-dashboard: pip install 'raytune-ft[dashboard]'"
    )
    no_study = subprocess.run(
        [sys.executable, "-m", "raytune_ft.cli", "dashboard", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert no_study.returncode == 2 and "has no optuna.db" in no_study.stderr


def test_a_study_that_cannot_be_written_warns_once_and_leaves_the_search_alone(tmp_path, capsys):
    from types import SimpleNamespace

    from raytune_ft.config import validate_config
    from raytune_ft.tuning.study import STUDY_FILE, OptunaStudyLog

    (tmp_path / STUDY_FILE).write_bytes(b"not a database" * 100)  # damaged: SQLite cannot open it
    config = validate_config(quick_config("m", search={"space": {"learning_rate": {"loguniform": [1e-5, 1e-3]}}}))
    log = OptunaStudyLog(tmp_path, config)
    trial = SimpleNamespace(trial_id="t1", config={"learning_rate": 1e-4}, last_result={})
    log.on_trial_start(0, [], trial)  # raises nothing
    log.on_trial_result(0, [], trial, {"epoch": 1, "eval_accuracy": 0.5})
    log.on_trial_complete(0, [], trial)
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "optuna.db is no longer written" in warnings[0]
