"""Early stopping really stops: trials that ASHA ends free their training processes (the
trial's own, or its Ray Train workers) and placement groups while the search goes on, and
nothing is left when it ends."""

from __future__ import annotations

import json
import threading
from collections import Counter

import pytest
import yaml
from click.testing import CliRunner
from conftest import TRAINING_ACTOR, quick_config
from ray.util.state import list_actors, list_placement_groups
from ray_cluster import local_cluster

from raytune_ft.cli import main

# ASHA searches, one through TorchTrainers.
pytestmark = pytest.mark.slow


class ClusterWatcher(threading.Thread):
    """Polls Ray's state API during a search: the most training processes and placement groups alive at once."""

    def __init__(self, dashboard_url: str, training_class: str):
        super().__init__(daemon=True)
        self.url, self.training_class = dashboard_url, training_class
        self.max_workers = 0
        self.max_groups = 0
        self.samples = 0
        self.done = threading.Event()

    def alive(self) -> tuple[int, int]:
        alive = list_actors(
            address=self.url, filters=[("state", "=", "ALIVE")], limit=10_000, raise_on_missing_output=False
        )
        workers = [actor for actor in alive if short_class_name(actor) == self.training_class]
        groups = list_placement_groups(
            address=self.url, filters=[("state", "=", "CREATED")], raise_on_missing_output=False
        )
        return len(workers), len(groups)

    def run(self):
        while not self.done.is_set():
            try:
                workers, groups = self.alive()
                self.max_workers, self.max_groups = max(self.max_workers, workers), max(self.max_groups, groups)
                self.samples += 1
            except Exception:  # the dashboard may be briefly busy; the next poll counts
                pass
            self.done.wait(0.5)


def short_class_name(actor) -> str:
    """Ray's state API names Tune's function trainable "ImplicitFunc" in some runs and
    "wrap_function.<locals>.ImplicitFunc" in others (seen in two runs of the same commit)."""
    return actor.class_name.rsplit(".", 1)[-1]


@pytest.fixture(scope="module", params=["auto", "always"])
def asha_search(tiny_bert_dir, tmp_path_factory, request):
    ray_train = request.param
    tmp_path = tmp_path_factory.mktemp(f"asha-{ray_train}")
    raw = quick_config(
        tiny_bert_dir,
        train={"num_epochs": 3},
        search={
            # The search optimizes accuracy and ASHA ranks on eval loss (search.scheduler_metric's
            # default). At these learning rates the tiny random model predicts the majority
            # class, so every trial's accuracy ties (ranked on accuracy ASHA stopped none: seen),
            # while eval loss rises with the learning rate. The two smallest go first: ASHA has
            # seen them at each rung when the others get there, whatever order epochs end in.
            "space": {"learning_rate": {"loguniform": [1e-6, 3e-3]}},
            "points_to_evaluate": [{"learning_rate": lr} for lr in (2e-5, 4e-5, 1e-4, 2e-4)],
            "num_samples": 4,
            "scheduler": "asha",
            "grace_period": 1,
            "reduction_factor": 2,
            "metric": "accuracy",
            "mode": "max",
            "seed": 0,
        },
        resources={"ray_train": ray_train},
        output={"dir": str(tmp_path / "runs"), "name": "asha", "keep_checkpoints": False},
    )
    config_path = tmp_path / "asha.yaml"
    config_path.write_text(yaml.safe_dump(raw))
    with local_cluster([{"head": 1}], cpus_per_node=2) as cluster:
        watcher = ClusterWatcher(cluster.dashboard_url, TRAINING_ACTOR[ray_train])
        watcher.start()
        result = CliRunner().invoke(main, ["search", str(config_path), "--address", cluster.address])
        watcher.done.set()
        watcher.join()
        after = watcher.alive()
        # Every actor the search started, finished ones included (Ray keeps their records).
        actor_classes = Counter(
            short_class_name(a)
            for a in list_actors(address=cluster.dashboard_url, limit=10_000, raise_on_missing_output=False)
        )
    rows = [json.loads(line) for line in (tmp_path / "runs" / "asha" / "epochs.jsonl").read_text().splitlines()]
    return result, rows, watcher, after, actor_classes, ray_train


def test_asha_stops_some_trials_and_the_search_finishes(asha_search):
    result, rows, *_ = asha_search
    assert result.exit_code == 0, result.output
    epochs = {}
    for row in rows:
        epochs[row["trial_id"]] = max(epochs.get(row["trial_id"], 0), row["epoch"])
    assert len(epochs) == 4
    assert min(epochs.values()) < 3, f"ASHA stopped no trial: {epochs}"
    assert max(epochs.values()) == 3


def test_asha_ranks_trials_on_eval_loss_while_the_search_optimizes_accuracy(asha_search):
    """search.scheduler_metric (default loss): the trials tie on accuracy, and every trial ASHA
    stopped had a higher eval loss at its last epoch than a trial that went on had there."""
    result, rows, *_ = asha_search
    assert "scheduler asha (ranks trials on eval_loss), metric eval_accuracy (max)" in result.output
    assert len({row["eval_accuracy"] for row in rows}) == 1, "accuracies differ: the stops may not come from the loss"
    by_trial = {}
    for row in rows:
        by_trial.setdefault(row["trial_id"], {})[row["epoch"]] = row
    last_epoch = {trial: max(epochs) for trial, epochs in by_trial.items()}
    stopped = [trial for trial, last in last_epoch.items() if last < 3]
    assert stopped
    for trial in stopped:
        rung = last_epoch[trial]
        went_on = [epochs[rung]["eval_loss"] for other, epochs in by_trial.items() if last_epoch[other] > rung]
        assert went_on and by_trial[trial][rung]["eval_loss"] > min(went_on), (trial, rung, by_trial)


def test_stopped_trials_free_their_workers_and_placement_groups(asha_search):
    _, _, watcher, after, _, ray_train = asha_search
    assert watcher.samples > 10
    # 2 CPUs, 1 CPU per trial: never more than 2 training processes alive at once, and never
    # more than 2 trials' placement groups at once (with a TorchTrainer, a driver's and its workers').
    assert 1 <= watcher.max_workers <= 2
    assert watcher.max_groups <= (2 if ray_train == "auto" else 4)
    # And once the search is over, nothing of it is left on the cluster.
    assert after == (0, 0)


def test_trials_start_no_process_the_loop_would_not_use(asha_search):
    """A one-worker trial trains in its own process: no Ray Train controller or worker to start
    (trial.py). A TorchTrainer would start a PreemptionWatcher and a DatasetManager per trial:
    two processes more to start on the trial's CPUs (search.py's RAY_TRAIN_SETTINGS, trial.py's
    TrainerWithoutRayData)."""
    *_, actor_classes, ray_train = asha_search
    if ray_train == "auto":
        assert actor_classes["RayTrainWorker"] == 0 and actor_classes["TrainController"] == 0, actor_classes
        # Trial processes serve trial after trial, also after ASHA stopped one (search.reuses_trial_processes).
        assert 1 <= actor_classes["ImplicitFunc"] < 4, actor_classes
    else:
        # A new trial driver for every trial: a stopped one may still be inside trainer.fit().
        assert (
            actor_classes["ImplicitFunc"] >= 4
            and actor_classes["RayTrainWorker"] >= 4
            and actor_classes["TrainController"] >= 4
        )
    assert actor_classes["PreemptionWatcher"] == 0, actor_classes
    assert actor_classes["DatasetManager"] == 0, actor_classes
