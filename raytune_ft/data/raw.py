"""Raw data: load a task's splits from any source and check every row.

Every source (hub, local GLUE folder, CSV/TSV/JSON Lines/Parquet files, built-in) ends up
as the same DatasetDict: splits `train`, the task's evaluation splits (`validation`, and
`validation_mismatched` for MNLI) and, when a test file is given, `test`; the task's text
columns; and `label` (label ids, or float scores for regression). Bad rows are refused here,
with the file and line, before anything is tokenized or written.

Tokenizing and caching the result is tokenized.py's job.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import datasets

from raytune_ft.config import Config, ConfigError
from raytune_ft.data.builtin import BUILTIN_DATASETS, builtin_dataset
from raytune_ft.data.files import Table, read_table
from raytune_ft.data.sources import DataSource, resolve_data_source
from raytune_ft.tasks import GLUE_SPLIT_FILES, Task

# ---------------------------------------------------------------------------------------
# Raw data: every source -> DatasetDict with the task's text columns and `label`


def load_raw_dataset(config: Config) -> datasets.DatasetDict:
    """Read and check the config's data; the reproducible subsets for quick runs are taken last.

    For a custom task without data.label_names, the labels found in the training data are
    recorded in config.data.label_names (sorted), so that config.yaml and every trial use the
    same label ids.
    """
    task = config.task_spec()
    source = resolve_data_source(config)
    tables, columns = read_source(source, config, task)
    if task.name == "custom" and not task.is_regression and not task.label_names:
        config.data.label_names = labels_found(tables["train"], columns["label"])
        config.check_search_metric()  # f1 needs exactly two labels
        task = config.task_spec()
    if "test" in tables and _unlabelled(tables["test"], columns["label"]):
        del tables["test"].columns[columns["label"]]  # GLUE's test files: -1 for "no label"
    raw = datasets.DatasetDict({split: to_dataset(table, task, columns) for split, table in tables.items()})
    return take_subsets(raw, config, task)


def read_source(source: DataSource, config: Config, task: Task) -> tuple[dict[str, Table], dict[str, str]]:
    """Each split's rows, and which source column holds each of our columns (text columns, label)."""
    splits = ["train", *task.eval_splits]
    # A GLUE task's folder has the original download's file names and columns; everything else
    # names its columns like the hub, or as data.text_columns / label_column say.
    layout = task.glue if source.kind == "glue_folder" else None
    if layout:
        if config.data.text_columns or config.data.label_column != "label":
            raise ConfigError(
                "data.text_columns / data.label_column: a GLUE-format folder has the task's own columns; "
                "leave them out, or name your files with data.train_file and data.validation_file"
            )
        columns = dict(layout.columns)
    else:
        names = config.data.text_columns or task.text_columns
        columns = {**dict(zip(task.text_columns, names)), "label": config.data.label_column}

    if source.kind == "glue_folder":  # a custom task's folder: train.tsv and dev.tsv, each with a header line
        file_names = layout.files if layout else GLUE_SPLIT_FILES
        files = {split: Path(source.location) / file_names[split] for split in splits}
        for path in files.values():
            if not path.is_file():
                needed = ", ".join(file.name for file in files.values())
                raise ConfigError(f"data.path: {path} is missing; this GLUE-format {task.name} folder needs {needed}")
        tables = {
            split: read_table(path, list(columns.values()), layout and layout.headerless_names)
            for split, path in files.items()
        }
    elif source.kind == "files":
        tables = {split: read_table(path, list(columns.values())) for split, path in source.files.items()}
    elif source.kind == "builtin":
        tables = _builtin_tables(source.location)
    else:
        tables = _hub_tables(source, task, columns.values())
    fix = f"is this the {layout.folder} file of the original GLUE download?" if layout else None
    return _checked(tables, columns, task, fix), columns


def _checked(tables: dict[str, Table], columns: dict[str, str], task: Task, fix: str | None = None) -> dict[str, Table]:
    """Every split has the needed columns (a test split may lack the label) and some rows."""
    for split, table in tables.items():
        for ours, theirs in columns.items():
            if theirs in table.column_names or (ours == "label" and split == "test"):
                continue
            hint = fix or (
                "name the label column with data.label_column"
                if ours == "label"
                else "name the text column(s) with data.text_columns"
            )
            raise ConfigError(
                f"{table.source}: no column {theirs!r} (columns: {', '.join(table.column_names) or 'none'}); {hint}"
            )
        if len(table) == 0:
            raise ConfigError(
                f"{table.source}: no rows; the {split} split of task {task.name} is empty, give it examples"
            )
    return tables


def _builtin_tables(name: str) -> dict[str, Table]:
    if name not in BUILTIN_DATASETS:
        raise ConfigError(f"data.path: no built-in data set {name!r}; built-in: {', '.join(BUILTIN_DATASETS)}")
    return {
        split: Table(f"builtin:{name} {split}", list(columns), columns, num_rows=len(columns["label"]))
        for split, columns in builtin_dataset(name).items()
    }


