"""A trial that runs out of disk or memory, for real: the test lowers a resource limit (prlimit)
of the running trial's own process, as a full disk or a cgroup would stop it. The trial fails with
the reason in trials.jsonl and the summary, is not retried past resources.max_failures, the search
goes on with the other trials, and nothing the failed trial half-wrote is the best. The same
limit hit in the middle of writing a checkpoint: the restarted trial goes on from the last whole
checkpoint, and the winner's checkpoint loads."""

from __future__ import annotations

import json
import os
import signal

import psutil
import pytest
import yaml
from conftest import TRAINING_ACTOR
from test_durability import _config, _lines, _start_search, _wait_for

from raytune_ft.run_folder import read_epochs

pytestmark = pytest.mark.slow  # searches with a trial process cut off: a minute each


def trial_process(search) -> psutil.Process | None:
    for process in psutil.Process(search.pid).children(recursive=True):
        try:
            if TRAINING_ACTOR["auto"] in " ".join(process.cmdline()):
                return process
        except psutil.NoSuchProcess:
            continue  # (a short-lived process of Ray's, gone since it was listed)
    return None


def run_with_a_limited_trial(tmp_path, tiny_bert_dir, name: str, resource: int, limit, after_epochs=0, failures=0):
    """A search of 2 trials, one at a time; once the first trial's process is there (and has
    reported `after_epochs` epochs), its `resource` limit is set to limit(process)."""
    config_path = _config(tmp_path, tiny_bert_dir, name, num_samples=2, num_epochs=2)
    raw = yaml.safe_load(config_path.read_text())
    raw["resources"]["max_failures"] = failures
    config_path.write_text(yaml.safe_dump(raw))
    run_dir, log = tmp_path / "runs" / name, tmp_path / f"{name}.log"
    search = _start_search([str(config_path)], log)
    try:
        _wait_for(lambda: trial_process(search) is not None, search, log)
        process = trial_process(search)
        _wait_for(lambda: len(_lines(run_dir / "epochs.jsonl")) >= after_epochs, search, log)
        value = limit(process)
        process.rlimit(resource, (value, value))
        code = search.wait(timeout=300)
    finally:
        if search.poll() is None:
            os.killpg(search.pid, signal.SIGKILL)
    return code, run_dir, log.read_text()


@pytest.mark.parametrize(
    ("resource", "limit", "reason"),
    [
        (psutil.RLIMIT_FSIZE, lambda _: 64 * 1024, "File too large"),  # a disk that takes no file past 64 KB
        (psutil.RLIMIT_AS, lambda process: process.memory_info().vms, None),  # not a page more than it has
    ],
    ids=["disk", "memory"],
)
def test_a_trial_out_of_disk_or_memory_fails_with_its_reason_and_the_search_goes_on(
    tmp_path, tiny_bert_dir, resource, limit, reason
):
    name = f"out-of-{'disk' if resource == psutil.RLIMIT_FSIZE else 'memory'}"
    code, run_dir, output = run_with_a_limited_trial(tmp_path, tiny_bert_dir, name, resource, limit)
    assert code == 0, output[-3000:]
    events = _lines(run_dir / "trials.jsonl")
    failed = [e for e in events if e["event"] == "failed"]
    assert len(failed) == 1 and failed[0]["error"] and "unknown error" not in failed[0]["error"], failed
    if reason == "File too large":
        assert reason in failed[0]["error"], failed[0]["error"]
    # Out of memory, the line depends on where the allocation failed: the loop's MemoryError or
    # torch's "can't allocate memory", or, inside Ray's own worker code, only Ray's generic
    # "An unexpected internal error occurred while the worker was executing a task." (seen both).
    assert f"trial {failed[0]['trial_id']} failed:" in output  # the summary says why
    # Not retried (max_failures 0), and the other trial ran to its end.
    assert [e["event"] for e in events if e["trial_id"] == failed[0]["trial_id"]] == ["started", "failed"]
    assert sum(e["event"] == "finished" for e in events) == 1
    best = json.loads((run_dir / "best.json").read_text())
    assert best["trial_id"] != failed[0]["trial_id"] or best["metrics"]["epoch"] in {
        row["epoch"] for row in read_epochs(run_dir) if row["trial_id"] == failed[0]["trial_id"]
    }
    assert os.path.isdir(best["checkpoint"])


def test_a_write_cut_short_inside_a_checkpoint_is_never_used(tmp_path, tiny_bert_dir):
    """The disk fills while epoch 2's checkpoint is written (after epoch 1's was saved whole): the
    trial's process fails mid-write, Tune restarts it (max_failures 1) from epoch 1's checkpoint,
    and every checkpoint the run folder names loads."""
    from transformers import AutoModelForSequenceClassification

    code, run_dir, output = run_with_a_limited_trial(
        tmp_path, tiny_bert_dir, "cut-save", psutil.RLIMIT_FSIZE, lambda _: 64 * 1024, after_epochs=1, failures=1
    )
    assert code == 0, output[-3000:]
    events = _lines(run_dir / "trials.jsonl")
    first = events[0]["trial_id"]
    assert [e["event"] for e in events if e["trial_id"] == first] == ["started", "restarted", "finished"]
    rows = [row for row in read_epochs(run_dir) if row["trial_id"] == first]
    assert [row["epoch"] for row in rows] == [1, 2] and rows[1]["resumed_from_epoch"] == 1
    for row in read_epochs(run_dir):
        if row.get("checkpoint_path") and os.path.isdir(row["checkpoint_path"]):
            AutoModelForSequenceClassification.from_pretrained(row["checkpoint_path"])
    best = json.loads((run_dir / "best.json").read_text())
    AutoModelForSequenceClassification.from_pretrained(best["checkpoint"])
