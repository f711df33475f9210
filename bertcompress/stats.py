"""Statistics for comparing variants: mean ± std over seeds, a paired bootstrap CI of (variant − dense), and
whether a variant collapsed to the constant predictor (the majority class; STS-B: the mean score).

Single runs lie: a variant is compared with the dense model seed by seed on the same validation examples. The
bootstrap resamples examples (the same indices for both models and every seed pair) with scipy.stats.bootstrap
(paired, percentile method), and the statistic is the task metric's difference averaged over the seed pairs.
"""

from __future__ import annotations

import numpy as np
from scipy import stats

from . import metrics
from .glue import get_task


def _pearson(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    x, y = x - x.mean(-1, keepdims=True), y - y.mean(-1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.nan_to_num((x * y).sum(-1) / np.sqrt((x * x).sum(-1) * (y * y).sum(-1)))  # constant: 0


def metric_values(task: str, labels: np.ndarray, preds: np.ndarray, name: str | None = None) -> np.ndarray:
    """A GLUE metric (default: the task's headline) of preds (..., n) against labels (..., n), vectorised over
    the leading axes: accuracy, binary F1, Matthews, Pearson or Spearman, equal to scikit-learn's and scipy's
    (tests/test_stats.py)."""
    labels, preds = np.asarray(labels), np.asarray(preds)
    name = name or get_task(task).metric
    if name == "score":  # GLUE's: the mean of the task's metrics
        return np.mean([metric_values(task, labels, preds, c) for c in get_task(task).components], axis=0)
    if name == "pearson":
        return _pearson(labels.astype(float), preds.astype(float))
    if name == "spearman":
        return _pearson(stats.rankdata(labels, axis=-1), stats.rankdata(preds, axis=-1))
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


def _percentile_ci(samples: tuple, statistic, n_resamples: int, confidence: float, seed: int) -> tuple[float, float]:
    """scipy's paired, vectorised percentile bootstrap of statistic over samples: (low, high)."""
    ci = stats.bootstrap(
        samples,
        statistic,
        paired=True,
        vectorized=True,
        n_resamples=n_resamples,
        confidence_level=confidence,
        method="percentile",
        rng=np.random.default_rng(seed),
    ).confidence_interval
    return float(ci.low), float(ci.high)


def interval(task: str, labels, preds, n_resamples: int = 1000, confidence: float = 0.95, seed: int = 0) -> dict:
    """The task's headline metric of one model's predictions with a percentile bootstrap CI over examples:
    {'value', 'low', 'high', 'confidence', 'examples'}."""
    labels, preds = np.asarray(labels), np.asarray(preds)
    low, high = _percentile_ci(
        (labels, preds), lambda y, p, axis=-1: metric_values(task, y, p), n_resamples, confidence, seed
    )
    value = float(metric_values(task, labels, preds))
    return {"value": value, "low": low, "high": high, "confidence": confidence, "examples": int(len(labels))}


def paired_bootstrap(
    task: str,
    labels,
    dense,
    variant,
    n_resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
    metric: str | None = None,
) -> dict:
    """(variant − dense) of the task metric (or `metric`), averaged over seed pairs, with a paired bootstrap CI.

    labels: (n,); dense, variant: (seeds, n) predictions of the same examples (row i of both = seed i).
    Returns {'delta', 'low', 'high', 'verdict'}: verdict 'within noise' when the interval holds 0.
    """
    labels = np.asarray(labels)
    dense, variant = np.atleast_2d(dense), np.atleast_2d(variant)
    if dense.shape != variant.shape or dense.shape[-1] != labels.shape[-1]:
        raise ValueError(
            f"paired samples differ in shape: labels {labels.shape}, dense {dense.shape}, variant {variant.shape}"
        )

    seeds = len(dense)

    def delta(y, *preds, axis=-1):  # vectorised: y and each seed's predictions (..., n) after resampling
        d, v = np.stack(preds[:seeds], -2), np.stack(preds[seeds:], -2)
        y = np.expand_dims(y, -2)
        return (metric_values(task, y, v, metric) - metric_values(task, y, d, metric)).mean(-1)

    samples = (labels, *dense, *variant)  # one sample per seed: paired resampling picks the same examples
    observed = float(delta(*samples))
    if (dense == variant).all():  # no example differs: every resample gives 0
        low = high = observed
    else:
        low, high = _percentile_ci(samples, delta, n_resamples, confidence, seed)
    verdict = "within noise" if low <= 0 <= high else ("better" if low > 0 else "worse")
    return {"delta": observed, "low": low, "high": high, "verdict": verdict}


def collapse(task: str, labels, predictions, n_resamples: int = 2000) -> dict:
    """Did predictions (seeds, n) collapse to the constant predictor (metrics.constant)? Yes when one class is
    over 95 % of them (regression: their spread is under 5 % of the labels'), or when any of the task's
    metrics is not above the constant's (the paired bootstrap's 95 % interval of the difference reaches 0).
    Returns {'collapsed', 'verdict', 'why'}."""
    labels, preds, spec = np.asarray(labels), np.atleast_2d(np.asarray(predictions)), get_task(task)
    verdict = "collapsed to the mean score" if spec.regression else "collapsed to the majority class"
    if spec.regression:
        spread = float(preds.std(-1).mean() / max(labels.std(), 1e-12))
        why = f"prediction spread {spread:.3f} of the labels'" if spread < 0.05 else ""
    else:
        share = max(float((preds == c).mean()) for c in np.unique(preds))
        why = f"{share:.1%} of predictions are one class" if share > 0.95 else ""
    const = np.broadcast_to(metrics.constant(task, labels), preds.shape)
    for name in spec.metrics:
        if why:
            break
        ci = paired_bootstrap(task, labels, const, preds, n_resamples, metric=name)
        if ci["low"] <= 0:
            why = f"{name} {ci['delta']:+.4f} [{ci['low']:+.4f}, {ci['high']:+.4f}] vs the constant predictor"
    return {"collapsed": bool(why), "verdict": verdict if why else "above the constant predictor", "why": why}
