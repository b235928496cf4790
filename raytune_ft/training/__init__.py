"""What runs where a trial trains: in a Ray Tune trial's own process, in Ray Train workers,
or alone (`raytune-ft train`, `accelerate launch`). Nothing here imports raytune_ft.tuning;
the trial driver (trial.py) and the worker entry (worker.py) import only what a trial needs.

(Named training, not train: a sub-package becomes an attribute of its parent when imported,
and would hide the API function raytune_ft.train.)"""

from raytune_ft.legacy import package_getattr

# Names of the module raytune_ft.training before 0.2.0 (training_function, evaluate_on).
__getattr__ = package_getattr(__name__)
