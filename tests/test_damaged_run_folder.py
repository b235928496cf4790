"""Damaged run folders (a kill mid-write, a file edited by hand): `report`, `export` and
`--resume` answer with exit 2 and one line that names the file, never a traceback; a row
appended after a line cut short by a kill is not lost."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from raytune_ft.cli import main
from raytune_ft.run_folder import append_epoch, read_epochs

FIXTURE = Path(__file__).parent / "fixtures" / "run-0.1.0"  # a real search's run folder, killed


@pytest.fixture
def run_dir(tmp_path) -> Path:
    folder = tmp_path / "run"
    shutil.copytree(FIXTURE, folder)
    return folder


def one_line_error(result) -> str:
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in result.output
    return lines[0]


@pytest.mark.parametrize("command", [["report"], ["report", "--format", "json"], ["search", "--resume"]])
def test_a_search_json_that_is_not_json_is_one_line(run_dir, command):
    (run_dir / "search.json").write_text('{"started_at": 17965118')  # cut short
    message = one_line_error(CliRunner().invoke(main, [*command, str(run_dir)]))
    assert "search.json: damaged, not a JSON document" in message


def test_a_damaged_best_json_is_refused_by_export(run_dir, tmp_path):
    (run_dir / "best.json").write_text("[1, 2]")
    message = one_line_error(CliRunner().invoke(main, ["export", str(run_dir), "--out", str(tmp_path / "out")]))
    assert "best.json: damaged" in message and not (tmp_path / "out").exists()


def test_a_row_appended_after_a_half_written_line_is_kept(run_dir):
    before = read_epochs(run_dir)
    with (run_dir / "epochs.jsonl").open("a") as handle:
        handle.write('{"trial_id": "30e3a102", "epoch": 1, "eval_acc')  # the kill came mid-append
    append_epoch(run_dir, {"trial_id": "30e3a102", "epoch": 1, "eval_accuracy": 0.5})

    after = read_epochs(run_dir)
    assert after[:-1] == before and after[-1] == {"trial_id": "30e3a102", "epoch": 1, "eval_accuracy": 0.5}
    assert json.loads((run_dir / "epochs.jsonl").read_text().splitlines()[-1])["eval_accuracy"] == 0.5


def test_a_run_folder_without_ray_tunes_state_is_not_resumed_but_still_read(run_dir):
    """Its tune/ folder lost (a copy of the results only): --resume is one line; report still works."""
    state = json.loads((run_dir / "search.json").read_text())
    state.update(ended_at=state["started_at"] + 30, outcome="interrupted")
    (run_dir / "search.json").write_text(json.dumps(state))
    shutil.rmtree(run_dir / "tune")
    line = one_line_error(CliRunner().invoke(main, ["search", "--resume", str(run_dir)]))
    assert "no Ray Tune state under" in line and "lost or not copied" in line
    report = CliRunner().invoke(main, ["report", str(run_dir)])
    assert report.exit_code == 0 and "interrupted" in report.output
