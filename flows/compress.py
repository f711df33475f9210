"""The experiment, top to bottom: GLUE → tokens → the pretrained model → the lr sweep → every variant of
params.yaml's table, per seed (fine-tuned, or pruned from the variant it names) → its quantized versions →
evaluate all → the report, built from MLflow (tasks/report.py) → the champion registered in MLflow and exported.

    python -m flows.compress --task mrpc                      # the main job (params.yaml)
    python -m flows.compress --task cola -S finetune.lr=3e-5 -S 'experiment.seeds=[1,2,3]'
    python -m flows.compress --task mrpc --workers 4         # independent runs on 4 Dask worker processes

Every step is a Prefect task cached on its exact key (tasks/steps.py): a second run is all cache hits, and a
changed param reruns only the steps that read it. Each (task, variant, mode, seed) is one MLflow run under one
parent run per flow run. Runs that do not depend on each other are submitted together; the task runner
(tasks/runner.py) runs them one at a time by default.
"""
from __future__ import annotations

import argparse
import sys

from prefect import flow
from prefect.futures import wait
from prefect.runtime import flow_run

from bertcompress import io, stop
from bertcompress import params as P
from bertcompress.metrics import headline
from bertcompress.model import preflight
from tasks import tracking, variants
from tasks.runner import task_runner
from tasks.steps import download, evaluate, finetune, pretrained, prune, quantize, report, tokenize


def sweep(task: str, p: P.Params, base, data: dict, parent: str) -> P.Params:
    """The seed's lr sweep: the baseline (first seed) at each candidate; p with the best lr (its run is reused)."""
    e, scores = p.experiment, {}
    for lr in e.lr_candidates:
        q = variants.with_lr(p, lr)
        model = finetune.submit(task, e.baseline, e.seeds[0], q, base, data["train"], data["validation"], parent)
        scores[lr] = evaluate.submit(task, e.baseline, "none", e.seeds[0], q, model, data["validation"], parent)
    if not scores:
        return p
    scores = {lr: headline(task, row.result()) for lr, row in scores.items()}
    chosen = variants.best_lr(scores)
    print(f"lr sweep ({task}, {e.baseline}, seed {e.seeds[0]}): {scores}; chosen {chosen:g}")
    tracking.log_params(parent, {"lr_selected": chosen})
    return variants.with_lr(p, chosen)


def checked(task: str, params_file: str, overrides: list[str]) -> P.Params:
    """The params, and every check that needs no data (task, ranges, model config, writable outputs)."""
    p = P.load(params_file, overrides)
    preflight(task, p)
    for where in ("data", "outputs", "results"):
        io.check_writable(where)
    return p


@flow(name="compress", log_prints=True, task_runner=task_runner())  # main() picks another with --workers
def compress(task: str = "mrpc", overrides: list[str] | None = None, params_file: str = "params.yaml") -> list[dict]:
    p = checked(task, params_file, overrides or [])  # before any work (a deployment's run starts here)
    with tracking.parent_run("prefect", f"compress-{task}", key=str(flow_run.id), entry="flows/compress.py") as parent, stop.everywhere():
        data = tokenize(task, p, download(task, p, f"data/glue/{task}"), "data/tokenized")
        base = pretrained.submit(p, f"data/pretrained/{p.model.name.replace('/', '--')}")
        p = sweep(task, p, base, data, parent)
        rows = []
        for seed in p.experiment.seeds:
            models = {}
            for name, v in p.variants.items():  # a variant comes after the one it is made from (and its teacher)
                start, teacher = base if v.finetuned else models[v.source], variants.teacher(p, name, seed)
                teacher = models[teacher] if teacher else None
                models[name] = (finetune.submit(task, name, seed, p, start, data["train"], data["validation"], parent,
                                                teacher=teacher)
                                if variants.make_step(p, name) == "finetune" else
                                prune.submit(task, name, seed, p, start, data["train"], parent, teacher=teacher))
                rows.append(evaluate.submit(task, name, "none", seed, p, models[name], data["validation"], parent))
                for mode in v.quantize:
                    q = quantize.submit(task, name, mode, seed, p, models[name], data["train"], parent)
                    rows.append(evaluate.submit(task, name, mode, seed, p, q, data["validation"], parent))
        wait(rows)
        rows = [row.result() for row in rows]
        report(task, p, parent, data["validation"])  # prints the summary, the champion and where they are
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
    stop.install()  # Ctrl-C / SIGTERM: the running step stops within a batch, its MLflow run ends KILLED
    try:
        checked(args.task, args.params, args.overrides)  # a user error: one line, before Prefect starts
        runner = task_runner(args.dask_address, args.workers)  # an unreachable scheduler stops here, before work
        compress.with_options(task_runner=runner)(args.task, args.overrides, args.params)
    except P.UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except stop.Stopped as e:
        print(e, file=sys.stderr)
        return e.code
    return 0


if __name__ == "__main__":
    sys.exit(main())
