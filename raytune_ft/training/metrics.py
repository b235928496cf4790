"""GLUE metrics as an `evaluate` metric that needs no network.

`evaluate.load("glue", "mrpc")` downloads its script from the hub, which many machines
cannot reach, and it pulls in scipy and scikit-learn. This module defines the same metrics
inside the package with numpy alone, so the training loop keeps the course's
`metric.add_batch(...)` / `metric.compute()` shape offline.
"""

from __future__ import annotations

import datasets
import evaluate
import numpy as np

from raytune_ft.training.scores import (  # noqa: F401 (the metric functions' names here since 0.1)
    CLASSIFICATION_METRICS,
    METRIC_FUNCTIONS,
    REGRESSION_METRICS,
    accuracy,
    binary_f1,
    matthews_correlation,
    pearson,
    spearman,
)


class GlueMetric(evaluate.Metric):
    """Accumulates predictions batch by batch and computes the task's metrics.

    >>> metric = GlueMetric(("accuracy", "f1"))
    >>> metric.add_batch(predictions=[1, 0], references=[1, 1])
    >>> metric.compute()
    {'accuracy': 0.5, 'f1': 0.666...}

    Classification metrics take label ids; regression metrics (pearson, spearmanr) take
    scores. One metric object holds one kind.
    """

    def __init__(self, metric_names: tuple[str, ...], **kwargs):
        unknown = [m for m in metric_names if m not in METRIC_FUNCTIONS]
        if unknown:
            raise ValueError(f"unknown metric(s) {unknown}; supported: {list(METRIC_FUNCTIONS)}")
        self.is_regression = all(m in REGRESSION_METRICS for m in metric_names)
        if not self.is_regression and any(m in REGRESSION_METRICS for m in metric_names):
            raise ValueError(f"metrics {list(metric_names)} mix label ids and scores; use one kind")
        self.metric_names = tuple(metric_names)
        # keep_in_memory: no cache files under HF_HOME, nothing to clean up per epoch.
        kwargs.setdefault("keep_in_memory", True)
        super().__init__(config_name=",".join(self.metric_names), **kwargs)

    def _info(self) -> evaluate.MetricInfo:
        value_type = "float32" if self.is_regression else "int64"
        return evaluate.MetricInfo(
            description="GLUE metrics (" + ", ".join(self.metric_names) + ")",
            citation="Wang et al., GLUE: A Multi-Task Benchmark and Analysis Platform for NLU, 2019",
            inputs_description="predictions and references: label ids, or scores for regression",
            features=datasets.Features(
                {"predictions": datasets.Value(value_type), "references": datasets.Value(value_type)}
            ),
        )

    def _compute(self, predictions, references) -> dict[str, float]:
        predictions = np.asarray(predictions)
        references = np.asarray(references)
        return {name: METRIC_FUNCTIONS[name](predictions, references) for name in self.metric_names}
