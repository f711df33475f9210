"""The report on a real tiny grid (MRPC slice; dense + gradual + int8; 2 seeds; an lr sweep of 2 candidates), run
through the Prefect flow: its tables equal what mlflow.search_runs returns, the sweep's choice is recorded and
reused, the figures exist and are logged to the parent run, and a variant missing from MLflow is a clear error."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pipeline_runs as pr
import pytest

EXPERIMENT = {"seeds": [42, 43], "lr_candidates": [2e-5, 5e-5], "bootstrap_samples": 200}
VARIANTS = {
    "dense": {"from": "pretrained", "quantize": ["dynamic"]},
    "gradual": {"from": "pretrained", "prune": {"method": "gradual"}, "quantize": ["dynamic"]},
}
METHODS = ["dense", "dense+dynamic", "gradual", "gradual+dynamic"]


@pytest.fixture(scope="session")
def grid(tmp_path_factory):
    yield pr.flow_once(tmp_path_factory, "report", "mrpc", experiment=EXPERIMENT, variants=VARIANTS)
    pr.stop_ephemeral_server()


def runs_of(grid) -> tuple[pd.DataFrame, pd.Series]:
    """mlflow.search_runs of the flow run: (its variant runs as a DataFrame, its parent run)."""
    import mlflow
    from tasks import tracking

    _, experiment = tracking.client()
    mlflow.set_tracking_uri(tracking.tracking_uri())
    parent = mlflow.search_runs([experiment], f"tags.invocation = '{grid['state'].state_details.flow_run_id}'").iloc[0]
    children = mlflow.search_runs([experiment], f"tags.`mlflow.parentRunId` = '{parent['run_id']}'")
    return children, parent


def test_lr_sweep_choice_is_recorded_and_used_by_every_variant(grid):
    with pr.isolated(grid["root"]):
        runs, parent = runs_of(grid)
    sweep = runs[(runs["tags.method"] == "dense") & (runs["tags.seed"] == "42")]
    scores = dict(zip(sweep["params.finetune.lr"].astype(float), sweep["metrics.f1"]))
    chooser = dict(zip(sweep["params.finetune.lr"].astype(float), sweep["metrics.dev_score"]))  # data.dev_fraction
    assert sorted(scores) == [2e-5, 5e-5] and all(0 <= v <= 1 for v in chooser.values())
    from bertcompress import glue

    rows = glue.load_split("mrpc", "train").iloc[:32]  # the run's 32 train rows: a tenth per class is dev
    n = int(glue.dev_rows(rows, "mrpc", 0.1).sum())
    assert (sweep["metrics.dev_examples"] == n).all() and n == sum(
        max(1, round(c / 10)) for c in rows.label.value_counts()
    )
    # the sweep reads dev, never validation; a tie (likely on a few dev pairs) goes to the lr listed first
    chosen = next(lr for lr in (2e-5, 5e-5) if chooser[lr] == max(chooser.values()))
    assert float(parent["params.lr_selected"]) == chosen
    others = runs[~((runs["tags.method"] == "dense") & (runs["tags.seed"] == "42"))]
    assert set(others["params.finetune.lr"].astype(float)) == {chosen} and len(others) == 4 * 2 - 1
    table = json.loads((grid["report"] / "tables.json").read_text())["lr_sweep"]
    assert [(r["lr"], r["dense f1"], r["dense dev score"], r["chosen"]) for r in table] == [
        (lr, scores[lr], chooser[lr], "yes" if lr == chosen else "") for lr in (2e-5, 5e-5)
    ]
    report = (grid["report"] / "report.md").read_text()
    assert "**Chosen on dev, reported on validation.**" in report and f"({n} examples: data.dev_fraction=0.1" in report


def test_summary_equals_mlflow_search_runs(grid):
    with pr.isolated(grid["root"]):
        runs, parent = runs_of(grid)
    runs = runs[runs["params.finetune.lr"].astype(float) == float(parent["params.lr_selected"])]
    summary = pd.read_csv(grid["report"] / "summary.csv", index_col="method")
    assert list(summary.index) == ["majority class (constant)", *METHODS]
    constant = summary.loc["majority class (constant)"]
    labels = runs.iloc[0]  # the validation slice's majority class, scored as every run's baseline_* metric
    assert (constant["score mean"], constant["accuracy mean"], constant["verdict"]) == (
        labels["metrics.baseline_score"],
        labels["metrics.baseline_accuracy"],
        "baseline",
    )
    summary = summary.drop("majority class (constant)")
    assert (summary["seeds"] == 2).all()
    for method, group in runs.groupby("tags.method"):
        assert sorted(group["tags.seed"]) == ["42", "43"]
        for col, metric in [
            ("f1 mean", "f1"),
            ("accuracy mean", "accuracy"),
            ("compact_mb", "compact_mb"),
            ("compressed_mb", "compressed_mb"),
            ("state_dict_mb", "state_dict_mb"),
            ("latency b8 ms", "latency_batch8_ms"),
        ]:
            assert summary.loc[method, col] == pytest.approx(group[f"metrics.{metric}"].mean(), rel=1e-12), col
        assert summary.loc[method, "f1 std"] == pytest.approx(group["metrics.f1"].std(ddof=1), rel=1e-9, abs=1e-12)
        zeros = 1 - group["metrics.nonzero_parameters"] / group["metrics.parameters"]
        assert summary.loc[method, "zeros (all)"] == pytest.approx(zeros.mean(), rel=1e-12)
        assert summary.loc[method, "achieved (scope)"] == pytest.approx(group["metrics.zeros_encoder"].mean())
    # the three sparsity numbers of the 50 % encoder-pruned variant, each named
    assert summary.loc["gradual", "target sparsity"] == 0.5 and summary.loc["gradual", "scope"] == "encoder"
    assert summary.loc["gradual", "achieved (scope)"] == pytest.approx(0.5, abs=0.005)
    assert 0.2 < summary.loc["gradual", "zeros (all)"] < 0.3  # embeddings are a third of MiniLM, unpruned
    assert summary.loc["dense", "target sparsity"] == 0.0 and summary.loc["dense", "zeros (all)"] < 0.01
    for method in METHODS[1:]:  # Δ and its interval: the variant's GLUE score minus dense's, seed by seed
        d = runs[runs["tags.method"] == "dense"].set_index("tags.seed")["metrics.score"]
        v = runs[runs["tags.method"] == method].set_index("tags.seed")["metrics.score"]
        assert summary.loc[method, "Δ vs dense"] == pytest.approx((v - d).mean(), abs=1e-12)
        row = summary.loc[method]
        assert row["CI low"] <= row["Δ vs dense"] <= row["CI high"]
        expected = (
            "within noise" if row["CI low"] <= 0 <= row["CI high"] else "better" if row["CI low"] > 0 else "worse"
        )
        assert row["verdict"] == (
            "collapsed to the majority class" if isinstance(row["collapse check"], str) else expected
        )


def test_tables_figures_and_parent_artifacts(grid):
    from tasks import tracking

    text = (grid["report"] / "report.md").read_text()
    for heading in (
        "## Summary: every variant",
        "## Table 1/2: per epoch, gradual vs dense",
        "## Table 3: without and with quantization",
        "## Learning rate",
    ):
        assert heading in text
    assert "within noise" in text or "better than dense" in text or "worse than dense" in text or "collapsed" in text
    assert "validation split (32 examples), mean ± std over 2 seeds" in text
    tables = json.loads((grid["report"] / "tables.json").read_text())
    assert [r["model"] for r in tables["quantization"]] == ["dense", "gradual"]
    assert {"fp32 accuracy", "fp32 f1", "fp32 MB", "dynamic accuracy", "dynamic f1", "dynamic MB"} <= set(
        tables["quantization"][0]
    )
    epoch_table = [line for line in text.split("## Table 1/2")[1].split("##")[0].splitlines() if line.startswith("| ")]
    assert len(epoch_table) == 1 + 2 and epoch_table[0].count("|") == 1 + 1 + 12  # header + 2 epochs; 12 columns
    figures = sorted(p.name for p in (grid["report"] / "figures").iterdir())
    assert figures == ["mrpc-epochs.png", "mrpc-metric-vs-sparsity.png", "mrpc-pareto.png"]
    for f in figures:
        assert (grid["report"] / "figures" / f).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pr.isolated(grid["root"]):
        runs, parent = runs_of(grid)
        client, _ = tracking.client()
        logged = {a.path for a in client.list_artifacts(parent["run_id"], "report")}
        assert {"report/report.md", "report/summary.csv", "report/figures"} <= logged
    assert not list(grid["report"].parent.glob(".mrpc*"))  # no temp folder left behind


def test_cli_rebuilds_the_same_summary_and_names_a_missing_variant(grid, capsys):
    from tasks.report import main

    before = pd.read_csv(grid["report"] / "summary.csv")
    with pr.isolated(grid["root"]):
        assert main(["--task", "mrpc", "--params", str(grid["params"])]) == 0
        after = pd.read_csv(grid["report"] / "summary.csv")
        pd.testing.assert_frame_equal(before, after)
        capsys.readouterr()
        assert main(["--task", "mrpc", "--params", str(grid["params"]), "-S", "experiment.seeds=[42,99]"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: no finished, evaluated MLflow run of mrpc dense seed 99") and "flows.compress" in err
    assert len(err.splitlines()) == 1
    assert np.isclose(after.set_index("method").loc["dense", "seeds"], 2)


def test_the_champion_alias_points_at_the_budget_rules_pick(grid):
    """The flow ships the fastest (experiment.objective: latency) non-collapsed variant within
    experiment.champion_budget (1 point) of dense's score on the dev split (choices read dev) and registers what
    ships, its archive, as mrpc-compressed@champion (tagged
    with the variant's run): it loads from MLflow and predicts."""
    import mlflow
    from tasks import tracking

    summary = pd.read_csv(grid["report"] / "summary.csv", index_col="method").drop("majority class (constant)")
    ok = summary[
        (summary["dev score mean"] >= summary.loc["dense", "dev score mean"] - 0.01)
        & ~summary["verdict"].str.startswith("collapsed")
    ]
    with pr.isolated(grid["root"]):
        client = tracking.client()[0]
        if ok.empty:  # every variant collapsed or fell short: nothing is registered
            assert client.search_registered_models() == []
            return
        runs = pd.read_csv(grid["report"] / "runs.csv")
        method = ok["latency b8 ms"].idxmin()
        expected = runs[(runs["method"] == method) & (runs["seed"] == 42)]["run_id"].iloc[0]
        version = client.get_model_version_by_alias("mrpc-compressed", "champion")
        assert version.tags["source_run"] == expected and version.tags["archive"] == "results/export/mrpc.tar.zst"
        assert client.get_logged_model(version.model_id).name == "export"  # the archive's model, not the folder's
        mlflow.set_tracking_uri(tracking.tracking_uri())
        model = mlflow.pyfunc.load_model("models:/mrpc-compressed@champion")
        got = model.predict(pd.DataFrame({"sentence1": ["The cat sat."], "sentence2": ["A cat was sitting."]}))
        assert got["label_name"].iloc[0] in ("not_equivalent", "equivalent")


def test_the_champion_is_exported_and_the_prefect_ui_shows_the_summary(grid):
    """The report task exports the champion (its float source, --format auto) to results/export/mrpc and its
    archive, evaluated there, every candidate's figures logged, and publishes summary.md (the summary table and
    the champion's lines) as the Prefect markdown
    artifact `report-mrpc` of the flow run."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterKey

    from bertcompress import variant
    from bertcompress.params import QUANTIZE_MODES
    from tasks import tracking
    from tasks.report import summary_text

    with pr.isolated(grid["root"]):
        with get_client(sync_client=True) as api:
            this_run = ArtifactFilterFlowRunId(any_=[grid["state"].state_details.flow_run_id])
            found = api.read_artifacts(
                artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["report-mrpc"]), flow_run_id=this_run)
            )
    assert len(found) == 1 and found[0].type == "markdown"  # one per flow run (other tests' flows make theirs)
    summary = found[0].data  # what the flow wrote to summary.md (a later `python -m tasks.report` rebuilds it)
    assert summary.startswith("## mrpc: compression summary") and summary_text(grid["report"]).strip() in summary
    exported = grid["root"] / "results" / "export" / "mrpc"
    with pr.isolated(grid["root"]):
        client = tracking.client()[0]
        if not client.search_registered_models():
            assert "champion: none" in summary and not exported.exists()
        else:
            run_id = client.get_model_version_by_alias("mrpc-compressed", "champion").tags["source_run"]
            folder = client.get_run(run_id).data.tags["model_dir"]
            info = variant.read(folder) or {}
            source = info["base"] if info.get("mode") in QUANTIZE_MODES else folder  # dynamic int8: its float source
            manifest = json.loads((exported / "manifest.json").read_text())
            assert manifest["format"] == manifest["auto"]["chosen"] in ("onnx", "onnx_int8", "openvino")
            assert manifest["source"] == str((grid["root"] / source).resolve())
            shipped = grid["root"] / "results" / "export" / "mrpc.tar.zst"
            assert f"exported: results/export/mrpc.tar.zst ({manifest['format']} of" in summary
            assert "as shipped, on validation score " in summary and " ms (1 threads, length " in summary
            assert summary.count("<- shipped") == 1  # every candidate's line, the one shipped marked
            logged = client.get_run(runs_of(grid)[1]["run_id"]).data.metrics
            assert logged["export_batch1_ms"] > 0 and logged["export_archive_mb"] == pytest.approx(
                shipped.stat().st_size / 1e6, rel=1e-6
            )
            assert {f"export_{f}_batch8_ms" for f in ("onnx", "onnx_int8", "openvino")} <= set(logged)
            import mlflow

            parent = runs_of(grid)[1]["run_id"]
            (model,) = client.search_logged_models(
                [client.get_run(parent).info.experiment_id], f"source_run_id = '{parent}' AND name = 'export'"
            )
            mlflow.set_tracking_uri(tracking.tracking_uri())  # the archive as an MLflow model: it predicts
            got = mlflow.pyfunc.load_model(f"models:/{model.model_id}").predict(
                pd.DataFrame({"sentence1": ["The cat sat."], "sentence2": ["A cat was sitting."]})
            )
            assert got["label_name"].iloc[0] in ("not_equivalent", "equivalent")
            assert f"f1 {logged['export_f1']:.4f}" in summary


def test_the_printed_summary_is_brief_and_in_points(grid):
    """The flow's closing message (its Prefect log line) over 2 seeds: mean ± std, every line within 120 columns
    beside Prefect's prefix on the first; Δ and CI are summary.csv's in points, so a variant is within
    experiment.champion_budget of dense's F1 exactly when its printed Δ is; the champion's lines when there is one."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from prefect.logging.handlers import APILogWorker

    from bertcompress import params as P

    with pr.isolated(grid["root"]):
        APILogWorker.drain_all()
        with get_client(sync_client=True) as client:
            this_run = LogFilterFlowRunId(any_=[grid["state"].state_details.flow_run_id])
            logs = client.read_logs(LogFilter(flow_run_id=this_run))
    (message,) = [log.message for log in logs if log.message.startswith("## mrpc: compression summary")]
    lines = message.splitlines()
    assert len(lines[0]) < 60 and max(map(len, lines)) <= 120, [line for line in lines if len(line) > 120]
    summary = pd.read_csv(grid["report"] / "summary.csv", index_col="method")
    budget = P.load(grid["params"]).experiment.champion_budget
    rows = {c[0]: c for c in ([x.strip() for x in line.strip("|").split("|")] for line in lines if line[:2] == "| ")}
    assert rows["variant"][1:4] == ["score (mean ± std)", "Δ score (pts)", "95 % CI (pts)"]
    for method in METHODS[1:]:
        row, s = rows[method], summary.loc[method]
        assert row[1] == f"{s['score mean']:.4f} ± {s['score std']:.4f}"
        assert row[2] == f"{100 * s['Δ vs dense']:+.2f}"
        assert row[3] == f"[{100 * s['CI low']:+.2f}, {100 * s['CI high']:+.2f}]"
        floor = summary.loc["dense", "score mean"] - budget / 100  # tasks/report.py champion()
        if abs(100 * s["Δ vs dense"] + budget) > 0.01:  # not on the edge, where rounding decides
            assert (s["score mean"] >= floor) == (float(row[2]) >= -budget), method
    champion = [line for line in lines if line.startswith("champion: ")]
    assert len(champion) == 1 and (
        champion[0].startswith("champion: none")
        or "  registered as models:/mrpc-compressed@champion (version " in message
    )


def test_the_objective_chooses_the_champion_among_the_variants_within_budget():
    """A hand-made summary: unstructured sparsity is the smallest file but no faster, structure the fastest; one
    variant is out of budget, one collapsed. objective=latency ships the structured cut, objective=size the sparse
    one; neither picks what is out of budget or collapsed, however small or fast."""
    from bertcompress import params as P
    from tasks.report import choose, rule

    rows = [  # method, dev score, verdict, compressed MB, b1 ms, b8 ms
        ("majority class (constant)", 0.70, "baseline", np.nan, np.nan, np.nan),
        ("dense", 0.850, "—", 80.0, 12.0, 100.0),
        ("sparse90", 0.845, "within noise", 20.0, 12.0, 99.0),
        ("structured", 0.842, "within noise", 30.0, 4.0, 30.0),
        ("tiny", 0.80, "worse", 5.0, 1.0, 8.0),  # 5 points under: out of a 1-point budget
        ("collapsed", 0.849, "collapsed to the majority class", 4.0, 1.0, 7.0),
    ]
    cols = ["method", "dev score mean", "verdict", "compressed_mb", "latency b1 ms", "latency b8 ms"]
    summary = pd.DataFrame(rows, columns=cols).set_index("method")
    p = P.defaults()
    assert p.experiment.objective == "latency" and choose("mrpc", p, summary) == "structured"
    assert choose("mrpc", p.replace({"experiment.objective": "size"}), summary) == "sparse90"
    assert choose("mrpc", p.replace({"experiment.champion_budget": 0.6}), summary) == "sparse90"
    assert choose("mrpc", p.replace({"experiment.champion_budget": 0.0}), summary) == "dense"
    assert rule("mrpc", p) == (
        "objective latency: the fastest at batch 8 on this CPU",
        "within 1 point of dense's score on dev",
    )
    with pytest.raises(P.UserError, match="experiment.objective 'speed' is unknown; choose one of: latency, size"):
        P.load(None, ["experiment.objective=speed"])
    from tasks.refusals import refuse

    with pytest.raises(P.UserError, match="set evaluate.latency_runs=20, or experiment.objective=size"):
        refuse(P.load(None, ["evaluate.latency_runs=0"]))


def test_runs_csv_names_the_run_that_evaluated_each_variant(grid, tmp_path):
    """A later FINISHED run of the same configuration that evaluated nothing (a pruning rerun whose output came out
    the same, so its evaluation stayed cached: smoke found it) is not the run the report names: runs.csv's run_id,
    the champion's run, is the one that evaluated it and holds model_dir, what ships."""
    from bertcompress import params as P
    from tasks import report, tracking

    with pr.isolated(grid["root"]):
        client, experiment = tracking.client()
        before = pd.read_csv(grid["report"] / "runs.csv")
        evaluated = before[before["method"] == "dense"]["run_id"].iloc[0]
        tags = client.get_run(evaluated).data.tags
        keep = {k: tags[k] for k in ("task", "method", "seed", "config")}
        later = client.create_run(experiment, tags=keep).info.run_id
        client.set_terminated(later, "FINISHED")
        report.build("mrpc", P.load(grid["params"]), tmp_path / "again")
        client.delete_run(later)
    after = pd.read_csv(tmp_path / "again" / "runs.csv")
    assert (
        after[after["method"] == "dense"]["run_id"].tolist() == before[before["method"] == "dense"]["run_id"].tolist()
    )
    assert "model_dir" in tags
