"""The QAT study (issue: ship the compressed model, "QAT that beats PTQ"): per task and seed, the dense
fine-tune, then PT2E static post-training int8 of it and QAT of it by each recipe, all evaluated on the full
validation split.

    # here, on the CPU (the dense fine-tunes too: ~5 min each on 2 cores for MRPC)
    STUDY_THREADS=2 STUDY_ROOT=/tmp/qat python -m bench.studies.qat_study run --tasks mrpc --seeds 42 43 44 \
        --recipes ptq kd --device cpu --jobs 1 --json bench/results/qat-study-cpu.json
    python -m bench.studies.qat_study report bench/results/qat-study-cpu.json   # the tables of bench/RESULTS-qat.md

Each quantized model is the pipeline's own (bertcompress/quantize.py `pt2e`, X86InductorQuantizer), evaluated as
its converted program (reference int8 ops) with eager attention, PTQ too; every row also gives the largest logit
difference from its float model, so a row where nothing was quantized shows 0. The recipes are
bench/studies/qat.yaml's. The dense fine-tune is the pruning study's (bench/studies/pruning.yaml: MiniLM's best
lr per task). `--device cuda` runs it all on a GPU, but on the lent H200's image (torch 2.11 + torchao 0.18) the
converted programs equal their float models exactly (nothing is quantized there): use it only for the dense
fine-tunes and the training-side checks.
"""

from __future__ import annotations

import argparse
import functools
import json
import time
from pathlib import Path

import yaml

from bench.studies.pool import common_args, prepared_data, run_pool, save

GRID = Path(__file__).with_name("qat.yaml")


@functools.cache
def grid() -> dict:
    """bench/studies/qat.yaml: the default tasks and seeds, and each recipe's quantize.* overrides."""
    return yaml.safe_load(GRID.read_text())


def quantized(task: str, seed: int, recipe: str, data: dict, model: str, device: str = "cuda") -> dict:
    """One quantized variant of the seed's dense model, built and evaluated on the GPU; its row."""
    try:
        return _quantized(task, seed, recipe, data, model, device)
    except Exception as e:  # torch's exceptions do not all pickle: one that does not breaks the whole pool
        raise RuntimeError(f"{type(e).__name__}: {str(e)[-2000:]}") from None


