"""A run folder written by raytune-ft 0.1.0, before the modules moved into sub-packages: its
Ray Tune state pickles the old module paths (raytune_ft.trial.run_trial,
raytune_ft.search.RunFolderLog, raytune_ft.progress.SearchProgress, ...), and `--resume`,
`report` and `export` still read it.

tests/fixtures/run-0.1.0 is a real search (3 trials of a tiny BERT, TPE, one at a time, no
checkpoints kept) killed with SIGKILL by 0.1.0 after two trials had finished and the third
had started."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from raytune_ft.cli import main
from raytune_ft.run_folder import read_epochs, read_trial_events

FIXTURE = Path(__file__).parent / "fixtures" / "run-0.1.0"
FINISHED_BEFORE = {"c571814f", "c2a875a0"}
# The trial Ray Tune's saved state already held as finished when the search was killed (its
# state is saved every few seconds; the second trial's end came after the last save).
SAVED_AS_FINISHED = "c571814f"


def old_run_folder(tmp_path: Path, model_dir: Path) -> Path:
    """The fixture, moved to where this machine keeps its runs, with this machine's model path."""
    run_dir = tmp_path / "runs" / "run-0.1.0"
    shutil.copytree(FIXTURE, run_dir)
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    config["model"]["name_or_path"] = str(model_dir)
    config["output"]["dir"] = str(tmp_path / "runs")
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    # Killed on another machine: mark it interrupted, as a Ctrl-C would have.
    state = json.loads((run_dir / "search.json").read_text())
    state.update(ended_at=state["started_at"] + 30, outcome="interrupted")
    (run_dir / "search.json").write_text(json.dumps(state))
    return run_dir


@pytest.mark.slow
def test_a_search_started_by_0_1_0_resumes_and_finishes(tiny_bert_dir, tmp_path):
    run_dir = old_run_folder(tmp_path, tiny_bert_dir)
    finished = {e["trial_id"] for e in read_trial_events(run_dir) if e["event"] == "finished"}
    assert finished == FINISHED_BEFORE

    result = CliRunner().invoke(main, ["search", "--resume", str(run_dir), "--quiet"])

    assert result.exit_code == 0, result.output
    events = read_trial_events(run_dir)
    starts = Counter(e["trial_id"] for e in events if e["event"] == "started")
    assert starts[SAVED_AS_FINISHED] == 1  # not trained again
    finished_now = {e["trial_id"] for e in events if e["event"] == "finished"} - FINISHED_BEFORE
    assert finished_now, events  # the search went on and finished what was left
    epochs = Counter(row["trial_id"] for row in read_epochs(run_dir))
    assert all(epochs[trial_id] == 2 for trial_id in finished_now | FINISHED_BEFORE)
    assert json.loads((run_dir / "search.json").read_text())["outcome"] == "finished"


def test_report_and_export_read_a_0_1_0_run_folder(tiny_bert_dir, tmp_path):
    run_dir = old_run_folder(tmp_path, tiny_bert_dir)

    report = CliRunner().invoke(main, ["report", str(run_dir), "--format", "json", "--no-plots"])
    assert report.exit_code == 0, report.output
    document = json.loads(report.output)
    assert {trial["trial_id"] for trial in document["trials"] if trial["status"] == "finished"} == FINISHED_BEFORE
    assert document["best"]["trial_id"] in FINISHED_BEFORE

    # 0.1.0 wrote best.json only at the search's end; this search was killed, and kept no checkpoints.
    export = CliRunner().invoke(main, ["export", str(run_dir), "--out", str(tmp_path / "out")])
    assert export.exit_code == 2 and "has no best.json" in export.output
    assert not (tmp_path / "out").exists()
