"""GLUE metrics: accuracy, F1 (MRPC, QQP), Matthews (CoLA) with scikit-learn; Pearson and Spearman (STS-B) with
scipy; the task's GLUE score (the mean of its metrics for MRPC, QQP and STS-B). Plus the constant baseline
every variant is shown beside: the majority class, or the mean score."""

from __future__ import annotations

import numpy as np
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

from .glue import get_task


def _correlation(fn, labels, predictions) -> float:
    """scipy's correlation; 0 where it is undefined (constant predictions), like sklearn's MCC."""
    if np.ptp(predictions) == 0 or np.ptp(labels) == 0:
        return 0.0
    return float(fn(labels, predictions).statistic)


SCORES = {
    "accuracy": lambda y, p: float(accuracy_score(y, p)),
    "f1": lambda y, p: float(f1_score(y, p)),
    "matthews": lambda y, p: float(matthews_corrcoef(y, p)),
    "pearson": lambda y, p: _correlation(pearsonr, y, p),
    "spearman": lambda y, p: _correlation(spearmanr, y, p),
}


def compute(task: str, labels, predictions) -> dict[str, float]:
    """Every GLUE metric of the task, headline first: {'score': .., 'f1': .., 'accuracy': ..} for MRPC (score:
    GLUE's, their mean), score, Pearson and Spearman for STS-B, {'accuracy': ..} for SST-2."""
    labels, predictions, spec = np.asarray(labels), np.asarray(predictions), get_task(task)
    out = {name: SCORES[name](labels, predictions) for name in spec.components}
    return {"score": float(np.mean(list(out.values())))} | out if spec.averaged else out


def headline(task: str, metrics: dict) -> float:
    """The task's GLUE metric from a metrics dict (plain or with a 'val_' prefix)."""
    name = get_task(task).metric
    return metrics.get(name, metrics.get(f"val_{name}"))


def constant(task: str, labels) -> np.ndarray:
    """The constant predictor: the majority class of labels (lowest on a tie), or their mean score."""
    labels = np.asarray(labels)
    if get_task(task).regression:
        return np.full(labels.shape, labels.mean(), dtype=np.float64)
    values, counts = np.unique(labels, return_counts=True)
    return np.full(labels.shape, values[counts.argmax()])
