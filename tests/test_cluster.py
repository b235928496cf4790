"""From one machine to a Ray cluster: the launcher config, and a real two-node search.

The two-node test starts its own Ray cluster on this machine (`ray start --head` and a
second `ray start --address=...`, each with one CPU and a resource naming the node), runs a
small search against it with --address, and stops exactly the processes it started, even
when it fails. It never runs `ray stop`, which would end every Ray process on the machine.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import pytest
import yaml
from click.testing import CliRunner

from conftest import REPO_ROOT, quick_config
from raytune_ft.cli import main

RAY = [sys.executable, "-m", "ray.scripts.scripts"]


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


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def processes_of(temp_dir: str) -> list[psutil.Process]:
    """Every process of the cluster rooted at temp_dir: those naming it, and their children."""
    roots = []
    for proc in psutil.process_iter(["cmdline"]):
        try:
            if any(temp_dir in part for part in proc.info["cmdline"] or []):
                roots.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    found = {p.pid: p for p in roots}
    for proc in roots:
        try:
            found.update({child.pid: child for child in proc.children(recursive=True)})
        except psutil.NoSuchProcess:
            continue
    return list(found.values())


def stop_cluster(temp_dir: str) -> None:
    procs = processes_of(temp_dir)
    for proc in procs:
        try:
            proc.send_signal(signal.SIGTERM)
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(procs, timeout=15)
    for proc in alive:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass


@pytest.fixture(scope="module")
def two_node_cluster():
    # Short path: Ray's unix sockets live under the temp dir and must stay under 108 bytes.
    temp_dir = tempfile.mkdtemp(prefix="rtft-", dir="/tmp")
    port = free_port()
    common = ["--num-cpus=1", "--num-gpus=0", "--object-store-memory=150000000", "--disable-usage-stats"]
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "1"}
    try:
        subprocess.run(
            [*RAY, "start", "--head", f"--port={port}", f"--temp-dir={temp_dir}", '--resources={"node_a": 1, "head": 1}',
             "--include-dashboard=true", "--dashboard-port=0", *common],
            check=True, capture_output=True, text=True, timeout=120, env=env,
        )
        subprocess.run(
            [*RAY, "start", f"--address=127.0.0.1:{port}", '--resources={"node_b": 1}', *common],
            check=True, capture_output=True, text=True, timeout=120, env=env,
        )
        yield f"127.0.0.1:{port}"
    finally:
        stop_cluster(temp_dir)
        shutil.rmtree(temp_dir, ignore_errors=True)


def test_search_spreads_trials_over_both_nodes_into_shared_storage(two_node_cluster, tiny_bert_dir, tmp_path):
    storage = tmp_path / "shared-storage"
    raw = quick_config(
        tiny_bert_dir,
        search={"space": {"learning_rate": {"loguniform": [1e-4, 3e-3]}}, "num_samples": 2, "scheduler": "fifo"},
        resources={"driver_resource": "head"},
        output={"dir": str(tmp_path / "runs"), "name": "two-nodes", "storage_path": str(storage)},
    )
    config_path = tmp_path / "c.yaml"
    config_path.write_text(yaml.safe_dump(raw))
    result = CliRunner().invoke(main, ["search", str(config_path), "--address", two_node_cluster])
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
    for trial_id in trials:
        assert list((storage / "two-nodes" / "trials" / f"train-{trial_id}").glob("checkpoint_*/model.safetensors"))
    best = json.loads((run_dir / "best.json").read_text())
    assert best["checkpoint"].startswith(str(storage))


def test_multi_node_search_without_shared_storage_is_refused(two_node_cluster, tiny_bert_dir, tmp_path):
    raw = quick_config(tiny_bert_dir, output={"dir": str(tmp_path / "runs"), "name": "refused"})
    config_path = tmp_path / "c.yaml"
    config_path.write_text(yaml.safe_dump(raw))
    result = CliRunner().invoke(main, ["search", str(config_path), "--address", two_node_cluster])
    assert result.exit_code == 2
    assert "output.storage_path" in result.output and "2 nodes" in result.output
    assert not (tmp_path / "runs" / "refused").exists()


def test_driver_resource_must_exist_in_the_cluster(two_node_cluster, tiny_bert_dir, tmp_path):
    raw = quick_config(
        tiny_bert_dir,
        resources={"driver_resource": "no_such_node"},
        output={"dir": str(tmp_path / "runs"), "name": "nodriver", "storage_path": str(tmp_path / "s")},
    )
    config_path = tmp_path / "c.yaml"
    config_path.write_text(yaml.safe_dump(raw))
    result = CliRunner().invoke(main, ["search", str(config_path), "--address", two_node_cluster])
    assert result.exit_code == 2
    assert "resources.driver_resource" in result.output
