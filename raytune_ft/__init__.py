"""raytune-ft: Ray Tune + Optuna hyperparameter search over the course's Accelerate fine-tuning loop.

The Python API (see docs/python-api.md):

    import raytune_ft
    result = raytune_ft.search("configs/quickstart.yaml", overrides=["search.num_samples=2"])
    result.trials, result.epochs, result.best, result.export("best-model/")

Its names are imported on first use: every Ray trial process imports this package, and must
not pay for the search machinery.
"""

from raytune_ft import legacy

__version__ = "0.2.0"

legacy.install()

_API = {"search", "train", "load_run", "export", "RunResult"}
_ERRORS = {"RaytuneFtError", "ConfigError", "RunFailed"}
__all__ = sorted(_API | _ERRORS)


def __getattr__(name: str):
    if name in _API:
        from raytune_ft import api

        return getattr(api, name)
    if name in _ERRORS:
        from raytune_ft import errors

        return getattr(errors, name)
    raise AttributeError(f"module 'raytune_ft' has no attribute {name!r}")
