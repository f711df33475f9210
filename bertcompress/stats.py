"""Statistics for comparing variants: mean ± std over seeds and a paired bootstrap CI of (variant − dense).

Single runs lie: a variant is compared with the dense model seed by seed on the same validation examples. The
bootstrap resamples examples (the same indices for both models and every seed pair) with scipy.stats.bootstrap
(paired, percentile method), and the statistic is the task metric's difference averaged over the seed pairs.
"""
from __future__ import annotations

import numpy as np
from scipy import stats

from .glue import get_task


def metric_values(task: str, labels: np.ndarray, preds: np.ndarray) -> np.ndarray:
    """The task's GLUE metric of preds (..., n) against labels (..., n), vectorised over the leading axes:
    accuracy, binary F1 or Matthews correlation, equal to scikit-learn's (tests/test_stats.py)."""
    labels, preds = np.asarray(labels), np.asarray(preds)
    name = get_task(task).metric
    if name == "accuracy":
        return (labels == preds).mean(-1)
    tp = ((preds == 1) & (labels == 1)).sum(-1).astype(float)
    fp = ((preds == 1) & (labels == 0)).sum(-1).astype(float)
    fn = ((preds == 0) & (labels == 1)).sum(-1).astype(float)
    tn = ((preds == 0) & (labels == 0)).sum(-1).astype(float)
    with np.errstate(divide="ignore", invalid="ignore"):
        if name == "f1":
            return np.nan_to_num(2 * tp / (2 * tp + fp + fn))
        denom = np.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
        return np.nan_to_num((tp * tn - fp * fn) / denom)  # sklearn's convention: 0 when undefined


def mean_std(values) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof=1; 0 for a single value)."""
    v = np.asarray(values, dtype=float)
    return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0


def paired_bootstrap(task: str, labels, dense, variant, n_resamples: int = 2000, confidence: float = 0.95,
                     seed: int = 0) -> dict:
    """(variant − dense) of the task metric, averaged over seed pairs, with a paired bootstrap CI.

    labels: (n,); dense, variant: (seeds, n) predictions of the same examples (row i of both = seed i).
    Returns {'delta', 'low', 'high', 'verdict'}: verdict 'within noise' when the interval holds 0.
    """
    labels = np.asarray(labels)
    dense, variant = np.atleast_2d(dense), np.atleast_2d(variant)
    if dense.shape != variant.shape or dense.shape[-1] != labels.shape[-1]:
        raise ValueError(f"paired samples differ in shape: labels {labels.shape}, dense {dense.shape}, "
                         f"variant {variant.shape}")

    seeds = len(dense)

    def delta(y, *preds, axis=-1):  # vectorised: y and each seed's predictions (..., n) after resampling
        d, v = np.stack(preds[:seeds], -2), np.stack(preds[seeds:], -2)
        y = np.expand_dims(y, -2)
        return (metric_values(task, y, v) - metric_values(task, y, d)).mean(-1)

    samples = (labels, *dense, *variant)  # one sample per seed: paired resampling picks the same examples
    observed = float(delta(*samples))
    if (dense == variant).all():  # no example differs: every resample gives 0
        low = high = observed
    else:
        ci = stats.bootstrap(samples, delta, paired=True, vectorized=True, n_resamples=n_resamples,
                             confidence_level=confidence, method="percentile",
                             rng=np.random.default_rng(seed)).confidence_interval
        low, high = float(ci.low), float(ci.high)
    verdict = "within noise" if low <= 0 <= high else ("better" if low > 0 else "worse")
    return {"delta": observed, "low": low, "high": high, "verdict": verdict}
