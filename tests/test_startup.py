"""What the processes Ray starts for every trial import. Ray pickles a trainable and a Train
loop by reference, so a process that unpickles one imports the module that defines it; under
ASHA (the default), PBT and the confirm stage every trial gets new processes, and each pays
for those imports again. The `search` command's own process pays once, before the first trial."""

from __future__ import annotations

import subprocess
import sys

import ray.cloudpickle

from raytune_ft.training.trial import run_confirm_trial, run_trial
from raytune_ft.training.worker import ray_train_loop

# The search's own machinery, and the libraries only the loop (in the workers) needs.
NOT_FOR_A_TRIAL_DRIVER = {"raytune_ft.tuning", "optuna", "datasets", "evaluate", "transformers", "accelerate"}
NOT_FOR_A_TRAIN_WORKER_TO_UNPICKLE = {"raytune_ft.tuning", "optuna", "ray.tune.search"}


# Only the test-split evaluation after a search needs them (raytune_ft.tuning.holdout).
NOT_FOR_THE_SEARCH_COMMAND = {"evaluate", "accelerate"}


def modules_loaded_by_running(code: str, stdin: bytes = b"") -> set[str]:
    """Runs `code` in a fresh Python process and lists the modules it loaded."""
    script = (
        f"import pickle, sys\nbefore = set(sys.modules)\n{code}\nprint('\\n'.join(sorted(set(sys.modules) - before)))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], input=stdin, capture_output=True, check=True)
    return set(done.stdout.decode().split())


def modules_loaded_by_unpickling(function) -> set[str]:
    """Unpickles `function` in a fresh Python process, as a Ray actor does, and lists its modules."""
    return modules_loaded_by_running("pickle.loads(sys.stdin.buffer.read())", ray.cloudpickle.dumps(function))


def test_a_trial_driver_imports_no_search_machinery_and_no_training_libraries():
    for driver in (run_trial, run_confirm_trial):
        loaded = modules_loaded_by_unpickling(driver)
        assert "raytune_ft.training.trial" in loaded and "ray.train.torch" in loaded
        assert not loaded & NOT_FOR_A_TRIAL_DRIVER, sorted(loaded & NOT_FOR_A_TRIAL_DRIVER)


def test_a_train_worker_entry_point_imports_the_loop_only_when_it_runs():
    loaded = modules_loaded_by_unpickling(ray_train_loop)
    assert "raytune_ft.training.worker" in loaded
    assert "raytune_ft.training.loop" not in loaded
    assert not loaded & NOT_FOR_A_TRAIN_WORKER_TO_UNPICKLE, sorted(loaded & NOT_FOR_A_TRAIN_WORKER_TO_UNPICKLE)


def test_the_search_command_imports_the_evaluation_libraries_only_for_a_test_split():
    # What the `search` command imports when it runs (raytune_ft/cli.py -> api.py).
    loaded = modules_loaded_by_running(
        "import raytune_ft.cli, raytune_ft.tuning.cluster, raytune_ft.report.tables, raytune_ft.tuning.run, "
        "raytune_ft.report.summary, raytune_ft.report.html"
    )
    assert "raytune_ft.tuning.run" in loaded and "ray.tune" in loaded
    assert not loaded & NOT_FOR_THE_SEARCH_COMMAND, sorted(loaded & NOT_FOR_THE_SEARCH_COMMAND)
