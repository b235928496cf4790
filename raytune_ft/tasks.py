"""The task registry: what each task's examples look like and how it is scored.

A task says which text columns a model reads (one sentence or a pair), what it predicts
(label names, or one score for regression), which metrics judge it, and which validation
splits it is evaluated on. Data loading (data.py) turns every source into these column
names; the metric (metrics.py) reads `metric_names`; the training loop reports
`eval_<metric><suffix>` for every evaluation split.

The nine GLUE tasks use the column and label names of the hub copy (nyu-mll/glue), and
each knows how the original GLUE download (download_glue_data.py) lays out its files.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

GLUE_HUB_ID = "nyu-mll/glue"

# Each evaluation split reports its metrics under a suffix: eval_accuracy for the main one,
# eval_accuracy_mm for MNLI's mismatched dev set (the suffix transformers' run_glue.py uses).
EVAL_SUFFIXES = {"validation": "", "validation_mismatched": "_mm"}

GLUE_SPLIT_FILES = {"train": "train.tsv", "validation": "dev.tsv"}


@dataclass(frozen=True)
class GlueLayout:
    """A task's files in the original GLUE download: tab-separated, no quoting."""

    folder: str  # $GLUE_DIR/<folder>
    columns: Mapping[str, str]  # our column (text columns and "label") -> the file's column
    files: Mapping[str, str] = field(default_factory=lambda: dict(GLUE_SPLIT_FILES))  # our split -> file name
    # Column names for files without a header line (CoLA's train and dev); None: the first
    # line is the header.
    headerless_names: tuple[str, ...] | None = None


@dataclass(frozen=True)
class Task:
    name: str
    text_columns: tuple[str, ...]  # one column: single sentence; two: a sentence pair
    label_names: tuple[str, ...]  # index = label id; empty for regression
    metric_names: tuple[str, ...]  # what metrics.GlueMetric computes for this task
    main_metric: str  # the default search metric
    is_regression: bool = False  # one score per example (STS-B), MSE loss
    eval_splits: tuple[str, ...] = ("validation",)  # evaluated every epoch, keys of EVAL_SUFFIXES
    hub_subset: str | None = None  # config name on the hub (nyu-mll/glue)
    hub_splits: Mapping[str, str] = field(default_factory=dict)  # our split -> hub split, where they differ
    glue: GlueLayout | None = None

    @property
    def num_labels(self) -> int:
        return 1 if self.is_regression else len(self.label_names)

    @property
    def is_pair(self) -> bool:
        return len(self.text_columns) == 2

    @property
    def reported_metrics(self) -> tuple[str, ...]:
        """Every metric the loop reports (without `eval_`): one set per evaluation split."""
        return tuple(name + EVAL_SUFFIXES[split] for split in self.eval_splits for name in self.metric_names)

    @property
    def reported_losses(self) -> tuple[str, ...]:
        """The loop's dev-set losses (without `eval_`): loss, and loss_mm for MNLI's mismatched set."""
        return tuple("loss" + EVAL_SUFFIXES[split] for split in self.eval_splits)


def _glue(
    name,
    text_columns,
    label_names,
    metric_names,
    main_metric,
    folder,
    file_columns,
    *,
    files=GLUE_SPLIT_FILES,
    headerless_names=None,
    **task_options,
) -> Task:
    """A GLUE task; file_columns: the GLUE files' column for each text column, then the label's."""
    columns = dict(zip([*text_columns, "label"], file_columns))
    return Task(
        name,
        tuple(text_columns),
        tuple(label_names),
        tuple(metric_names),
        main_metric,
        hub_subset=name,
        glue=GlueLayout(folder, columns, files, headerless_names),
        **task_options,
    )


GLUE_TASKS: dict[str, Task] = {
    task.name: task
    for task in (
        _glue(
            "cola",
            ["sentence"],
            ["unacceptable", "acceptable"],
            ["matthews_correlation"],
            "matthews_correlation",
            "CoLA",
            ["sentence", "label"],
            # train.tsv and dev.tsv have no header: source, label, the author's mark, sentence.
            headerless_names=("source", "label", "original_label", "sentence"),
        ),
        _glue("sst2", ["sentence"], ["negative", "positive"], ["accuracy"], "accuracy", "SST-2", ["sentence", "label"]),
        _glue(
            "mrpc",
            ["sentence1", "sentence2"],
            ["not_equivalent", "equivalent"],
            ["accuracy", "f1"],
            "f1",
            "MRPC",
            ["#1 String", "#2 String", "Quality"],
        ),
        # Scores from 0 to 5; GLUE reports Pearson and Spearman, the search defaults to Pearson.
        _glue(
            "stsb",
            ["sentence1", "sentence2"],
            [],
            ["pearson", "spearmanr"],
            "pearson",
            "STS-B",
            ["sentence1", "sentence2", "score"],
            is_regression=True,
        ),
        _glue(
            "qqp",
            ["question1", "question2"],
            ["not_duplicate", "duplicate"],
            ["accuracy", "f1"],
            "f1",
            "QQP",
            ["question1", "question2", "is_duplicate"],
        ),
        # Evaluated on both dev sets: matched (eval_accuracy) and mismatched (eval_accuracy_mm).
        _glue(
            "mnli",
            ["premise", "hypothesis"],
            ["entailment", "neutral", "contradiction"],
            ["accuracy"],
            "accuracy",
            "MNLI",
            ["sentence1", "sentence2", "gold_label"],
            eval_splits=("validation", "validation_mismatched"),
            hub_splits={"validation": "validation_matched"},
            files={
                "train": "train.tsv",
                "validation": "dev_matched.tsv",
                "validation_mismatched": "dev_mismatched.tsv",
            },
        ),
        _glue(
            "qnli",
            ["question", "sentence"],
            ["entailment", "not_entailment"],
            ["accuracy"],
            "accuracy",
            "QNLI",
            ["question", "sentence", "label"],
        ),
        _glue(
            "rte",
            ["sentence1", "sentence2"],
            ["entailment", "not_entailment"],
            ["accuracy"],
            "accuracy",
            "RTE",
            ["sentence1", "sentence2", "label"],
        ),
        _glue(
            "wnli",
            ["sentence1", "sentence2"],
            ["not_entailment", "entailment"],
            ["accuracy"],
            "accuracy",
            "WNLI",
            ["sentence1", "sentence2", "label"],
        ),
    )
}

TASK_ALIASES = {"sst-2": "sst2", "sts-b": "stsb"}


def custom_task(text_columns: list[str], label_names: list[str] | None, regression: bool = False) -> Task:
    """A user's own task: columns and labels come from the config (or, for labels, the data).

    Until the labels are read from the data (data.label_names not given), label_names is
    empty and the metrics are those of a binary task.
    """
    if regression:
        return Task("custom", tuple(text_columns), (), ("pearson", "spearmanr"), "pearson", is_regression=True)
    label_names = tuple(str(n) for n in label_names or ())
    metric_names = ("accuracy", "f1") if len(label_names) in (0, 2) else ("accuracy",)
    return Task("custom", tuple(text_columns), label_names, metric_names, "accuracy")


def known_task_names() -> list[str]:
    return sorted(GLUE_TASKS) + ["custom"]


def get_glue_task(name: str) -> Task:
    key = TASK_ALIASES.get(name.lower(), name.lower())
    if key not in GLUE_TASKS:
        raise KeyError(name)
    return GLUE_TASKS[key]
