"""What the studies share (bench/studies/pruning_study.py, qat_study.py): their `run` arguments, their tokenized
data, and the pool of spawned processes that runs their jobs and writes the rows as each job ends, so a call cut
short keeps what finished. Imported by the studies, not run.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from multiprocessing import get_context
from pathlib import Path


def common_args(parser: argparse.ArgumentParser, max_steps_help: str) -> None:
    """--jobs, --device, --limit, --max-steps, --model, --glue-dir and --json of a study's `run`."""
    parser.add_argument("--jobs", type=int, default=8)
    parser.add_argument("--device", default="cuda", help="cuda; cpu with --limit for a smoke run")
    parser.add_argument("--limit", type=int, help="first N train and validation rows only (a smoke run)")
    parser.add_argument("--max-steps", type=int, help=max_steps_help)
    parser.add_argument("--model", default=".carry/minilm")
    parser.add_argument("--glue-dir", default=".carry/glue")
    parser.add_argument("--json", required=True)


def prepared_data(args: argparse.Namespace, tasks: list[str], root: Path) -> dict:
    """Each task's tokenized splits under root (--glue-dir, --model; only the first --limit rows of each)."""
    from bertcompress import params as P
    from bertcompress.tokenize import prepared

    limit = [f"data.max_train_samples={args.limit}", f"data.max_eval_samples={args.limit}"] if args.limit else []
    return {
        t: prepared(
            t,
            P.load(None, [f"data.source={args.glue_dir}", f"model.name={args.model}", *limit]),
            str(root / "glue"),
            str(root / "tok"),
        )
        for t in tasks
    }


def save(path: str, info: dict, started: float) -> None:
    """The study's JSON as it stands (info holds the rows list), with the wall time since `started`."""
    info["wall_seconds"] = time.time() - started
    tmp = Path(f"{path}.tmp")
    tmp.write_text(json.dumps(info, indent=1))
    tmp.replace(path)  # whole or not at all: a call cut short mid-write keeps the last whole file


def run_pool(ready: list, call: Callable, done: Callable, jobs: int, key: Callable = lambda job: job) -> None:
    """Runs the ready jobs in `jobs` spawned processes. The pool never queues: a job is submitted only when a process
    is free, so the next one is always the first of `ready`. call(job) gives (function, *args) to run in a process;
    done(job, row) takes the row it returned and may append jobs to `ready`. A failed job prints FAILED key(job)
    and the study goes on."""
    with ProcessPoolExecutor(jobs, mp_context=get_context("spawn")) as pool:
        running: dict = {}
        while ready or running:
            while ready and len(running) < jobs:
                job = ready.pop(0)
                running[pool.submit(*call(job))] = job
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for fut in finished:
                job = running.pop(fut)
                try:
                    row = fut.result()
                except Exception as e:  # noqa: BLE001 — one failed run is reported, the study goes on
                    print(f"FAILED {key(job)}: {type(e).__name__}: {e}", flush=True)
                    continue
                done(job, row)
