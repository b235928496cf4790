"""The package's shape: layers that import only downwards, no import circles, functions that
fit on a screen, and the module paths of 0.1.0 still importable (old run folders pickle them)."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "raytune_ft"

# Lower layers first; a module may import from its own layer and the ones before it.
LAYERS = [
    {"errors", "environment", "legacy", "tasks"},
    {"config", "run_folder"},
    {"data"},
    {"training"},
    {"report"},
    {"tuning"},
    {"api"},
    {"cli", "__main__", "__init__"},
]


def layer_of(module: str) -> int:
    part = module.split(".")[1] if "." in module else "__init__"
    return next(index for index, names in enumerate(LAYERS) if part in names)


def package_modules() -> dict[str, Path]:
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        modules[name] = path
    return modules


def imported_modules(path: Path) -> set[str]:
    """raytune_ft modules a file imports, at the top or inside functions."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("raytune_ft"):
            found |= {
                f"{node.module}.{alias.name}" if node.module == "raytune_ft" else node.module for alias in node.names
            }
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("raytune_ft")}
    return found


def test_every_module_imports_only_from_its_own_layer_or_below():
    upward = []
    for name, path in package_modules().items():
        if name == "raytune_ft" or name.endswith("legacy"):
            continue  # the package's lazy API and the old-path stand-ins look upward by design
        for target in imported_modules(path):
            if target.startswith("raytune_ft.") and layer_of(target) > layer_of(name):
                upward.append(f"{name} imports {target}")
    assert not upward, upward


def test_the_training_side_never_imports_the_search_side():
    for name, path in package_modules().items():
        if name.startswith("raytune_ft.training"):
            assert not any(t.startswith("raytune_ft.tuning") for t in imported_modules(path)), name


def test_no_import_circles():
    modules = package_modules()
    graph = {name: {t for t in imported_modules(path) if t in modules and t != name} for name, path in modules.items()}
    graph.pop("raytune_ft.legacy", None)
    visiting, done = set(), set()

    def visit(name: str, trail: list[str]) -> None:
        if name in done or name not in graph:
            return
        assert name not in visiting, " -> ".join([*trail, name])
        visiting.add(name)
        for target in graph[name]:
            if target != "raytune_ft":  # a submodule's `from raytune_ft import legacy`-style imports
                visit(target, [*trail, name])
        visiting.discard(name)
        done.add(name)

    for name in graph:
        visit(name, [])


def test_no_function_is_longer_than_a_screen():
    long = []
    for name, path in package_modules().items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno + 1 > 110:
                long.append(f"{name}.{node.name}: {node.end_lineno - node.lineno + 1} lines")
    assert not long, long


@pytest.mark.parametrize(
    "old, name, new",
    [
        ("raytune_ft.trial", "run_trial", "raytune_ft.training.trial"),
        ("raytune_ft.search", "RunFolderLog", "raytune_ft.tuning.run_log"),
        ("raytune_ft.progress", "SearchProgress", "raytune_ft.tuning.progress"),
        ("raytune_ft.tracking", "NoTensorBoard", "raytune_ft.tuning.tracking"),
        ("raytune_ft.confirm", "_candidate_value", "raytune_ft.tuning.confirm"),
        ("raytune_ft.pbt", "TuneRelay", "raytune_ft.training.pbt_relay"),
        ("raytune_ft.training", "training_function", "raytune_ft.training.loop"),
        ("raytune_ft.results", "make_console", "raytune_ft.report.tables"),
        ("raytune_ft.data", "prepare_tokenized_data", "raytune_ft.data.tokenized"),
    ],
)
def test_the_module_paths_of_0_1_0_give_the_objects_that_moved(old, name, new):
    assert getattr(importlib.import_module(old), name) is getattr(importlib.import_module(new), name)


def test_the_api_functions_stay_callable_after_an_old_pickle_imports_raytune_ft_search():
    import raytune_ft
    import raytune_ft.search  # noqa: F401 - what unpickling an old Tune state does

    with pytest.raises(raytune_ft.ConfigError, match="give a config file"):
        raytune_ft.search()


def test_every_test_the_fault_page_names_exists():
    """docs/faults.md names the test that proves each fault: each must be a test of that file."""
    import re

    from conftest import REPO_ROOT

    page = (REPO_ROOT / "docs" / "faults.md").read_text()
    named = []
    for item in re.findall(r"`(test_\w+\.py)(::[\w*]+)?`((?:, `::[\w*]+`)*)", page):
        file, first, more = item
        assert (REPO_ROOT / "tests" / file).is_file(), f"docs/faults.md names tests/{file}, which is not there"
        names = [first, *re.findall(r"`(::[\w*]+)`", more)]
        named += [(file, name[2:]) for name in names if name]
    assert len(named) > 20
    for file, name in named:
        source = (REPO_ROOT / "tests" / file).read_text()
        pattern = re.escape(name).replace(r"\*", r"\w*")
        assert re.search(rf"^def {pattern}\(", source, re.M), f"docs/faults.md names {file}::{name}, which is not there"
