"""MLflow at the edge: one run per (task, method, seed), nested under one parent run per flow run or dvc repro.

    mlflow ui --workers 1 --backend-store-uri sqlite:///mlflow/mlflow.db --host 127.0.0.1 --port 5000

The store is $MLFLOW_TRACKING_URI when set (a real server), else SQLite in mlflow/mlflow.db with artifacts in
mlflow/artifacts (never ./mlruns). The Prefect tasks (tasks/steps.py) log through this module, and the DVC
stages run those same tasks, so both drivers record the same things. Each step opens its variant's run, logs,
and closes it FINISHED; a step that raises closes it FAILED, one interrupted KILLED. A process killed outright
(kill -9, power loss) closes nothing: its runs stay RUNNING until the next parent run opened on the same host
finds that process gone (tags host, pid, pid_started) and ends them FAILED, tagged killed=true.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from bertcompress.params import Params

from . import keys, owners, plan

REPO = Path(__file__).resolve().parent.parent
EXPERIMENT = "bertcompress"
PARENT = "mlflow.parentRunId"  # MLflow's tag for nesting
PREDICTIONS = "evaluate/predictions.json"  # per-example labels and predictions: the report's paired bootstrap
KIND = {"mlflow.experimentKind": "custom_model_development"}  # "Machine learning" in its type selector
UI = "http://127.0.0.1:5000"  # `mlflow ui --backend-store-uri sqlite:///mlflow/mlflow.db` serves the store here


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{REPO / 'mlflow' / 'mlflow.db'}"


@functools.cache
def _client(uri: str):
    """The client and the experiment id; a local SQLite store keeps its artifacts beside the database. The
    store's first-time set-up (schema migration, the experiment) runs under a file lock beside it, so runs
    started together on a fresh store do not race."""
    from contextlib import nullcontext

    from filelock import FileLock

    from mlflow import MlflowClient  # imported here: the download and tokenize stages never pay for it

    # a bar per artifact read back (the report's predictions, a logged model's files: milliseconds each) and the
    # store's "Creating initial MLflow database tables": nothing a user can act on
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)
    local = uri.startswith("sqlite:///")
    db = Path(uri.removeprefix("sqlite:///")) if local else None
    with FileLock(f"{db}.lock") if local else nullcontext():
        client = MlflowClient(uri)
        name = os.environ.get("MLFLOW_EXPERIMENT_NAME", EXPERIMENT)
        if (exp := client.get_experiment_by_name(name)) is not None:
            if not exp.tags.get("mlflow.experimentKind"):  # a store made before the kind was set
                client.set_experiment_tag(exp.experiment_id, *next(iter(KIND.items())))
            return client, exp.experiment_id
        artifacts = (db.parent / "artifacts").resolve().as_uri() if local else None
        return client, client.create_experiment(name, artifact_location=artifacts, tags=KIND)


def client():
    """The store's client and experiment id. MLflow resolves a models:/<id> source (registering a logged model)
    with a client of its *global* URI, not this one's: it is set to the same store, every time (without it, a
    process that had logged no model registered against ./mlruns and failed: issue 35)."""
    import mlflow

    uri = tracking_uri()
    mlflow.set_tracking_uri(uri)
    return _client(uri)


def runs_url(base: str = UI) -> str:
    """The experiment's runs table in the MLflow UI. MLflow 3.17's UI opens an experiment on the view of its global
    GenAI / Model training switch (GenAI until a user flips it; it reads no kind tag): the link says which."""
    return f"{base}/#/experiments/{client()[1]}/runs?workflowType=machine_learning"


def _git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "describe", "--always", "--dirty", "--abbrev=40"],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=10,
        )
        return out.stdout.strip() or "unknown"
    except OSError:
        return "unknown"


def _source(entry: str) -> dict:
    """MLflow's source tags (the runs table's Source column): what ran, from which commit; and which process
    holds the run (tasks/owners.py)."""
    commit = _git_commit()
    return {
        "mlflow.source.type": "LOCAL",
        "mlflow.source.name": entry,
        "mlflow.source.git.commit": commit,
        "git_commit": commit,
        **owners.holder(),
    }


def _find(c, exp: str, tags: dict) -> str | None:
    where = " and ".join(f"tags.`{k}` = '{v}'" for k, v in tags.items())
    found = c.search_runs([exp], where, max_results=1)
    return found[0].info.run_id if found else None


def has_step(step: str, key: str) -> bool:
    """Does the store hold a FINISHED run of the step call with this record key (its tag step_key.<step>)?"""
    c, exp = client()
    where = f"tags.`step_key.{step}` = '{key}' and attributes.status = 'FINISHED'"
    return bool(c.search_runs([exp], where, max_results=1))


@contextmanager
def _running(run_id: str) -> Iterator[str]:
    from mlflow.entities import RunTag

    c, _ = client()
    c.log_batch(run_id, tags=[RunTag(k, v) for k, v in owners.holder().items()])  # this process holds it now
    c.update_run(run_id, status="RUNNING")
    try:
        yield run_id
    except BaseException as e:  # a signal (bertcompress/stop.py, Prefect's TerminationSignal): stopped, not failed
        c.set_terminated(run_id, "FAILED" if isinstance(e, Exception) else "KILLED")
        raise
    c.set_terminated(run_id, "FINISHED")


@contextmanager
def parent_run(driver: str, name: str, key: str, entry: str = "") -> Iterator[str]:
    """The parent run of one flow run or one dvc repro, found by key (every DVC stage process reopens it); its
    name gets the start time (runs of one task stay apart in the runs table); entry: the command, for Source."""
    c, exp = client()
    owners.end_killed(c, exp)
    tags = {"driver": driver, "invocation": key}
    run_id = (
        _find(c, exp, tags)
        or c.create_run(
            exp, run_name=f"{name} {time.strftime('%Y-%m-%d %H:%M:%S')}", tags={**tags, **_source(entry or driver)}
        ).info.run_id
    )
    with _running(run_id):
        yield run_id


@contextmanager
def variant_run(
    parent: str | None, task: str, p: Params, name: str, seed: int, mode: str = "none", tags: dict | None = None
) -> Iterator[str]:
    """The run of one (task, variant, mode, seed) configuration: its first step creates it under the parent,
    its later steps add to it. Tagged with the configuration digest (tasks/plan.py) the report finds it by."""
    from mlflow.entities import Param, RunTag

    c, exp = client()
    label = plan.method(name, mode)
    key = {
        "task": task,
        "method": label,
        "seed": str(seed),
        "config": keys.digest(task, p, name, seed, mode),
        **({PARENT: parent} if parent else {}),
    }
    entry = c.get_run(parent).data.tags.get("mlflow.source.name", "") if parent else "bertcompress"
    run_id = (_find(c, exp, key) if parent else None) or c.create_run(
        exp, run_name=f"{task}-{label}-s{seed}", tags={**key, **_source(entry)}
    ).info.run_id
    c.log_batch(
        run_id,
        params=[Param(k, v) for k, v in keys.logged(task, p, name, seed, mode).items()],
        tags=[RunTag(k, v) for k, v in (tags or {}).items()],
    )
    with _running(run_id):
        yield run_id


def _numbers(d: dict, prefix: str = "") -> dict[str, float]:
    """Numeric leaves of a result dict (sparsity.overall, ...); per-epoch history and per-layer lists excluded."""
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and k != "layers":
            out |= _numbers(v, f"{prefix}{k}.")
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            out[f"{prefix}{k}"] = float(v)
    return out


def log_metrics(run_id: str, metrics: dict, step: int = 0) -> None:
    from mlflow.entities import Metric

    c, _ = client()
    now = int(time.time() * 1000)
    c.log_batch(run_id, metrics=[Metric(k, v, now, step) for k, v in _numbers(metrics).items()])


def epoch_logger(run_id: str) -> Callable[[int, dict], None]:
    """finetune's on_epoch_end: training and validation loss, accuracy and task metric with step=epoch."""
    return lambda epoch, row: log_metrics(
        run_id, {k: v for k, v in row.items() if k not in ("epoch", "step")}, step=epoch
    )


