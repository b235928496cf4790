"""Ctrl-C: the real SIGINT, sent to the search's process group as a terminal sends it, during the
search and during the confirm stage. The search exits 130 with everything finished recorded and
search.json saying interrupted, and `--resume` completes it: finished trials and confirm runs
are not trained again."""

from __future__ import annotations

import json
import os
import signal
from collections import Counter

import pytest
import yaml
from conftest import quick_config
from test_durability import _lines, _start_search, _wait_for

from raytune_ft.run_folder import read_reported_epochs

pytestmark = pytest.mark.slow  # searches interrupted and resumed: a minute each


def write_config(tmp_path, model_dir, name: str, **sections):
    raw = quick_config(
        model_dir,
        data={"max_train_samples": 256},
        train={"num_epochs": 2, "batch_size": 4},
        search={
            "space": {"learning_rate": {"loguniform": [1e-4, 3e-3]}},
            "num_samples": 3,
            "scheduler": "fifo",
            "metric": "accuracy",
        },
        resources={"max_concurrent_trials": 1},
        output={"dir": str(tmp_path / "runs"), "name": name},
        tracking={"tensorboard": False},
        **sections,
    )
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path, tmp_path / "runs" / name


def interrupt_when(condition, config_path, run_dir, tmp_path) -> int:
    """Starts the search, sends SIGINT once `condition()` holds, and returns its exit status."""
    log = tmp_path / "interrupted.log"
    search = _start_search([str(config_path), "--quiet"], log)
    _wait_for(condition, search, log)
    os.killpg(search.pid, signal.SIGINT)
    return search.wait(timeout=120)


def resume(run_dir, tmp_path) -> None:
    log = tmp_path / "resumed.log"
    resumed = _start_search(["--resume", str(run_dir), "--quiet"], log)
    assert resumed.wait(timeout=400) == 0, log.read_text()[-3000:]


def starts(events: list[dict]) -> Counter:
    return Counter(e["trial_id"] for e in events if e["event"] == "started")


def test_ctrl_c_during_the_search_exits_130_and_resume_finishes_it(tiny_bert_dir, tmp_path):
    config_path, run_dir = write_config(tmp_path, tiny_bert_dir, "ctrl-c")

    def second_trial_trained_an_epoch() -> bool:
        return len({row["trial_id"] for row in _lines(run_dir / "epochs.jsonl")}) >= 2

    assert interrupt_when(second_trial_trained_an_epoch, config_path, run_dir, tmp_path) == 130
    state = json.loads((run_dir / "search.json").read_text())
    assert state["outcome"] == "interrupted" and state["ended_at"]
    events = _lines(run_dir / "trials.jsonl")
    finished = {e["trial_id"] for e in events if e["event"] == "finished"}
    assert len(finished) == 1 and "interrupted" in {e["event"] for e in events}
    rows_before = {(row["trial_id"], row["epoch"]) for row in read_reported_epochs(run_dir)}

    resume(run_dir, tmp_path)
    events = _lines(run_dir / "trials.jsonl")
    assert all(starts(events)[trial_id] == 1 for trial_id in finished)
    rows = Counter((row["trial_id"], row["epoch"]) for row in read_reported_epochs(run_dir))
    assert rows_before <= set(rows) and set(rows.values()) == {1} and len(rows) == 6
    assert json.loads((run_dir / "search.json").read_text())["outcome"] == "finished"


def test_ctrl_c_during_the_confirm_stage_resumes_it_run_by_run(tiny_bert_dir, tmp_path):
    config_path, run_dir = write_config(tmp_path, tiny_bert_dir, "ctrl-c-confirm", confirm={"top_k": 1, "seeds": 3})
    confirm_dir = run_dir / "confirm"

    def a_confirm_run_finished_and_the_next_trains() -> bool:
        finished = [e for e in _lines(confirm_dir / "trials.jsonl") if e["event"] == "finished"]
        return bool(finished) and len({row["trial_id"] for row in _lines(confirm_dir / "epochs.jsonl")}) >= 2

    assert interrupt_when(a_confirm_run_finished_and_the_next_trains, config_path, run_dir, tmp_path) == 130
    assert json.loads((run_dir / "search.json").read_text())["outcome"] == "interrupted"
    assert not (run_dir / "confirm.json").exists()
    confirmed_before = {e["trial_id"] for e in _lines(confirm_dir / "trials.jsonl") if e["event"] == "finished"}
    search_starts = starts(_lines(run_dir / "trials.jsonl"))

    resume(run_dir, tmp_path)
    assert starts(_lines(run_dir / "trials.jsonl")) == search_starts  # the search's trials: none again
    confirm_starts = starts(_lines(confirm_dir / "trials.jsonl"))
    document = json.loads((run_dir / "confirm.json").read_text())
    # The top config, and the baseline too unless it is the top one: 3 seeds each, every run once.
    runs = [run for candidate in document["candidates"] for run in candidate["runs"]]
    assert len(document["candidates"]) in (1, 2) and len(runs) == 3 * len(document["candidates"])
    assert len(confirm_starts) == len(runs) and all(confirm_starts[trial_id] == 1 for trial_id in confirmed_before)
    assert all(run["status"] == "finished" for run in runs)
    assert json.loads((run_dir / "search.json").read_text())["outcome"] == "finished"
