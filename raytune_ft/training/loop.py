"""training_function: the manual Accelerate training loop of the course chapter.

It reads top to bottom in the order things happen: data loaders, model, optimizer,
learning-rate schedule, `accelerator.prepare`, then per epoch a training pass and an
evaluation pass per evaluation split (MNLI has two) whose metrics are reported. A run that
was cut off (a dead worker, an interrupted search) starts again from its latest checkpoint:
model, optimizer, schedule and epoch, so it goes on where it stopped. The same
function runs inside Ray Train workers (one trial of a search), alone (`raytune-ft train`),
and under `accelerate launch`. Classification and regression (STS-B) differ only in the
model's head, the loss and what counts as a prediction.
"""

from __future__ import annotations

import math
import os
import socket
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from accelerate import Accelerator
from accelerate.utils import set_seed
from torch.optim import AdamW
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding, get_scheduler

from raytune_ft.config import Config
from raytune_ft.data import load_tokenized
from raytune_ft.divergence import DivergenceGuard
from raytune_ft.metrics import GlueMetric
from raytune_ft.reporting import TRAINING_STATE_FILE, EpochReporter
from raytune_ft.sources import resolve_model_path
from raytune_ft.tasks import EVAL_SUFFIXES


def training_function(loop_config: dict, reporter: EpochReporter) -> None:
    """One fine-tuning run.

    loop_config: {"config": Config as a dict (train.* already holds this trial's values),
                  "data": tokenized data (a folder path, or a Ray object ref to the DatasetDict),
                  "progress_bar": show a tqdm bar on the main process,
                  "timeline": (optional) earlier start-up timestamps: driver_started_at, worker_started_at}
    """
    # Where a trial's start-up goes (reported with epoch 1; bench/overhead.py reads it).
    timeline = {**loop_config.get("timeline", {}), "loop_started_at": time.time()}
    config = Config(**loop_config["config"])
    hp = config.train
    task = config.task_spec()
    model_path = resolve_model_path(config.model.name_or_path)
    use_gpu = config.resources.gpus_per_worker > 0

    # cpu=True when no GPU is used: inside Ray Train workers that is what makes Accelerate
    # join the gloo process group Ray set up (without it every worker trains alone).
    accelerator = Accelerator(cpu=not use_gpu, mixed_precision=hp.mixed_precision)
    set_seed(hp.seed)

    tokenized = _open_tokenized(loop_config["data"])
    timeline["data_ready_at"] = time.time()
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    data_collator = DataCollatorWithPadding(tokenizer=tokenizer)
    train_dataloader = DataLoader(tokenized["train"], shuffle=True, batch_size=hp.batch_size, collate_fn=data_collator)
    # One per evaluation split: MNLI is scored on its matched and its mismatched dev set.
    eval_dataloaders = [
        DataLoader(tokenized[split], batch_size=hp.eval_batch_size, collate_fn=data_collator) for split in task.eval_splits
    ]

    if task.is_regression:  # one output, MSE loss (STS-B)
        labels = {"num_labels": 1, "problem_type": "regression"}
    else:  # the label names travel with the model: an exported model says what it predicts
        labels = {
            "num_labels": task.num_labels,
            "id2label": dict(enumerate(task.label_names)),
            "label2id": {name: i for i, name in enumerate(task.label_names)},
        }
    # A restarted run (dead worker, resumed search) continues from its latest checkpoint.
    with reporter.restore_point() as restore_dir:
        model = AutoModelForSequenceClassification.from_pretrained(restore_dir or model_path, **labels)
        restored = torch.load(Path(restore_dir) / TRAINING_STATE_FILE, map_location="cpu") if restore_dir else None
    optimizer = AdamW(model.parameters(), lr=hp.learning_rate, weight_decay=hp.weight_decay)
    timeline["model_ready_at"] = time.time()

    train_dataloader, *eval_dataloaders, model, optimizer = accelerator.prepare(
        train_dataloader, *eval_dataloaders, model, optimizer
    )
    # After prepare: each process sees its own shard, so this counts this process's steps.
    # The scheduler is deliberately not prepared: Accelerate's wrapper would step it once
    # per process and the schedule would end early.
    num_training_steps = hp.num_epochs * len(train_dataloader)
    lr_scheduler = get_scheduler(
        "linear",
        optimizer=optimizer,
        num_warmup_steps=int(hp.warmup_ratio * num_training_steps),
        num_training_steps=num_training_steps,
    )

    metric = GlueMetric(task.metric_names)
    progress_bar = tqdm(
        range(num_training_steps),
        disable=not (loop_config.get("progress_bar", True) and accelerator.is_main_process),
    )
    divergence = DivergenceGuard(hp.learning_rate)
    start_epoch, best_score = 1, None
    if restored is not None:
        optimizer.load_state_dict(restored["optimizer"])
        lr_scheduler.load_state_dict(restored["lr_scheduler"])
        # The schedule goes on from its step, peaking at this run's learning rate: under PBT a
        # trial restarts from another trial's checkpoint with a perturbed one (same value otherwise).
        lr_scheduler.base_lrs = [hp.learning_rate] * len(lr_scheduler.base_lrs)
        for group, lr_lambda in zip(optimizer.param_groups, lr_scheduler.lr_lambdas):
            group["lr"] = hp.learning_rate * lr_lambda(lr_scheduler.last_epoch)
        start_epoch, best_score = restored["epoch"] + 1, restored["best_score"]
        divergence.first_loss = restored["first_loss"]
        progress_bar.update(restored["epoch"] * len(train_dataloader))
        timeline["resumed_from_epoch"] = restored["epoch"]
        # Say the restored epoch again: a search killed just after the epoch was saved never
        # heard of it (read_epochs keeps one row per epoch). Its checkpoint is where it was.
        reporter.report({**restored["last_metrics"], "checkpoint_path": reporter.restored_from, "restored": True}, None)
    for epoch in range(start_epoch, hp.num_epochs + 1):
        # --- train -------------------------------------------------------------------
        # Seeded per epoch: an epoch run again after a restart sees the same batches.
        set_seed(hp.seed + epoch)
        model.train()
        epoch_start = time.perf_counter()
        loss_sum = torch.zeros((), device=accelerator.device)
        samples = torch.zeros((), device=accelerator.device)
        longest = 0  # tokens in the widest batch: what max_length let through
        for batch in train_dataloader:
            outputs = model(**batch)
            loss = outputs.loss
            # The mean over the processes (DDP): every one of them decides the same, and they
            # all stop together rather than one leaving the others waiting for its gradients.
            divergence.check(accelerator.reduce(loss.detach(), "mean").item(), epoch)
            accelerator.backward(loss)
            if hp.max_grad_norm is not None:  # Accelerate's clip unscales fp16 gradients first
                accelerator.clip_grad_norm_(model.parameters(), hp.max_grad_norm)
            optimizer.step()
            timeline.setdefault("first_step_at", time.time())
            lr_scheduler.step()
            optimizer.zero_grad()
            progress_bar.update(1)
            batch_size = batch["labels"].shape[0]
            loss_sum += loss.detach() * batch_size
            samples += batch_size
            longest = max(longest, batch["input_ids"].shape[1])
        train_seconds = time.perf_counter() - epoch_start
        # With DDP each process saw its own shard of the data: gather the counts, sum the rest.
        samples_per_process = accelerator.gather(samples.reshape(1)).tolist()
        loss_sum, samples = accelerator.reduce(loss_sum, "sum"), accelerator.reduce(samples, "sum")
        longest = int(accelerator.gather(torch.tensor([longest], device=accelerator.device)).max())

        # --- evaluate ----------------------------------------------------------------
        evaluated = {}
        for split, eval_dataloader in zip(task.eval_splits, eval_dataloaders):
            suffix = EVAL_SUFFIXES[split]  # "" for validation, "_mm" for MNLI mismatched
            scores, eval_loss, count = evaluate_on(eval_dataloader, model, metric, accelerator, task.is_regression)
            evaluated.update({f"eval_{name}{suffix}": value for name, value in scores.items()})
            evaluated.update({f"eval_loss{suffix}": eval_loss, f"examples_evaluated{suffix}": count})

        metrics = {
            "epoch": epoch,
            **evaluated,
            "train_loss": (loss_sum / samples).item(),
            "train_longest_sequence": longest,  # tokens in the widest training batch (all processes)
            "learning_rate": hp.learning_rate,  # the trial's (peak) learning rate
            "last_learning_rate": lr_scheduler.get_last_lr()[0],  # where the schedule is now
            "examples_trained": int(samples.item()),
            "examples_trained_per_process": [int(n) for n in samples_per_process],
            "train_samples_per_second": samples.item() / train_seconds,
            "epoch_seconds": time.perf_counter() - epoch_start,
            "node_id": _node_id(),
            "device": str(accelerator.device),
            "num_processes": accelerator.num_processes,
            # What one trial needs of a GPU: how many fit on one with fractional GPUs.
            **({"gpu_memory_peak_gib": torch.cuda.max_memory_allocated(accelerator.device) / 2**30}
               if accelerator.device.type == "cuda" else {}),
            **(timeline if epoch == start_epoch else {}),
        }
        score = metrics[f"eval_{config.metric}"]
        improved = best_score is None or (score > best_score if config.search.mode == "max" else score < best_score)
        best_score = score if improved else best_score
        # Ray Train keeps the checkpoint scored highest on this (the newest improving epoch's)
        # plus the latest one, which a restart continues from.
        metrics["best_so_far"] = float(improved)
        if accelerator.is_main_process:
            accelerator.print(f"epoch {epoch}: " + ", ".join(f"{k}={_short(v)}" for k, v in metrics.items() if k.startswith(("eval_", "train_loss"))))

        # A plain run saves improving epochs only; a search saves every epoch, so that a
        # restart loses at most the epoch it was in.
        with tempfile.TemporaryDirectory(prefix="raytune-ft-ckpt-") as checkpoint_dir:
            saved = None
            if config.output.keep_checkpoints and (improved or reporter.resumable) and accelerator.is_main_process:
                accelerator.unwrap_model(model).save_pretrained(checkpoint_dir)
                tokenizer.save_pretrained(checkpoint_dir)
                if reporter.resumable:
                    training_state = {
                        "epoch": epoch, "best_score": best_score, "first_loss": divergence.first_loss,
                        "optimizer": optimizer.state_dict(), "lr_scheduler": lr_scheduler.state_dict(),
                        "last_metrics": metrics,
                    }
                    torch.save(training_state, Path(checkpoint_dir) / TRAINING_STATE_FILE)
                saved = checkpoint_dir
            reporter.report(metrics, saved)
    progress_bar.close()
    accelerator.end_training()