def log_result(run_id: str, step: str, result: dict) -> None:
    """A step's result as <step>/metrics.json, its numbers as metrics (val_* came per epoch, with their step)."""
    client()[0].log_dict(run_id, result, f"{step}/metrics.json")
    log_metrics(run_id, {k: v for k, v in result.items() if not k.startswith("val_")})


def log_datasets(run_id: str, task: str, **splits: str) -> None:
    """The tokenized GLUE splits a step read (context=path: training, validation, calibration) as MLflow datasets
    of its run (the runs table's Dataset column): name glue-<task>-<split>, digest = the file's content, rows."""
    import numpy as np
    from mlflow.entities import Dataset, DatasetInput, InputTag

    from bertcompress.io import content_hash

    inputs = []
    for context, path in splits.items():
        with np.load(path) as z:
            rows = len(z["labels"])
        split = Path(path).name.split("-")[0]
        ds = Dataset(
            f"glue-{task}-{split}",
            content_hash(path)[:12],
            "local",
            json.dumps({"uri": str(Path(path).resolve())}),
            profile=json.dumps({"num_rows": rows}),
        )
        inputs.append(DatasetInput(ds, [InputTag("mlflow.data.context", context)]))
    client()[0].log_inputs(run_id, datasets=inputs)


def log_params(run_id: str, params: dict) -> None:
    from mlflow.entities import Param

    items = [Param(k, str(v)) for k, v in params.items()]
    for i in range(0, len(items), 100):  # MLflow takes at most 100 params per batch
        client()[0].log_batch(run_id, params=items[i : i + 100])


def set_tags(run_id: str, tags: dict) -> None:
    from mlflow.entities import RunTag

    client()[0].log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])


def log_dict(run_id: str, data: dict, name: str) -> None:
    client()[0].log_dict(run_id, data, name)


def log_text(run_id: str, text: str, name: str) -> None:
    client()[0].log_text(run_id, text, name)


def log_artifact(run_id: str, path: str, folder: str) -> None:
    client()[0].log_artifact(run_id, path, folder)


