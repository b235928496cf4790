"""The offline GLUE metrics against values computed by hand."""

import pytest

from raytune_ft.metrics import GlueMetric


def test_mrpc_accuracy_and_f1_by_hand():
    metric = GlueMetric(("accuracy", "f1"))
    # Two batches, as the evaluation loop adds them.
    metric.add_batch(predictions=[1, 1, 0, 0], references=[1, 0, 0, 1])
    metric.add_batch(predictions=[1, 1], references=[1, 1])
    result = metric.compute()
    # TP=3 (idx 0,4,5) FP=1 (idx 1) FN=1 (idx 3) TN=1: accuracy 4/6, F1 = 2*3/(2*3+1+1) = 0.75
    assert result == {"accuracy": pytest.approx(4 / 6), "f1": pytest.approx(0.75)}


def test_sst2_accuracy_only():
    metric = GlueMetric(("accuracy",))
    metric.add_batch(predictions=[0, 1, 1, 1, 0], references=[0, 1, 0, 1, 1])
    assert metric.compute() == {"accuracy": pytest.approx(0.6)}


def test_f1_is_zero_without_true_positives():
    metric = GlueMetric(("accuracy", "f1"))
    metric.add_batch(predictions=[0, 0, 0], references=[1, 0, 0])
    assert metric.compute() == {"accuracy": pytest.approx(2 / 3), "f1": 0.0}


def test_compute_starts_afresh_each_epoch():
    metric = GlueMetric(("accuracy",))
    metric.add_batch(predictions=[0, 0], references=[1, 1])
    assert metric.compute()["accuracy"] == 0.0
    metric.add_batch(predictions=[1, 1], references=[1, 1])
    assert metric.compute()["accuracy"] == 1.0


def test_unknown_metric_is_refused():
    with pytest.raises(ValueError, match="unknown metric"):
        GlueMetric(("bleu",))
