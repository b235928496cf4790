"""The model a run trains: the pretrained model with the task's head, with LoRA adapters when
model.peft asks for them, or a run's checkpoint of it.

With LoRA (peft's LoraConfig, task type SEQ_CLS) the pretrained weights stay frozen: only the
adapters and the classification head train, and a checkpoint holds just those (peft's
adapter_model.safetensors and adapter_config.json, a few MB), never the frozen weights again.
Loading such a checkpoint puts its adapters and head back on the pretrained model.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from raytune_ft.config import Config, PeftSection
from raytune_ft.tasks import Task

# What peft's save_pretrained writes beside the adapters' weights: a checkpoint of adapters.
ADAPTER_CONFIG_FILE = "adapter_config.json"


def model_options(config: Config) -> dict:
    """from_pretrained's options: fp32 weights, the task's head, and remote code only if the config allows it."""
    return {
        "dtype": torch.float32,
        "trust_remote_code": config.model.trust_remote_code,
        **model_labels(config.task_spec()),
    }


def model_labels(task: Task) -> dict:
    """The model's head: one output with MSE loss for regression (STS-B); else the label names,
    which travel with the model, so that an exported model says what it predicts."""
    if task.is_regression:
        return {"num_labels": 1, "problem_type": "regression"}
    return {
        "num_labels": task.num_labels,
        "id2label": dict(enumerate(task.label_names)),
        "label2id": {name: i for i, name in enumerate(task.label_names)},
    }


def load_model(config: Config, model_path: str, checkpoint_dir: str | None = None, trainable: bool = True):
    """The model a run starts from: the pretrained model at model_path (with new adapters when
    model.peft is on), or a checkpoint of it: a full model, or adapters and head to put back on
    the pretrained model."""
    # Weights in fp32 whatever the checkpoint stores (transformers loads dtype="auto"): AdamW on
    # fp16 weights gives a NaN loss at the second step; train.mixed_precision decides compute.
    options = model_options(config)
    if checkpoint_dir is not None and not is_adapter_checkpoint(checkpoint_dir):
        return AutoModelForSequenceClassification.from_pretrained(checkpoint_dir, **options)
    model = AutoModelForSequenceClassification.from_pretrained(model_path, **options)
    if checkpoint_dir is not None:
        from peft import PeftModel

        return PeftModel.from_pretrained(model, checkpoint_dir, is_trainable=trainable)
    if config.model.peft is not None:
        from peft import get_peft_model

        return get_peft_model(model, lora_config(config.model.peft))
    return model


def lora_config(peft: PeftSection):
    """peft's LoraConfig for model.peft. Task type SEQ_CLS keeps the classification head fully
    trained (peft's modules_to_save), and saved with the adapters."""
    from peft import LoraConfig, TaskType

    return LoraConfig(
        task_type=TaskType.SEQ_CLS,
        r=peft.r,
        lora_alpha=peft.alpha,
        lora_dropout=peft.dropout,
        target_modules=peft.target_modules,
        use_dora=peft.method == "dora",
    )


def save_merged(checkpoint_dir: str, out_dir: str | Path, config: Config) -> None:
    """A checkpoint of adapters as a plain model: put back on the pretrained model, merged into its
    weights and saved with the tokenizer (config: the trial's, whose model it trained)."""
    from raytune_ft.data.sources import resolve_model_path

    model = load_model(config, resolve_model_path(config.model.name_or_path), checkpoint_dir, trainable=False)
    merged(model).save_pretrained(out_dir)
    AutoTokenizer.from_pretrained(checkpoint_dir, trust_remote_code=config.model.trust_remote_code).save_pretrained(
        out_dir
    )


def is_adapter_checkpoint(folder: str | Path) -> bool:
    return (Path(folder) / ADAPTER_CONFIG_FILE).is_file()


def merged(model):
    """A model of adapters as a plain transformers model, the adapters folded into its weights:
    what loads with AutoModelForSequenceClassification.from_pretrained, peft not needed."""
    return model.merge_and_unload() if hasattr(model, "merge_and_unload") else model


def parameter_counts(model) -> dict:
    """Trained and all parameters: with LoRA a few percent of the model train."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"trainable_parameters": trainable, "total_parameters": sum(p.numel() for p in model.parameters())}
