"""training_function: the manual Accelerate training loop of the course chapter.

It reads top to bottom in the order things happen: data loaders, model, optimizer,
learning-rate schedule, `accelerator.prepare`, then per epoch a training pass and an
evaluation pass per evaluation split (MNLI has two) whose metrics are reported. A run that
was cut off (a dead worker, an interrupted search) starts again from its latest checkpoint:
model, optimizer, schedule and epoch, so it goes on where it stopped. The same
function runs inside Ray Train workers (one trial of a search), in a Ray Tune trial's own
process, alone (`raytune-ft train`), and under `accelerate launch`. Classification and
regression (STS-B) differ only in the model's head, the loss and what counts as a prediction.

The helpers below it keep the loop itself to what the course shows: resume, per-epoch
metrics, the start-up timeline and checkpoint saving each have a small function or class.
"""

from __future__ import annotations

import gc
import math
import os
import socket
import sys
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from accelerate import Accelerator
from accelerate.utils import DataLoaderConfiguration, set_seed
from torch.optim import AdamW
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import AutoTokenizer, DataCollatorWithPadding, get_scheduler

from raytune_ft.config import Config, TrainSection
from raytune_ft.data.sources import resolve_model_path
from raytune_ft.data.tokenized import load_tokenized
from raytune_ft.run_folder import DEV_PREDICTIONS
from raytune_ft.tasks import EVAL_SUFFIXES, Task
from raytune_ft.training.checkpointing import restore_optimizer_and_schedule, save_checkpoint, state_to_continue
from raytune_ft.training.divergence import DivergenceGuard
from raytune_ft.training.metrics import GlueMetric
from raytune_ft.training.model import load_model, parameter_counts
from raytune_ft.training.reporters import EpochReporter


