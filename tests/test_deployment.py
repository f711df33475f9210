"""Loopback: scripts/prefect.sh starts a Prefect server on 127.0.0.1 and serves the deployments; `prefect
deployment run compress/mrpc` on tiny params completes; bad params fail it with the CLI's message and open no
MLflow run; every process the test started is stopped. All state in a workspace copy under tmp."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pipeline_runs as pr
import pytest

VARIANTS = {"dense": {"from": "pretrained"}}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """(workspace, env) with the server up and compress/mrpc served; both stopped afterwards."""
    root = pr.copy_project(
        tmp_path_factory.mktemp("served"), "bertcompress", "tasks", "flows", "scripts", "prefect.toml"
    )
    pr.write_params(root / "params.yaml", variants=VARIANTS)
    port = free_port()
    env = {
        **os.environ,
        "PREFECT_HOME": str(root / ".prefect"),
        "PREFECT_PORT": str(port),
        "PREFECT_API_URL": f"http://127.0.0.1:{port}/api",
        "BIN": str(Path(sys.executable).parent),
        "MLFLOW_TRACKING_URI": f"sqlite:///{root}/mlflow.db",
    }
    script = str(root / "scripts" / "prefect.sh")
    try:
        subprocess.run([script, "up"], env=env, check=True, timeout=300, capture_output=True)
        pids = [int((root / ".prefect" / f"{name}.pid").read_text()) for name in ("server", "serve")]
        wait_for_deployment(env, "compress/mrpc")
        yield root, env
    finally:
        subprocess.run([script, "down"], env=env, timeout=120)
    for pid in pids:
        assert not alive(pid), f"process {pid} still running after `scripts/prefect.sh down`"
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", port)) != 0  # nothing listens on the port any more


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}").exists() and "zombie" not in Path(f"/proc/{pid}/status").read_text()


def wait_for_deployment(env: dict, name: str, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (
            subprocess.run(
                [f"{env['BIN']}/prefect", "deployment", "inspect", name], env=env, capture_output=True
            ).returncode
            == 0
        ):
            return
        time.sleep(2)
    pytest.fail(f"deployment {name} not served after {timeout} s")


def deployment_run(env: dict, root: Path, *params: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(root / "scripts" / "prefect.sh"), "run", "mrpc", *params],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def flow_run_state(env: dict, output: str):
    """The final state of the flow run whose id `prefect deployment run` printed, read from the server."""
    from prefect import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    run_id = next(line.split(":")[-1].strip() for line in output.splitlines() if "UUID" in line)
    with temporary_settings(updates={PREFECT_API_URL: env["PREFECT_API_URL"]}):
        with get_client(sync_client=True) as client:
            return client.read_flow_run(run_id).state


def test_deployment_run_completes(served):
    root, env = served
    done = deployment_run(env, root)
    assert done.returncode == 0, done.stdout + done.stderr
    assert flow_run_state(env, done.stdout).is_completed()
    assert (root / "outputs" / "flow" / "mrpc").is_dir()  # the served run worked in the workspace, not the work tree


def test_bad_params_fail_the_run_with_the_cli_message(served, capsys):
    from bertcompress.cli import main
    from tasks import tracking

    root, env = served
    assert main(["finetune", "--task", "mrpc", "--params", str(root / "params.yaml"), "-S", "finetune.lr=-1"]) == 2
    message = capsys.readouterr().err.strip().removeprefix("error: ")
    with pr.env_vars(MLFLOW_TRACKING_URI=env["MLFLOW_TRACKING_URI"]):
        client, experiment = tracking.client()
        before = len(client.search_runs([experiment]))
        done = deployment_run(env, root, "--param", 'overrides=["finetune.lr=-1"]')
        assert done.returncode != 0
        state = flow_run_state(env, done.stdout)
        assert state.is_failed() and message in state.message, state.message
        assert len(client.search_runs([experiment])) == before
