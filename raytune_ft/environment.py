"""Every environment variable raytune-ft sets, in one place, each with why.

The values are declared here; the code that applies them stays where it must run (the CLI's
process, the search's process before Ray starts, a trial's process, a Ray Train worker).
A value the user exported always wins: they are applied with `set_defaults` or filtered
through `not_exported`. This module imports nothing heavy: trial processes import it.
"""

from __future__ import annotations

import os
from contextlib import contextmanager

# The CLI's own process (cli.main): progress bars for every dataset map and model save would
# drown the real output, and the fast tokenizers' thread pool would warn when Ray forks.
CLI_DEFAULTS = {
    "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",
    "TOKENIZERS_PARALLELISM": "false",
}

# A trial's training process and every Ray Train worker: no per-trial download bars or model
# load reports in the search's console. transformers reads its verbosity when first imported.
WORKER_ENV = {
    "TRANSFORMERS_VERBOSITY": "error",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",
    "TOKENIZERS_PARALLELISM": "false",
}

# Set per Ray Train worker to the CPUs it reserved (training/trial.py): torch would otherwise start
# a thread per core of the machine in every worker, and packed workers fight over the cores.
THREADS_VARIABLE = "OMP_NUM_THREADS"

# glibc malloc settings for the processes of a local Ray runtime of our own, its trial
# processes above all. Ray Tune runs each trial's loop in a thread of its own; glibc gives such a
# thread its own arena, maps the large tensors of every step from the kernel and hands them back:
# on 7-step MiniLM epochs a trial spent 0.8-3.0 s of system time per epoch in page faults, the same
# loop in a process's main thread 0.3-0.5 s. One arena, and freed memory kept for the next step
# rather than returned to the kernel, made a trial's epochs as fast as the plain loop's
# (docs/benchmarks/overhead.md, "Page faults in the trial thread"). cluster.yaml exports the same.
MALLOC_SETTINGS = {
    "MALLOC_ARENA_MAX": "1",
    "MALLOC_MMAP_THRESHOLD_": str(2**30),
    "MALLOC_TRIM_THRESHOLD_": str(2**30),
}

# Ray Tune, in the search's process before the Tuner starts (Tune hands them on to its trials).
TUNE_SETTINGS = {
    # Ray's new console output prints an experiment box and a TensorBoard hint pointing into
    # Ray's temporary session folder; the search's own progress lines are its output instead.
    "RAY_AIR_NEW_OUTPUT": "0",
    # Tune saves which trials finished every 10 s or more; a search killed without warning
    # would then run a just-finished trial again when resumed. Its state is small: every 2 s.
    "TUNE_GLOBAL_CHECKPOINT_S": "2",
    # ...and saves it again whenever a trial has reported num_to_keep checkpoints (one per epoch
    # here), warning each time that this may be slow: it takes milliseconds, the warning a screen.
    "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S": "0",
}

# Ray Train, also set before the Tuner starts: Tune hands them to the trial drivers, and Ray
# Train to its controllers and workers.
RAY_TRAIN_SETTINGS = {
    # The controller polls its workers every 2 s by default, and each trial's end waits for the
    # next poll: 0.5 s cut a trial's last report -> trial end from 3.0 s to 1.0 s.
    "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.5",
    # Ray Train starts one more actor process per trial, a PreemptionWatcher, which only hands
    # node-drain notices to the training function. Our loop does not read them: a lost node is a
    # worker failure, restarted from the latest checkpoint (FailureConfig). One process less per
    # trial (docs/benchmarks/startup.md, "The processes of a trial").
    "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0",
}


def local_runtime_settings(ip: str, port: int) -> dict[str, str]:
    """A local Ray runtime of our own (tuning/cluster.py): its GCS on a port chosen by us, and
    that address for every process it starts. Ray Train's PlacementGroupCleaner (which frees a
    stopped trial's CPUs) finds its cluster by RAY_ADDRESS, else by looking for a running GCS,
    which fails when another Ray runtime runs on this machine ("Found multiple active Ray
    instances"): the CPUs of stopped trials would stay reserved and later trials wait forever."""
    return {"RAY_GCS_SERVER_PORT": str(port), "RAY_ADDRESS": f"{ip}:{port}"}


def not_exported(values: dict[str, str]) -> dict[str, str]:
    """The settings the user has not exported themselves (theirs win)."""
    return {name: value for name, value in values.items() if name not in os.environ}


def set_defaults(values: dict[str, str]) -> None:
    """Set each variable in this process unless the user exported it."""
    for name, value in values.items():
        os.environ.setdefault(name, value)


@contextmanager
def environment(values: dict[str, str]):
    """os.environ with `values` while the block runs (the processes it starts keep them), then as before."""
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
