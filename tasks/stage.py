"""DVC's driver: each dvc.yaml stage runs tasks of tasks/steps.py as plain functions (`.fn`) on params.yaml.

    python -m tasks.stage finetune --task mrpc --model gradual --seed 42     # what `dvc repro` runs

The same functions the Prefect flow runs, so both drivers give the same metrics for the same params; the file
layout below is the one dvc.yaml declares. Every stage of one `dvc repro` or `dvc exp run` logs under one
MLflow parent run, found by the dvc process running the stages. Bad params print one line `error: ...` and
exit 2, as the CLI does.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from pathlib import Path

from bertcompress import params as P
from bertcompress.cli import preflight

from . import steps, tracking

TOKENIZED = "data/dvc/tokenized"  # DVC's own tokenize cache: dvc clears an out folder before its stage runs


def model_dir(task: str, model: str, seed: int) -> str:
    return f"outputs/{task}/{model}-s{seed}"


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


def write_result(task: str, name: str, data: dict) -> None:
    from bertcompress.finetune import write_json  # atomic

    Path("results", task).mkdir(parents=True, exist_ok=True)
    write_json(Path("results", task, name), data)


def run(step: str, task: str, model: str, seed: int, p: P.Params, parent: str) -> None:
    params, modes = p.to_dict(), p.experiment.quantize
    data, out = tokenized(task), model_dir(task, model, seed)
    if step == "finetune":
        steps.finetune.fn(task, model, seed, params, data["train"], data["validation"], out, parent)
        history = json.loads((Path(out) / "metrics.json").read_text())["history"]
        write_result(task, f"{model}-s{seed}.history.json", {"history": history})
    elif step == "prune":
        steps.prune.fn(task, model, seed, params, model_dir(task, "dense", seed), data["train"], out, parent)
    elif step == "quantize":
        Path(f"{out}.quantized").mkdir(parents=True, exist_ok=True)  # the stage's out, even with no modes
        for mode in modes:
            steps.quantize.fn(task, model, mode, seed, params, out, data["train"], f"{out}.quantized/{mode}", parent)
    elif step == "evaluate":
        metrics = {}  # {fp32: {accuracy: .., ..}, dynamic: {..}}: one column group per mode in `dvc metrics show`
        for mode in ["none", *modes]:
            variant = out if mode == "none" else f"{out}.quantized/{mode}"
            row = steps.evaluate.fn(task, model, mode, seed, params, variant, data["validation"], parent)
            metrics["fp32" if mode == "none" else mode] = {
                k: v for k, v in row.items() if isinstance(v, (int, float)) and k != "seed"}
        write_result(task, f"{model}-s{seed}.json", metrics)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tasks.stage", description=__doc__.split("\n")[0])
    parser.add_argument("step", choices=[*steps.READS, "report"])
    parser.add_argument("--task", required=True)
    parser.add_argument("--model", default="dense", help="dense | gradual | oneshot | structured")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # a killed stage leaves its MLflow run FAILED
    try:
        p = P.load(args.params)
        preflight(args.task, steps.configure(p.to_dict(), args.model, args.seed))
        if args.step == "download":
            steps.download.fn(args.task, p.to_dict(), f"data/glue/{args.task}")
        elif args.step == "tokenize":
            steps.tokenize.fn(args.task, p.to_dict(), f"data/glue/{args.task}", TOKENIZED)
        else:
            name = os.environ.get("DVC_EXP_NAME") or "dvc repro"
            with tracking.parent_run("dvc", name, key=dvc_invocation()) as parent:
                if args.step == "report":  # the pipeline's lr is finetune.lr: dvc runs no sweep
                    from .report import build

                    build(args.task, p, parent=parent, sweep=False)
                else:
                    run(args.step, args.task, args.model, args.seed, p, parent)
    except P.UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
