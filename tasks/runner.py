"""Where the flow's independent runs go: one at a time in this process, a local Dask cluster, or a Dask scheduler.

    python -m flows.compress --task mrpc                                   # one task at a time (the default)
    python -m flows.compress --task mrpc --workers 4                       # LocalCluster: 4 worker processes
    python -m flows.compress --task mrpc --dask-address tcp://host:8786    # a running `dask scheduler`

A scheduler's workers must run from the project root with its environment, and see the same files (data/,
outputs/, the MLflow store, $PREFECT_HOME): the tasks pass paths, not models.
"""

from __future__ import annotations

import socket
from urllib.parse import urlparse

from bertcompress.params import UserError

DASK_PORT = 8786  # the scheduler's default


def check_reachable(address: str, timeout: float = 3.0) -> None:
    """A TCP connection to the scheduler within `timeout` seconds, or one line naming the address and the fix."""
    url = urlparse(address if "://" in address else f"tcp://{address}")
    try:
        host, port = url.hostname, url.port or DASK_PORT
    except ValueError:
        host = port = None
    if not host:
        raise UserError(f"--dask-address '{address}' is not a scheduler address; use tcp://host:{DASK_PORT}")
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as e:
        reason = "timed out" if isinstance(e, TimeoutError) else (e.strerror or type(e).__name__).lower()
        raise UserError(
            f"Dask scheduler {address} is unreachable ({reason}); start it (`dask scheduler`) and its "
            f"workers, fix --dask-address, or leave it out to run here"
        ) from None


def task_runner(address: str | None = None, workers: int = 1):
    """The Prefect task runner: a user's Dask scheduler (checked first), a LocalCluster of `workers` processes
    (one thread each: a fine-tune sets torch's threads process-wide), or one task at a time in this process."""
    if workers < 1:
        raise UserError(f"--workers must be >= 1, got {workers}")
    if address:
        check_reachable(address)
        from prefect_dask import DaskTaskRunner

        return DaskTaskRunner(address=address)
    if workers > 1:
        from prefect_dask import DaskTaskRunner

        return DaskTaskRunner(cluster_kwargs={"n_workers": workers, "threads_per_worker": 1, "processes": True})
    from prefect.task_runners import ThreadPoolTaskRunner

    return ThreadPoolTaskRunner(max_workers=1)
