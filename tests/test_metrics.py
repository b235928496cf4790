"""The offline GLUE metrics against values computed by hand."""

import pytest

from raytune_ft.training.metrics import GlueMetric


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


def test_matthews_correlation_by_hand():
    metric = GlueMetric(("matthews_correlation",))
    metric.add_batch(predictions=[1, 1, 0, 0], references=[1, 0, 0, 1])
    metric.add_batch(predictions=[1, 1], references=[1, 1])
    # The same TP=3 FP=1 FN=1 TN=1 as above:
    # (TP*TN - FP*FN) / sqrt((TP+FP)(TP+FN)(TN+FP)(TN+FN)) = (3 - 1) / sqrt(4*4*2*2) = 0.25
    assert metric.compute() == {"matthews_correlation": pytest.approx(0.25)}


def test_matthews_correlation_for_three_classes_by_hand():
    metric = GlueMetric(("matthews_correlation",))
    metric.add_batch(predictions=[0, 1, 2, 2], references=[0, 1, 2, 1])
    # Gorodkin's R_K from the confusion matrix: c = 3 correct of s = 4, true counts t = (1, 2, 1),
    # predicted counts p = (1, 1, 2): (c*s - t.p) / sqrt((s^2 - p.p)(s^2 - t.t))
    # = (12 - (1 + 2 + 2)) / sqrt((16 - 6)(16 - 6)) = 7 / 10
    assert metric.compute()["matthews_correlation"] == pytest.approx(0.7)


def test_matthews_correlation_is_zero_when_one_class_is_predicted():
    metric = GlueMetric(("matthews_correlation",))
    metric.add_batch(predictions=[1, 1, 1, 1], references=[0, 1, 1, 0])
    assert metric.compute() == {"matthews_correlation": 0.0}


def test_pearson_and_spearman_by_hand():
    metric = GlueMetric(("pearson", "spearmanr"))
    metric.add_batch(predictions=[1.0, 2.0], references=[2.0, 4.0])
    metric.add_batch(predictions=[3.0, 4.0], references=[5.0, 4.0])
    result = metric.compute()
    # Pearson: deviations x = (-1.5, -0.5, 0.5, 1.5), y = (-1.75, 0.25, 1.25, 0.25);
    # sum xy = 3.5, sum x^2 = 5, sum y^2 = 4.75: r = 3.5 / sqrt(23.75)
    assert result["pearson"] == pytest.approx(3.5 / 23.75**0.5)
    # Spearman: ranks (1, 2, 3, 4) and (1, 2.5, 4, 2.5) (the two 4.0 share ranks 2 and 3);
    # rank deviations (-1.5, -0.5, 0.5, 1.5) and (-1.5, 0, 1.5, 0): (2.25 + 0.75) / sqrt(5 * 4.5)
    assert result["spearmanr"] == pytest.approx(3.0 / 22.5**0.5)


def test_pearson_is_zero_for_constant_predictions():
    metric = GlueMetric(("pearson", "spearmanr"))
    metric.add_batch(predictions=[2.5, 2.5, 2.5], references=[1.0, 3.0, 4.0])
    assert metric.compute() == {"pearson": 0.0, "spearmanr": 0.0}


def test_metrics_agree_with_scipy_and_scikit_learn():
    stats = pytest.importorskip("scipy.stats")
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    np = pytest.importorskip("numpy")
    rng = np.random.default_rng(0)
    labels, guesses = rng.integers(0, 3, 200), rng.integers(0, 3, 200)
    scores, predicted = rng.normal(size=200).round(1), rng.normal(size=200).round(1)  # rounded: many ties
    classification = GlueMetric(("matthews_correlation",))
    classification.add_batch(predictions=guesses, references=labels)
    regression = GlueMetric(("pearson", "spearmanr"))
    regression.add_batch(predictions=predicted, references=scores)
    mcc = classification.compute()["matthews_correlation"]
    assert mcc == pytest.approx(sklearn_metrics.matthews_corrcoef(labels, guesses))
    result = regression.compute()
    # The metric stores float32, as the loop hands it model outputs.
    predicted, scores = predicted.astype("float32"), scores.astype("float32")
    assert result["pearson"] == pytest.approx(stats.pearsonr(predicted, scores)[0], abs=1e-6)
    assert result["spearmanr"] == pytest.approx(stats.spearmanr(predicted, scores)[0], abs=1e-6)


def test_label_and_score_metrics_do_not_mix():
    with pytest.raises(ValueError, match="one kind"):
        GlueMetric(("accuracy", "pearson"))
