"""LoRA through PEFT, with the real MiniLM: a search over LoRA's rank learns, its checkpoints hold
the adapters and the head only, the winner is evaluated on the test split from its adapters, and
export writes a merged model that loads and predicts without peft (or, asked, the adapters)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import quick_config, search_in_process, write_paraphrase_files
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from raytune_ft import api
from raytune_ft.config import ConfigError, validate_config
from raytune_ft.run_folder import read_epochs

LORA = {"method": "lora", "r": 8, "alpha": 16, "dropout": 0.1}


@pytest.fixture(scope="module")
def lora_search(tmp_path_factory, minilm_path):
    """Two trials (LoRA rank 4 and 8) of MiniLM with LoRA, side by side, 2 epochs of 1,000 pairs: ~1 minute."""
    tmp_path = tmp_path_factory.mktemp("lora")
    files = write_paraphrase_files(tmp_path / "data", {"train": 1000, "validation": 100, "test": 100})
    raw = quick_config(
        minilm_path,
        model={"peft": LORA},
        data={"max_train_samples": None, "max_eval_samples": None, "max_length": 64, **files},
        train={"learning_rate": 1e-3, "batch_size": 8, "num_epochs": 2},
        search={
            "space": {"lora_r": {"choice": [4, 8]}},
            "algorithm": "grid",
            "scheduler": "fifo",
            "num_samples": 1,
            "metric": "accuracy",
        },
        resources={"max_concurrent_trials": 2},  # a core each
        test={"evaluate": True},
        output={"dir": str(tmp_path / "runs"), "name": "lora"},
        tracking={"tensorboard": False},
    )
    del raw["data"]["path"]
    result = search_in_process(raw, tmp_path)
    assert result.exit_code == 0, result.output
    run_dir = tmp_path / "runs" / "lora"
    return run_dir, json.loads((run_dir / "best.json").read_text()), raw


def _folder_bytes(folder) -> int:
    return sum(path.stat().st_size for path in Path(folder).rglob("*") if path.is_file())


def _dev_predictions(model, tokenizer, raw) -> torch.Tensor:
    rows = [json.loads(line) for line in Path(raw["data"]["validation_file"]).read_text().splitlines()]
    pairs = [r["sentence1"] for r in rows], [r["sentence2"] for r in rows]
    batch = tokenizer(*pairs, truncation=True, padding=True, max_length=64, return_tensors="pt")
    with torch.no_grad():
        return model.eval()(**batch).logits.argmax(-1)


@pytest.mark.slow
def test_a_lora_search_learns_and_says_how_few_parameters_train(lora_search):
    run_dir, best, _ = lora_search
    rows = read_epochs(run_dir)
    assert sorted({row["lora_r"] for row in rows}) == [4, 8]
    assert best["metrics"]["eval_accuracy"] > 0.75  # chance: 0.5
    for row in rows:
        assert row["trainable_parameters"] < row["total_parameters"] / 50  # adapters and head only
    by_trial = {row["trial_id"]: row["trainable_parameters"] for row in rows}
    assert len(set(by_trial.values())) == 2  # rank 8 trains more than rank 4
    test = json.loads((run_dir / "test.json").read_text())  # the winner's adapters on its MiniLM
    assert test["metrics"]["test_accuracy"] > 0.7


@pytest.mark.slow
def test_lora_checkpoints_hold_adapters_and_head_only(lora_search, minilm_path):
    run_dir, best, _ = lora_search
    checkpoint = Path(best["checkpoint"])
    assert (checkpoint / "adapter_config.json").is_file() and not (checkpoint / "model.safetensors").exists()
    full_model = _folder_bytes(minilm_path)
    for row in read_epochs(run_dir):
        if row.get("checkpoint_path") and Path(row["checkpoint_path"]).is_dir():
            assert _folder_bytes(row["checkpoint_path"]) * 10 < full_model


@pytest.mark.slow
def test_export_merges_the_adapters_into_a_model_that_needs_no_peft(lora_search, minilm_path, tmp_path):
    run_dir, best, raw = lora_search
    merged_dir = api.export(run_dir, tmp_path / "merged")
    assert not (merged_dir / "adapter_config.json").exists() and (merged_dir / "model.safetensors").is_file()
    assert not (merged_dir / "training_state.pt").exists()
    # It loads in a Python where peft cannot be imported.
    load = f"import sys; sys.modules['peft'] = None; from transformers import AutoModelForSequenceClassification as M; M.from_pretrained({str(merged_dir)!r})"
    subprocess.run([sys.executable, "-c", load], check=True, capture_output=True)

    from peft import PeftModel

    tokenizer = AutoTokenizer.from_pretrained(merged_dir)
    merged = AutoModelForSequenceClassification.from_pretrained(merged_dir)
    base = AutoModelForSequenceClassification.from_pretrained(minilm_path, num_labels=2)
    adapters = PeftModel.from_pretrained(base, best["checkpoint"])
    assert torch.equal(_dev_predictions(merged, tokenizer, raw), _dev_predictions(adapters, tokenizer, raw))

    adapter_dir = api.export(run_dir, tmp_path / "adapters", adapter_only=True)
    assert {"adapter_config.json", "adapter_model.safetensors"} <= {p.name for p in adapter_dir.iterdir()}
    assert not (adapter_dir / "training_state.pt").exists()


@pytest.mark.slow
def test_adapter_only_export_of_a_fully_fine_tuned_winner_is_refused(finished_search, tmp_path):
    _, run_dir, _ = finished_search
    with pytest.raises(ConfigError, match="--adapter-only: .* fully fine-tuned"):
        api.export(run_dir, tmp_path / "out", adapter_only=True)
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.writing").exists()


def test_lora_keys_are_searched_only_with_lora_on_and_within_peft_limits():
    space = {"search": {"space": {"lora_r": {"choice": [4, 8]}}}}
    with pytest.raises(Exception, match=r"search.space.lora_r: LoRA's keys need LoRA on; add model.peft"):
        validate_config(space)
    config = validate_config({**space, "model": {"peft": {"method": "lora"}}})
    assert config.for_trial({"lora_r": 4}).model.peft.r == 4 and config.model.peft.r == 8
    with pytest.raises(Exception, match=r"search.space.lora_alpha.uniform: -1 is not a valid model.peft.alpha"):
        validate_config({"model": {"peft": {}}, "search": {"space": {"lora_alpha": {"uniform": [-1, 32]}}}})
    with pytest.raises(Exception, match=r"model.peft.method"):
        validate_config({"model": {"peft": {"method": "prefix"}}})
