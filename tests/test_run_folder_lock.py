"""One run folder, one writer: a second search (or --resume) of a folder another process is
writing is refused with exit 2 and one line naming that process; default names never collide,
even for searches started in the same second; a search that ends lets go of its folder."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from conftest import quick_config

from raytune_ft import run_folder
from raytune_ft.cli import main
from raytune_ft.run_folder import RunFolderLock, claim_new_run_dir

FIXTURE = Path(__file__).parent / "fixtures" / "run-0.1.0"


@pytest.fixture
def holder():
    """Another process that holds the lock of a run folder until the test ends."""
    processes = []

    def hold(run_dir: Path) -> subprocess.Popen:
        code = (
            "import sys, time\n"
            "from pathlib import Path\n"
            "from raytune_ft.run_folder import RunFolderLock\n"
            f"lock = RunFolderLock(Path({str(run_dir)!r}))\n"
            "assert lock.acquire()\n"
            "print('held', flush=True)\n"
            "time.sleep(120)\n"
        )
        process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
        processes.append(process)
        assert process.stdout.readline().strip() == "held"
        return process

    yield hold
    for process in processes:
        process.kill()
        process.wait()


def test_a_second_search_into_the_same_folder_is_refused(tmp_path, tiny_bert_dir, holder):
    runs = tmp_path / "runs"
    other = holder((runs / "shared-name").resolve())
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(quick_config(tiny_bert_dir, output={"dir": str(runs), "name": "shared-name"})))

    result = CliRunner().invoke(main, ["search", str(config)])

    assert result.exit_code == 2, result.output
    assert f"is being written by process {other.pid}" in result.output.strip().splitlines()[-1]
    assert not runs.exists()  # nothing written


def test_resuming_a_folder_another_process_writes_is_refused(tmp_path, holder):
    run_dir = tmp_path / "run"
    shutil.copytree(FIXTURE, run_dir)
    state = json.loads((run_dir / "search.json").read_text())
    (run_dir / "search.json").write_text(json.dumps({**state, "ended_at": 1.0, "outcome": "interrupted"}))
    other = holder(run_dir.resolve())

    result = CliRunner().invoke(main, ["search", "--resume", str(run_dir)])

    assert result.exit_code == 2, result.output
    assert f"process {other.pid} is writing this run folder" in result.output


def test_default_names_of_searches_started_in_the_same_second_differ(tmp_path, monkeypatch):
    class SameSecond(datetime):
        @classmethod
        def now(cls, tz=None):
            return datetime(2026, 12, 6, 1, 2, 3)

    monkeypatch.setattr(run_folder, "datetime", SameSecond)
    first, first_lock = claim_new_run_dir(str(tmp_path), None, "mrpc")
    second, second_lock = claim_new_run_dir(str(tmp_path), None, "mrpc")
    try:
        assert (first.name, second.name) == ("mrpc-20261206-010203", "mrpc-20261206-010203-2")
    finally:
        first_lock.release()
        second_lock.release()


def test_a_finished_search_lets_go_of_its_folder(finished_search):
    _, run_dir, _ = finished_search
    lock = RunFolderLock(run_dir.resolve())
    assert lock.acquire()
    lock.release()
