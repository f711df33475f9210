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
from pathlib import Path

from . import distributed, glue
from . import params as P


def prepared(task: str, p: P.Params, data_root: str = "data/glue", cache_dir: str = "data/tokenized") -> dict:
    """Download the task if it is not there yet, tokenize train and validation (cached); return their paths."""
    from .tokenize import tokenize

    data_dir = Path(data_root) / task
    if glue.downloaded_from(data_dir) != glue.resolve_source(p.data.source):
        glue.download(task, data_dir, p.data.source)
    limits = {"train": p.data.max_train_samples, "validation": p.data.max_eval_samples}
    return {s: str(tokenize(data_dir, task, s, p.model.name, p.tokenize.max_length, cache_dir, limits[s])[0])
            for s in glue.SPLITS}


def preflight(task: str, p: P.Params) -> None:
    """Every check that needs neither data nor training: task, model, max length, pruning, quantization."""
    from . import prune, quantize
    from .tokenize import check_max_length

    glue.get_task(task)
    check_max_length(p.model.name, p.tokenize.max_length)
    prune.validate(p.prune)
    quantize.validate(p.quantize)


def main(argv: list[str] | None = None) -> int:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    common.add_argument("-S", "--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override a parameter, e.g. -S finetune.lr=3e-5 (repeatable)")
    parser = argparse.ArgumentParser(prog="bertcompress", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, help_ in [("download", "validate a GLUE task and write data/glue/<task>/*.parquet"),
                        ("tokenize", "tokenize train and validation into the cache"),
                        ("finetune", "fine-tune (and prune, if prune.method=gradual) with the seed recipe"),
                        ("evaluate", "evaluate a saved model on a split"),
                        ("prune", "one-shot or structured pruning of a saved model (prune.method)"),
                        ("quantize", "quantize a saved model (quantize.mode)")]:
        cmd = sub.add_parser(name, help=help_, description=help_, parents=[common])
        cmd.add_argument("--task", required=True, help=f"GLUE task: {', '.join(glue.TASKS)}")
        if name == "finetune":
            cmd.add_argument("--out", help="output folder (default: outputs/<task>/finetune-s<seed>)")
        if name in ("evaluate", "prune", "quantize"):
            cmd.add_argument("--model-dir", required=True, help="a save_pretrained folder")
        if name in ("prune", "quantize"):
            cmd.add_argument("--out", help="output folder (default: <model-dir>-<method or mode>)")
        if name == "evaluate":
            cmd.add_argument("--split", default="validation", choices=glue.SPLITS)
            cmd.add_argument("--out", help="write the metrics JSON here too")
    args = parser.parse_args(argv)
    try:
        params_path = args.params if Path(args.params).exists() or args.params != "params.yaml" else None
        p = P.load(params_path, args.overrides)
        return run(args, p)
    except P.UserError as e:
        if distributed.is_main():  # every rank makes the same checks: one line, not one per process
            print(f"error: {e}", file=sys.stderr)
        return 2
    finally:
        distributed.teardown()


def run(args, p: P.Params) -> int:
    task = args.task
    if args.command == "download":
        glue.get_task(task)
        print(json.dumps(glue.download(task, Path("data/glue") / task, p.data.source), indent=2))
        return 0
    if args.command == "evaluate":
        from .evaluate import evaluate

        _check_model_dir(args.model_dir)
        paths = prepared(task, p)
        result = evaluate(args.model_dir, task, paths[args.split], p.finetune.eval_batch_size)
        if args.out:
            from .finetune import write_json

            write_json(Path(args.out), result)
        print(json.dumps(result, indent=2))
        return 0
    if args.command == "finetune":
        distributed.setup(p.finetune.batch_size)  # under torchrun: check the world, join it, before any work
    preflight(task, p)
    if args.command in ("prune", "quantize"):
        return compress(args, p)
    with distributed.main_first():  # one process downloads and tokenizes, the others read its cache
        paths = prepared(task, p)
    if args.command == "tokenize":
        print(json.dumps(paths, indent=2))
        return 0
    from .finetune import finetune

    out = args.out or f"outputs/{task}/finetune-s{p.finetune.seed}"
    result = finetune(p, task, paths["train"], paths["validation"], out)
    if distributed.is_main():
        print(json.dumps({k: v for k, v in result.items() if k != "history"}, indent=2))
    return 0


def compress(args, p: P.Params) -> int:
    """prune (prune.method: oneshot | structured) or quantize (quantize.mode) the model in --model-dir."""
    from . import prune, quantize

    if args.command == "prune" and p.prune.method not in ("oneshot", "structured"):
        raise P.UserError(f"prune needs -S prune.method=oneshot or structured, got '{p.prune.method}' "
                          "(gradual pruning runs in `bertcompress finetune`)")
    if args.command == "quantize" and p.quantize.mode == "none":
        raise P.UserError(f"quantize needs -S quantize.mode=<one of {', '.join(quantize.MODES[1:])}>")
    _check_model_dir(args.model_dir)
    train = prepared(args.task, p)["train"]
    kind = p.prune.method if args.command == "prune" else p.quantize.mode
    out = args.out or f"{str(args.model_dir).rstrip('/')}-{kind}"
    if args.command == "prune":
        result = getattr(prune, kind)(args.model_dir, out, p, args.task, train)
    else:
        result = quantize.quantize(args.model_dir, out, p, args.task, calib_path=train, train_path=train)
    print(json.dumps(result, indent=2))
    return 0


def _check_model_dir(model_dir: str) -> None:
    if not (Path(model_dir) / "config.json").is_file():
        raise P.UserError(f"--model-dir {model_dir} holds no saved model (config.json); "
                          "pass the folder `bertcompress finetune` wrote")


if __name__ == "__main__":
    sys.exit(main())