def training_function(loop_config: dict, reporter: EpochReporter) -> None:
    """One fine-tuning run. loop_config: {"config": the Config as a dict (train.* holds this run's
    values), "data": the tokenized data (a cache folder, or a Ray object ref), "progress_bar": a tqdm
    bar on the main process, "timeline": (optional) earlier start-up stamps (StartupTimeline)}."""
    timeline = StartupTimeline(loop_config.get("timeline", {}))
    config = Config(**loop_config["config"])
    if config.train.auto_batch_size:  # this run, again with a smaller batch if a step runs out of memory
        return train_with_a_batch_that_fits(config, loop_config, reporter)
    hp, task = config.train, config.task_spec()
    model_path = resolve_model_path(config.model.name_or_path)
    accelerator = make_accelerator(config)
    set_seed(hp.seed)

    tokenized = open_tokenized(loop_config["data"])
    timeline.mark("data_ready_at")
    tokenizer = AutoTokenizer.from_pretrained(model_path, trust_remote_code=config.model.trust_remote_code)
    train_dataloader, eval_dataloaders = make_dataloaders(config, tokenized, tokenizer, accelerator.device)

    # A restarted run (dead worker, resumed search) continues from its latest checkpoint
    # (with LoRA: its adapters and head, put back on the pretrained model).
    with reporter.restore_point() as restore_dir:
        restored = state_to_continue(restore_dir, hp.num_epochs)
        model = load_model(config, model_path, restore_dir if restored is not None else None)
    if hp.gradient_checkpointing:  # activations recomputed in the backward pass: less memory
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    sizes = {**parameter_counts(model), "step_batch_size": hp.batch_size}
    sizes["effective_batch_size"] = effective_batch_size(hp, accelerator)
    # Only what trains (with LoRA: adapters and head). On a GPU one fused kernel per update.
    trained_parameters = [p for p in model.parameters() if p.requires_grad]
    optimizer = AdamW(trained_parameters, lr=hp.learning_rate, weight_decay=hp.weight_decay, fused=on_gpu(accelerator))
    timeline.mark("model_ready_at")

    train_dataloader, *eval_dataloaders, model, optimizer = accelerator.prepare(
        train_dataloader, *eval_dataloaders, model, optimizer
    )
    # After prepare: each process sees its own shard, so this counts this process's optimizer
    # steps (one per gradient_accumulation_steps batches, and one for an epoch's last batches).
    # The scheduler is deliberately not prepared: Accelerate's wrapper would step it once
    # per process and the schedule would end early.
    steps_per_epoch = math.ceil(len(train_dataloader) / hp.gradient_accumulation_steps)
    num_training_steps = hp.num_epochs * steps_per_epoch
    lr_scheduler = get_scheduler(
        "linear",
        optimizer=optimizer,
        num_warmup_steps=int(hp.warmup_ratio * num_training_steps),
        num_training_steps=num_training_steps,
    )

    metric = GlueMetric(task.metric_names)
    show_bar = loop_config.get("progress_bar", True) and accelerator.is_main_process
    progress_bar = tqdm(range(num_training_steps), disable=not show_bar)
    divergence = DivergenceGuard(hp.learning_rate)
    step_losses = StepLosses(divergence, accelerator)
    best = BestScore(config.search.mode)
    spent = DeviceSeconds(config, restored)
    start_epoch = 1
    if restored is not None:
        start_epoch = resume(restored, optimizer, lr_scheduler, hp, best, divergence, timeline, reporter)
        progress_bar.update(restored["epoch"] * steps_per_epoch)
    for epoch in range(start_epoch, hp.num_epochs + 1):
        # --- train -------------------------------------------------------------------
        # Seeded per epoch: an epoch run again after a restart sees the same batches.
        set_seed(hp.seed + epoch)
        model.train()
        tally = EpochTally(accelerator.device)
        for batch in train_dataloader:
            # Gradients add up over gradient_accumulation_steps batches; the prepared optimizer
            # steps (and zeroes them) only at the last (accelerator.sync_gradients).
            with accelerator.accumulate(model):
                outputs = model(**batch)
                loss = outputs.loss
                step_losses.add(loss, epoch)  # the divergence check, every few steps (StepLosses)
                accelerator.backward(loss)
                if hp.max_grad_norm is not None and accelerator.sync_gradients:  # unscales fp16 gradients first
                    accelerator.clip_grad_norm_(trained_parameters, hp.max_grad_norm)
                optimizer.step()
                timeline.mark_once("first_step_at")
                if accelerator.sync_gradients:  # an optimizer step (taken, or skipped by fp16's scaler)
                    if not accelerator.optimizer_step_was_skipped:  # fp16: the scaler skipped an inf step
                        lr_scheduler.step()
                    progress_bar.update(1)
                optimizer.zero_grad()
            tally.add(batch, loss)
        step_losses.check(epoch)
        trained = tally.gather(accelerator)

        # --- evaluate ----------------------------------------------------------------
        evaluated = evaluate_splits(task, eval_dataloaders, model, metric, accelerator)

        # --- report ------------------------------------------------------------------
        metrics = {**epoch_metrics(epoch, evaluated, trained, hp, lr_scheduler, accelerator), **sizes}
        metrics["device_seconds"] = spent.add(metrics["epoch_seconds"])
        if epoch == start_epoch:
            metrics.update(timeline.stamps)
        improved = best.update(metrics[f"eval_{config.metric}"])
        metrics["best_so_far"] = float(improved)  # Tune and Ray Train keep the checkpoint scored highest on it
        print_epoch(accelerator, metrics)
        # A plain run saves improving epochs; a search every epoch: a restart loses at most one.
        keep = config.output.keep_checkpoints and (improved or reporter.resumable) and accelerator.is_main_process
        with reporter.checkpoint_folder() as checkpoint_dir:
            if keep:  # with the training state where runs restart (a search)
                state = training_state(config, epoch, best, divergence, optimizer, lr_scheduler, metrics)
                resumable = reporter.resumable
                save_checkpoint(
                    checkpoint_dir, accelerator.unwrap_model(model), tokenizer, state if resumable else None
                )
            reporter.report(metrics, checkpoint_dir if keep else None)
    progress_bar.close()
    accelerator.end_training()


# ---------------------------------------------------------------------------------------
# Evaluation


def evaluate_on(
    dataloader, model, metric: GlueMetric, accelerator: Accelerator, is_regression: bool
) -> tuple[dict, float, int]:
    """One pass over an evaluation set: (the task's metrics, mean loss, examples seen)."""
    scores, loss, count, _ = predict_on(dataloader, model, metric, accelerator, is_regression)
    return scores, loss, count


