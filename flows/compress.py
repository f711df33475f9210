"""The experiment, top to bottom: GLUE → tokens → the lr sweep (dense model, first seed, each candidate lr; the
best is used by every variant) → {dense, gradual-pruning} fine-tunes per seed → one-shot pruning → quantized
variants of each model → evaluate all → a summary table → the report, built from MLflow (tasks/report.py).

    python -m flows.compress --task mrpc                      # the main job (params.yaml, experiment section)
    python -m flows.compress --task cola -S finetune.lr=3e-5 -S 'experiment.seeds=[1,2,3]'
    python -m flows.compress --task mrpc --workers 4         # independent runs on 4 Dask worker processes
    python -m flows.compress --task mrpc --dask-address tcp://host:8786     # ... or on a Dask cluster

Every step is a cached Prefect task (tasks/steps.py): a second run with the same params is all cache hits and
takes seconds. Each (task, method, seed) is one MLflow run under one parent run per flow run. Outputs go to
outputs/<task>/flow-<params digest>/ so that results cached for other params are never overwritten; the report
to results/report/<task>/ and to the parent run's artifacts. Runs that do not depend on each other (lrs, seeds,
models, modes) are submitted together; the task runner (tasks/runner.py) runs them one at a time by default.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

from prefect import flow
from prefect.runtime import flow_run

from bertcompress import params as P
from bertcompress.cli import preflight
from bertcompress.metrics import headline
from tasks import tracking
from tasks.report import best_lr, with_lr
from tasks.runner import task_runner
from tasks.steps import configure, download, evaluate, finetune, prune, quantize, report, tokenize


def load(task: str, params_file: str, overrides: list[str]) -> P.Params:
    """params.yaml + overrides, every variant checked before any work, with the CLI's one-line messages."""
    p = P.load(params_file, overrides)
    e = p.experiment
    for model in e.models:
        for mode in ["none", *e.quantize]:
            preflight(task, configure(p.to_dict(), model, e.seeds[0], mode))
    return p


def summary(rows: list[dict]) -> str:
    """One line per variant: the task metric, sparsity over all parameters, sizes (MB) and latency (ms)."""
    import pandas as pd

    table = pd.DataFrame(rows).set_index(["method", "seed"])
    table["sparsity"] = 1 - table["nonzero_parameters"] / table["parameters"]
    columns = ["accuracy", "f1", "matthews", "sparsity", "state_dict_mb", "compact_mb", "compressed_mb",
               "latency_batch1_ms", "latency_batch8_ms"]
    return table[[c for c in columns if c in table]].to_string(float_format=lambda v: f"{v:.4g}")


def outputs(task: str, params: dict) -> Path:
    digest = hashlib.sha256(json.dumps({k: v for k, v in params.items() if k != "experiment"},
                                       sort_keys=True).encode()).hexdigest()[:10]
    return Path("outputs") / task / f"flow-{digest}"


@flow(name="compress", log_prints=True, task_runner=task_runner())  # main() picks another with --workers
def compress(task: str = "mrpc", overrides: list[str] | None = None, params_file: str = "params.yaml") -> list[dict]:
    p = load(task, params_file, overrides or [])
    params, e = p.to_dict(), p.experiment
    with tracking.parent_run("prefect", f"compress-{task}", key=str(flow_run.id)) as parent:
        data_dir = download(task, params, f"data/glue/{task}")
        data = tokenize(task, params, data_dir, "data/tokenized")
        if e.lr_candidates:  # the seed's sweep; the winner's dense run is reused (cached) by the grid below
            scores, seed = {}, e.seeds[0]
            for lr in e.lr_candidates:
                q = with_lr(p, lr).to_dict()
                path = finetune.submit(task, "dense", seed, q, data["train"], data["validation"],
                                       f"{outputs(task, q)}/dense-s{seed}", parent)
                scores[lr] = evaluate.submit(task, "dense", "none", seed, q, path, data["validation"], parent)
            scores = {lr: headline(task, row.result()) for lr, row in scores.items()}
            params = with_lr(p, best_lr(scores)).to_dict()
            print(f"lr sweep ({task}, dense, seed {seed}): {scores}; chosen {params['finetune']['lr']:g}")
            tracking.log_params(parent, {"lr_selected": params["finetune"]["lr"]})
        run_dir = outputs(task, params)
        rows = []
        for seed in e.seeds:
            models = {m: finetune.submit(task, m, seed, params, data["train"], data["validation"],
                                         f"{run_dir}/{m}-s{seed}", parent) for m in e.finetune}
            models |= {m: prune.submit(task, m, seed, params, models["dense"], data["train"],
                                       f"{run_dir}/{m}-s{seed}", parent) for m in e.prune}
            for model, path in models.items():
                rows.append(evaluate.submit(task, model, "none", seed, params, path, data["validation"], parent))
                for mode in e.quantize:
                    q = quantize.submit(task, model, mode, seed, params, path, data["train"],
                                        f"{run_dir}/{model}-s{seed}.quantized/{mode}", parent)
                    rows.append(evaluate.submit(task, model, mode, seed, params, q, data["validation"], parent))
        rows = [row.result() for row in rows]  # futures: each waits for its own inputs only
        table = summary(rows)
        print(f"{task} ({run_dir}):\n{table}")
        tracking.log_text(parent, table, "summary.txt")
        print(f"report: {report(task, params, parent)}")
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flows.compress", description=__doc__.split("\n")[0])
    parser.add_argument("--task", default="mrpc", help="GLUE task (default: mrpc)")
    parser.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    parser.add_argument("-S", "--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override a parameter, e.g. -S finetune.lr=3e-5 (repeatable)")
    parser.add_argument("--workers", type=int, default=1,
                        help="Dask worker processes for the independent runs (default 1: one at a time, here)")
    parser.add_argument("--dask-address", help="run them on this Dask scheduler instead, e.g. tcp://host:8786")
    args = parser.parse_args(argv)
    try:
        runner = task_runner(args.dask_address, args.workers)  # an unreachable scheduler stops here, before work
        compress.with_options(task_runner=runner)(args.task, args.overrides, args.params)
    except P.UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
