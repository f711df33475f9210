"""STS-B, GLUE's regression task, end to end through the Prefect flow on a tiny real slice: a one-output head
fine-tuned with MSE, pruned, quantized, evaluated and reported; Pearson and Spearman equal scipy's on the saved
predictions, the report's columns are the correlations, the constant predictor (the mean score) heads the
summary, the collapse verdict is tagged on each MLflow run, and the flow prints the report's own summary."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pipeline_runs as pr
import pytest

VARIANTS = {
    "dense": {"from": "pretrained", "quantize": ["dynamic"]},
    "oneshot": {"from": "dense", "prune": {"method": "oneshot"}, "quantize": ["dynamic"]},
}
METHODS = ["dense", "dense+dynamic", "oneshot", "oneshot+dynamic"]


@pytest.fixture(scope="session")
def stsb(tmp_path_factory):
    run = pr.flow_once(tmp_path_factory, "stsb", "stsb", experiment={"tasks": ["stsb"]}, variants=VARIANTS)
    assert run["state"].is_completed(), run["state"].message
    yield run
    pr.stop_ephemeral_server()


def _runs(stsb) -> pd.DataFrame:
    import mlflow
    from tasks import tracking

    with pr.isolated(stsb["root"]):
        mlflow.set_tracking_uri(tracking.tracking_uri())
        return mlflow.search_runs([tracking.client()[1]], "tags.task = 'stsb'")


def test_correlations_equal_scipy_on_the_saved_predictions(stsb):
    from scipy.stats import pearsonr, spearmanr

    from bertcompress import stats
    from tasks import tracking

    runs = _runs(stsb)
    assert sorted(runs["tags.method"]) == sorted(METHODS)
    with pr.isolated(stsb["root"]), tempfile.TemporaryDirectory() as tmp:
        client = tracking.client()[0]
        for _, run in runs.iterrows():
            saved = json.loads(Path(client.download_artifacts(run["run_id"], tracking.PREDICTIONS, tmp)).read_text())
            y, p = np.array(saved["labels"]), np.array(saved["predictions"])
            assert y.dtype == p.dtype == np.float64 and len(y) == 32 and 0 <= y.min() and y.max() <= 5
            assert run["metrics.pearson"] == pytest.approx(pearsonr(y, p).statistic, abs=1e-9)
            assert run["metrics.spearman"] == pytest.approx(spearmanr(y, p).statistic, abs=1e-9)
            assert run["metrics.baseline_pearson"] == run["metrics.baseline_spearman"] == 0.0
            assert run["metrics.loss"] == pytest.approx(np.mean((p - y) ** 2), rel=1e-5)  # MSE, the regression loss
            collapsed = stats.collapse("stsb", y, p)["collapsed"]
            assert run["tags.collapsed"] == str(collapsed).lower()
    assert "metrics.accuracy" not in runs.columns and "metrics.train_accuracy" not in runs.columns
    dense = runs[runs["tags.method"] == "dense"].iloc[0]
    assert {"metrics.val_pearson", "metrics.val_spearman", "metrics.train_loss"} <= set(dense.dropna().index)


def test_report_columns_are_the_correlations_beside_the_mean_score(stsb):
    runs = _runs(stsb).set_index("tags.method")
    summary = pd.read_csv(stsb["report"] / "summary.csv", index_col="method")
    assert list(summary.index) == ["mean score (constant)", *METHODS]
    assert summary.loc["mean score (constant)", ["pearson mean", "spearman mean"]].tolist() == [0.0, 0.0]
    for method in METHODS:
        for m in ("pearson", "spearman"):
            assert summary.loc[method, f"{m} mean"] == pytest.approx(runs.loc[method, f"metrics.{m}"], abs=1e-12)
    assert summary.loc["oneshot", "target sparsity"] == 0.5 and summary.loc["dense", "target sparsity"] == 0.0
    assert summary.loc["oneshot", "achieved (scope)"] == pytest.approx(0.5, abs=0.005)
    text = (stsb["report"] / "report.md").read_text()
    assert "accuracy" not in text.split("## Summary")[1].split("## Figures")[0]  # no classification column
    assert "validation split (32 examples), mean ± std over 1 seed)" in text
    assert (stsb["report"] / "figures" / "stsb-epochs.png").is_file()


def test_the_flow_prints_the_report_summary(stsb):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from prefect.logging.handlers import APILogWorker

    from tasks.report import summary_text

    with pr.isolated(stsb["root"]):
        APILogWorker.drain_all()
        with get_client(sync_client=True) as client:
            logs = client.read_logs(
                LogFilter(flow_run_id=LogFilterFlowRunId(any_=[stsb["state"].state_details.flow_run_id]))
            )
    tables = [log.message for log in logs if summary_text(stsb["report"]) in log.message]
    assert len(tables) == 1  # one summary, the report's, read back from its summary.csv
    assert tables[0].startswith("## stsb: compression summary") and "| mean score (constant) |" in tables[0]
    assert "| Δ score (pts) |" in tables[0]  # the headline: GLUE's score, the mean of Pearson and Spearman


def test_an_stsb_model_exports_and_predicts_its_scores(stsb, tmp_path):
    """The regression head through export and predict: the artifact's scores are evaluate's predictions of it."""
    import glob

    from bertcompress.evaluate import evaluate
    from bertcompress.export import export
    from bertcompress.predict import predict

    dense = [d for d in glob.glob(str(stsb["root"] / "outputs/flow/stsb/dense-s42-*")) if Path(d).is_dir()][0]
    validation = glob.glob(str(stsb["root"] / "data/tokenized/stsb/validation-*.npz"))[0]
    manifest = export(dense, str(tmp_path / "art"), "stsb", max_length=32)
    assert manifest["regression"] and manifest["labels"] is None
    df = pd.read_parquet(stsb["root"] / "data/glue/stsb/validation.parquet").iloc[:32]
    for model in (dense, str(tmp_path / "art")):
        expected = evaluate(model, "stsb", validation, 32, keep_predictions=True)["predictions"]
        got = predict(model, "stsb", df[["sentence1", "sentence2"]].values.tolist(), max_length=32)
        assert [r["score"] for r in got] == pytest.approx(expected, abs=1e-5)
