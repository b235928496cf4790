"""Data: a task's examples from any source (hub, GLUE folder, files, built-in), checked row by
row (raw.py), tokenized once and cached on disk (tokenized.py), before Ray starts."""

from raytune_ft.legacy import package_getattr

# Names of the module raytune_ft.data before 0.2.0 (load_raw_dataset, prepare_tokenized_data, ...).
__getattr__ = package_getattr(__name__)
