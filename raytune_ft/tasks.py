"""The task registry: what each task's examples look like and how it is scored.

A task says which text columns a model reads (one sentence or a pair), how many labels
it predicts, their names, and which metrics judge it. Data loading (data.py) turns
every source into these column names; the metric (metrics.py) reads `metric_names`.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Task:
    name: str
    text_columns: tuple[str, ...]  # one column: single sentence; two: a sentence pair
    label_names: tuple[str, ...]  # index = label id
    metric_names: tuple[str, ...]  # what metrics.GlueMetric computes for this task
    main_metric: str  # the default search metric
    hub_subset: str | None = None  # config name on the hub (nyu-mll/glue)
    glue_folder: str | None = None  # folder name in the original GLUE download ($GLUE_DIR/<folder>)

    @property
    def num_labels(self) -> int:
        return len(self.label_names)

    @property
    def is_pair(self) -> bool:
        return len(self.text_columns) == 2


GLUE_HUB_ID = "nyu-mll/glue"

GLUE_TASKS: dict[str, Task] = {
    "mrpc": Task(
        name="mrpc",
        text_columns=("sentence1", "sentence2"),
        label_names=("not_equivalent", "equivalent"),
        metric_names=("accuracy", "f1"),
        main_metric="f1",
        hub_subset="mrpc",
        glue_folder="MRPC",
    ),
    "sst2": Task(
        name="sst2",
        text_columns=("sentence",),
        label_names=("negative", "positive"),
        metric_names=("accuracy",),
        main_metric="accuracy",
        hub_subset="sst2",
        glue_folder="SST-2",
    ),
}

TASK_ALIASES = {"sst-2": "sst2"}


def custom_task(text_columns: list[str], label_names: list[str]) -> Task:
    """A user's own classification task: columns and labels come from the config."""
    metric_names = ("accuracy", "f1") if len(label_names) == 2 else ("accuracy",)
    return Task(
        name="custom",
        text_columns=tuple(text_columns),
        label_names=tuple(str(n) for n in label_names),
        metric_names=metric_names,
        main_metric="accuracy",
    )


def known_task_names() -> list[str]:
    return sorted(GLUE_TASKS) + ["custom"]


def get_glue_task(name: str) -> Task:
    key = TASK_ALIASES.get(name.lower(), name.lower())
    if key not in GLUE_TASKS:
        raise KeyError(name)
    return GLUE_TASKS[key]
