"""Work survives: a trial whose training process dies (the trial's own process, or its Ray
Train worker) restarts from its latest checkpoint, and a search whose process was killed goes
on with `search --resume` without losing or rerunning the trials it had finished (a PBT
search too, whose trials go on from their checkpoints)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import psutil
import pytest
import yaml
from conftest import TRAINING_ACTOR, checkpoint_folders, quick_config

from raytune_ft.run_folder import read_epochs, read_reported_epochs

# Searches killed and resumed: half a minute each.
pytestmark = pytest.mark.slow


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


def _start_search(args: list[str], log: Path) -> subprocess.Popen:
    # Its own session: killing it later takes its whole process tree, as a lost machine would.
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "raytune_ft.cli", "search", *args],
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,
    )


def _searcher_trials(run_dir: Path) -> list[tuple[str, dict]]:
    """The trials Optuna's study knows, from the searcher state Tune last saved: (state, params)."""
    from ray.tune.search.optuna import OptunaSearch

    searcher = OptunaSearch()
    searcher.restore_from_dir(str(run_dir / "tune"))
    return [(trial.state.name, trial.params) for trial in searcher._ot_study.trials]


def _wait_for(condition, process: subprocess.Popen, log: Path, timeout: float = 240) -> None:
    deadline = time.time() + timeout
    while not condition():
        assert process.poll() is None, f"search ended early:\n{log.read_text()[-3000:]}"
        assert time.time() < deadline, f"timed out:\n{log.read_text()[-3000:]}"
        time.sleep(0.2)


def _config(
    tmp_path: Path,
    model_dir: Path,
    name: str,
    num_samples: int,
    num_epochs: int,
    ray_train: str = "auto",
    batch_size: int = 8,
) -> Path:
    raw = quick_config(
        model_dir,
        data={"max_train_samples": 256},
        train={"num_epochs": num_epochs, "batch_size": batch_size},
        search={
            "space": {"learning_rate": {"loguniform": [1e-4, 3e-3]}},
            "num_samples": num_samples,
            "scheduler": "fifo",
            "metric": "accuracy",
        },
        resources={"max_concurrent_trials": 1, "ray_train": ray_train},
        output={"dir": str(tmp_path / "runs"), "name": name},
        tracking={"tensorboard": False},
    )
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.mark.parametrize(
    ("ray_train", "lora"), [("auto", False), ("always", False), ("auto", True)], ids=["auto", "always", "auto-lora"]
)
def test_a_killed_training_process_restarts_from_the_latest_checkpoint(tiny_bert_dir, tmp_path, ray_train, lora):
    config_path = _config(tmp_path, tiny_bert_dir, "worker", num_samples=1, num_epochs=4, ray_train=ray_train)
    if lora:  # the checkpoint holds LoRA's adapters and head: the restart puts them back on the model
        raw = yaml.safe_load(config_path.read_text())
        raw["model"]["peft"] = {"method": "lora", "r": 4}
        config_path.write_text(yaml.safe_dump(raw))
    run_dir, log = tmp_path / "runs" / "worker", tmp_path / "worker.log"
    search = _start_search([str(config_path), "--quiet"], log)
    try:
        _wait_for(lambda: len(_lines(run_dir / "epochs.jsonl")) >= 1, search, log)
        # Tune hears an epoch's result (the row above) a moment before it registers the epoch's
        # checkpoint (it asks the trial for it next): a kill in between restarts the trial from
        # the checkpoint before. Kill in the middle of the next epoch instead.
        time.sleep(max(0.2, _lines(run_dir / "epochs.jsonl")[0]["epoch_seconds"] / 2))
        workers = [
            p
            for p in psutil.Process(search.pid).children(recursive=True)
            if TRAINING_ACTOR[ray_train] in " ".join(p.cmdline())
        ]
        assert len(workers) == 1, [p.cmdline() for p in psutil.Process(search.pid).children(recursive=True)]
        workers[0].kill()
        assert search.wait(timeout=300) == 0, log.read_text()[-3000:]
    finally:
        if search.poll() is None:
            os.killpg(search.pid, signal.SIGKILL)

    rows = read_epochs(run_dir)
    assert [row["epoch"] for row in rows] == [1, 2, 3, 4]  # no epoch lost
    restarted = [row for row in rows if "resumed_from_epoch" in row]
    assert len(restarted) == 1 and restarted[0]["resumed_from_epoch"] == restarted[0]["epoch"] - 1
    # The restart said its checkpoint's epoch again; epochs.jsonl still holds that epoch once.
    said = [row for row in _lines(run_dir / "epochs.jsonl") if row["epoch"] == restarted[0]["epoch"] - 1]
    assert len(said) == 1
    # The schedule went on where it was: the restarted epoch's lr follows on from the one before.
    before = rows[restarted[0]["epoch"] - 2]
    assert restarted[0]["last_learning_rate"] < before["last_learning_rate"]
    events = _lines(run_dir / "trials.jsonl")
    if ray_train == "always":  # Ray Train started the worker again, inside the same Tune trial
        assert [e["event"] for e in events] == ["started", "finished"]
    else:  # Tune started the trial again, from the checkpoint of the epoch said again
        assert [e["event"] for e in events] == ["started", "restarted", "finished"]
        assert events[1]["from_checkpoint"] == said[0]["checkpoint_path"]
    if lora:
        kept = json.loads((run_dir / "best.json").read_text())["checkpoint"]  # (the others are pruned by now)
        assert (Path(kept) / "adapter_config.json").is_file()
        assert restarted[0]["trainable_parameters"] < restarted[0]["total_parameters"] / 2