def predict_on(
    dataloader, model, metric: GlueMetric, accelerator: Accelerator, is_regression: bool
) -> tuple[dict, float, int, dict]:
    """evaluate_on, and its predictions and labels per example, in the set's order (DDP shards
    take batches in turn, which gathering puts back in order): what the report compares two
    trials on, example by example (report/baseline.py)."""
    model.eval()
    losses, kept_predictions, kept_labels = [], [], []
    for batch in dataloader:
        with torch.no_grad():  # the model's own loss unasked (no labels): the per-example losses below
            outputs = model(**{key: value for key, value in batch.items() if key != "labels"})
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
        kept_predictions.append(predictions.float() if is_regression else predictions)
        kept_labels.append(references)
    losses = torch.cat(losses)
    examples = {"predictions": torch.cat(kept_predictions).tolist(), "labels": torch.cat(kept_labels).tolist()}
    if is_regression:  # scores: 5 decimals are plenty for a comparison, and a third of the bytes
        examples = {key: [round(value, 5) for value in values] for key, values in examples.items()}
    return metric.compute(), losses.mean().item(), len(losses), examples


def evaluate_splits(task: Task, eval_dataloaders: list, model, metric: GlueMetric, accelerator: Accelerator) -> dict:
    """eval_<metric><suffix>, eval_loss<suffix> and examples_evaluated<suffix> for every evaluation
    split, and the dev set's predictions and labels (DEV_PREDICTIONS)."""
    evaluated = {}
    for split, eval_dataloader in zip(task.eval_splits, eval_dataloaders):
        suffix = EVAL_SUFFIXES[split]  # "" for validation, "_mm" for MNLI mismatched
        scores, eval_loss, count, examples = predict_on(eval_dataloader, model, metric, accelerator, task.is_regression)
        evaluated.update({f"eval_{name}{suffix}": value for name, value in scores.items()})
        evaluated.update({f"eval_loss{suffix}": eval_loss, f"examples_evaluated{suffix}": count})
        if split == "validation":  # the dev set the search picks its winner on
            evaluated[DEV_PREDICTIONS] = examples
    return evaluated


# ---------------------------------------------------------------------------------------
# The loop's helpers: data loaders, resume, per-epoch counts and metrics, start-up timeline


def make_dataloaders(config: Config, tokenized, tokenizer, device: torch.device) -> tuple[DataLoader, list]:
    """The training batches (shuffled), and one loader per evaluation split: MNLI is scored on
    its matched and its mismatched dev set. Batches are padded to their longest example, or to
    max_length (data.padding)."""
    hp = config.train
    # Mixed precision: batches padded to a multiple of 8 tokens, the shapes tensor cores want.
    multiple = 8 if hp.mixed_precision != "no" else None
    fixed = config.data.padding == "max_length"
    data_collator = DataCollatorWithPadding(
        tokenizer=tokenizer,
        padding=config.data.padding,
        max_length=config.max_length if fixed else None,
        pad_to_multiple_of=None if fixed else multiple,
    )
    loading = loader_options(config, device)  # on a GPU: pinned memory, worker processes
    train_dataloader = DataLoader(
        tokenized["train"], shuffle=True, batch_size=hp.batch_size, collate_fn=data_collator, **loading
    )
    eval_batch = eval_batch_size(hp, device)
    eval_dataloaders = [
        DataLoader(tokenized[split], batch_size=eval_batch, collate_fn=data_collator, **loading)
        for split in config.task_spec().eval_splits
    ]
    return train_dataloader, eval_dataloaders


