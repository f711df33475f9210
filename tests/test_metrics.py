"""GLUE metrics: known values, and equality with scikit-learn on a real model's predictions."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

from bertcompress import metrics


def test_known_values():
    labels, preds = [1, 1, 1, 0, 0, 0, 1, 0], [1, 1, 0, 0, 0, 1, 1, 1]
    tp, tn, fp, fn = 3, 2, 2, 1
    m = metrics.compute("mrpc", labels, preds)
    assert m["accuracy"] == pytest.approx(5 / 8)
    assert m["f1"] == pytest.approx(2 * tp / (2 * tp + fp + fn))
    mcc = (tp * tn - fp * fn) / math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    assert metrics.compute("cola", labels, preds)["matthews"] == pytest.approx(mcc)
    assert set(metrics.compute("sst2", labels, preds)) == {"accuracy"}


def test_the_headline_is_glues_score():
    """GLUE scores MRPC and QQP by the mean of F1 and accuracy, STS-B by the mean of Pearson and Spearman, CoLA by
    MCC alone: a model that keeps F1 by leaning to the positive class loses half its accuracy drop."""
    from bertcompress.glue import get_task
    from bertcompress.stats import metric_values

    labels, preds = [1, 1, 1, 0, 0, 0, 1, 0], [1, 1, 1, 1, 1, 1, 1, 0]  # leans positive: F1 8/11, accuracy 5/8
    m = metrics.compute("mrpc", labels, preds)
    assert list(m) == ["score", "f1", "accuracy"] and get_task("mrpc").metric == "score"
    assert m["score"] == pytest.approx((8 / 11 + 5 / 8) / 2) == metrics.headline("mrpc", m)
    assert metric_values("mrpc", np.array([labels] * 2), np.array([preds] * 2)).tolist() == [m["score"]] * 2
    s = metrics.compute("stsb", [0.0, 1.0, 2.5, 4.0], [0.5, 0.7, 3.0, 3.5])
    assert s["score"] == pytest.approx((s["pearson"] + s["spearman"]) / 2) and list(s)[0] == "score"
    assert get_task("cola").metric == "matthews" and get_task("sst2").metric == "accuracy"
    assert get_task("qqp").metric == "score"


def test_run_metrics_equal_sklearn_on_its_predictions(tiny_run, tiny_mrpc):
    from bertcompress.loop import predict
    from bertcompress.model import load_model
    from bertcompress.tokenize import Encoded

    out, result = tiny_run
    val = Encoded.load(tiny_mrpc["validation"])
    _, preds = predict(load_model(str(out), 2), val)
    assert result["val_accuracy"] == pytest.approx(accuracy_score(val.labels, preds), abs=1e-12)
    assert result["val_f1"] == pytest.approx(f1_score(val.labels, preds), abs=1e-12)
    assert metrics.compute("cola", val.labels, preds)["matthews"] == matthews_corrcoef(val.labels, preds)
    assert np.isfinite(result["val_loss"])
