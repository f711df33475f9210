"""Prompt, clean stops on Ctrl-C (SIGINT) and SIGTERM.

    stop.install()     # in each entry point's main(): the CLI, the flow, a DVC stage

The handler sets STOP and raises Stopped in the main thread; every training and evaluation loop calls check()
between batches, so a step running in a worker thread (the flow's task runner) stops within one batch too.
Stopped is a KeyboardInterrupt: the step's MLflow run ends KILLED, a fine-tune's `.partial/` keeps its last
complete checkpoint (the same command resumes it) and no result folder appears half-written.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

STOP = threading.Event()


class Stopped(KeyboardInterrupt):
    """The run was asked to stop by a signal; exit status 128 + its number (130 Ctrl-C, 143 SIGTERM)."""

    def __init__(self, signum: int = signal.SIGINT):
        self.code = 128 + signum
        super().__init__(
            f"stopped by {signal.Signals(signum).name}: nothing is half-written; the same command "
            "starts again (a fine-tune from its last complete epoch)"
        )


SIGNUM = {"received": signal.SIGINT}


def _handler(signum, frame) -> None:
    SIGNUM["received"] = signum
    STOP.set()
    raise Stopped(signum)


def install() -> None:
    """SIGINT and SIGTERM stop the run (main thread only: where Python delivers signals)."""
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, _handler)


@contextmanager
def everywhere() -> Iterator[None]:
    """A signal that ends this block (ours, or one an orchestrator turned into its own exception, like Prefect's
    TerminationSignal) stops the loops of the other threads too: the flow's task runner runs steps in one."""
    try:
        yield
    except BaseException as e:
        if not isinstance(e, Exception):
            STOP.set()
        raise


def check() -> None:
    """Raise Stopped if a stop was asked for (called between batches)."""
    if STOP.is_set():
        raise Stopped(SIGNUM["received"])
