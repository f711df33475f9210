"""DVC's driver: each dvc.yaml stage runs tasks of tasks/steps.py as plain functions (`.fn`) on params.yaml.

    python -m tasks.stage variant --name gradual       # what `dvc repro variant@gradual` runs

dvc.yaml expands the variant table with `foreach`: one stage per variant runs the plan's runs of that variant
(tasks/plan.py `runs`, filtered: make it — fine-tune or prune — for every task and seed, quantize it in each of
its modes, evaluate each) into outputs/<variant>/. The `plan` stage writes, per variant, the leaf params its
steps read, so DVC skips a variant whose plan, inputs and code are unchanged; inside a stage, a run whose output
already holds its step record (<out>.step.json, the Prefect cache's key) is skipped too (the stage's outputs
persist). The same functions as the flow, so both drivers give the same metrics; every stage of one `dvc repro`
or `dvc exp run` logs under one MLflow parent run. Keys the experiment sets per run (prune.method, ...) are
refused here as in the flow.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

from bertcompress import io, record, stop
from bertcompress import params as P
from bertcompress.model import preflight
from bertcompress.tokenize import check_dev

from . import keys, plan, recipes, refusals, ship, steps, tracking

TOKENIZED, PRETRAINED, SWEEP = "data/dvc/tokenized", "outputs/pretrained", "results/sweep.json"


def tokenized(task: str) -> dict:
    """The split files the tokenize stage wrote (its out folder holds exactly one per split)."""
    found = {s: sorted(Path(TOKENIZED, task).glob(f"{s}-*.npz")) for s in ("train", "dev", "validation")}
    if not found["dev"]:
        del found["dev"]  # data.dev_fraction null: no dev split
    if any(len(f) != 1 for f in found.values()):
        raise P.UserError(
            f"{TOKENIZED}/{task} must hold one train and one validation file (and at most one dev file); "
            f"run `dvc repro tokenize@{task}`"
        )
    return {s: str(f[0]) for s, f in found.items()}


def dvc_invocation() -> str:
    """'<pid>-<start time>' of the dvc process running this stage: the key every stage of one repro shares."""
    import psutil

    for proc in psutil.Process().parents():
        if any(Path(arg).name == "dvc" for arg in proc.cmdline()[:3]):
            return f"{proc.pid}-{proc.create_time()}"
    return f"{os.getpid()}-standalone"


def where(r: plan.Run) -> str:
    """A run's output in DVC's layout: outputs/<variant>/<task>-s<seed>[.<mode>] (evaluations: eval/*.json); the
    sweep's in outputs/sweep/."""
    if r.lr is not None:
        return f"outputs/sweep/{r.task}-lr{r.lr:g}" + (".json" if r.step == "evaluate" else "")
    folder = f"outputs/{r.name}/{r.task}-s{r.seed}" + (f".{r.mode}" if r.mode != "none" else "")
    return f"outputs/{r.name}/eval/{Path(folder).name}.json" if r.step == "evaluate" else folder


def made(r: plan.Run, p: P.Params, outs: dict, parent: str, reuse: list[Path] = (), out: str | None = None):
    """Run one step of the plan into out (default: its DVC place) unless that already holds its record (or a
    folder in reuse does: copied); outs: {run id: output} of the runs before it."""
    args = plan.arguments(r, p, outs) | {"parent": parent, "out": out or where(r)}
    rec = keys.step_record(r.step, args)
    if record.done(args["out"], rec):
        print(f"{r.step} {r.task} {r.label}: up to date (key {rec['key'][:12]})", flush=True)
    elif same := [d for d in reuse if record.done(d, rec)]:
        shutil.rmtree(args["out"], ignore_errors=True)
        shutil.copytree(same[0], args["out"])
        record.write(args["out"], rec, args["out"])
        print(f"{r.step} {r.task} {r.label}: the same as {same[0]} (key {rec['key'][:12]})", flush=True)
    return getattr(steps, r.step).fn(**args)  # returns what it holds when it is up to date


def _outs(task: str) -> dict:
    """The data runs' results in DVC's layout."""
    return {
        f"download {task}": f"data/glue/{task}",
        f"tokenize {task}": tokenized(task),
        f"pretrained {task}": PRETRAINED,
    }


def sweep(p: P.Params, parent: str) -> None:
    """results/sweep.json: per task the lr every variant uses (the baseline's best candidate, first seed)."""
    chosen = {}
    for task in p.experiment.tasks:
        outs, scores, q = _outs(task), {}, recipes.resolve(p, task)
        for r in plan.sweep(q, task):
            if r.step in ("finetune", "evaluate"):
                outs[r.id] = made(r, q, outs, parent)
                scores |= {r.lr: plan.score(task, q, outs[r.id])} if r.step == "evaluate" else {}
        chosen[task] = {
            "lr": plan.best_lr(scores) if scores else p.finetune.lr,
            "chosen_on": P.choice_split(p),
            "scores": {f"{lr:g}": s for lr, s in scores.items()},
        }
    Path("outputs/sweep").mkdir(parents=True, exist_ok=True)  # the stage's out, also with no candidates
    io.write_json(SWEEP, chosen)


def dvc_plan(p: P.Params) -> dict[str, dict]:
    """{file name: content} of the DVC plan: per variant, the leaf params each of its steps reads, for every
    task (its recipe: Params.for_task) and seed; the sweep's (swept lr shown as 'sweep'). A stage whose plan file
    is unchanged is skipped."""
    e, files = p.experiment, {}
    for name, v in p.variants.items():
        rows = {}
        for task in e.tasks:
            t = recipes.resolve(p, task)
            swept = bool(t.experiment.lr_candidates)
            for seed in e.seeds:
                q, step = t.variant(name, seed), plan.make_step(t, name)
                row = {step: keys.reads(step, q)}
                if swept and "finetune.lr" in row[step] and "lr" not in t.variants[name].overrides.get("finetune", {}):
                    row[step]["finetune.lr"] = "sweep"
                row |= {f"quantize.{m}": keys.reads("quantize", t.variant(name, seed, m)) for m in v.quantize}
                row["evaluate"] = keys.reads("evaluate", q)
                rows.setdefault(task, {})[str(seed)] = row
        files[f"{name}.json"] = {"tasks": e.tasks, "from": v.source, "runs": rows}
    files["sweep.json"] = {"tasks": e.tasks, "lr": p.finetune.lr}
    for task in e.tasks:  # what the sweep's fine-tunes and evaluations read; with no candidates it passes the lr on
        t = recipes.resolve(p, task)
        base = t.variant(e.baseline, e.seeds[0])
        files["sweep.json"][task] = {"lr_candidates": t.experiment.lr_candidates}
        if t.experiment.lr_candidates:
            files["sweep.json"][task] |= {
                "finetune": keys.reads("finetune", base),
                "evaluate": keys.reads("evaluate", base),
            }
    files |= {f"{step}-{task}.json": keys.reads(step, p) for step in ("download", "tokenize") for task in e.tasks}
    files["pretrained.json"] = keys.reads("pretrained", p)
    files["report.json"] = {
        "tasks": e.tasks,
        "seeds": e.seeds,
        "baseline": e.baseline,
        "bootstrap_samples": e.bootstrap_samples,
        "champion_budget": e.champion_budget,
        "objective": e.objective,
        "variants": list(p.variants),
    }
    return files


def numbers(row: dict) -> dict:
    return {k: v for k, v in row.items() if isinstance(v, (int, float)) and k != "seed"}


def variant(p: P.Params, name: str, parent: str) -> None:
    """Make, quantize and evaluate one variant for every task and seed; its metrics and learning curves."""
    lrs, metrics, history = io.read_json(SWEEP), {}, []
    for task in p.experiment.tasks:
        q, outs = plan.with_lr(recipes.resolve(p, task), lrs[task]["lr"]), _outs(task)
        for r in plan.runs(q, task):
            if r.step in ("download", "tokenize", "pretrained"):
                continue
            if r.name != name:  # what this variant is made from, or distilled from: another stage's output
                outs[r.id] = where(r)
                continue
            if r.teacher and not Path(outs[r.teacher]).is_dir():  # dvc.yaml orders stages by `from` only
                teacher = q.variant(name, r.seed).distill.teacher
                raise P.UserError(
                    f"variants.{name} distils from '{teacher}', whose {outs[r.teacher]} is not made "
                    f"yet; run `dvc repro variant@{teacher}` first, or make it `from` it"
                )
            reuse = sorted(Path("outputs/sweep").glob("*-lr*[0-9]")) if name == p.experiment.baseline else []
            outs[r.id] = made(r, q, outs, parent, reuse if r.step == "finetune" else [])
            if r.step == "finetune":
                history += [
                    {"task": task, "seed": r.seed, **row}
                    for row in io.read_json(f"{outs[r.id]}/metrics.json")["history"]
                ]
            if r.step == "evaluate":
                mode = "fp32" if r.mode == "none" else r.mode
                metrics.setdefault(f"{task}-s{r.seed}", {})[mode] = numbers(outs[r.id])
    io.write_json(f"results/variants/{name}.json", metrics)  # `dvc metrics show`: one column group per mode
    io.write_json(f"results/history/{name}.json", history)  # `dvc plots show`: per-epoch curves


def run(args, p: P.Params) -> None:
    if args.step == "plan":
        for file, content in dvc_plan(p).items():
            io.write_json(Path("plan") / file, content)
    elif args.step == "download":
        steps.download.fn(args.task, p, f"data/glue/{args.task}")
    elif args.step == "tokenize":
        steps.tokenize.fn(args.task, p, f"data/glue/{args.task}", TOKENIZED)
    elif args.step == "pretrained":
        steps.pretrained.fn(p, PRETRAINED)
    else:
        with tracking.parent_run(
            "dvc", os.environ.get("DVC_EXP_NAME") or "dvc repro", key=dvc_invocation(), entry="dvc.yaml"
        ) as parent:
            if args.step == "sweep":
                sweep(p, parent)
            elif args.step == "variant":
                variant(p, args.name, parent)
            else:
                ship.publish(args.task, recipes.resolve(p, args.task), parent, tokenized(args.task))


def rewritten(params: str) -> str:
    """What to add to a refusal when the params file differs from git's: `dvc exp run -S` writes its values into
    params.yaml before the stages run, and every later command reads them until the file is restored."""
    import subprocess

    try:
        changed = subprocess.run(["git", "diff", "--quiet", "--", params], capture_output=True, timeout=30).returncode
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return (
        f"; {params} differs from git's (`dvc exp run -S` writes its values there): `git checkout {params}` restores it"
        if changed == 1
        else ""
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tasks.stage", description=__doc__.split("\n\n")[0])
    parser.add_argument("step", choices=["plan", "download", "tokenize", "pretrained", "sweep", "variant", "report"])
    parser.add_argument("--task", help="the GLUE task (download, tokenize, report)")
    parser.add_argument("--name", help="the variant (variant)")
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args(argv)
    stop.install()  # SIGINT/SIGTERM (dvc passes Ctrl-C on): the step stops, its MLflow run ends KILLED
    try:
        p = P.load(args.params)
        refusals.refuse(p)  # `dvc exp run -S prune.method=...` would change nothing: refused
        for task in p.experiment.tasks:
            preflight(task, recipes.resolve(p, task))
            check_dev(task, p)
        if args.step == "variant" and args.name not in p.variants:
            raise P.UserError(
                f"variant '{args.name}' is not in params.yaml's table; choose one of: {', '.join(p.variants)}"
            )
        run(args, p)
    except P.UserError as e:
        return P.refused(e, rewritten(args.params))
    except stop.Stopped as e:
        print(e, file=sys.stderr)
        return e.code
    return 0


if __name__ == "__main__":
    sys.exit(main())
