"""A trial's checkpoint: the model and tokenizer (save_pretrained layout), plus, where runs can
be restarted, the training state that lets a restart go on where it stopped (optimizer,
schedule, epoch, best score, the divergence guard's reference loss, the epoch's metrics)."""

from __future__ import annotations

from pathlib import Path

import torch

# Inside a checkpoint folder, beside the model and tokenizer: what a restart needs to go on
# (optimizer, schedule, epoch). Only the search writes it; an exported model leaves it out.
TRAINING_STATE_FILE = "training_state.pt"


def state_to_continue(checkpoint_dir: str | None, num_epochs: int) -> dict | None:
    """What a restarted run goes on from: the training state saved beside the checkpoint's model,
    or None to start afresh: no checkpoint, one without a training state, or one saved without
    the optimizer state (output.save_optimizer: false) before the run's last epoch."""
    if checkpoint_dir is None or not (Path(checkpoint_dir) / TRAINING_STATE_FILE).exists():
        return None
    state = load_training_state(checkpoint_dir)
    if "optimizer" not in state and state["epoch"] < num_epochs:
        return None
    return state


def load_training_state(checkpoint_dir: str) -> dict:
    """The training state saved beside a checkpoint's model."""
    # weights_only: tensors, numbers, strings and containers only; a pickled object of any other
    # kind (a checkpoint on shared storage that someone else wrote) is refused, not run.
    return torch.load(Path(checkpoint_dir) / TRAINING_STATE_FILE, map_location="cpu", weights_only=True)


def restore_optimizer_and_schedule(state: dict, optimizer, lr_scheduler, learning_rate: float) -> None:
    """Optimizer and schedule as saved; the schedule goes on from its step, peaking at this
    run's learning rate: under PBT a trial restarts from another trial's checkpoint with a
    perturbed one (the same value otherwise). A state saved after the run's last epoch has
    neither (nothing is left to train): nothing to restore."""
    if "optimizer" not in state:
        return
    optimizer.load_state_dict(state["optimizer"])
    lr_scheduler.load_state_dict(state["lr_scheduler"])
    lr_scheduler.base_lrs = [learning_rate] * len(lr_scheduler.base_lrs)
    for group, lr_lambda in zip(optimizer.param_groups, lr_scheduler.lr_lambdas):
        group["lr"] = learning_rate * lr_lambda(lr_scheduler.last_epoch)


def save_checkpoint(folder: str, model, tokenizer, training_state: dict | None) -> None:
    """Model and tokenizer in save_pretrained layout; the training state beside them if given."""
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    if training_state is not None:
        torch.save(training_state, Path(folder) / TRAINING_STATE_FILE)
