"""Which process holds an MLflow run, and the runs whose process is gone.

    kill -9 <a flow's pid>; python -m flows.compress --task mrpc     # its runs end FAILED, tagged killed=true

A process killed outright (kill -9, power loss) closes none of its runs: they stay RUNNING. Each run carries the
host, pid and start time of the process that holds it (tasks/tracking.py tags it); the next parent run opened
on the same host ends the runs whose process is gone. Runs of other hosts are left as they are.
"""

from __future__ import annotations

import os


def holder() -> dict:
    """Which process holds a run open: its host, pid and start time (a later process may get the same pid)."""
    import socket

    import psutil

    started = f"{psutil.Process().create_time():.2f}"
    return {"host": socket.gethostname(), "pid": str(os.getpid()), "pid_started": started}


def alive(tags: dict) -> bool:
    import psutil

    try:
        proc = psutil.Process(int(tags["pid"]))
        return (
            abs(proc.create_time() - float(tags["pid_started"])) < 0.05 and proc.status() != psutil.STATUS_ZOMBIE
        )  # killed, not yet reaped by its parent
    except psutil.NoSuchProcess:
        return False


def end_killed(c, exp: str) -> None:
    """Runs of this host left RUNNING by a process that is gone (kill -9, power loss: nothing could close them)
    become FAILED, tagged killed=true, when the next parent run opens; runs of other hosts, and runs without an
    owner, are left as they are."""
    host = holder()["host"]
    for run in c.search_runs([exp], f"attributes.status = 'RUNNING' and tags.host = '{host}'", max_results=1000):
        if "pid" in run.data.tags and "pid_started" in run.data.tags and not alive(run.data.tags):
            c.set_tag(run.info.run_id, "killed", "true")
            c.set_terminated(run.info.run_id, "FAILED")
