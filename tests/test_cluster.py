"""From one machine to a Ray cluster: the launcher config, and a real two-node search.

The two-node test starts its own Ray cluster on this machine (`ray start --head` and a
second `ray start --address=...`, each with one CPU and a resource naming the node), runs a
small search against it with --address, and stops exactly the processes it started, even
when it fails. It never runs `ray stop`, which would end every Ray process on the machine (tests/ray_cluster.py).
"""

from __future__ import annotations

import copy
import json

import pytest
import yaml
from conftest import REPO_ROOT, checkpoint_folders, quick_config, search_in_process
from ray_cluster import local_cluster


def test_cluster_yaml_passes_rays_launcher_validation():
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = yaml.safe_load((REPO_ROOT / "cluster.yaml").read_text())
    prepared = prepare_config(copy.deepcopy(config))  # what `ray up` does before talking to AWS
    validate_config(prepared)
    assert prepared["provider"]["type"] == "aws"
    workers = prepared["available_node_types"]["gpu_worker"]
    assert workers["resources"]["GPU"] >= 1 and workers["min_workers"] < workers["max_workers"]
    assert any("pip install" in c and "raytune-ft" in c for c in prepared["setup_commands"])


def test_cluster_yaml_validation_really_rejects_mistakes():
    from jsonschema import ValidationError
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = yaml.safe_load((REPO_ROOT / "cluster.yaml").read_text())
    config["available_node_types"]["gpu_worker"]["min_wokers"] = 1
    with pytest.raises(ValidationError):
        validate_config(prepare_config(config))


@pytest.fixture(scope="module")
def two_node_cluster():
    with local_cluster([{"node_a": 1, "head": 1}, {"node_b": 1}]) as cluster:
        yield cluster.address


@pytest.mark.slow
def test_four_quarter_gpu_trials_share_one_gpu_at_once(tiny_bert_dir, tmp_path):
    """GPU scheduling without a GPU: a node that declares one logical GPU. Trials with
    gpus_per_worker 0.25 run four at once, Ray tells each it has GPU 0, and the loop falls back
    to the CPU (no CUDA here), as it would train on the GPU where there is one."""
    raw = quick_config(
        tiny_bert_dir,
        data={"max_train_samples": 512},
        train={"num_epochs": 2},
        search={
            "space": {"learning_rate": {"choice": [1e-3, 5e-4, 3e-4, 1e-4]}},
            "algorithm": "grid",
            "num_samples": 1,
            "scheduler": "fifo",
        },
        resources={"cpus_per_worker": 0.5, "gpus_per_worker": 0.25},
        tracking={"tensorboard": False},
        output={"dir": str(tmp_path / "runs"), "name": "quarter-gpus", "keep_checkpoints": False},
    )
    with local_cluster([{}], cpus_per_node=2, gpus_per_node=1) as cluster:
        result = search_in_process(raw, tmp_path, "--address", cluster.address, "--quiet")
    assert result.exit_code == 0, result.output

    run_dir = tmp_path / "runs" / "quarter-gpus"
    events = [json.loads(line) for line in (run_dir / "trials.jsonl").read_text().splitlines()]
    starts = sorted(e["time"] for e in events if e["event"] == "started")
    ends = sorted(e["time"] for e in events if e["event"] == "finished")
    assert len(starts) == 4 and len(ends) == 4 and starts[-1] < ends[0]  # all four at once
    assert {(e["device_type"], e["devices"]) for e in events} == {("gpu", 0.25)}
    rows = [json.loads(line) for line in (run_dir / "epochs.jsonl").read_text().splitlines()]
    assert len(rows) == 8 and all(row["gpu_ids"] == ["0"] and row["device"] == "cpu" for row in rows)


@pytest.mark.slow
def test_search_spreads_trials_over_both_nodes_into_shared_storage(two_node_cluster, tiny_bert_dir, tmp_path):
    storage = tmp_path / "shared-storage"
    raw = quick_config(
        tiny_bert_dir,
        search={"space": {"learning_rate": {"loguniform": [1e-4, 3e-3]}}, "num_samples": 2, "scheduler": "fifo"},
        resources={"driver_resource": "head"},
        output={"dir": str(tmp_path / "runs"), "name": "two-nodes", "storage_path": str(storage)},
    )
    result = search_in_process(raw, tmp_path, "--address", two_node_cluster)
    assert result.exit_code == 0, result.output

    run_dir = tmp_path / "runs" / "two-nodes"
    rows = [json.loads(line) for line in (run_dir / "epochs.jsonl").read_text().splitlines()]
    trials = {row["trial_id"] for row in rows}
    assert len(trials) == 2 and len(rows) == 4
    # Each node has one CPU and each trial's worker needs one: the trials ran on both nodes.
    nodes_by_trial = {row["trial_id"]: row["node_id"] for row in rows}
    assert len(set(nodes_by_trial.values())) == 2
    # Results and checkpoints went to the shared storage path, not the run folder.
    assert (storage / "two-nodes" / "tune").is_dir()
    best = json.loads((run_dir / "best.json").read_text())
    assert [
        path
        for path in checkpoint_folders(storage / "two-nodes", best["trial_id"])
        if (path / "model.safetensors").is_file()
    ]
    assert best["checkpoint"].startswith(str(storage))


