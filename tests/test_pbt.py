"""Population Based Training: a weak trial restarts from a strong trial's checkpoint with a
perturbed learning rate and goes on from the donor's epoch; afterwards only the winner's best
checkpoint is left and nothing runs on the cluster. Both ways a trial trains: in its own
process (one worker, resources.ray_train auto) and in a TorchTrainer whose epochs the trial
driver relays to Tune (always; what a trial with several workers runs)."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from conftest import quick_config, search_in_process
from ray.util.state import list_actors, list_placement_groups
from ray_cluster import local_cluster

from raytune_ft.cli import main
from raytune_ft.report.summary import summarize_run
from raytune_ft.tuning.checkpoints import SAVES_NAMED

# PBT searches (one through TorchTrainers): the slowest fixtures of the suite.
pytestmark = pytest.mark.slow

GOOD_LR, BAD_LR = 2e-5, 3e-3
EPOCHS, INTERVAL = 3, 2


@pytest.fixture(scope="module", params=["auto", "always"], ids=["in-trial-process", "torchtrainer"])
def pbt_search(request, tiny_bert_dir, tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp(f"pbt-{request.param}")
    raw = quick_config(
        tiny_bert_dir,
        data={"max_train_samples": 1000},
        train={"num_epochs": EPOCHS, "warmup_ratio": 0.0},
        search={
            # Eval loss: a tiny random model's accuracy ties at chance. A small learning rate and
            # a large one (whose eval loss is higher): with 2 trials and quantile 0.5 the large
            # one is the bottom half, and copies the small one.
            "space": {"learning_rate": {"loguniform": [1e-6, 3e-3]}},
            "points_to_evaluate": [{"learning_rate": GOOD_LR}, {"learning_rate": BAD_LR}],
            "num_samples": 2,
            "scheduler": "pbt",
            "perturbation_interval": INTERVAL,
            "quantile_fraction": 0.5,
            # In step: PBT ranks the two at epoch 2 whichever started first. (Asynchronous, a
            # trial whose start-up lagged by a few one-second epochs was seen ranked only after
            # the other's last epoch, and cloned onto it with nothing left to train.)
            "synch": True,
            "metric": "loss",
            "mode": "min",
            "seed": 0,
        },
        resources={"max_concurrent_trials": 2, "ray_train": request.param},
        output={"dir": str(tmp_path / "runs"), "name": "pbt"},
        tracking={"tensorboard": False},
    )
    config_path = tmp_path / "pbt.yaml"
    config_path.write_text(yaml.safe_dump(raw))
    with local_cluster([{"head": 1}], cpus_per_node=2) as cluster:
        result = CliRunner().invoke(main, ["search", str(config_path), "--address", cluster.address])
        workers = list_actors(
            address=cluster.dashboard_url,
            filters=[("state", "=", "ALIVE"), ("class_name", "=", "RayTrainWorker")],
            raise_on_missing_output=False,
        )
        groups = list_placement_groups(
            address=cluster.dashboard_url, filters=[("state", "=", "CREATED")], raise_on_missing_output=False
        )
    run_dir = tmp_path / "runs" / "pbt"
    rows = [json.loads(line) for line in (run_dir / "epochs.jsonl").read_text().splitlines()]
    events = [json.loads(line) for line in (run_dir / "trials.jsonl").read_text().splitlines()]
    return result, run_dir, rows, events, (len(workers), len(groups))


def test_a_weak_trial_restarts_from_a_strong_trials_checkpoint_with_a_perturbed_learning_rate(pbt_search):
    result, run_dir, rows, events, _ = pbt_search
    assert result.exit_code == 0, result.output
    trial_ids = sorted({event["trial_id"] for event in events})
    assert len(trial_ids) == 2
    restarts = [event for event in events if event["event"] == "restarted"]
    clones = [
        event
        for event in restarts
        if event["from_checkpoint"] and not _inside_trial(event["from_checkpoint"], event["trial_id"])
    ]
    assert clones, f"no trial was restarted from another trial's checkpoint: {restarts}"
    clone = clones[0]
    donor = next(t for t in trial_ids if t != clone["trial_id"])
    assert _inside_trial(clone["from_checkpoint"], donor)

    # The clone's next epoch continues the donor's: restored from the donor's epoch k, it
    # reports k + 1 with its new learning rate, and the schedule runs on from step k + 1.
    after = [
        row
        for row in rows
        if row["trial_id"] == clone["trial_id"]
        and row.get("resumed_from_epoch") is not None
        and row["reported_at"] >= clone["time"]
    ]
    assert after, rows
    first = min(after, key=lambda row: row["reported_at"])
    new_lr = clone["config"]["learning_rate"]
    assert first["resumed_from_epoch"] == INTERVAL
    assert first["epoch"] == INTERVAL + 1
    assert first["learning_rate"] == pytest.approx(new_lr)
    assert first["learning_rate"] != pytest.approx(BAD_LR)
    # Linear decay, no warmup: at the end of epoch e the schedule is at new_lr * (1 - e / EPOCHS).
    assert first["last_learning_rate"] == pytest.approx(new_lr * (1 - first["epoch"] / EPOCHS), rel=1e-6)
    # The search's tables show the values a trial went on with, not those it started with.
    trial = next(t for t in summarize_run(run_dir).trials if t.trial_id == clone["trial_id"])
    last_restart = [event for event in restarts if event["trial_id"] == clone["trial_id"]][-1]
    assert trial.config == last_restart["config"]


def test_every_epoch_is_reported_once_per_lineage_and_every_trial_ends_at_the_last(pbt_search):
    _, _, rows, events, _ = pbt_search
    restarts = {}
    for event in events:
        if event["event"] == "restarted":
            restarts.setdefault(event["trial_id"], []).append(event["time"])
    seen: dict[tuple, float] = {}
    for row in sorted(rows, key=lambda row: row["reported_at"]):
        key = (row["trial_id"], row["epoch"])
        if key in seen:
            # Only a restart runs an epoch again: the trial ran ahead of PBT's decision, and the
            # clone goes on from its donor's (earlier) epoch; the later row is the one kept.
            assert any(seen[key] < time < row["reported_at"] for time in restarts.get(row["trial_id"], [])), key
        seen[key] = row["reported_at"]
    ended = {event["trial_id"]: event for event in events if event["event"] not in ("started", "restarted")}
    # A clone goes on from its donor's epoch: it ends at the last epoch too, having run fewer itself.
    assert {event["event"] for event in ended.values()} == {"finished"}, ended
    assert {event["epochs_done"] for event in ended.values()} == {EPOCHS}


def test_after_the_search_only_the_winners_best_checkpoint_is_left(pbt_search, request):
    result, run_dir, _, events, leftovers = pbt_search
    assert result.exit_code == 0, result.output
    # Ray Train's runs (a TorchTrainer per start of a trial) and Ray Tune's checkpoints (copies of
    # those under the relay; the only ones of a trial that trains in its own process).
    train_runs = [path for path in (run_dir / "trials").glob("train-*/checkpoint_*") if path.is_dir()]
    tune_copies = [path for path in (run_dir / "tune").glob("*/checkpoint_*") if path.is_dir()]
    if request.node.callspec.params["pbt_search"] == "auto":  # one-worker trials train in their own process
        assert not (run_dir / "trials").exists() or not list(
            (run_dir / "trials").glob("train-*")
        )  # no TorchTrainer ran
    else:
        assert not tune_copies
    # output.keep_checkpoints: best (PBT prunes only when the search ends: a clone may start late).
    best = json.loads((run_dir / "best.json").read_text())
    assert [str(path) for path in train_runs + tune_copies] == [best["checkpoint"]]
    assert not (Path(best["checkpoint"]) / "training_state.pt").exists()
    state = json.loads((run_dir / "search.json").read_text())
    # What is left of Ray Train's run folders (checkpoint and bookkeeping) and Tune's checkpoints.
    left = [*(run_dir / "trials").rglob("*"), *(path for copy in tune_copies for path in copy.rglob("*"))]
    assert state["checkpoint_bytes"] == sum(path.stat().st_size for path in left if path.is_file())
    assert leftovers == (0, 0)  # no Train worker or placement group alive once the search ended


def _inside_trial(path: str, trial_id: str) -> bool:
    """Whether a Tune checkpoint path lies in the Tune folder of this trial."""
    return any(trial_id in part for part in Path(path).parts[-2:-1])


def test_pruning_keeps_a_clones_best_checkpoint_from_before_it_was_cloned(tmp_path):
    """Seen in a run: a trial's best epoch (2, in its first Train run) was run again by the
    clone it became, without improving; its best checkpoint must survive the pruning."""
    from raytune_ft.tuning.checkpoints import prune_ended_trials

    first, clone = tmp_path / "trials" / "train-t1-aaaa", tmp_path / "trials" / "train-t1-bbbb"
    kept_by_train = {first / "checkpoint_e2", clone / "checkpoint_e3", clone / "checkpoint_e4"}
    copy = tmp_path / "tune" / "run_trial_t1_0" / "checkpoint_000001"
    for folder in (*kept_by_train, copy):
        folder.mkdir(parents=True)
        (folder / "training_state.pt").write_text("state")

    def row(epoch: int, loss: float, improved: bool, folder: Path) -> dict:
        return {
            "trial_id": "t1",
            "epoch": epoch,
            "eval_loss": loss,
            "best_so_far": float(improved),
            "checkpoint_path": str(folder / f"checkpoint_e{epoch}"),
        }

    rows = [
        row(1, 0.695, True, first),
        row(2, 0.692, True, first),
        # The clone, from its donor's epoch 1 (whose best score it carries on): no improvement.
        row(2, 0.6907, False, clone),
        row(3, 0.6908, False, clone),
        row(4, 0.6909, False, clone),
    ]
    (tmp_path / "epochs.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    events = [
        {"event": "started", "trial_id": "t1"},
        {"event": "restarted", "trial_id": "t1"},
        {"event": "finished", "trial_id": "t1"},
    ]
    (tmp_path / "trials.jsonl").write_text("".join(json.dumps(event) + "\n" for event in events))

    prune_ended_trials(tmp_path, str(tmp_path), "loss", "min")

    remaining = {path for path in (tmp_path / "trials").glob("*/checkpoint_*")}
    assert remaining == {first / "checkpoint_e2"}
    assert not (first / "checkpoint_e2" / "training_state.pt").exists()
    assert not copy.exists()


def test_while_a_pbt_search_runs_each_trial_keeps_a_few_checkpoints_not_one_per_epoch(tiny_bert_dir, tmp_path):
    """Tune keeps every epoch's checkpoint under PBT (a clone may start from an older one);
    PbtCheckpointBound drops those nothing can use any more, while exploits still find theirs."""
    epochs, interval = 12, 1
    raw = quick_config(
        tiny_bert_dir,
        data={"max_train_samples": 300},
        train={"num_epochs": epochs, "warmup_ratio": 0.0},
        search={
            "space": {"learning_rate": {"loguniform": [1e-6, 3e-3]}},
            "points_to_evaluate": [{"learning_rate": GOOD_LR}, {"learning_rate": BAD_LR}],
            "num_samples": 2,
            "scheduler": "pbt",
            "perturbation_interval": interval,
            "quantile_fraction": 0.5,
            "metric": "loss",
            "mode": "min",
            "seed": 0,
        },
        resources={"max_concurrent_trials": 2},
        output={"dir": str(tmp_path / "runs"), "name": "pbt-bound"},
        tracking={"tensorboard": False},
    )
    run_dir = tmp_path / "runs" / "pbt-bound"
    most: dict[str, int] = {}  # the most checkpoints each trial's Tune folder held at once
    searching = threading.Event()

    def watch() -> None:
        while searching.is_set():
            for folder in (run_dir / "tune").glob("*/"):  # a folder per trial
                count = sum(1 for path in folder.glob("checkpoint_*") if path.is_dir())
                most[folder.name] = max(most.get(folder.name, 0), count)
            time.sleep(0.05)

    searching.set()
    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        result = search_in_process(raw, tmp_path)
    finally:
        searching.clear()
        watcher.join()
    assert result.exit_code == 0, result.output

    events = [json.loads(line) for line in (run_dir / "trials.jsonl").read_text().splitlines()]
    clones = [
        event
        for event in events
        if event["event"] == "restarted"
        and event["from_checkpoint"]
        and not _inside_trial(event["from_checkpoint"], event["trial_id"])
    ]
    assert clones, "no trial was restarted from another trial's checkpoint"
    ended = [event for event in events if event["event"] not in ("started", "restarted")]
    assert {event["event"] for event in ended} == {"finished"}, ended  # every clone found its donor's checkpoint
    # The newest interval + 1, the best, a waiting clone's, those Tune's last saved states name (for
    # --resume), and one just written that Tune has not yet been told of: against one per epoch.
    assert len(most) == 2 and max(most.values()) <= interval + 4 + SAVES_NAMED < epochs, most
    best = json.loads((run_dir / "best.json").read_text())
    assert Path(best["checkpoint"]).is_dir()
