"""The module paths of raytune-ft before 0.2.0, kept importable.

0.2.0 moved the modules into sub-packages by stage (data/, training/, tuning/, report/). A search
started before the move saved its Ray Tune state with pickles that name the old paths (the
trial function raytune_ft.trial.run_trial, the callback raytune_ft.search.RunFolderLog, ...),
and scripts may import them. Each old module name is answered with a stand-in module whose
attributes are looked up in the modules that now hold them, so an old pickle gets the very
same classes and functions. `install()` runs when raytune_ft is imported; it imports nothing.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import types

# Old module -> the modules its names live in now (looked up in this order).
OLD_MODULES: dict[str, tuple[str, ...]] = {
    # The search's set-up and its run-folder callback (RunFolderLog is pickled in Tune's state).
    "raytune_ft.search": (
        "raytune_ft.tuning.run",
        "raytune_ft.tuning.tuner",
        "raytune_ft.tuning.run_log",
        "raytune_ft.environment",
    ),
    "raytune_ft.metrics": ("raytune_ft.training.metrics",),
    "raytune_ft.divergence": ("raytune_ft.training.divergence",),
    "raytune_ft.reporting": ("raytune_ft.training.reporters", "raytune_ft.training.checkpointing"),
    "raytune_ft.trial": ("raytune_ft.training.trial", "raytune_ft.environment"),  # run_trial is pickled in Tune's state
    "raytune_ft.worker": ("raytune_ft.training.worker",),
    "raytune_ft.pbt": ("raytune_ft.tuning.pbt", "raytune_ft.training.pbt_relay"),
    "raytune_ft.confirm": ("raytune_ft.tuning.confirm",),
    "raytune_ft.holdout": ("raytune_ft.tuning.holdout",),
    "raytune_ft.cluster": ("raytune_ft.tuning.cluster", "raytune_ft.environment"),
    "raytune_ft.checkpoints": ("raytune_ft.tuning.checkpoints", "raytune_ft.training.trial"),
    "raytune_ft.progress": ("raytune_ft.tuning.progress",),
    "raytune_ft.tracking": ("raytune_ft.tuning.tracking",),
    "raytune_ft.summary": ("raytune_ft.report.summary",),
    "raytune_ft.plots": ("raytune_ft.report.plots",),
    "raytune_ft.results": ("raytune_ft.run_folder", "raytune_ft.report.tables"),
    "raytune_ft.sources": ("raytune_ft.data.sources",),
    "raytune_ft.files": ("raytune_ft.data.files",),
    "raytune_ft.builtin_data": ("raytune_ft.data.builtin",),
}

# Old modules whose name is now a package: the package's __getattr__ answers their names.
OLD_PACKAGE_NAMES: dict[str, tuple[str, ...]] = {
    "raytune_ft.training": ("raytune_ft.training.loop", "raytune_ft.training.checkpointing"),
    "raytune_ft.report": ("raytune_ft.report.tables", "raytune_ft.report.html"),
    "raytune_ft.data": ("raytune_ft.data.raw", "raytune_ft.data.tokenized"),
}


def find_moved(old_module: str, name: str, new_modules: tuple[str, ...]):
    """The object an old `old_module.name` refers to now."""
    for module_name in new_modules:
        module = importlib.import_module(module_name)
        if hasattr(module, name):
            return getattr(module, name)
    raise AttributeError(f"module {old_module!r} (moved in raytune-ft 0.2.0) has no attribute {name!r}")


def package_getattr(package: str):
    """A module-level __getattr__ for a package that replaced an old module of the same name."""

    def __getattr__(name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        return find_moved(package, name, OLD_PACKAGE_NAMES[package])

    return __getattr__


class _OldModule(types.ModuleType):
    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        return find_moved(self.__name__, name, OLD_MODULES[self.__name__])

    def __call__(self, *args, **kwargs):
        # Importing raytune_ft.search (an old pickle does) sets raytune_ft.search to this module,
        # over the API function of that name: calling it must still run a search.
        from raytune_ft import api

        return getattr(api, self.__name__.rpartition(".")[2])(*args, **kwargs)


class _OldModuleFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Consulted last, so only for a name no real module has."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname in OLD_MODULES:
            return importlib.util.spec_from_loader(fullname, self)
        return None

    def create_module(self, spec):
        return _OldModule(spec.name)

    def exec_module(self, module) -> None:
        pass


def install() -> None:
    if not any(isinstance(finder, _OldModuleFinder) for finder in sys.meta_path):
        sys.meta_path.append(_OldModuleFinder())