def test_a_killed_search_resumes_without_losing_or_rerunning_trials(tiny_bert_dir, tmp_path):
    # Small batches, many epochs: trials long enough (~10 s) to be cut off in their middle.
    epochs = 8
    config_path = _config(tmp_path, tiny_bert_dir, "resume", num_samples=3, num_epochs=epochs, batch_size=2)
    run_dir, log = tmp_path / "runs" / "resume", tmp_path / "first.log"
    search = _start_search([str(config_path), "--quiet"], log)

    def second_trial_under_way() -> bool:
        events = _lines(run_dir / "trials.jsonl")
        finished = [e for e in events if e["event"] == "finished"]
        started = [e for e in events if e["event"] == "started"]
        if len(finished) != 1 or len(started) != 2 or time.time() - finished[0]["time"] < 3:
            return False  # Tune writes its own state every 2 s: let it hear of the finished trial
        second = started[1]["trial_id"]
        return any(row["trial_id"] == second and row["epoch"] >= 2 for row in _lines(run_dir / "epochs.jsonl"))

    try:
        _wait_for(second_trial_under_way, search, log)
    finally:
        os.killpg(search.pid, signal.SIGKILL)  # no Ctrl-C, no chance to write anything
        search.wait()
    before = _lines(run_dir / "trials.jsonl")
    first, cut_off = before[0]["trial_id"], before[-1]["trial_id"]
    cut_off_epochs = max(row["epoch"] for row in _lines(run_dir / "epochs.jsonl") if row["trial_id"] == cut_off)
    known_before = _searcher_trials(run_dir)
    assert [state for state, _ in known_before] == ["COMPLETE", "RUNNING"]

    log = tmp_path / "resumed.log"
    resumed = _start_search(["--resume", str(run_dir), "--quiet"], log)
    assert resumed.wait(timeout=400) == 0, log.read_text()[-3000:]

    events = _lines(run_dir / "trials.jsonl")
    starts = Counter(e["trial_id"] for e in events if e["event"] == "started")
    assert starts[first] == 1  # the finished trial was not run again
    assert starts[cut_off] == 2  # the cut-off one was started again ...
    rows = read_epochs(run_dir)
    # epochs.jsonl itself, not only what read_epochs merges: one row per trial and epoch.
    assert set(Counter((row["trial_id"], row["epoch"]) for row in read_reported_epochs(run_dir)).values()) == {1}
    again = [row for row in rows if row["trial_id"] == cut_off and "resumed_from_epoch" in row]
    assert again and again[0]["resumed_from_epoch"] >= cut_off_epochs - 1  # ... from its latest checkpoint
    per_trial = Counter(row["trial_id"] for row in rows)
    assert len(per_trial) == 3 and set(per_trial.values()) == {epochs}  # every trial, every epoch, once
    last_event = {e["trial_id"]: e["event"] for e in events}
    assert set(last_event.values()) == {"finished"}
    assert json.loads((run_dir / "search.json").read_text())["outcome"] == "finished"
    assert (run_dir / "best.json").is_file()
    # TPE went on from the trials it had seen (a fresh sampler would know only the third one).
    known_after = _searcher_trials(run_dir)
    assert len(known_after) == 3 and known_after[:2] == [("COMPLETE", params) for _, params in known_before]
    # Whatever the kill left behind (a checkpoint written but never registered), only the winner
    # keeps a checkpoint once every trial has ended (output.keep_checkpoints: best).
    winner = json.loads((run_dir / "best.json").read_text())["trial_id"]
    assert {trial_id: len(checkpoint_folders(run_dir, trial_id)) for trial_id in per_trial} == {
        trial_id: int(trial_id == winner) for trial_id in per_trial
    }