def _hub_tables(source: DataSource, task: Task, keep) -> dict[str, Table]:
    try:
        loaded = datasets.load_dataset(source.location, source.subset)
    except Exception as err:  # offline, unknown id, unknown subset: all bad input for the user
        raise ConfigError(
            f"data.path: could not load {source.location!r} ({source.subset}) from the hub: "
            f"{str(err).splitlines()[0][:200]}; offline, give a local GLUE folder with --set data.path=... "
            "or data files with --set data.train_file=... --set data.validation_file=..."
        ) from None
    name = source.location + (f" ({source.subset})" if source.subset else "")
    tables = {}
    for split in ["train", *task.eval_splits]:
        hub_split = task.hub_splits.get(split, split)
        if hub_split not in loaded:
            raise ConfigError(f"data.path: {name} has no {hub_split} split (splits: {', '.join(loaded)})")
        dataset = loaded[hub_split]
        present = [column for column in keep if column in dataset.column_names]
        tables[split] = Table(
            f"{name} {hub_split}",
            dataset.column_names,
            dataset.select_columns(present).to_dict(),
            num_rows=len(dataset),
        )
    return tables


def labels_found(table: Table, label_column: str) -> list[str]:
    """A custom task's label names from its training data: sorted (as numbers if all are integers)."""
    found = {_label_text(value) for value in table.columns[label_column]} - {""}
    if len(found) < 2:
        raise ConfigError(
            f"{table.source}: column {label_column!r} holds {len(found)} different label(s) ({', '.join(sorted(found))}); "
            "a classifier needs two or more (or set data.regression: true for scores)"
        )
    if all(re.fullmatch(r"-?\d+", label) for label in found):
        return sorted(found, key=int)
    return sorted(found)


def _unlabelled(table: Table, label_column: str) -> bool:
    values = table.columns.get(label_column)
    return values is not None and all(_label_text(value) in ("", "-1") for value in values)


def to_dataset(table: Table, task: Task, columns: dict[str, str]) -> datasets.Dataset:
    """Check every row (no empty text, a valid label) and build the task's columns."""
    data: dict[str, list] = {}
    for ours in task.text_columns:
        theirs = columns[ours]
        texts = ["" if value is None else str(value) for value in table.columns[theirs]]
        for row, text in enumerate(texts):
            if not text.strip():
                raise ConfigError(f"{table.where(row)}: column {theirs!r} is empty; fill in the text or remove the row")
        data[ours] = texts
    features = {ours: datasets.Value("string") for ours in task.text_columns}
    label_column = columns["label"]
    if label_column in table.columns:
        values = table.columns[label_column]
        if task.is_regression:
            data["label"] = [_score(value, table, row, label_column, task) for row, value in enumerate(values)]
            features["label"] = datasets.Value("float32")
        else:
            data["label"] = _label_ids(values, table, task)
            features["label"] = datasets.ClassLabel(names=list(task.label_names))
    # Typed by a cast afterwards: from_dict(features=...) encodes row by row, 100x slower.
    return datasets.Dataset.from_dict(data).cast(datasets.Features(features))


def _label_text(value) -> str:
    """A label as text: 1, 1.0 and "1" are all "1"."""
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


def _label_ids(values: list, table: Table, task: Task) -> list[int]:
    """Labels given by name (entailment) or by id (0, 1), as the hub's GLUE script reads them.

    Where a label name is itself a number (star ratings 1..5), numbers are names only:
    otherwise an unknown "0" would silently become the first label.
    """
    ids = {name: i for i, name in enumerate(task.label_names)}
    if not any(re.fullmatch(r"-?\d+", name) for name in task.label_names):
        ids.update({str(i): i for i in range(len(task.label_names))})
    labels = []
    for row, value in enumerate(values):
        label = ids.get(_label_text(value))
        if label is None:
            _refuse_label(value, table, row, task)
        labels.append(label)
    return labels


def _refuse_label(value, table: Table, row: int, task: Task):
    if not _label_text(value):
        raise ConfigError(f"{table.where(row)}: the label is empty; fill it in or remove the row")
    choices = ", ".join(f"{name} (id {i})" for i, name in enumerate(task.label_names))
    fix = "correct the row" + (", or list every label in data.label_names" if task.name == "custom" else "")
    raise ConfigError(f"{table.where(row)}: label {value!r} is not one of task {task.name}'s labels: {choices}; {fix}")


def _score(value, table: Table, row: int, column: str, task: Task) -> float:
    try:
        score = float(value)
    except (TypeError, ValueError):
        score = math.nan
    if isinstance(value, bool) or not math.isfinite(score):
        raise ConfigError(
            f"{table.where(row)}: label {value!r} in column {column!r} is not a number; "
            f"task {task.name} is a regression task and needs a numeric score in every row"
        )
    return score


def take_subsets(raw: datasets.DatasetDict, config: Config, task: Task) -> datasets.DatasetDict:
    """Reproducible subsets for quick runs: a seeded shuffle, then the first N rows."""
    limits = {
        "train": config.data.max_train_samples,
        **{split: config.data.max_eval_samples for split in task.eval_splits},
    }
    for split, limit in limits.items():
        if limit is not None and limit < len(raw[split]):
            raw[split] = raw[split].shuffle(seed=config.train.seed).select(range(limit))
    return raw
