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


def matthews_correlation(predictions: np.ndarray, references: np.ndarray) -> float:
    """Matthews correlation (CoLA), for any number of classes (Gorodkin's R_K).

    0.0 where it is undefined, e.g. when every prediction is the same class (as
    scikit-learn does): an early epoch that predicts one class scores like chance.
    """
    classes = np.union1d(predictions, references)
    confusion = np.zeros((len(classes), len(classes)), dtype=np.float64)
    np.add.at(confusion, (np.searchsorted(classes, references), np.searchsorted(classes, predictions)), 1)
    true_per_class, predicted_per_class = confusion.sum(axis=1), confusion.sum(axis=0)
    correct, total = np.trace(confusion), confusion.sum()
    covariance = correct * total - true_per_class @ predicted_per_class
    spread = np.sqrt(
        (total**2 - predicted_per_class @ predicted_per_class) * (total**2 - true_per_class @ true_per_class)
    )
    return float(covariance / spread) if spread > 0 else 0.0


def pearson(predictions: np.ndarray, references: np.ndarray) -> float:
    """Pearson's r (STS-B). 0.0 where a side is constant and r is undefined (see above)."""
    x = predictions.astype(np.float64) - predictions.mean()
    y = references.astype(np.float64) - references.mean()
    spread = np.sqrt((x @ x) * (y @ y))
    return float(x @ y / spread) if spread > 0 else 0.0


def spearman(predictions: np.ndarray, references: np.ndarray) -> float:
    """Spearman's rho: Pearson's r of the ranks, tied values sharing their mean rank."""
    return pearson(_ranks(predictions), _ranks(references))


def _ranks(values: np.ndarray) -> np.ndarray:
    order = np.argsort(values, kind="stable")
    _, first, counts = np.unique(values[order], return_index=True, return_counts=True)
    ranks = np.empty(len(values), dtype=np.float64)
    ranks[order] = np.repeat(first + (counts + 1) / 2, counts)  # 1-based mean rank of each tie group
    return ranks


CLASSIFICATION_METRICS = {"accuracy": accuracy, "f1": binary_f1, "matthews_correlation": matthews_correlation}
REGRESSION_METRICS = {"pearson": pearson, "spearmanr": spearman}
METRIC_FUNCTIONS = {**CLASSIFICATION_METRICS, **REGRESSION_METRICS}


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