def test_a_search_killed_just_after_a_trial_ended_does_not_train_it_again(tiny_bert_dir, tmp_path):
    """Tune saves its own state every 2 s: killed sooner after a trial's end, Tune restores that
    trial as unfinished. The resumed search knows it ended from trials.jsonl."""
    config_path = _config(tmp_path, tiny_bert_dir, "just-ended", num_samples=2, num_epochs=2)
    run_dir, log = tmp_path / "runs" / "just-ended", tmp_path / "first.log"
    search = _start_search([str(config_path), "--quiet"], log)

    def a_trial_ended() -> bool:
        return any(e["event"] == "finished" for e in _lines(run_dir / "trials.jsonl"))

    try:
        _wait_for(a_trial_ended, search, log)
    finally:
        os.killpg(search.pid, signal.SIGKILL)  # at once: within Tune's 2 s between saves of its state
        search.wait()
    ended = next(e for e in _lines(run_dir / "trials.jsonl") if e["event"] == "finished")
    assert time.time() - ended["time"] < 2

    log = tmp_path / "resumed.log"
    resumed = _start_search(["--resume", str(run_dir), "--quiet"], log)
    assert resumed.wait(timeout=400) == 0, log.read_text()[-3000:]

    events = _lines(run_dir / "trials.jsonl")
    assert Counter(e["trial_id"] for e in events if e["event"] == "started")[ended["trial_id"]] == 1
    rows = Counter((row["trial_id"], row["epoch"]) for row in read_reported_epochs(run_dir))
    assert len(rows) == 4 and set(rows.values()) == {1}  # 2 trials x 2 epochs, each once
    # Each trial that trained ended once. (A trial started in the last moment before the kill, which
    # Tune's saved state does not hold, stays interrupted with no epoch; its values run as a new trial.)
    trained = {trial for trial, _ in rows}
    assert Counter(e["trial_id"] for e in events if e["event"] == "finished") == Counter(dict.fromkeys(trained, 1))
    assert json.loads((run_dir / "search.json").read_text())["outcome"] == "finished"


def test_ended_trials_are_pruned_to_the_best_one_while_the_search_runs(tiny_bert_dir, tmp_path):
    """output.keep_checkpoints: best (the default): whenever a trial ends, the ended trials keep
    one checkpoint between them, the best one's, before the next trial has trained an epoch."""
    config_path = _config(tmp_path, tiny_bert_dir, "pruned", num_samples=4, num_epochs=2)
    run_dir, log = tmp_path / "runs" / "pruned", tmp_path / "search.log"
    search = _start_search([str(config_path), "--quiet"], log)
    seen: list[int] = []  # checkpoints of the ended trials, each time one more trial had ended

    def checkpoints_of_ended_trials() -> int:
        ended = {e["trial_id"] for e in _lines(run_dir / "trials.jsonl") if e["event"] == "finished"}
        return sum(len(checkpoint_folders(run_dir, trial_id)) for trial_id in ended)

    def next_trial_trained_an_epoch(count: int):
        def check() -> bool:
            return len({row["trial_id"] for row in _lines(run_dir / "epochs.jsonl")}) > count

        return check

    for trials_ended in (1, 2, 3):
        _wait_for(next_trial_trained_an_epoch(trials_ended), search, log)
        seen.append(checkpoints_of_ended_trials())
    assert search.wait(timeout=400) == 0, log.read_text()[-3000:]
    assert seen == [1, 1, 1]
    all_checkpoints = [folder for folder in run_dir.rglob("checkpoint_*") if folder.is_dir()]
    best = json.loads((run_dir / "best.json").read_text())
    assert [str(folder) for folder in all_checkpoints] == [best["checkpoint"]]
    assert "the winner's best epoch" in log.read_text()


