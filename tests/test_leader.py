"""The schedulers never stop the leader (tuning/leader.py): a trial that holds the best score on
the search's metric runs on, even where it ranks last on what ASHA or PBT compare (eval_loss).

Real Ray Tune runs with the schedulers `build_scheduler` makes from a config, over a trainable that
reports fixed scores, so which trial leads on accuracy and which on loss is known in advance."""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import pytest
import ray
from conftest import quick_config
from ray import tune
from ray.tune.schedulers import ASHAScheduler, PopulationBasedTraining

from raytune_ft.config import validate_config
from raytune_ft.tuning.tuner import build_scheduler

EPOCHS = 3
# The leader: the best accuracy, the worst loss by far. The others tie on accuracy.
LEADER = {"name": "leader", "accuracy": 0.9, "loss": 2.0}
LEADER_DELAY = 3.0  # seconds before each of the leader's reports (PBT): the others have reported by then
OTHERS = [{"name": f"other-{i}", "accuracy": 0.6, "loss": loss} for i, loss in enumerate((0.4, 0.5, 0.45))]


def scores_by_epoch(config: dict):
    """Reports the trial's fixed scores each epoch, with a checkpoint (PBT clones from it). A trial
    PBT restarted from another's checkpoint goes on at the epoch after the donor's."""
    start = 1
    checkpoint = tune.get_checkpoint()
    if checkpoint:
        with checkpoint.as_directory() as folder:
            start = int((Path(folder) / "epoch").read_text()) + 1
    for epoch in range(start, EPOCHS + 1):
        time.sleep(config["delay"])
        point = config["point"]
        # Each report also goes to a log of its own: Tune's result tables of a paused trial miss rows.
        row = {"trial_id": tune.get_context().get_trial_id(), "epoch": epoch, "name": point["name"]}
        with open(config["log"], "a") as log:
            log.write(json.dumps(row) + "\n")
        with tempfile.TemporaryDirectory() as folder:
            (Path(folder) / "epoch").write_text(str(epoch))
            tune.report(
                {"epoch": epoch, "name": point["name"], "eval_accuracy": point["accuracy"], "eval_loss": point["loss"]},
                checkpoint=tune.Checkpoint.from_directory(folder),
            )


@pytest.fixture(scope="module")
def ray_runtime():
    # The trainable is defined here: Ray's workers get it by value, not by importing this file.
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    ray.init(num_cpus=4, include_dashboard=False)
    yield
    ray.shutdown()


def run_tune(scheduler, points: list[dict], concurrent: int, tmp_path: Path, delays: dict | None = None):
    """Runs one trial per point; returns each trial's reports as (epoch, the name it reported), by the
    name it started with (a trial PBT overwrote reports its donor's name from then on)."""
    log = tmp_path / "reports.jsonl"
    delays = delays or {}
    space = {
        "point": tune.grid_search(points),
        "delay": tune.sample_from(lambda config: delays.get(config["point"]["name"], 0.0)),
        "log": str(log),
        "learning_rate": 1e-4,
    }
    tuner = tune.Tuner(
        scores_by_epoch,
        param_space=space,
        tune_config=tune.TuneConfig(scheduler=scheduler, max_concurrent_trials=concurrent),
        run_config=tune.RunConfig(storage_path=str(tmp_path), name="tune", verbose=0),
    )
    tuner.fit()
    by_trial: dict[str, list] = {}
    for line in log.read_text().splitlines():
        row = json.loads(line)
        by_trial.setdefault(row["trial_id"], []).append((row["epoch"], row["name"]))
    return {rows[0][1]: rows for rows in by_trial.values()}


def scheduler_for(scheduler: str, **search):
    config = validate_config(
        quick_config(
            "unused-model",
            train={"num_epochs": EPOCHS},
            search={
                "space": {"learning_rate": {"loguniform": [1e-5, 1e-3]}},
                "metric": "accuracy",
                "scheduler": scheduler,
                **search,
            },
        )
    )
    assert config.scheduler_metric == ("eval_loss", "min")
    return build_scheduler(config)


def plain_ray_scheduler(scheduler: str):
    """Ray Tune's own ASHA or PBT with the options build_scheduler gives them: the leader is not kept."""
    if scheduler == "asha":
        return ASHAScheduler(metric="eval_loss", mode="min", time_attr="epoch", max_t=EPOCHS, grace_period=1)
    mutations = {"learning_rate": tune.loguniform(1e-5, 1e-3)}
    return PopulationBasedTraining(
        metric="eval_loss", mode="min", time_attr="epoch", perturbation_interval=1,
        hyperparam_mutations=mutations, quantile_fraction=0.25,
    )  # fmt: skip


def test_asha_lets_the_leader_on_the_metric_run_to_its_end(ray_runtime, tmp_path):
    # One trial at a time, the leader last: when it reports epoch 1, three trials are recorded at
    # ASHA's first rung, and its loss is worse than their median.
    reports = run_tune(scheduler_for("asha"), [*OTHERS, LEADER], concurrent=1, tmp_path=tmp_path)
    assert reports["leader"] == [(1, "leader"), (2, "leader"), (3, "leader")]
    # ASHA still stops what does not lead: other-1's loss is the worst of the first two.
    assert reports["other-1"] == [(1, "other-1")]


def test_pbt_never_overwrites_the_leader_with_a_copy_of_another_trial(ray_runtime, tmp_path):
    # Four at once, the leader reporting seconds after the others in each epoch: it is then the
    # bottom quantile on the loss, which PBT restarts from a top trial's checkpoint and config.
    scheduler = scheduler_for("pbt", quantile_fraction=0.25, perturbation_interval=1)
    reports = run_tune(scheduler, [*OTHERS, LEADER], concurrent=4, tmp_path=tmp_path, delays={"leader": LEADER_DELAY})
    assert reports["leader"] == [(1, "leader"), (2, "leader"), (3, "leader")]


@pytest.mark.slow  # a check of the set-up above, not of raytune-ft
@pytest.mark.parametrize("scheduler", ["asha", "pbt"])
def test_ray_tunes_own_schedulers_would_stop_or_overwrite_that_leader(ray_runtime, tmp_path, scheduler):
    """The two tests above put the leader at risk: Ray Tune's own ASHA stops it after epoch 1, and
    its own PBT restarts it from another trial."""
    concurrent, delays = (1, {}) if scheduler == "asha" else (4, {"leader": LEADER_DELAY})
    reports = run_tune(plain_ray_scheduler(scheduler), [*OTHERS, LEADER], concurrent, tmp_path, delays)
    assert reports["leader"] != [(1, "leader"), (2, "leader"), (3, "leader")]
