"""GLUE metrics with scikit-learn: accuracy for every task, plus F1 (MRPC, QQP) or Matthews (CoLA)."""
from __future__ import annotations

import numpy as np
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

from .glue import get_task


def compute(task: str, labels, predictions) -> dict[str, float]:
    labels, predictions = np.asarray(labels), np.asarray(predictions)
    out = {"accuracy": float(accuracy_score(labels, predictions))}
    metric = get_task(task).metric
    if metric == "f1":
        out["f1"] = float(f1_score(labels, predictions))
    elif metric == "matthews":
        out["matthews"] = float(matthews_corrcoef(labels, predictions))
    return out


def headline(task: str, metrics: dict) -> float:
    """The task's GLUE metric from a metrics dict (plain or with a 'val_' prefix)."""
    name = get_task(task).metric
    return metrics.get(name, metrics.get(f"val_{name}"))
