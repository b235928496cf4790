"""Where a search runs: the Ray runtime it joins, the storage every node must see, and
where trial drivers sit.

On one machine, none of this needs thought. On a cluster, Ray Tune and Train (since Ray 2.7)
write trial results and checkpoints to `storage_path` from whichever node a trial runs
on, so that path must be shared (an NFS mount on every node, or object storage like s3://).
"""

from __future__ import annotations

import os
import socket
import uuid
from contextlib import contextmanager
from pathlib import Path

import ray
from ray._private import ray_constants
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from raytune_ft.config import Config, ConfigError
from raytune_ft.environment import environment, local_runtime_settings

# A trial driver only waits on its TorchTrainer: it must not hold a CPU, or on a 2-CPU
# machine the drivers take the CPUs their own workers need and nothing ever starts.
# Ray rejects {"cpu": 0} alone; a small memory request makes it a valid bundle.
DRIVER_RESOURCES = {"cpu": 0, "memory": 100 * 1024**2}
# The share of a custom resource each trial driver asks for when drivers are pinned to a
# node (resources.driver_resource): small, so any number of drivers fit there.
DRIVER_RESOURCE_SHARE = 0.001
# Ports a Ray node takes by default unless told otherwise: a GCS port chosen at random must
# not be one of them, or Ray refuses to start ("Ray component dashboard_agent_http is trying
# to use a port number 52365 that is used by other components"; seen once in CI).
RAY_DEFAULT_PORTS = frozenset(
    {
        ray_constants.DEFAULT_PORT,
        ray_constants.DEFAULT_DASHBOARD_PORT,
        ray_constants.DEFAULT_DASHBOARD_AGENT_LISTEN_PORT,
    }
)


def check_address(address: str | None) -> None:
    """Refuse Ray Client addresses: under Ray Client, Tune runs the Tuner (and with it the
    callbacks that write epochs.jsonl and trials.jsonl) as an actor on the head node, so
    the run folder would fill up there while this machine's stayed empty."""
    if address and address.startswith("ray://"):
        raise ConfigError(
            f"--address {address}: Ray Client would write the run folder on the head node, not here; "
            "run raytune-ft on the cluster instead (ray exec cluster.yaml '... --address auto', or ray job submit)"
        )


def unused_port(taken: frozenset[int] | set[int] = frozenset()) -> int:
    """A port free on this machine now that is none of Ray's default ports nor in `taken`."""
    while True:
        with socket.socket() as probe:
            probe.bind(("", 0))
            port = probe.getsockname()[1]
        if port not in RAY_DEFAULT_PORTS and port not in taken:
            return port


@contextmanager
def own_local_runtime_address():
    """For a local Ray runtime of our own: its GCS on a port chosen here, and that address for
    every process it starts (environment.local_runtime_settings says why). The variables are
    set back when the search ends."""
    with environment(local_runtime_settings(ray.util.get_node_ip_address(), unused_port())):
        yield


def is_uri(path: str) -> bool:
    return "://" in path


def storage_root(config: Config, run_dir: Path) -> str:
    """Where Ray writes trial results and checkpoints: output.storage_path/<run name>, or the run folder."""
    if config.output.storage_path is None:
        return str(run_dir)
    base = config.output.storage_path
    if is_uri(base):
        return base.rstrip("/") + "/" + run_dir.name
    return str(Path(os.path.expandvars(base)).expanduser().resolve() / run_dir.name)


def trial_resources(config: Config) -> dict:
    """What Tune reserves for a trial's own process: all of a one-worker trial that trains in
    it; else only a driver's share, its TorchTrainer's workers reserve the rest."""
    drivers = driver_resources(config)  # checks resources.driver_resource even where no driver uses it
    if not config.trains_in_trial_process:
        return drivers
    resources = {"cpu": config.resources.cpus_per_worker}
    return {**resources, "gpu": config.resources.gpus_per_worker} if config.resources.gpus_per_worker else resources


def driver_resources(config: Config) -> dict:
    resources = dict(DRIVER_RESOURCES)
    if config.resources.driver_resource:
        name = config.resources.driver_resource
        if ray.cluster_resources().get(name, 0) <= 0:
            raise ConfigError(
                f"resources.driver_resource: no node of the Ray cluster has a resource {name!r}; "
                f"start the head with --resources='{{\"{name}\": 1}}' or unset it"
            )
        resources[name] = DRIVER_RESOURCE_SHARE
    return resources


def alive_nodes() -> list[dict]:
    return [node for node in ray.nodes() if node.get("Alive")]


def check_storage_is_shared(config: Config, storage: str) -> None:
    """Refuse a multi-node search whose storage not every node can see.

    With one node, any local path works. With several, object storage (a URI) is shared by
    design; a local path must be given explicitly (output.storage_path) and is checked: the
    driver writes a marker file there and a task on every node looks for it.
    """
    nodes = alive_nodes()
    if len(nodes) <= 1 or is_uri(storage):
        return
    if config.output.storage_path is None:
        raise ConfigError(
            f"output.storage_path: the Ray cluster has {len(nodes)} nodes, so trial results need shared storage; "
            "set it to a folder every node mounts (NFS) or to object storage such as s3://bucket/path"
        )
    folder = Path(storage)
    folder.mkdir(parents=True, exist_ok=True)
    marker = folder / f".shared-check-{uuid.uuid4().hex}"
    marker.write_text("raytune-ft checks that every node sees this folder\n", encoding="utf-8")
    try:
        sees = ray.remote(num_cpus=0)(os.path.exists)
        checks = [
            sees.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node["NodeID"], soft=False)).remote(
                str(marker)
            )
            for node in nodes
        ]
        blind = [node["NodeManagerAddress"] for node, seen in zip(nodes, ray.get(checks)) if not seen]
    finally:
        marker.unlink(missing_ok=True)
    if blind:
        raise ConfigError(
            f"output.storage_path: {storage} is not visible from node(s) {', '.join(blind)}; "
            "use a folder every node mounts (NFS) or object storage such as s3://bucket/path"
        )
