"""The GLUE metrics as plain functions of predictions and references, with numpy alone: what
the training loop's metric (metrics.py) computes each epoch, and what the report recomputes on
resampled dev examples (report/baseline.py) without importing evaluate or datasets."""

from __future__ import annotations

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