def train_with_a_batch_that_fits(config: Config, loop_config: dict, reporter: EpochReporter) -> None:
    """train.auto_batch_size: the run with train.batch_size or, after an out-of-memory error, with
    the next smaller divisor of it and the accumulation steps that keep the effective batch. The
    run starts over (an epoch it reported is reported again); Accelerate's find_executable_batch_size
    tells out-of-memory errors from others and frees the cached memory between tries."""
    from accelerate.utils import find_executable_batch_size

    hp = config.train
    examples_per_step = hp.batch_size * hp.gradient_accumulation_steps
    tried = {"batch_size": hp.batch_size}

    def smaller() -> int:
        batch_size = tried["batch_size"]
        tried["batch_size"] = max([d for d in range(1, batch_size) if batch_size % d == 0], default=0)
        print(f"out of memory with a batch of {batch_size}: again with {tried['batch_size']}", flush=True)
        return tried["batch_size"]

    @find_executable_batch_size(starting_batch_size=hp.batch_size, reduce_batch_size_fn=smaller)
    def attempt(batch_size: int) -> None:
        steps = examples_per_step // batch_size
        train = {"batch_size": batch_size, "gradient_accumulation_steps": steps, "auto_batch_size": False}
        fitted = config.model_copy(update={"train": hp.model_copy(update=train)}, deep=True)
        training_function({**loop_config, "config": fitted.model_dump()}, reporter)

    attempt()


def effective_batch_size(hp: TrainSection, accelerator: Accelerator) -> int:
    """Examples per optimizer step: per-step batch x accumulated batches x processes."""
    return hp.batch_size * hp.gradient_accumulation_steps * accelerator.num_processes


class BestScore:
    """The run's best score on the search metric so far, and whether an epoch improved on it."""

    def __init__(self, mode: str, score: float | None = None):
        self.mode, self.score = mode, score

    def update(self, score: float) -> bool:
        improved = self.score is None or (score > self.score if self.mode == "max" else score < self.score)
        if improved:
            self.score = score
        return improved


class DeviceSeconds:
    """The run's device-seconds so far (search.objectives' cost device_seconds): the seconds of its
    epochs (training and evaluation) x the devices a trial reserves (resources.*: CPU cores, or
    GPUs). Cumulative over a restart: the restored epoch's row holds the count up to it."""

    def __init__(self, config: Config, restored: dict | None):
        self.devices = config.resources.trial_devices()[1]
        self.spent = (restored or {}).get("last_metrics", {}).get("device_seconds", 0.0)

    def add(self, epoch_seconds: float) -> float:
        self.spent += epoch_seconds * self.devices
        return self.spent


def resume(
    restored: dict,
    optimizer,
    lr_scheduler,
    hp: TrainSection,
    best: BestScore,
    divergence: DivergenceGuard,
    timeline: StartupTimeline,
    reporter: EpochReporter,
) -> int:
    """Put back what a restart continues from (checkpointing.py saved it); the first epoch to train."""
    restore_optimizer_and_schedule(restored, optimizer, lr_scheduler, hp.learning_rate)
    best.score = restored["best_score"]
    divergence.first_loss = restored["first_loss"]
    timeline.stamps["resumed_from_epoch"] = restored["epoch"]
    # Say the restored epoch again: a search killed just after the epoch was saved never
    # heard of it (read_epochs keeps one row per epoch). Its checkpoint is where it was.
    reporter.report({**restored["last_metrics"], "checkpoint_path": reporter.restored_from, "restored": True}, None)
    return restored["epoch"] + 1


def training_state(
    config: Config, epoch: int, best: BestScore, divergence: DivergenceGuard, optimizer, lr_scheduler, metrics: dict
) -> dict:
    """What a restart needs besides the model (saved beside it, see resume). The optimizer state
    (AdamW: twice the model's size) only where training may go on from this checkpoint: before
    the run's last epoch (a restart, or a PBT clone, which goes on at the epoch after it with the
    donor's epoch count, so after a last epoch it has nothing left to train either)."""
    state = {"epoch": epoch, "best_score": best.score, "first_loss": divergence.first_loss, "last_metrics": metrics}
    if config.output.save_optimizer and epoch < config.train.num_epochs:
        state.update(optimizer=optimizer.state_dict(), lr_scheduler=lr_scheduler.state_dict())
    return state


class StepLosses:
    """The divergence check without a device sync per step: the training losses stay on the
    device, and every CHECK_EVERY steps (and at the end of each epoch) their mean over the
    processes reaches the DivergenceGuard at once, one all-reduce for them all. The guard sees
    the same losses in the same order as a check per step; a run that diverges stops at most
    CHECK_EVERY - 1 steps later. With DDP every process decides the same, and they all stop
    together rather than one leaving the others waiting for its gradients."""

    CHECK_EVERY = 10

    def __init__(self, guard: DivergenceGuard, accelerator: Accelerator):
        self.guard, self.accelerator = guard, accelerator
        self.pending: list[torch.Tensor] = []

    def add(self, loss: torch.Tensor, epoch: int) -> None:
        self.pending.append(loss.detach().float())
        if len(self.pending) >= self.CHECK_EVERY:
            self.check(epoch)

    def check(self, epoch: int) -> None:
        if not self.pending:
            return
        losses = self.accelerator.reduce(torch.stack(self.pending), "mean").tolist()
        self.pending = []
        for loss in losses:
            self.guard.check(loss, epoch)


