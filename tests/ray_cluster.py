"""A real Ray cluster on this machine for tests: `ray start --head` plus more nodes.

It stops exactly the processes it started, even when a test fails. It never runs
`ray stop`, which would end every Ray process on the machine (other searches included).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass

import psutil

from raytune_ft.tuning.cluster import unused_port

RAY = [sys.executable, "-m", "ray.scripts.scripts"]


@dataclass
class LocalCluster:
    address: str  # host:port of the GCS, for --address
    dashboard_url: str  # for Ray's state API


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


def stop_processes(procs: list[psutil.Process]) -> None:
    """Stop a cluster's processes in `ray stop`'s order: the raylets, then everything else,
    then the GCS. Sent SIGTERM all at once, the raylet took ~12 s to go and the GCS and the
    autoscaler monitor outlived a 15 s wait (SIGKILLed after it); in this order each group
    exits on its SIGTERM within ~2 s (~5.5 s in all)."""

    def command(proc: psutil.Process) -> str:
        try:
            return " ".join(proc.cmdline())
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            return ""

    raylets = [p for p in procs if "raylet/raylet" in command(p)]
    gcs = [p for p in procs if "gcs_server" in command(p)]
    others = [p for p in procs if p not in raylets and p not in gcs]
    for group in (raylets, others, gcs):
        for proc in group:
            try:
                proc.send_signal(signal.SIGTERM)
            except psutil.NoSuchProcess:
                pass
        _, alive = psutil.wait_procs(group, timeout=15)
        for proc in alive:
            try:
                proc.kill()
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(alive, timeout=5)


def ray_start(arguments: list[str], env: dict) -> None:
    """`ray start`, with what it printed in the error when it fails."""
    done = subprocess.run([*RAY, "start", *arguments], capture_output=True, text=True, timeout=120, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"ray start {' '.join(arguments)} failed:\n{(done.stdout + done.stderr)[-3000:]}")


def start_head(resources: dict, temp_dir: str, common: list[str]) -> tuple[int, int, dict]:
    """The head node, on free ports: (GCS port, dashboard port, the environment for its nodes).
    Started again on new ports if it fails: once in a full run `ray start --head` exited with
    status 1 and passed again at once (a port Ray picks itself, taken in the meantime, is likely)."""
    try:
        return _start_head_once(resources, temp_dir, common)
    except RuntimeError:
        stop_processes(processes_of(temp_dir))
        return _start_head_once(resources, temp_dir, common)


def _start_head_once(resources: dict, temp_dir: str, common: list[str]) -> tuple[int, int, dict]:
    port = unused_port()
    dashboard_port = unused_port(taken={port})
    # The nodes' processes inherit this: Ray Train's PlacementGroupCleaner finds its cluster by
    # it, not by looking for a running GCS, which fails when another Ray runtime runs on this
    # machine ("Found multiple active Ray instances"); the CPUs of stopped trials then stay taken.
    env = {**os.environ, "RAY_ADDRESS": f"127.0.0.1:{port}"}
    head = [f"--port={port}", f"--temp-dir={temp_dir}", f"--resources={json.dumps(resources)}"]
    head += ["--include-dashboard=true", f"--dashboard-port={dashboard_port}"]
    ray_start(["--head", *head, *common], env)
    return port, dashboard_port, env


@contextmanager
def local_cluster(node_resources: list[dict], cpus_per_node: int = 1, gpus_per_node: int = 0):
    """Start one Ray node per entry of node_resources (the first is the head); yield a LocalCluster.
    gpus_per_node declares logical GPUs: Ray schedules by them, whatever the machine has."""
    # Short path: Ray's unix sockets live under the temp dir and must stay under 108 bytes.
    temp_dir = tempfile.mkdtemp(prefix="rtft-", dir="/tmp")
    common = [
        f"--num-cpus={cpus_per_node}",
        f"--num-gpus={gpus_per_node}",
        "--object-store-memory=150000000",
        "--disable-usage-stats",
    ]
    try:
        head, *others = node_resources
        port, dashboard_port, env = start_head(head, temp_dir, common)
        for resources in others:
            ray_start([f"--address=127.0.0.1:{port}", f"--resources={json.dumps(resources)}", *common], env)
        yield LocalCluster(address=f"127.0.0.1:{port}", dashboard_url=f"http://127.0.0.1:{dashboard_port}")
    finally:
        stop_processes(processes_of(temp_dir))
        shutil.rmtree(temp_dir, ignore_errors=True)