def evaluate_on(dataloader, model, metric: GlueMetric, accelerator: Accelerator, is_regression: bool) -> tuple[dict, float, int]:
    """One pass over an evaluation set: (the task's metrics, mean loss, examples seen)."""
    model.eval()
    losses = []
    for batch in dataloader:
        with torch.no_grad():
            outputs = model(**batch)
        if is_regression:
            predictions = outputs.logits.squeeze(-1)
            example_losses = F.mse_loss(predictions.float(), batch["labels"].float(), reduction="none")
        else:
            predictions = outputs.logits.argmax(dim=-1)
            example_losses = F.cross_entropy(outputs.logits.float(), batch["labels"], reduction="none")
        # gather_for_metrics drops the duplicates DDP pads the last batch with.
        predictions, references, example_losses = accelerator.gather_for_metrics(
            (predictions, batch["labels"], example_losses)
        )
        metric.add_batch(predictions=predictions, references=references)
        losses.append(example_losses)
    losses = torch.cat(losses)
    return metric.compute(), losses.mean().item(), len(losses)


def _open_tokenized(handle):
    """The tokenized DatasetDict from a cache folder, or from Ray's object store."""
    if isinstance(handle, (str, os.PathLike)):
        return load_tokenized(handle)
    import ray

    return ray.get(handle)


def _node_id() -> str:
    try:
        import ray

        if ray.is_initialized():
            return ray.get_runtime_context().get_node_id()
    except ImportError:
        pass
    return socket.gethostname()


def _short(value) -> str:
    return f"{value:.4f}" if isinstance(value, float) and math.isfinite(value) else str(value)
