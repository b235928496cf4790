"""A run folder on shared storage whose search ran on another machine: a search that still
writes its heartbeat there is not resumed from here (unless the user says that machine is lost,
--takeover); one silent for HEARTBEAT_STALE seconds is interrupted, and resumes."""

from __future__ import annotations

import json
import time

import pytest
from click.testing import CliRunner
from test_old_run_folder import old_run_folder

from raytune_ft.cli import main
from raytune_ft.run_folder import HEARTBEAT_STALE


def on_another_machine(run_dir, heartbeat_age: float) -> dict:
    """search.json as a search left it that runs, or ran, on host lost-node (no end mark)."""
    state = json.loads((run_dir / "search.json").read_text())
    state.update(ended_at=None, outcome=None, hostname="lost-node", pid=4242, heartbeat_at=time.time() - heartbeat_age)
    (run_dir / "search.json").write_text(json.dumps(state))
    return state


def test_a_search_alive_on_another_machine_is_not_resumed_from_here(tiny_bert_dir, tmp_path):
    run_dir = old_run_folder(tmp_path, tiny_bert_dir)
    state = on_another_machine(run_dir, heartbeat_age=20)
    result = CliRunner().invoke(main, ["search", "--resume", str(run_dir), "--quiet"])
    assert result.exit_code == 2
    [line] = result.output.strip().splitlines()
    assert line.startswith(
        f"error: --resume {run_dir.resolve()}: its search runs on lost-node (process 4242, last heard"
    )
    assert line.endswith("s ago); wait, or if that machine is gone, add --takeover")
    assert json.loads((run_dir / "search.json").read_text()) == state  # nothing written
    report = CliRunner().invoke(main, ["report", str(run_dir)])
    assert "running" in report.output and "interrupted" not in report.output


def test_a_search_silent_on_another_machine_reads_as_interrupted(tiny_bert_dir, tmp_path):
    run_dir = old_run_folder(tmp_path, tiny_bert_dir)
    on_another_machine(run_dir, heartbeat_age=HEARTBEAT_STALE + 60)
    report = CliRunner().invoke(main, ["report", str(run_dir)])
    assert report.exit_code == 0 and "interrupted" in report.output


@pytest.mark.slow
def test_takeover_resumes_a_search_whose_machine_was_lost_and_a_heartbeat_is_written(tiny_bert_dir, tmp_path):
    run_dir = old_run_folder(tmp_path, tiny_bert_dir)
    on_another_machine(run_dir, heartbeat_age=20)
    result = CliRunner().invoke(main, ["search", "--resume", str(run_dir), "--takeover", "--quiet"])
    assert result.exit_code == 0, result.output
    state = json.loads((run_dir / "search.json").read_text())
    assert state["outcome"] == "finished" and state["hostname"] != "lost-node"
    # This machine's search wrote its own signs of life (at its first turn of Tune's loop).
    assert state["heartbeat_at"] >= state["resumed_at"][-1]


def test_takeover_needs_resume(tmp_path):
    result = CliRunner().invoke(main, ["search", "configs/quickstart.yaml", "--takeover"])
    assert result.exit_code == 2 and "--takeover: only with --resume RUN_DIR" in result.output
