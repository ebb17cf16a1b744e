"""Official metrics per task, checked against values computed by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from prunekit.data import compute_metrics, glue_task
from prunekit.data.tasks import custom_task


def onehot(preds, n=2):
    return np.eye(n)[preds]


def test_mrpc_reports_binary_f1_and_accuracy():
    # preds 1,1,0,0 vs labels 1,0,1,0: tp=1 fp=1 fn=1 -> f1 = 0.5
    metrics = compute_metrics(glue_task("mrpc"), onehot([1, 1, 0, 0]), np.array([1, 0, 1, 0]))
    assert metrics == {"f1": 0.5, "accuracy": 0.5}


def test_cola_matthews_correlation():
    preds, labels = [1, 1, 1, 0], [1, 1, 0, 0]
    tp, tn, fp, fn = 2, 1, 1, 0
    expected = (tp * tn - fp * fn) / math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    metrics = compute_metrics(glue_task("cola"), onehot(preds), np.array(labels))
    assert metrics["matthews_correlation"] == pytest.approx(expected)


def test_stsb_pearson_and_spearman_from_single_output():
    preds = np.array([[1.0], [2.0], [3.0], [10.0]])
    labels = np.array([1.0, 2.0, 3.0, 4.0])
    metrics = compute_metrics(glue_task("stsb"), preds, labels)
    assert metrics["spearman"] == pytest.approx(1.0)
    assert metrics["pearson"] == pytest.approx(np.corrcoef(preds[:, 0], labels)[0, 1])


def test_constant_regression_predictions_give_zero_correlation_not_nan():
    metrics = compute_metrics(glue_task("stsb"), np.ones((3, 1)), np.array([1.0, 2.0, 3.0]))
    assert metrics == {"pearson": 0.0, "spearman": 0.0}


def test_custom_classification_and_regression_metrics():
    three = custom_task(("t",), "y", ("a", "b", "c"))
    metrics = compute_metrics(three, onehot([0, 1, 2, 2], 3), np.array([0, 1, 2, 1]))
    assert metrics["accuracy"] == 0.75
    assert metrics["macro_f1"] == pytest.approx((1 + 2 / 3 + 2 / 3) / 3)
    regression = custom_task(("t",), "y", None)
    metrics = compute_metrics(regression, np.array([[1.0], [3.0]]), np.array([2.0, 3.0]))
    assert metrics["mse"] == pytest.approx(0.5)