@dataclass
class TrainedEpoch:
    """One epoch's training pass over all processes (DDP: each saw its own shard)."""

    loss: float
    longest: int  # tokens in the widest training batch: what max_length let through
    examples: int
    examples_per_process: list[int]
    seconds: float  # the training pass
    started: float  # time.perf_counter() when the epoch began


class EpochTally:
    """The training loss, examples and widest batch of one epoch, kept on the device (no sync per step)."""

    def __init__(self, device):
        self.started = time.perf_counter()
        self.loss_sum = torch.zeros((), device=device)
        self.samples = torch.zeros((), device=device)
        self.longest = 0

    def add(self, batch: dict, loss) -> None:
        batch_size = batch["labels"].shape[0]
        self.loss_sum += loss.detach() * batch_size
        self.samples += batch_size
        self.longest = max(self.longest, batch["input_ids"].shape[1])

    def gather(self, accelerator: Accelerator) -> TrainedEpoch:
        """With DDP each process saw its own shard of the data: gather the counts, sum the rest."""
        if on_gpu(accelerator):
            torch.cuda.synchronize(accelerator.device)  # the epoch's kernels done before it is timed
        seconds = time.perf_counter() - self.started
        per_process = accelerator.gather(self.samples.reshape(1)).tolist()
        loss_sum, samples = accelerator.reduce(self.loss_sum, "sum"), accelerator.reduce(self.samples, "sum")
        longest = int(accelerator.gather(torch.tensor([self.longest], device=accelerator.device)).max())
        return TrainedEpoch(
            (loss_sum / samples).item(),
            longest,
            int(samples.item()),
            [int(n) for n in per_process],
            seconds,
            self.started,
        )


def epoch_metrics(
    epoch: int, evaluated: dict, trained: TrainedEpoch, hp: TrainSection, lr_scheduler, accelerator: Accelerator
) -> dict:
    """What every epoch reports besides best_so_far (one epochs.jsonl row, see tuning/run_log.py)."""
    return {
        "epoch": epoch,
        **evaluated,
        "train_loss": trained.loss,
        "train_longest_sequence": trained.longest,  # tokens in the widest training batch (all processes)
        "learning_rate": hp.learning_rate,  # the trial's (peak) learning rate
        "last_learning_rate": lr_scheduler.get_last_lr()[0],  # where the schedule is now
        "optimizer_steps": lr_scheduler.last_epoch,  # so far, this run (its schedule's steps)
        "examples_trained": trained.examples,
        "examples_trained_per_process": trained.examples_per_process,
        "train_samples_per_second": trained.examples / trained.seconds,
        "epoch_seconds": time.perf_counter() - trained.started,  # training and evaluation
        "node_id": _node_id(),
        "device": device_name(accelerator.device),
        "num_processes": accelerator.num_processes,
        **ray_gpu_ids(),
        **gpu_memory_peaks(accelerator.device),
    }


def print_epoch(accelerator: Accelerator, metrics: dict) -> None:
    """One line per epoch on the main process: its eval metrics and training loss."""
    if accelerator.is_main_process:
        shown = ", ".join(f"{k}={_short(v)}" for k, v in metrics.items() if k.startswith(("eval_", "train_loss")))
        accelerator.print(f"epoch {metrics['epoch']}: {shown}")


class StartupTimeline:
    """Where a trial's start-up went: timestamps reported with its first epoch (bench/overhead.py
    reads them). The trial driver and the Ray Train worker hand in the earlier ones."""

    def __init__(self, earlier: dict):
        self.stamps = {**earlier, "loop_started_at": time.time()}

    def mark(self, name: str) -> None:
        self.stamps[name] = time.time()

    def mark_once(self, name: str) -> None:
        self.stamps.setdefault(name, time.time())