@pytest.mark.slow
def test_multi_node_search_without_shared_storage_is_refused(two_node_cluster, tiny_bert_dir, tmp_path):
    raw = quick_config(tiny_bert_dir, output={"dir": str(tmp_path / "runs"), "name": "refused"})
    result = search_in_process(raw, tmp_path, "--address", two_node_cluster)
    assert result.exit_code == 2
    assert "output.storage_path" in result.output and "2 nodes" in result.output
    assert not (tmp_path / "runs" / "refused").exists()


@pytest.mark.slow
def test_driver_resource_must_exist_in_the_cluster(two_node_cluster, tiny_bert_dir, tmp_path):
    raw = quick_config(
        tiny_bert_dir,
        resources={"driver_resource": "no_such_node"},
        output={"dir": str(tmp_path / "runs"), "name": "nodriver", "storage_path": str(tmp_path / "s")},
    )
    result = search_in_process(raw, tmp_path, "--address", two_node_cluster)
    assert result.exit_code == 2
    assert "resources.driver_resource" in result.output
    assert not (tmp_path / "runs" / "nodriver").exists() and not (tmp_path / "s").exists()  # nothing left behind


@pytest.mark.slow
def test_a_worker_no_node_can_hold_is_refused_and_leaves_nothing(two_node_cluster, tiny_bert_dir, tmp_path):
    """Two 1-CPU nodes hold 2 CPUs between them, but no worker of 2 CPUs: Tune would wait forever."""
    raw = quick_config(
        tiny_bert_dir,
        resources={"cpus_per_worker": 2, "max_concurrent_trials": 1},
        output={"dir": str(tmp_path / "runs"), "name": "too-big", "storage_path": str(tmp_path / "shared")},
    )
    result = search_in_process(raw, tmp_path, "--address", two_node_cluster)
    assert result.exit_code == 2, result.output
    assert "its biggest node 1 CPU" in result.output and "lower resources.*" in result.output
    assert not (tmp_path / "runs" / "too-big").exists() and not (tmp_path / "shared").exists()


def test_a_trial_bigger_than_the_machine_is_refused_even_with_max_concurrent_trials(tmp_path, tiny_bert_dir):
    raw = quick_config(
        tiny_bert_dir,
        resources={"cpus_per_worker": 64, "max_concurrent_trials": 1},
        output={"dir": str(tmp_path / "runs"), "name": "huge"},
    )
    result = search_in_process(raw, tmp_path, "--quiet")
    assert result.exit_code == 2, result.output
    assert "one trial needs 1 worker(s) of 64 CPU and 0 GPU" in result.output
    assert not (tmp_path / "runs" / "huge").exists()


def test_ray_client_addresses_are_refused_before_anything_starts(tmp_path, tiny_bert_dir):
    raw = quick_config(tiny_bert_dir, output={"dir": str(tmp_path / "runs"), "name": "client"})
    result = search_in_process(raw, tmp_path, "--address", "ray://127.0.0.1:10001")
    assert result.exit_code == 2
    assert "Ray Client" in result.output and "ray job submit" in result.output
    assert not (tmp_path / "runs").exists()


def test_a_random_port_for_our_own_ray_runtime_is_never_one_ray_takes_by_default(monkeypatch):
    # The OS once handed out 52365 for the GCS, the dashboard agent's default port, and Ray
    # refused to start (a CI failure). Here the OS offers Ray's defaults first, then a port
    # taken by the caller, then a good one: only the good one may come back.
    import socket

    from raytune_ft.tuning import cluster

    offered = iter([52365, 8265, 6379, 40001, 40002])

    class OfferingSocket:
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def bind(self, address):
            self.port = next(offered)

        def getsockname(self):
            return ("0.0.0.0", self.port)

    monkeypatch.setattr(socket, "socket", OfferingSocket)
    assert cluster.unused_port(taken={40001}) == 40002


def test_environment_is_set_for_processes_started_inside_and_restored_after(monkeypatch):
    import subprocess
    import sys

    from raytune_ft.environment import environment

    monkeypatch.setenv("MALLOC_ARENA_MAX", "4")
    monkeypatch.delenv("MALLOC_TRIM_THRESHOLD_", raising=False)
    read = [
        sys.executable,
        "-c",
        "import os; print(os.environ['MALLOC_ARENA_MAX'], os.environ.get('MALLOC_TRIM_THRESHOLD_'))",
    ]
    with environment({"MALLOC_ARENA_MAX": "1", "MALLOC_TRIM_THRESHOLD_": "1024"}):
        assert subprocess.run(read, capture_output=True, text=True, check=True).stdout.split() == ["1", "1024"]
    assert subprocess.run(read, capture_output=True, text=True, check=True).stdout.split() == ["4", "None"]


@pytest.mark.slow
def test_cluster_yaml_starts_ray_with_the_malloc_settings_of_a_local_search():
    from raytune_ft.environment import MALLOC_SETTINGS

    config = yaml.safe_load((REPO_ROOT / "cluster.yaml").read_text())
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        start = next(command for command in config[key] if "ray start" in command)
        assert all(f"{name}={value}" in start for name, value in MALLOC_SETTINGS.items()), key
