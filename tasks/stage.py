"""DVC's driver: each dvc.yaml stage runs tasks of tasks/steps.py as plain functions (`.fn`) on params.yaml.

    python -m tasks.stage variant --name gradual       # what `dvc repro variant@gradual` runs

dvc.yaml expands the variant table with `foreach`: one stage per variant makes it (fine-tune or prune) for
every task and seed, quantizes it in each of its modes and evaluates each. The `plan` stage writes, per
variant, the leaf params its steps read (tasks/variants.py), so DVC skips a variant whose plan, inputs and code
are unchanged; inside a stage, a (task, seed, step) whose output carries the same exact key as the Prefect
cache's is skipped too (the stage's outputs persist). The same functions as the flow, so both drivers give
the same metrics; every stage of one `dvc repro` or `dvc exp run` logs under one MLflow parent run.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

from bertcompress import io, stop
from bertcompress import params as P
from bertcompress.metrics import headline
from bertcompress.model import preflight

from . import steps, tracking, variants

TOKENIZED, PRETRAINED, SWEEP = "data/dvc/tokenized", "outputs/pretrained", "results/sweep.json"


def tokenized(task: str) -> dict:
    """The split files the tokenize stage wrote (its out folder holds exactly one per split)."""
    found = {s: sorted(Path(TOKENIZED, task).glob(f"{s}-*.npz")) for s in ("train", "validation")}
    if any(len(f) != 1 for f in found.values()):
        raise P.UserError(f"{TOKENIZED}/{task} must hold one train and one validation file; "
                          f"run `dvc repro tokenize@{task}`")
    return {s: str(f[0]) for s, f in found.items()}


def dvc_invocation() -> str:
    """'<pid>-<start time>' of the dvc process running this stage: the key every stage of one repro shares."""
    import psutil

    for proc in psutil.Process().parents():
        if any(Path(arg).name == "dvc" for arg in proc.cmdline()[:3]):
            return f"{proc.pid}-{proc.create_time()}"
    return f"{os.getpid()}-standalone"


def key_of(folder: str | Path) -> str | None:
    """The exact key a step's output was made with: <out>.key.json beside it (not in it: the folder's content
    hash, the next step's input, stays the Prefect flow's)."""
    path = Path(f"{folder}.key.json")
    return io.read_json(path)["key"] if path.is_file() and Path(folder).exists() else None


def made(step: str, args: dict, out: str, reuse: list[Path] = ()) -> str:
    """Run one step into out unless out already holds its exact key (or a folder in reuse does: copied)."""
    key = steps.step_key(step, args)
    if key_of(out) == key:
        print(f"{step} {args['task']} {Path(out).name}: up to date (key {key[:12]})", flush=True)
        return out
    Path(f"{out}.key.json").unlink(missing_ok=True)
    if same := [d for d in reuse if key_of(d) == key]:
        shutil.rmtree(out, ignore_errors=True)
        shutil.copytree(same[0], out)
        print(f"{step} {args['task']} {Path(out).name}: the same as {same[0]} (key {key[:12]})", flush=True)
    else:
        partial = Path(f"{out}.partial")  # an interrupted fine-tune resumes only under the same key
        if partial.exists() and key_of(partial) != key:
            shutil.rmtree(partial)
        io.write_json(f"{partial}.key.json", {"key": key, "step": step})
        getattr(steps, step).fn(**args, out=out)
        Path(f"{partial}.key.json").unlink(missing_ok=True)
    io.write_json(f"{out}.key.json", {"key": key, "step": step})
    return out


def evaluated(args: dict, cache: Path) -> dict:
    """The evaluation row of one model (cached in cache, a JSON file, by its exact key)."""
    key = steps.step_key("evaluate", args)
    if cache.is_file() and (saved := io.read_json(cache))["key"] == key:
        return saved["row"]
    row = steps.evaluate.fn(**args)
    io.write_json(cache, {"key": key, "row": row})
    return row


def numbers(row: dict) -> dict:
    return {k: v for k, v in row.items() if isinstance(v, (int, float)) and k != "seed"}


def sweep(p: P.Params, parent: str) -> None:
    """results/sweep.json: per task the lr every variant uses (the baseline's best candidate, first seed)."""
    e, chosen = p.experiment, {}
    for task in e.tasks:
        data, scores = tokenized(task), {}
        for lr in e.lr_candidates:
            args = {"task": task, "name": e.baseline, "seed": e.seeds[0], "p": variants.with_lr(p, lr),
                    "base": PRETRAINED, "train": data["train"], "validation": data["validation"], "parent": parent}
            out = made("finetune", args, f"outputs/sweep/{task}-lr{lr:g}")
            row = evaluated({k: args[k] for k in ("task", "name", "seed", "p", "validation", "parent")} |
                            {"mode": "none", "model_dir": out}, Path(f"outputs/sweep/eval/{task}-lr{lr:g}.json"))
            scores[lr] = headline(task, row)
        chosen[task] = {"lr": variants.best_lr(scores) if scores else p.finetune.lr,
                        "scores": {f"{lr:g}": s for lr, s in scores.items()}}
    Path("outputs/sweep").mkdir(parents=True, exist_ok=True)  # the stage's out, also with no candidates
    io.write_json(SWEEP, chosen)


def variant(p: P.Params, name: str, parent: str) -> None:
    """Make, quantize and evaluate one variant for every task and seed; its metrics and learning curves."""
    v, lrs, metrics, history = p.variants[name], io.read_json(SWEEP), {}, []
    for task in p.experiment.tasks:
        q, data = variants.with_lr(p, lrs[task]["lr"]), tokenized(task)
        for seed in p.experiment.seeds:
            out, common = f"outputs/{name}/{task}-s{seed}", {"task": task, "name": name, "seed": seed, "p": q,
                                                              "parent": parent}
            start = PRETRAINED if v.finetuned else f"outputs/{v.source}/{task}-s{seed}"
            teacher = variants.teacher(p, name, seed)
            if teacher and not Path(f"outputs/{teacher}/{task}-s{seed}").is_dir():  # dvc.yaml orders by `from`
                raise P.UserError(f"variants.{name} distils from '{teacher}', whose outputs/{teacher}/{task}-s{seed} "
                                  f"is not made yet; run `dvc repro variant@{teacher}` first, or make it `from` it")
            teacher = f"outputs/{teacher}/{task}-s{seed}" if teacher else None
            if variants.make_step(p, name) == "finetune":
                reuse = sorted(Path("outputs/sweep").glob("*-lr*[0-9]")) if name == p.experiment.baseline else []
                made("finetune", {**common, "base": start, "train": data["train"], "validation": data["validation"],
                                  "teacher": teacher}, out, reuse)
                history += [{"task": task, "seed": seed, **r} for r in io.read_json(f"{out}/metrics.json")["history"]]
            else:
                made("prune", {**common, "model_dir": start, "train": data["train"], "teacher": teacher}, out)
            rows = {}
            for mode in ["none", *v.quantize]:
                model = out if mode == "none" else made("quantize", {**common, "mode": mode, "model_dir": out,
                                                                     "train": data["train"]}, f"{out}.{mode}")
                rows["fp32" if mode == "none" else mode] = numbers(evaluated(
                    {**common, "mode": mode, "model_dir": model, "validation": data["validation"]},
                    Path(f"outputs/{name}/eval/{task}-s{seed}-{mode}.json")))
            metrics[f"{task}-s{seed}"] = rows
    io.write_json(f"results/variants/{name}.json", metrics)  # `dvc metrics show`: one column group per mode
    io.write_json(f"results/history/{name}.json", history)  # `dvc plots show`: per-epoch curves


def run(args, p: P.Params) -> None:
    if args.step == "plan":
        for file, content in variants.plan(p).items():
            io.write_json(Path("plan") / file, content)
    elif args.step == "download":
        steps.download.fn(args.task, p, f"data/glue/{args.task}")
    elif args.step == "tokenize":
        steps.tokenize.fn(args.task, p, f"data/glue/{args.task}", TOKENIZED)
    elif args.step == "pretrained":
        steps.pretrained.fn(p, PRETRAINED)
    else:
        with tracking.parent_run("dvc", os.environ.get("DVC_EXP_NAME") or "dvc repro", key=dvc_invocation(),
                                 entry="dvc.yaml") as parent:
            if args.step == "sweep":
                sweep(p, parent)
            elif args.step == "variant":
                variant(p, args.name, parent)
            else:
                steps.publish(args.task, p, parent, tokenized(args.task)["validation"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tasks.stage", description=__doc__.split("\n")[0])
    parser.add_argument("step", choices=["plan", "download", "tokenize", "pretrained", "sweep", "variant", "report"])
    parser.add_argument("--task", help="the GLUE task (download, tokenize, report)")
    parser.add_argument("--name", help="the variant (variant)")
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args(argv)
    stop.install()  # SIGINT/SIGTERM (dvc passes Ctrl-C on): the step stops, its MLflow run ends KILLED
    try:
        p = P.load(args.params)
        for task in p.experiment.tasks:
            preflight(task, p)
        if args.step == "variant" and args.name not in p.variants:
            raise P.UserError(f"variant '{args.name}' is not in params.yaml's table; choose one of: "
                              f"{', '.join(p.variants)}")
        run(args, p)
    except P.UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except stop.Stopped as e:
        print(e, file=sys.stderr)
        return e.code
    return 0


if __name__ == "__main__":
    sys.exit(main())
