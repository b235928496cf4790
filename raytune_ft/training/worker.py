"""What each Ray Train worker of a trial runs, in a module of its own.

Ray pickles the workers' entry point by reference: every process that handles it (the
trial driver, the Ray Train controller, the workers) imports the module that defines it.
This module imports nothing at the top, so only the workers, which run the loop, pay for
torch, transformers and accelerate; none of them pays for raytune_ft.tuning (Ray Tune,
Optuna, rich, the tracking callbacks), which a worker never uses.
"""

from __future__ import annotations


def ray_train_loop(loop_config: dict) -> dict | None:
    """What each Ray Train worker runs.

    A diverged loss is returned, not raised: Ray Train retries every error of its workers
    (FailureConfig), and this one would only come again. Every process stops at the same step
    (loop.py checks their mean loss), and the trial driver fails the trial with the reason.
    """
    import time

    from raytune_ft.training.divergence import TrainingDiverged

    # Ray Train's controller, placement group and this worker process took driver_started_at ->
    # now; the imports below (transformers, datasets, evaluate, accelerate) take now -> the loop's start.
    loop_config = {**loop_config, "timeline": {**loop_config.get("timeline", {}), "worker_started_at": time.time()}}
    from raytune_ft.training.loop import training_function
    from raytune_ft.training.reporters import RayTrainReporter

    try:
        reporter = RayTrainReporter(
            start_from=loop_config.get("start_from"),
            upload_in_background=loop_config.get("upload_in_background", False),
        )
        training_function(loop_config, reporter)
    except TrainingDiverged as diverged:
        return {"diverged": str(diverged)}
    return None
