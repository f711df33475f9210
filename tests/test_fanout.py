"""Grid fan-out: the tiny grid on a 2-worker Dask LocalCluster gives the sequential run's metrics; a scheduler that
cannot be reached fails at once, with one line, before any work."""

from __future__ import annotations

import socket
import time

import pipeline_runs as pr
import pytest

pytestmark = pytest.mark.slow  # subprocesses, servers or a whole bench: the slow tier (make test)


@pytest.fixture(scope="module")
def sequential(tmp_path_factory):
    """The tiny grid, one task at a time (the default runner): the flow test's first run, shared with it."""
    return pr.flow_twice(tmp_path_factory)["first"].result()


def test_two_dask_workers_give_the_sequential_metrics(sequential, tmp_path):
    from prefect_dask import DaskTaskRunner

    from flows.compress import compress
    from tasks.runner import task_runner

    runner = task_runner(None, 2)
    assert isinstance(runner, DaskTaskRunner) and runner.cluster_kwargs["n_workers"] == 2
    (tmp_path / "mlflow").mkdir()
    params = pr.write_params(tmp_path / "params.yaml")
    pr.stop_ephemeral_server()  # this run's API database is its own, in tmp_path
    try:
        with pr.isolated(tmp_path):  # nothing cached here: every task runs, on the cluster's worker processes
            state = compress.with_options(task_runner=runner)("mrpc", params_file=str(params), return_state=True)
    finally:
        pr.stop_ephemeral_server()
    fanned = {(r["method"], r["seed"]): r for r in state.result()}
    assert state.is_completed() and list(fanned) == [(r["method"], r["seed"]) for r in sequential]
    for row in sequential:
        again = fanned[row["method"], row["seed"]]
        for key, value in row.items():  # everything but the timings
            if "latency" in key or key == "threads":
                continue
            assert again[key] == (pytest.approx(value, rel=1e-6) if isinstance(value, float) else value), key


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize(
    "address,reason",
    [
        (f"tcp://127.0.0.1:{closed_port()}", "unreachable (connection refused)"),
        ("tcp://:8786", "not a scheduler address"),
    ],
)
def test_unreachable_scheduler_is_one_line_before_any_work(address, reason, tmp_path, monkeypatch, capsys):
    from flows.compress import main

    monkeypatch.chdir(tmp_path)
    params = pr.write_params(tmp_path / "params.yaml")
    start = time.monotonic()
    assert main(["--task", "mrpc", "--params", str(params), "--dask-address", address]) == 2
    assert time.monotonic() - start < 5
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: ") and reason in err and "--dask-address" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"]  # no data, outputs, runs or store


def test_runner_kinds():
    from prefect.task_runners import ThreadPoolTaskRunner
    from prefect_dask import DaskTaskRunner

    from bertcompress.params import UserError
    from tasks.runner import task_runner

    default = task_runner()
    assert isinstance(default, ThreadPoolTaskRunner) and default._max_workers == 1  # one task at a time
    with socket.socket() as server:  # a listening scheduler port: connected to, not started
        server.bind(("127.0.0.1", 0))
        server.listen()
        address = f"tcp://127.0.0.1:{server.getsockname()[1]}"
        remote = task_runner(address, 8)
    assert isinstance(remote, DaskTaskRunner) and remote.address == address and not remote.cluster_kwargs
    with pytest.raises(UserError, match="--workers must be >= 1"):
        task_runner(None, 0)
