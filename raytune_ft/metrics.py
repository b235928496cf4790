"""GLUE metrics as an `evaluate` metric that needs no network.

`evaluate.load("glue", "mrpc")` downloads its script from the hub, which many machines
cannot reach. This module defines the same metrics inside the package, so the training
loop keeps the course's `metric.add_batch(...)` / `metric.compute()` shape offline.
"""

from __future__ import annotations

import datasets
import evaluate
import numpy as np

SUPPORTED_METRICS = ("accuracy", "f1")


def accuracy(predictions: np.ndarray, references: np.ndarray) -> float:
    return float((predictions == references).mean())


def binary_f1(predictions: np.ndarray, references: np.ndarray) -> float:
    """F1 of the positive class (label 1), as GLUE reports it for MRPC and QQP."""
    true_pos = int(((predictions == 1) & (references == 1)).sum())
    false_pos = int(((predictions == 1) & (references != 1)).sum())
    false_neg = int(((predictions != 1) & (references == 1)).sum())
    if true_pos == 0:
        return 0.0
    return 2 * true_pos / (2 * true_pos + false_pos + false_neg)


METRIC_FUNCTIONS = {"accuracy": accuracy, "f1": binary_f1}


class GlueMetric(evaluate.Metric):
    """Accumulates predictions batch by batch and computes the task's metrics.

    >>> metric = GlueMetric(("accuracy", "f1"))
    >>> metric.add_batch(predictions=[1, 0], references=[1, 1])
    >>> metric.compute()
    {'accuracy': 0.5, 'f1': 0.666...}
    """

    def __init__(self, metric_names: tuple[str, ...], **kwargs):
        unknown = [m for m in metric_names if m not in METRIC_FUNCTIONS]
        if unknown:
            raise ValueError(f"unknown metric(s) {unknown}; supported: {list(METRIC_FUNCTIONS)}")
        self.metric_names = tuple(metric_names)
        # keep_in_memory: no cache files under HF_HOME, nothing to clean up per epoch.
        kwargs.setdefault("keep_in_memory", True)
        super().__init__(config_name=",".join(self.metric_names), **kwargs)

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description="GLUE classification metrics (" + ", ".join(self.metric_names) + ")",
            citation="Wang et al., GLUE: A Multi-Task Benchmark and Analysis Platform for NLU, 2019",
            inputs_description="predictions and references: integer label ids",
            features=datasets.Features(
                {"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}
            ),
        )

    def _compute(self, predictions, references) -> dict[str, float]:
        predictions = np.asarray(predictions)
        references = np.asarray(references)
        return {name: METRIC_FUNCTIONS[name](predictions, references) for name in self.metric_names}
