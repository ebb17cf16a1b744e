"""Each task's official metric(s), computed with scikit-learn and scipy."""

from __future__ import annotations

import numpy as np
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef, mean_squared_error

from prunekit.data.tasks import TaskSpec


def _correlation(fn, preds: np.ndarray, labels: np.ndarray) -> float:
    if np.ptp(preds) == 0 or np.ptp(labels) == 0:
        return 0.0  # constant predictions: correlation is undefined, report no correlation
    return float(fn(preds, labels)[0])


METRICS = {
    "accuracy": lambda p, y: float(accuracy_score(y, p)),
    "f1": lambda p, y: float(f1_score(y, p, average="binary", zero_division=0)),
    "macro_f1": lambda p, y: float(f1_score(y, p, average="macro", zero_division=0)),
    "matthews_correlation": lambda p, y: float(matthews_corrcoef(y, p)),
    "pearson": lambda p, y: _correlation(pearsonr, p, y),
    "spearman": lambda p, y: _correlation(spearmanr, p, y),
    "mse": lambda p, y: float(mean_squared_error(y, p)),
}


def predictions_from_logits(task: TaskSpec, logits: np.ndarray) -> np.ndarray:
    """Class ids (argmax) for classification, the single output for regression."""
    logits = np.asarray(logits)
    return logits.reshape(-1) if task.is_regression else logits.argmax(axis=-1)


def compute_metrics(task: TaskSpec, logits: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """``{metric name: value}`` for all of ``task``'s metrics.

    >>> from prunekit.data.tasks import glue_task
    >>> compute_metrics(glue_task("sst2"), np.array([[0.1, 0.9], [0.8, 0.2]]), np.array([1, 1]))
    {'accuracy': 0.5}
    """
    preds = predictions_from_logits(task, logits)
    labels = np.asarray(labels)
    return {name: METRICS[name](preds, labels) for name in task.metrics}
