"""The experiment, top to bottom: GLUE → tokens → the pretrained model → the lr sweep → every variant of
params.yaml's table, per seed (fine-tuned, or pruned from the variant it names) → its quantized versions →
evaluate all → the report, built from MLflow (tasks/report.py) → the champion registered in MLflow and exported.

    python -m flows.compress --task mrpc                      # the main job (params.yaml)
    python -m flows.compress --task cola -S finetune.lr=3e-5 -S 'experiment.seeds=[1,2,3]'
    python -m flows.compress --task mrpc --workers 4         # independent runs on 4 Dask worker processes

The steps are the plan's (tasks/plan.py: `runs(params, task)`, in dependency order); each is a Prefect task
cached on its step record's key (tasks/steps.py): a second run is all cache hits, and a changed param reruns
only the steps that read it (`bertcompress status --task mrpc` says which, and why). Each (task, variant, mode, seed)
is one MLflow run under one
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
from bertcompress.model import preflight
from bertcompress.tokenize import check_dev
from tasks import plan, recipes, refusals, steps, tracking
from tasks.runner import task_runner

DATA = ("download", "tokenize")  # their results (folders, the tokenized splits) are needed as values


def run(r: plan.Run, p: P.Params, made: dict, parent: str):
    """Submit one run of the plan, its inputs the results (or futures) of the runs before it."""
    task, args = getattr(steps, r.step), plan.arguments(r, p, made)
    if r.step in DATA:
        return task(**args)
    return task.submit(**args, **({} if r.step == "pretrained" else {"parent": parent}))


def sweep(task: str, p: P.Params, made: dict, parent: str) -> P.Params:
    """The seed's lr sweep: the baseline (first seed) at each candidate; p with the best lr (its run is reused)."""
    for r in plan.sweep(p, task):
        made[r.id] = run(r, p, made, parent)
    scores = {r.lr: plan.score(task, p, made[r.id].result()) for r in plan.sweep(p, task) if r.step == "evaluate"}
    if not scores:
        return p
    chosen = plan.best_lr(scores)
    print(
        f"lr sweep ({task}, {p.experiment.baseline}, seed {p.experiment.seeds[0]}, on {P.choice_split(p)}): "
        f"{scores}; chosen {chosen:g}"
    )
    tracking.log_params(parent, {"lr_selected": chosen})
    return plan.with_lr(p, chosen)


def checked(task: str, params_file: str, overrides: list[str]) -> P.Params:
    """The params, and every check before work (task, ranges, keys the experiment sets per run, model config, a
    dev split that empties no class, writable outputs)."""
    p = P.load(params_file, overrides)
    refusals.refuse(p)
    p = recipes.resolve(p, task)  # each variant's recipe for the task (variants.<name>.tasks.<task>), a target's shape
    preflight(task, p)
    check_dev(task, p)
    for where in ("data", "outputs", "results"):
        io.check_writable(where)
    return p


@flow(name="compress", log_prints=True, task_runner=task_runner())  # main() picks another with --workers
def compress(task: str = "mrpc", overrides: list[str] | None = None, params_file: str = "params.yaml") -> list[dict]:
    p = checked(task, params_file, overrides or [])  # before any work (a deployment's run starts here)
    with (
        tracking.parent_run("prefect", f"compress-{task}", key=str(flow_run.id), entry="flows/compress.py") as parent,
        stop.everywhere(),
    ):
        made: dict = {}
        p = sweep(task, p, made, parent)
        for r in plan.runs(p, task):  # every step of the experiment, each after what it needs
            if r.id not in made:
                made[r.id] = run(r, p, made, parent)
        evaluations = [made[r.id] for r in plan.runs(p, task) if r.step == "evaluate"]
        wait(evaluations)
        rows = [e.result() for e in evaluations]
        steps.report(task, p, parent, made[f"tokenize {task}"])  # the summary, the champion
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flows.compress", description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", default="mrpc", help="GLUE task (default: mrpc)")
    P.add_arguments(parser)
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="Dask worker processes for the independent runs (default 1: one at a time, here)",
    )
    parser.add_argument("--dask-address", help="run them on this Dask scheduler instead, e.g. tcp://host:8786")
    args = parser.parse_args(argv)
    stop.install()  # Ctrl-C / SIGTERM: the running step stops within a batch, its MLflow run ends KILLED
    try:
        checked(args.task, args.params, args.overrides)  # a user error: one line, before Prefect starts
        runner = task_runner(args.dask_address, args.workers)  # an unreachable scheduler stops here, before work
        compress.with_options(task_runner=runner)(args.task, args.overrides, args.params)
    except P.UserError as e:
        return P.refused(e)
    except stop.Stopped as e:
        print(e, file=sys.stderr)
        return e.code
    return 0


if __name__ == "__main__":
    sys.exit(main())