def log_folder(run_id: str, folder: str, name: str) -> None:
    client()[0].log_artifacts(run_id, folder, name)


def log_model(run_id: str, folder: str, task: str, max_length: int, batch_size: int, name: str = "model") -> str:
    """A variant folder (or an exported artifact's archive) as an MLflow 3 logged model of its run (pyfunc from
    code, tasks/mlflow_model.py; the bertcompress code travels with it), so
    `mlflow.pyfunc.load_model(f"runs:/{run_id}/{name}").predict(df)` classifies; its model id."""
    from importlib.metadata import version

    import pandas as pd
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema
    from mlflow.types.schema import Array

    import mlflow
    from bertcompress.glue import get_task

    client()  # the global URI
    spec = get_task(task)
    example = pd.DataFrame({k: ["a short example text"] for k in spec.keys})
    # the signature given, not inferred from a prediction: inference warns of the integer `label` column
    outputs = (
        [ColSpec("double", "score")]
        if spec.regression
        else [ColSpec("long", "label"), ColSpec("string", "label_name"), ColSpec(Array("double"), "probabilities")]
    )
    signature = ModelSignature(Schema([ColSpec("string", k) for k in spec.keys]), Schema(outputs))
    requirements = [
        f"{m}=={version(m)}"
        for m in ("torch", "transformers", "onnxruntime", "openvino", "zstandard", "pandas", "scikit-learn", "scipy")
    ]
    quiet = logging.getLogger("mlflow.pyfunc")
    level = quiet.level
    quiet.setLevel(logging.WARNING)  # its "Validating input example against model signature", every time
    try:
        with mlflow.start_run(run_id=run_id):  # resumes the variant's run; _running closes it as before
            info = mlflow.pyfunc.log_model(
                name=name,
                python_model=str(REPO / "tasks" / "mlflow_model.py"),
                artifacts={"model": folder},
                code_paths=[str(REPO / "bertcompress")],
                model_config={"task": task, "max_length": max_length, "batch_size": batch_size},
                pip_requirements=requirements,
                input_example=example,
                signature=signature,
            )
    finally:
        quiet.setLevel(level)
    return info.model_id


def shipped_model(run_id: str, archive: str, key: str, task: str, max_length: int, batch_size: int, figures: dict):
    """The MLflow logged model of a shipped artifact (its archive), found by the export's record key (tag
    export_key); logged under run_id when there is none, or when the one found cannot be resolved (its files gone):
    the store is an output like any other. Its metrics are the artifact's (figures); its model id."""
    from mlflow.entities import Metric

    c, exp = client()
    found = c.search_logged_models(
        [exp],
        f"tags.export_key = '{key}' AND name = 'export'",
        order_by=[{"field_name": "creation_timestamp", "ascending": False}],
    )
    for model in found:
        try:
            if any(f.path == "MLmodel" for f in c.list_logged_model_artifacts(model.model_id)):
                return model.model_id
        except Exception:  # an artifact location that no longer exists: log it again below
            continue
    model_id = log_model(run_id, archive, task, max_length, batch_size, name="export")
    c.set_logged_model_tags(model_id, {"export_key": key})
    now = int(time.time() * 1000)
    c.log_batch(
        run_id, metrics=[Metric(k, v, now, 0, model_id=model_id) for k, v in _numbers(figures).items()]
    )  # on the run and on the model (its Metrics tab)
    return model_id


def register_champion(model_id: str, name: str, description: str = "", tags: dict | None = None) -> str:
    """The logged model models:/<model_id> as the version of registered model `name` aliased `champion`; its
    version. Idempotent: a model already registered under `name` keeps its version (the alias moves to it), so a
    rerun, or a run after an interrupted one, registers nothing new. The client's calls, not
    mlflow.register_model, which prints what the flow's champion line says."""
    from mlflow.exceptions import MlflowException
    from mlflow.utils.mlflow_tags import MLFLOW_MODEL_VERSIONS

    c, _ = client()
    model = c.get_logged_model(model_id)
    try:
        c.get_registered_model(name)
    except MlflowException:
        c.create_registered_model(name)
    same = [v for v in c.search_model_versions(f"name = '{name}'") if v.source == f"models:/{model_id}"]
    if same:
        version = str(min(int(v.version) for v in same))
    else:
        version = str(
            c.create_model_version(
                name, f"models:/{model_id}", model.source_run_id, model_id=model_id, description=description
            ).version
        )
        for k, v in (tags or {}).items():
            c.set_model_version_tag(name, version, k, str(v))
        linked = json.loads(model.tags.get(MLFLOW_MODEL_VERSIONS, "[]")) + [{"name": name, "version": int(version)}]
        c.set_logged_model_tags(model_id, {MLFLOW_MODEL_VERSIONS: json.dumps(linked)})  # as register_model does
    c.set_registered_model_alias(name, "champion", version)
    return version


def log_figure(run_id: str, fig, name: str) -> None:
    """A matplotlib figure as an artifact of the run (e.g. plots/history.png), then closed."""
    import matplotlib.pyplot as plt

    client()[0].log_figure(run_id, fig, name)
    plt.close(fig)
