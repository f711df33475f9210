"""What the pipeline tests share: a tiny params.yaml, and one workspace where the flow ran twice (built once).

Everything lives in tmp dirs: the Prefect home (ephemeral API database, persisted results), the MLflow store
and the data and outputs the steps write; nothing touches the work tree.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
TINY = {  # seconds per model on 2 cores
    "data": {"max_train_samples": 32, "max_eval_samples": 32},
    "tokenize": {"max_length": 32},
    "finetune": {"batch_size": 16, "epochs": 2},
    "prune": {"end_step": 3, "frequency": 1, "final_sparsity": 0.5},
    "quantize": {"calibration_size": 16},
    "evaluate": {"latency_runs": 1, "batch_size": 32, "latency_threads": 1},
    "runtime": {"threads": 1},
    "experiment": {"tasks": ["mrpc"], "seeds": [42], "lr_candidates": []},
    "variants": {
        "dense": {"from": "pretrained", "quantize": ["dynamic"]},
        "gradual": {"from": "pretrained", "prune": {"method": "gradual"}, "quantize": ["dynamic"]},
        "oneshot": {"from": "dense", "prune": {"method": "oneshot"}, "quantize": ["dynamic"]},
    },
}
METHODS = ["dense", "dense+dynamic", "gradual", "gradual+dynamic", "oneshot", "oneshot+dynamic"]  # TINY's
_flow: dict = {}


def write_params(path: Path, **changes: dict) -> Path:
    """The project's params.yaml with TINY and then `changes` ({section: {key: value}}) applied."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    for update in (TINY, changes):
        for section, values in update.items():
            if section == "variants":
                params[section] = values
            else:
                params[section].update(values)
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


@contextlib.contextmanager
def isolated(root: Path):
    """cwd, Prefect home and MLflow store inside root: the flow's relative paths and stores land there."""
    from prefect.settings import (
        PREFECT_API_URL,
        PREFECT_HOME,
        PREFECT_LOCAL_STORAGE_PATH,
        PREFECT_SERVER_DATABASE_CONNECTION_URL,
        temporary_settings,
    )

    home = root / "prefect"
    settings = {
        PREFECT_HOME: home,
        PREFECT_LOCAL_STORAGE_PATH: home / "storage",
        PREFECT_SERVER_DATABASE_CONNECTION_URL: f"sqlite+aiosqlite:///{home}/prefect.db",
    }
    with (
        temporary_settings(updates=settings, restore_defaults={PREFECT_API_URL}),
        contextlib.chdir(root),
        env_vars(MLFLOW_TRACKING_URI=f"sqlite:///{root}/mlflow/mlflow.db"),
    ):
        yield


@contextlib.contextmanager
def env_vars(**values: str):
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)


def stop_ephemeral_server() -> None:
    """Stop the ephemeral API server now, not at exit, when its log line would meet pytest's closed stdout."""
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker
    from prefect.server.api.server import SubprocessASGIServer

    if None in SubprocessASGIServer._instances:
        EventsWorker.drain_all()  # what is still queued for the server, sent before it stops
        APILogWorker.drain_all()
        SubprocessASGIServer().stop()


def flow_twice(tmp_path_factory) -> dict:
    """The flow on tiny params, run twice with Prefect's ephemeral API: {root, params, first, second} states."""
    if not _flow:
        from flows.compress import compress

        root = tmp_path_factory.mktemp("flow")
        (root / "mlflow").mkdir()
        params = write_params(root / "params.yaml")
        with isolated(root):
            first = compress("mrpc", params_file=str(params), return_state=True)
            second = compress("mrpc", params_file=str(params), return_state=True)
        _flow.update(root=root, params=params, first=first, second=second)
    return _flow


def flow_once(tmp_path_factory, name: str, task: str, **changes: dict) -> dict:
    """The flow on tiny params with `changes`, once, in a fresh workspace: {root, params, state, report}."""
    from flows.compress import compress

    root = tmp_path_factory.mktemp(name)
    (root / "mlflow").mkdir()
    params = write_params(root / "params.yaml", **changes)
    with isolated(root):
        state = compress(task, params_file=str(params), return_state=True)
    return {"root": root, "params": params, "state": state, "report": root / "results" / "report" / task}


def task_runs(state, expect: int = 1, timeout: float = 60) -> dict[str, str]:
    """{task-run name: state name} of one flow run, once the API has every final state (they arrive as events)."""
    import time

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    only = FlowRunFilter(id=FlowRunFilterId(any_=[state.state_details.flow_run_id]))
    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as client:
        while True:
            runs = client.read_task_runs(flow_run_filter=only)
            done = len(runs) >= expect and all(r.state and r.state.is_final() for r in runs)
            if done or time.monotonic() > deadline:
                return {r.name: r.state.name if r.state else None for r in runs}
            time.sleep(0.5)


def copy_project(dest: Path, *names: str) -> Path:
    """The named project files and folders (sources, no caches) copied into dest: a workspace of its own."""
    import shutil

    for name in names:
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("__pycache__", "cache", "tmp"))
        else:
            shutil.copy2(src, dest / name)
    return dest