def _checkpoints_saved_state_names(tune_dir: Path) -> list[Path]:
    """The checkpoint each trial restarts from on --resume: its latest in Tune's newest saved state."""
    from ray.tune import ExperimentAnalysis

    try:
        trials = ExperimentAnalysis(str(tune_dir)).trials
    except (ValueError, OSError):  # not saved yet, or being written
        return []
    return [Path(trial.checkpoint.path) for trial in trials if trial.checkpoint]


def _index(checkpoint: Path) -> int:
    return int(checkpoint.name.removeprefix("checkpoint_"))


def test_a_killed_pbt_search_resumes_from_its_trials_checkpoints(tiny_bert_dir, tmp_path):
    """PBT's one-worker trials train in their own process and hand their checkpoints to Tune,
    which a resumed search restarts them from. Killed when Tune's saved state is two epochs
    behind a trial (it saves every 2 s; these epochs are shorter), the search still finds the
    checkpoints that state names: PbtCheckpointBound keeps them."""
    epochs = 10
    raw = yaml.safe_load(
        _config(tmp_path, tiny_bert_dir, "pbt", num_samples=2, num_epochs=epochs, batch_size=8).read_text()
    )
    raw["search"].update(
        {
            "scheduler": "pbt",
            "algorithm": "random",
            "metric": "loss",
            "mode": "min",
            "perturbation_interval": 1,
            "quantile_fraction": 0.5,
            "seed": 0,
        }
    )
    raw["resources"]["max_concurrent_trials"] = 2
    config_path = tmp_path / "pbt-search.yaml"
    config_path.write_text(yaml.safe_dump(raw))
    run_dir, log = tmp_path / "runs" / "pbt", tmp_path / "first.log"
    search = _start_search([str(config_path), "--quiet"], log)

    def both_trials_past_epoch_two() -> bool:
        rows = _lines(run_dir / "epochs.jsonl")
        return len({row["trial_id"] for row in rows if row["epoch"] >= 3}) == 2

    saved: list[Path] = []

    def saved_state_two_checkpoints_behind() -> bool:
        # Past the newest perturbation_interval + 1 (2) that a trial keeps for PBT's own use.
        saved[:] = _checkpoints_saved_state_names(run_dir / "tune")
        return any(
            _index(newest) >= _index(checkpoint) + 2
            for checkpoint in saved
            for newest in checkpoint.parent.glob("checkpoint_*")
        )

    try:
        _wait_for(lambda: both_trials_past_epoch_two() and saved_state_two_checkpoints_behind(), search, log)
    finally:
        os.killpg(search.pid, signal.SIGKILL)  # no Ctrl-C, no chance to write anything
        search.wait()
    assert len(saved) == 2 and all(checkpoint.is_dir() for checkpoint in saved), saved
    cut_at: dict[str, int] = {}
    for row in _lines(run_dir / "epochs.jsonl"):
        cut_at[row["trial_id"]] = max(cut_at.get(row["trial_id"], 0), row["epoch"])
    assert len(cut_at) == 2 and max(cut_at.values()) < epochs

    resumed_at = time.time()
    log = tmp_path / "resumed.log"
    resumed = _start_search(["--resume", str(run_dir), "--quiet"], log)
    assert resumed.wait(timeout=400) == 0, log.read_text()[-3000:]

    last_event = {e["trial_id"]: e for e in _lines(run_dir / "trials.jsonl")}
    assert last_event.keys() == cut_at.keys()
    assert {e["event"] for e in last_event.values()} == {"finished"}
    assert {e["epochs_done"] for e in last_event.values()} == {epochs}
    rows = _lines(run_dir / "epochs.jsonl")
    for trial_id in cut_at:
        # The resumed search went on from a checkpoint of the trial (the latest Tune had recorded:
        # its state is saved every 2 s, and these epochs take about that), not from scratch.
        after = sorted(
            (row for row in rows if row["trial_id"] == trial_id and row["reported_at"] > resumed_at),
            key=lambda row: row["reported_at"],
        )
        assert after and after[0].get("resumed_from_epoch", 0) >= 1, after[:1]
        assert after[0]["epoch"] > 1 and 1 not in [row["epoch"] for row in after]
        assert max(row["epoch"] for row in after) == epochs
    winner = json.loads((run_dir / "best.json").read_text())["trial_id"]
    assert {trial_id: len(checkpoint_folders(run_dir, trial_id)) for trial_id in cut_at} == {
        trial_id: int(trial_id == winner) for trial_id in cut_at
    }
    assert json.loads((run_dir / "search.json").read_text())["outcome"] == "finished"