def _quantized(task: str, seed: int, recipe: str, data: dict, model: str, device: str) -> dict:
    import numpy as np
    import torch

    from bench.studies.pruning_study import ROOT
    from bertcompress import loop, variant
    from bertcompress import params as P
    from bertcompress import quantize as Q
    from bertcompress.evaluate import evaluate_model
    from bertcompress.glue import get_task
    from bertcompress.metrics import headline
    from bertcompress.tokenize import Encoded

    dense = ROOT / "models" / f"{task}-s{seed}-dense"
    per_epoch = -(-len(Encoded.load(data["train"])) // P.defaults().finetune.batch_size)
    sets = {**grid()["recipes"][recipe]}
    if sets.get("qat_steps") == "epoch":
        sets["qat_steps"] = per_epoch
    p = P.load(
        None,
        [
            f"model.name={model}",
            f"finetune.seed={seed}",
            "runtime.threads=1",
            "runtime.cuda_graphs=false",
            *(f"quantize.{k}={v}" for k, v in sets.items()),
        ],
    )
    qat, n = p.quantize.mode == "qat", get_task(task).num_labels
    attn = {"attn_implementation": "eager"}  # QAT needs it (sdpa bakes dropout in); on CUDA export of sdpa fails
    t0 = time.perf_counter()
    teacher = variant.load_float(str(dense), n, **attn) if qat and p.quantize.qat_distill else None
    module, _, info = Q.pt2e(variant.load_float(str(dense), n, **attn), p, data["train"], qat, teacher, device)
    seconds = time.perf_counter() - t0
    val = Encoded.load(data["validation"])
    m = evaluate_model(module, val, task, p.evaluate.batch_size, device)
    # int8 really ran: how far its logits are from the float model's (0 would mean nothing was quantized)
    ref = loop.logits(variant.load_float(str(dense), n, **attn).to(device), val, p.evaluate.batch_size, device)[1]
    diff = float(np.abs(loop.logits(module, val, p.evaluate.batch_size, device)[1] - ref).max())
    del module
    if device == "cuda":
        torch.cuda.empty_cache()
    q = p.quantize
    return {
        "task": task,
        "seed": seed,
        "recipe": recipe,
        "mode": q.mode,
        "accuracy": m.get("accuracy"),
        "metric": headline(task, m),
        **{k: m[k] for k in get_task(task).metrics},
        "qat_steps": q.qat_steps if qat else None,
        "qat_lr": q.qat_lr if qat else None,
        "qat_observers": q.qat_observers if qat else None,
        "qat_distill": q.qat_distill if qat else None,
        "calibration_size": info.get("calibration_size"),
        "qat_loss": info.get("qat_loss"),
        "max_logit_diff_vs_fp32": diff,
        "seconds": seconds,
    }


def dense(task: str, seed: int, data: dict, model: str, max_steps: int | None, device: str) -> dict:
    """The seed's dense fine-tune (bench/studies/pruning_study.py `one`), or the one a cut-short call already saved."""
    from bench.studies.pruning_study import ROOT, one
    from bertcompress.metrics import headline

    done = ROOT / "models" / f"{task}-s{seed}-dense" / "metrics.json"
    if done.is_file() and not max_steps:
        m = json.loads(done.read_text())
        return {
            "task": task,
            "seed": seed,
            "accuracy": m.get("val_accuracy"),
            "metric": headline(task, m),
            "lr": json.loads((done.parent / "params.json").read_text())["finetune"]["lr"],
        }
    return one(task, seed, {"variant": "dense", "distill": False}, data, model, max_steps, device)


def run(args) -> None:
    import platform

    import torch

    from bench.studies.pruning_study import ROOT

    started, rows = time.time(), []
    data = prepared_data(args, args.tasks, ROOT)
    device = torch.cuda.get_device_name() if args.device == "cuda" else f"cpu ({platform.processor() or 'x86_64'})"
    info = {
        "device": device,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "jobs": args.jobs,
        "rows": rows,
    }
    ready = [("dense", t, s) for t in args.tasks for s in args.seeds]

    def call(job: tuple) -> tuple:
        kind, t, s, *rest = job
        if kind == "dense":
            return dense, t, s, data[t], args.model, args.max_steps, args.device
        return quantized, t, s, rest[0], data[t], args.model, args.device

    def done(job: tuple, row: dict) -> None:
        if job[0] == "dense":
            row = {
                "task": row["task"],
                "seed": row["seed"],
                "recipe": "fp32",
                "mode": "none",
                "accuracy": row["accuracy"],
                "metric": row["metric"],
                "lr": row["lr"],
            }
            ready.extend(("q", job[1], job[2], r) for r in args.recipes)
        rows.append(row)
        print(
            f"{row['task']} s{row['seed']} {row['recipe']}: acc {row['accuracy']} metric "
            f"{row['metric']:.4f} [{time.time() - started:.0f}s]",
            flush=True,
        )
        save(args.json, info, started)

    run_pool(ready, call, done, args.jobs)
    save(args.json, info, started)


def report(paths: list[str]) -> None:
    """Mean accuracy per task and recipe, and its paired difference from PTQ and from fp32 (same seed)."""
    import pandas as pd

    rows = [r for path in paths for r in json.loads(Path(path).read_text())["rows"]]
    df = pd.DataFrame(rows)
    lines = []
    for task, t in df.groupby("task", sort=False):
        acc = t.pivot_table(index="seed", columns="recipe", values="accuracy")
        table = []
        for recipe in acc.columns:
            row = {
                "recipe": recipe,
                "seeds": int(acc[recipe].notna().sum()),
                "accuracy (mean)": acc[recipe].mean(),
                "per seed": " / ".join(f"{v:.4f}" for v in acc[recipe]),
            }
            for ref in ("fp32", "ptq"):
                if ref in acc and recipe != ref:
                    d = (acc[recipe] - acc[ref]) * 100
                    row[f"Δ vs {ref} (points)"] = f"{d.mean():+.2f} (worst {d.min():+.2f})"
            table.append(row)
        lines += [f"### {task}", "", pd.DataFrame(table).to_markdown(index=False, floatfmt=".4f"), ""]
    print("\n".join(lines))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    g = grid()
    r.add_argument("--tasks", nargs="+", default=g["tasks"])
    r.add_argument("--seeds", nargs="+", type=int, default=g["seeds"])
    r.add_argument("--recipes", nargs="+", default=list(g["recipes"]), choices=list(g["recipes"]))
    common_args(r, max_steps_help="the dense fine-tunes stop after N steps (a smoke run)")
    rep = sub.add_parser("report")
    rep.add_argument("rows", nargs="+")
    args = ap.parse_args()
    run(args) if args.cmd == "run" else report(args.rows)


if __name__ == "__main__":
    main()
