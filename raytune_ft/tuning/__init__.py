"""The Ray Tune side: the Tuner set-up (tuner.py), the search as named steps (run.py), the
run-folder log callback, the confirm stage, the test split, PBT, the cluster, checkpoint
pruning, progress and experiment tracking. It runs in the `search` command's process only.

(Named tuning, not search: a sub-package becomes an attribute of its parent when imported,
and would hide the API function raytune_ft.search.)"""
