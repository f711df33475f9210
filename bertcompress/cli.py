"""Command line: one entry point, one sub-command per step, params.yaml plus `-S section.key=value` overrides.

    bertcompress finetune --task mrpc                 # download + tokenize (cached) + fine-tune
    bertcompress evaluate --task mrpc --model-dir outputs/mrpc/finetune-s42
    bertcompress finetune --task cola -S model.name=bert-base-uncased -S finetune.lr=3e-5
    bertcompress prune --task mrpc --model-dir outputs/mrpc/finetune-s42 -S prune.method=oneshot
    bertcompress quantize --task mrpc --model-dir outputs/mrpc/finetune-s42 -S quantize.mode=dynamic
    torchrun --nproc_per_node 2 -m bertcompress.cli finetune --task mrpc   # DDP over 2 GPUs (or CPU processes)

Bad input prints one line `error: ...` and exits with status 2 before any heavy work.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from . import distributed, glue, io, stop
from . import params as P
from .model import preflight
from .params import QUANTIZE_MODES

HELP = {
    "download": "validate a GLUE task and write data/glue/<task>/*.parquet",
    "tokenize": "tokenize train and validation into the cache",
    "finetune": "fine-tune (and prune, if prune.method=gradual) with the seed recipe",
    "evaluate": "evaluate a saved model on a split",
    "prune": "one-shot or structured pruning of a saved model (prune.method)",
    "quantize": "quantize a saved model (quantize.mode)",
    "export": "export a saved model as an artifact to ship (ONNX, OpenVINO or PT2E + tokenizer + card) + archive",
    "predict": "classify new texts with a saved model or an exported artifact (JSON lines)",
    "status": "for each step of the experiment (the flow's plan): done, or will run and why",
    "shapes": "time structured cuts of the model here (random weights, OpenVINO int8, batch 8) and pick the smallest "
    "that is --target-speedup times faster than dense",
}


def parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    P.add_arguments(common)
    top = argparse.ArgumentParser(prog="bertcompress", description=__doc__.split("\n\n")[0])
    sub = top.add_subparsers(dest="command", required=True)
    for name, help_ in HELP.items():
        cmd = sub.add_parser(name, help=help_, description=help_, parents=[common])
        cmd.add_argument(
            "--task",
            required=name not in ("predict", "status", "shapes"),
            help=f"GLUE task: {', '.join(glue.TASKS)}"
            + (" (default: the one the model records)" if name == "predict" else ""),
        )
        if name in ("evaluate", "prune", "quantize", "export"):
            cmd.add_argument("--model-dir", required=True, help="a saved model folder")
        if name == "export":
            cmd.add_argument(
                "--format",
                default="onnx_int8",
                help="onnx_int8 (default: ONNX Runtime dynamic int8), onnx (fp32), openvino (int8 by NNCF, "
                "calibrated on train), auto (each of these timed here and checked on validation: the fastest "
                "within experiment.champion_budget ships), or pt2e_int8 (of a static/qat variant)",
            )
        if name == "predict":
            cmd.add_argument("--model", required=True, help="a saved model folder or an exported artifact")
            cmd.add_argument("texts", nargs="*", help="texts to classify (a pair task takes them two by two)")
            cmd.add_argument("--input", help="a TSV or JSONL file of inputs, one per line; - for stdin")
            cmd.add_argument("--input-format", default="tsv", help="tsv (default; tab between a pair) or jsonl")
        if name == "shapes":
            cmd.add_argument("--target-speedup", type=float, help="e.g. 3 (default: experiment.target_speedup)")
        if name == "evaluate":
            cmd.add_argument("--split", default="validation", choices=("train", "dev", "validation"))
        if name in ("finetune", "prune", "quantize", "evaluate", "export"):
            cmd.add_argument(
                "--out",
                help={
                    "finetune": "output folder (default: outputs/<task>/finetune-s<seed>)",
                    "evaluate": "write the metrics JSON here too",
                }.get(name, "output folder (default: <model-dir>-<method or mode>)"),
            )
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    stop.install()
    try:
        params_path = args.params if Path(args.params).exists() or args.params != "params.yaml" else None
        return run(args, P.load(params_path, args.overrides))
    except P.UserError as e:
        if distributed.is_main():  # every rank makes the same checks: one line, not one per process
            return P.refused(e)
        time.sleep(3)  # torchrun stops every rank once one exits: give rank 0, a step behind on a busy machine, time
        return 2  # to say why
    except stop.Stopped as e:
        print(e, file=sys.stderr)
        return e.code
    finally:
        distributed.teardown()


def run(args, p: P.Params) -> int:
    from .tokenize import check_dev, prepared

    if args.command == "predict":
        return _predict(args, p)
    if args.command == "status":  # the plan is the pipeline's (tasks/), which this package never imports
        raise P.UserError(
            "status reads the experiment's plan: run the installed `bertcompress status`, or "
            "`python -m tasks.status` from the project root"
        )
    if args.command == "shapes":
        return _shapes(args, p)
    task = args.task
    glue.get_task(task)
    if args.command == "download":
        print(json.dumps(glue.download(task, Path("data/glue") / task, p.data.source), indent=2))
        return 0
    if args.command == "finetune":
        from .distill import teacher_of

        distributed.setup(p.finetune.batch_size)  # under torchrun: check the world, join it, before any work
        teacher_of(p)  # distill.teacher: a model folder
    if args.command in ("evaluate", "prune", "quantize", "export"):
        _check_model_dir(args.model_dir)
        from .variant import check_head

        check_head(args.model_dir, glue.get_task(task).num_labels)
    if args.command == "prune" and p.prune.method not in ("oneshot", "structured"):
        raise P.UserError(
            f"prune needs -S prune.method=oneshot or structured, got '{p.prune.method}' "
            "(gradual pruning runs in `bertcompress finetune`)"
        )
    if args.command == "quantize" and p.quantize.mode == "none":
        raise P.UserError(f"quantize needs -S quantize.mode=<one of {', '.join(QUANTIZE_MODES[1:])}>")
    if args.command == "export":
        from .export import check

        check(args.model_dir, args.format, "train")
    if args.command == "evaluate" and args.split == "dev" and not p.data.dev_fraction:
        raise P.UserError("--split dev needs a dev split; set -S data.dev_fraction=0.1 (a tenth of train)")
    preflight(task, p)
    check_dev(task, p)
    io.check_writable("data")  # every place this command writes, before any work
    if out := _out(args, p):
        io.check_writable(out, folder=args.command != "evaluate")
    with distributed.main_first():  # one process downloads and tokenizes, the others read its cache
        paths = prepared(task, p)
    if args.command == "tokenize":
        result = paths
    elif args.command == "export":
        from .export import export

        e = p.evaluate
        result = export(
            args.model_dir,
            out,
            task,
            args.format,
            p.tokenize.max_length,
            paths["train"],
            paths["validation"],
            e.latency_threads,
            e.latency_runs,
            p.experiment.champion_budget,
            paths["dev"] if P.choice_split(p) == "dev" else None,
        )
    elif args.command == "evaluate":
        from .evaluate import evaluate

        result = evaluate(args.model_dir, task, paths[args.split], p.evaluate.batch_size)
        if args.out:
            io.write_json(args.out, result)
    elif args.command == "finetune":
        from .finetune import finetune

        out = _out(args, p)
        result = finetune(p, task, paths["train"], paths["validation"], out)
        result = {k: v for k, v in result.items() if k != "history"}
    else:
        from . import prune, quantize

        out = _out(args, p)
        result = (
            prune.prune(args.model_dir, out, p, task, paths["train"])
            if args.command == "prune"
            else quantize.quantize(args.model_dir, out, p, task, paths["train"])
        )
    if distributed.is_main():
        print(json.dumps(result, indent=2))
    return 0


def _out(args, p: P.Params) -> str | None:
    """Where the command writes its result (evaluate: the --out JSON, if any)."""
    if args.command == "finetune":
        return args.out or f"outputs/{args.task}/finetune-s{p.finetune.seed}"
    if args.command in ("prune", "quantize", "export"):
        kind = {"prune": p.prune.method, "quantize": p.quantize.mode, "export": "export"}[args.command]
        return args.out or f"{str(args.model_dir).rstrip('/')}-{kind}"
    return getattr(args, "out", None)


def _shapes(args, p: P.Params) -> int:
    from . import shapes

    target = args.target_speedup or p.experiment.target_speedup
    if not target:
        raise P.UserError("shapes needs a target: --target-speedup 3 (or -S experiment.target_speedup=3)")
    picked = shapes.choose(P.load(args.params if Path(args.params).exists() else None, [
        *args.overrides, f"experiment.target_speedup={target}"]))  # fmt: skip
    c = picked["chosen"]
    print(shapes.table(picked))
    print(
        f"chosen: heads {c['heads_fraction']:g} / FFN {c['ffn_fraction']:g} removed, {c['speedup']:.2f}x dense "
        f"({picked['cpu']}, {picked['threads']} threads; kept in {picked['path']}); the flow cuts to it with "
        f"-S experiment.target_speedup={target:g}"
    )
    return 0


def _predict(args, p: P.Params) -> int:
    """One JSON line per input on stdout; every input checked before the model loads."""
    from .predict import predict, read_inputs, task_of

    task = task_of(args.model, args.task)
    rows = read_inputs(task, args.texts, args.input, args.input_format)
    for row in predict(args.model, task, rows, p.tokenize.max_length, p.evaluate.batch_size):
        print(json.dumps(row))
    return 0


def _check_model_dir(model_dir: str) -> None:
    from .archive import folder

    if not any((Path(folder(model_dir)) / f).is_file() for f in ("config.json", "manifest.json")):
        raise P.UserError(
            f"--model-dir {model_dir} holds no saved model (config.json) or artifact "
            "(manifest.json); pass the folder `bertcompress finetune` (or export) wrote"
        )


if __name__ == "__main__":
    sys.exit(main())