def on_gpu(accelerator: Accelerator) -> bool:
    return accelerator.device.type == "cuda"


def eval_batch_size(hp: TrainSection, device: torch.device) -> int:
    """train.eval_batch_size, or by default 32 on the CPU and 128 on a GPU: evaluation keeps no
    activations for a backward pass, and small batches would leave a GPU idle."""
    return hp.eval_batch_size or (128 if device.type == "cuda" else 32)


def make_accelerator(config: Config) -> Accelerator:
    """The run's Accelerator, and on a GPU what keeps it busy: copies that do not block (from
    pinned memory, loader_options) and TF32 matmuls."""
    use_gpu = config.resources.gpus_per_worker > 0
    # cpu=True when no GPU is used: inside Ray Train workers that is what makes Accelerate
    # join the gloo process group Ray set up (without it every worker trains alone).
    accelerator = Accelerator(
        cpu=not use_gpu,
        mixed_precision=config.train.mixed_precision,
        gradient_accumulation_steps=config.train.gradient_accumulation_steps,
        dynamo_backend="inductor" if config.train.torch_compile else None,  # compiled in prepare()
        dataloader_config=DataLoaderConfiguration(non_blocking=use_gpu and torch.cuda.is_available()),
    )
    if on_gpu(accelerator):
        # fp32 matmuls on TF32 tensor cores (Ampere and later), off in PyTorch by default: fp32
        # fine-tuning runs several times faster at about fp32's accuracy.
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    return accelerator


def loader_options(config: Config, device: torch.device) -> dict:
    """On a GPU: batches in pinned host memory (copied without blocking, see non_blocking) and
    collated in worker processes when the trial has CPUs to spare, off the training step's path.
    On the CPU nothing changes: the training threads need every core the trial has."""
    if device.type != "cuda":
        return {}
    workers = min(4, max(0, int(config.resources.cpus_per_worker) - 1))
    return {"pin_memory": True, "num_workers": workers, "persistent_workers": workers > 0}


def free_previous_run() -> None:
    """A reused trial process may still hold the previous trial's model and optimizer: under
    mixed precision Accelerate wraps the model's forward in a reference cycle, which only the
    cycle collector frees. Collect it, give the cached GPU memory back, and start this run's
    peak statistics from zero (gpu_memory_peaks)."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def gpu_memory_peaks(device: torch.device) -> dict:
    """This run's GPU memory peaks: its tensors (allocated) and PyTorch's cache (reserved: what
    nvidia-smi shows of the process, less the CUDA context). How many trials fit on one GPU."""
    if device.type != "cuda":
        return {}
    return {
        "gpu_memory_peak_gib": torch.cuda.max_memory_allocated(device) / 2**30,
        "gpu_memory_reserved_peak_gib": torch.cuda.max_memory_reserved(device) / 2**30,
    }


def device_name(device: torch.device) -> str:
    """cuda:0, not cuda: Accelerate leaves the index out for a single GPU."""
    if device.type == "cuda" and device.index is None:
        return f"cuda:{torch.cuda.current_device()}"
    return str(device)


def ray_gpu_ids() -> dict:
    """The GPUs Ray gave this trial or worker (its share of one with fractional GPUs), by Ray's ids."""
    ray = running_ray()
    gpu_ids = ray.get_gpu_ids() if ray else []
    return {"gpu_ids": [str(gpu_id) for gpu_id in gpu_ids]} if gpu_ids else {}


def running_ray():
    """The ray module where this process runs under Ray, else None. Not imported for that: a
    process that never imported Ray (`raytune-ft train`) is not under it, and need not load it."""
    ray = sys.modules.get("ray")
    return ray if ray is not None and ray.is_initialized() else None


def open_tokenized(handle):
    """The tokenized DatasetDict from a cache folder, or from Ray's object store."""
    if isinstance(handle, (str, os.PathLike)):
        return load_tokenized(handle)
    import ray

    return ray.get(handle)


def _node_id() -> str:
    ray = running_ray()
    return ray.get_runtime_context().get_node_id() if ray else socket.gethostname()


def _short(value) -> str:
    return f"{value:.4f}" if isinstance(value, float) and math.isfinite(value) else str(value)
