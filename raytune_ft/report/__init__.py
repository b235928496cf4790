"""Reading a run folder back: a RunSummary from its files alone (summary.py), shown as terminal
tables and JSON (tables.py), report.html (html.py) and plots (plots.py)."""

from raytune_ft.legacy import package_getattr

# Names of the module raytune_ft.report before 0.2.0 (print_summary, report_json, ...).
__getattr__ = package_getattr(__name__)
