"""Statistics of the report: vectorised GLUE metrics equal scikit-learn's, mean ± std, and the paired bootstrap
interval of (variant − dense) on samples whose interval is known."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

from bertcompress import stats


def glue_score(y, p):  # MRPC's: the mean of F1 and accuracy
    return (f1_score(y, p) + accuracy_score(y, p)) / 2


@pytest.mark.parametrize(
    "task,sk", [("sst2", accuracy_score), ("mrpc", glue_score), ("qqp", glue_score), ("cola", matthews_corrcoef)]
)
def test_metric_values_equal_scikit_learn(task, sk):
    rng = np.random.default_rng(0)
    labels, preds = rng.integers(0, 2, 300), rng.integers(0, 2, (4, 300))
    preds[3] = 1  # a constant prediction: Matthews is 0 by scikit-learn's convention
    expected = [sk(labels, p) for p in preds]
    assert stats.metric_values(task, labels, preds) == pytest.approx(expected, abs=1e-12)
    if task == "mrpc":
        assert stats.metric_values(task, labels, preds, "f1") == pytest.approx([f1_score(labels, p) for p in preds])


def test_mean_std_is_the_sample_std():
    assert stats.mean_std([0.8, 0.82, 0.84]) == pytest.approx((0.82, 0.02))
    assert stats.mean_std([0.7]) == (0.7, 0.0)


def test_identical_predictions_give_a_zero_interval():
    rng = np.random.default_rng(1)
    labels, preds = rng.integers(0, 2, 200), rng.integers(0, 2, (3, 200))
    ci = stats.paired_bootstrap("mrpc", labels, preds, preds.copy())
    assert (ci["delta"], ci["low"], ci["high"], ci["verdict"]) == (0.0, 0.0, 0.0, "within noise")


def test_known_interval_of_a_paired_accuracy_difference():
    # the variant is right on all 400 examples, dense on exactly half: the accuracy difference is the mean of
    # 400 paired 0/1 differences with p = 0.5, so the bootstrap interval is 0.5 ± 1.96·sqrt(0.25/400) = 0.5 ± 0.049
    labels = np.zeros(400, dtype=int)
    dense = np.r_[np.zeros(200, dtype=int), np.ones(200, dtype=int)][None]
    ci = stats.paired_bootstrap("sst2", labels, dense, np.zeros((1, 400), dtype=int), n_resamples=20000)
    assert ci["delta"] == 0.5 and ci["verdict"] == "better"
    assert ci["low"] == pytest.approx(0.451, abs=0.006) and ci["high"] == pytest.approx(0.549, abs=0.006)
    worse = stats.paired_bootstrap("sst2", labels, np.zeros((1, 400), dtype=int), dense, n_resamples=2000)
    assert worse["verdict"] == "worse" and worse["high"] < 0


def test_pairs_are_by_seed_and_the_statistic_is_their_mean():
    rng = np.random.default_rng(2)
    labels = rng.integers(0, 2, 300)
    dense, variant = rng.integers(0, 2, (2, 300)), rng.integers(0, 2, (2, 300))
    ci = stats.paired_bootstrap("mrpc", labels, dense, variant, n_resamples=500)
    per_seed = [glue_score(labels, v) - glue_score(labels, d) for d, v in zip(dense, variant)]
    assert ci["delta"] == pytest.approx(np.mean(per_seed), abs=1e-12) and ci["low"] < ci["delta"] < ci["high"]
    swapped = stats.paired_bootstrap("mrpc", labels, dense[::-1], variant[::-1], n_resamples=500)
    assert swapped["delta"] == pytest.approx(ci["delta"])
    with pytest.raises(ValueError, match="differ in shape"):
        stats.paired_bootstrap("mrpc", labels, dense, variant[:1])


@pytest.mark.parametrize("name", ["pearson", "spearman"])
def test_vectorised_correlations_equal_scipy(name):
    from scipy.stats import pearsonr, spearmanr

    rng = np.random.default_rng(3)
    labels = np.round(rng.uniform(0, 5, 250), 1)  # ties, as STS-B's scores have
    preds = labels + rng.normal(0, 1.5, (3, 250))
    fn = pearsonr if name == "pearson" else spearmanr
    expected = [fn(labels, p).statistic for p in preds]
    assert stats.metric_values("stsb", labels, preds, name) == pytest.approx(expected, abs=1e-12)
    assert stats.metric_values("stsb", labels, np.full(250, 2.5), name) == 0.0  # constant: 0, not NaN


def test_a_constant_prediction_model_is_collapsed_and_a_real_one_is_not():
    rng = np.random.default_rng(4)
    labels = (rng.random(400) < 0.68).astype(int)  # MRPC-like: majority class 1
    constant = np.ones((3, 400), dtype=int)
    out = stats.collapse("mrpc", labels, constant, n_resamples=500)
    assert (
        out["collapsed"]
        and out["verdict"] == "collapsed to the majority class"
        and "100.0% of predictions" in out["why"]
    )
    good = np.where(rng.random((3, 400)) < 0.9, labels, 1 - labels)  # 90 % right, both classes predicted
    assert stats.collapse("mrpc", labels, good, n_resamples=500) == {
        "collapsed": False,
        "verdict": "above the constant predictor",
        "why": "",
    }
    # mostly one class (but not 95 %) and no better than always saying it: within noise of the constant
    weak = np.where(rng.random((3, 400)) < 0.9, 1, rng.integers(0, 2, (3, 400)))
    out = stats.collapse("mrpc", labels, weak, n_resamples=500)
    assert out["collapsed"] and "vs the constant predictor" in out["why"]


def test_regression_collapse_is_a_constant_score():
    rng = np.random.default_rng(5)
    labels = rng.uniform(0, 5, 300)
    out = stats.collapse("stsb", labels, np.full((2, 300), labels.mean()) + rng.normal(0, 0.01, (2, 300)), 500)
    assert out["collapsed"] and out["verdict"] == "collapsed to the mean score"
    assert not stats.collapse("stsb", labels, labels + rng.normal(0, 0.5, (2, 300)), 500)["collapsed"]
