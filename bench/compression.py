"""Compression benchmark: every variant of issue 3 on one GLUE task, seed protocol, one table.

    nohup .venv/bin/python bench/compression.py --task mrpc > /tmp/bench_compression.log 2>&1 &

Fine-tunes the dense model and the gradually pruned ones with params.yaml (the seed recipe), derives the
others from them (quantized, one-shot, structured, pruned + int8), evaluates each with evaluate.evaluate on the
full validation split, measures sizes (a)/(b)/(c) with sizes.measure and CPU latency at batch 1 and 8, length
128 (latency.measure: warm-up, median of --runs; one pass as each variant is built, then the best of --rounds
passes, because the CPU is shared and a pass can be slowed by other work). Every variant lives in
outputs/bench/<task>/<name>/, so a rerun skips what is built and an interrupted fine-tune resumes; rows.json
keeps each variant's accuracy and sizes, so a rerun with --only "A|B" keeps every row in the table and times only
the variants it names. The table goes to bench/RESULTS-compression.md after every row.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

import torch
import torch._inductor.config

from bertcompress import latency, params as P, prune, quantize, sizes
from bertcompress.cli import prepared
from bertcompress.evaluate import evaluate_model
from bertcompress.finetune import finetune
from bertcompress.glue import get_task
from bertcompress.tokenize import Encoded

RESULTS = Path(__file__).with_name("RESULTS-compression.md")


def gradual(sparsity: float, scope: str = "encoder") -> dict:
    return {"prune": {"method": "gradual", "scope": scope, "final_sparsity": sparsity}}


# name -> (how it is made, from which variant, params changes); the order of work and of the table: the cheap
# variants of the dense model first, so a run cut short still answers most questions
VARIANTS = {
    "dense": ("finetune", None, {}),
    "int8 dynamic": ("quantize", "dense", {"quantize": {"mode": "dynamic"}}),
    "int8 dynamic + int8 embeddings": ("quantize", "dense", {"quantize": {"mode": "dynamic_emb"}}),
    "fp16": ("quantize", "dense", {"quantize": {"mode": "fp16"}}),
    "bf16": ("quantize", "dense", {"quantize": {"mode": "bf16"}}),
    "static int8 (PT2E)": ("quantize", "dense", {"quantize": {"mode": "static"}}),
    "one-shot 50 % (encoder)": ("oneshot", "dense", {"prune": {"method": "oneshot", "final_sparsity": 0.5}}),
    "one-shot 90 % (encoder)": ("oneshot", "dense", {"prune": {"method": "oneshot", "final_sparsity": 0.9}}),
    "one-shot 90 % + int8 incl. embeddings": (
        "quantize", "one-shot 90 % (encoder)", {"quantize": {"mode": "dynamic_emb"}}),
    "gradual 50 % (encoder)": ("finetune", None, gradual(0.5)),
    "gradual 90 % (encoder)": ("finetune", None, gradual(0.9)),
    "gradual 90 % + int8 incl. embeddings": (
        "quantize", "gradual 90 % (encoder)", {"quantize": {"mode": "dynamic_emb"}}),
    "gradual 80 % (encoder)": ("finetune", None, gradual(0.8)),
    "structured (25 % heads + 25 % FFN; 100 recovery steps)": (
        "structured", "dense", {"prune": {"method": "structured", "recovery_steps": 100}}),
    "QAT int8 (PT2E, 200 steps)": ("quantize", "dense", {"quantize": {"mode": "qat"}}),
    "gradual 90 % classifier only (seed)": ("finetune", None, gradual(0.9, "classifier")),
    "one-shot 90 % + 100 recovery steps": (
        "oneshot", "dense", {"prune": {"method": "oneshot", "final_sparsity": 0.9, "recovery_steps": 100}}),
}


def with_changes(base: P.Params, changes: dict) -> P.Params:
    return dataclasses.replace(base, **{s: dataclasses.replace(getattr(base, s), **kv) for s, kv in changes.items()})


def folder(name: str, root: Path) -> Path:
    return root / "".join(c if c.isalnum() or c in "+-" else "_" for c in name.replace("%", "pct"))


def build(name: str, root: Path, params: P.Params, task: str, data: dict) -> Path:
    """The variant's folder, made unless it is already complete."""
    how, source, changes = VARIANTS[name]
    out = folder(name, root)
    if (out / "metrics.json").is_file():
        return out
    p, base = with_changes(params, changes), str(build(source, root, params, task, data)) if source else None
    if how == "finetune":
        finetune(p, task, data["train"], data["validation"], str(out))
    elif how == "quantize":
        quantize.quantize(base, str(out), p, task, calib_path=data["train"], train_path=data["train"])
    else:
        getattr(prune, how)(base, str(out), p, task, train_path=data["train"])
    return out


def row(name: str, model, out: Path, task: str, data: dict) -> dict:
    metrics = evaluate_model(model, Encoded.load(data["validation"]), task)  # what evaluate.evaluate does
    saved = json.loads((out / "metrics.json").read_text())
    base = saved.get("base")  # a quantized variant reports the sparsity of the model it quantized
    sparsity = saved.get("sparsity") or (json.loads((Path(base) / "metrics.json").read_text()).get("sparsity")
                                         if base else None)
    return {"variant": name, "accuracy": metrics["accuracy"], "f1": metrics.get("f1"), **sizes.measure(model),
            "sparsity": sparsity["overall"] if sparsity else 0.0}


def timed(rows: dict, models: dict, args) -> None:
    """One latency pass over these models; each row keeps its best median (the CPU is shared)."""
    for label, m in models.items():
        t = latency.measure(m, runs=args.runs, threads=args.threads)
        r = rows[label]
        for k in ("batch1_ms", "batch8_ms"):
            r[k] = min(r.get(k) or float("inf"), t[k])
        r["passes"] = r.get("passes", 0) + 1
        print(f"latency {label}: {t}", flush=True)


def order(label: str) -> float:
    """Table order: the order of VARIANTS, each compiled row after its model."""
    return list(VARIANTS).index(label.split(", torch.compile")[0]) + 0.5 * label.endswith("torch.compile")


def carried(name: str, root: Path) -> str | None:
    """Where a variant's model (or the model it was made from) was fine-tuned, if not here (bench/gpu_variants.py)."""
    name = name.split(", torch.compile")[0]
    while name:
        path = folder(name, root) / "metrics.json"
        if path.is_file() and (prov := json.loads(path.read_text()).get("provenance")):
            return prov["trained_on"]
        name = VARIANTS[name][1]
    return None


def write(rows: dict, task: str, args) -> None:
    dense = rows.get("dense", {})
    root = Path(args.out) / task
    lines = [f"# Compression benchmark: {task}, all-MiniLM-L6-v2, seed protocol (params.yaml)", "",
             f"Measured on this CPU ({os.cpu_count()} cores, shared), torch {torch.__version__}, "
             f"{args.threads} thread(s), length 128, median of {args.runs} runs after 3 warm-up, the best of the "
             "passes made (one as each variant is built, then passes over all). Sizes in MB (10^6 bytes): "
             "(a) torch.save(state_dict), (b) compact (non-zero values + bitmask, int8/fp16 at their size), "
             "(c) zstd -9 of (a). Sparsity: zeros in the pruned scope. † fine-tuned on a lent GPU with the same code, "
             "params and seed (bench/gpu_variants.py), carried back in fp16 and restored to fp32, then evaluated, "
             "sized and timed here; (c) is not shown for them: fp16-rounded fp32 weights compress better than "
             "trained ones.",
             "", "| variant | acc | F1 | Δacc | (a) MB | (b) MB | (c) MB | params | non-zero | sparsity "
             "| b1 ms | b8 ms | b8 speed-up |", "|" + "---|" * 13]
    for r in sorted(rows.values(), key=lambda r: order(r["variant"])):
        fmt = lambda k, f="{:.1f}": f.format(r[k]) if r.get(k) is not None else "–"  # noqa: E731
        fast = r.get("batch8_ms") and dense.get("batch8_ms")
        gain = f"{dense['batch8_ms'] / r['batch8_ms']:.1f}×" if fast else "–"
        delta = f"{100 * (r['accuracy'] - dense['accuracy']):+.1f}" if dense else "–"
        gpu = carried(r["variant"], root)
        lines.append(f"| {r['variant']}{' †' if gpu else ''} | {fmt('accuracy', '{:.3f}')} | {fmt('f1', '{:.3f}')} | "
                     f"{delta} | {fmt('state_dict_mb')} | {fmt('compact_mb')} | "
                     f"{'–' if gpu else fmt('compressed_mb')} | "
                     f"{r['parameters'] / 1e6:.2f} M | {r['nonzero_parameters'] / 1e6:.2f} M | "
                     f"{100 * r['sparsity']:.1f} % | {fmt('batch1_ms')} | {fmt('batch8_ms')} | {gain} |")
    RESULTS.write_text("\n".join(lines) + "\n")
    (Path(args.out) / task / "rows.json").write_text(json.dumps(list(rows.values()), indent=1))


def saved_rows(root: Path) -> dict:
    """Rows of earlier runs without their latency: accuracy and sizes stand, but timings (and speed-ups) are
    comparable only within one run on a shared CPU, so the table shows those of the variants timed now."""
    path = root / "rows.json"
    rows = json.loads(path.read_text()) if path.is_file() else []
    return {r["variant"]: {**r, "batch1_ms": None, "batch8_ms": None, "passes": 0} for r in rows}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--task", default="mrpc")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("-S", "--set", dest="overrides", action="append", default=[])
    parser.add_argument("--out", default="outputs/bench")
    parser.add_argument("--only", help="variant names separated by | (default: all, in order)")
    # 1 thread by default: on a 2-core machine that others also load, 2 threads wait on each other (seen: dense
    # batch 1 at 870 ms with 2 threads against 166 ms with 1, in the same minute)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--no-compile", dest="compile", action="store_false")
    args = parser.parse_args(argv)
    params = P.load(args.params, args.overrides)
    names = [n.strip() for n in args.only.split("|")] if args.only else list(VARIANTS)
    data, root = prepared(args.task, params), Path(args.out) / args.task
    root.mkdir(parents=True, exist_ok=True)
    torch._inductor.config.freezing = True  # torch.compile constant-folds the int8 weights into its kernels
    rows, models = saved_rows(root), {}
    for name in names:  # build, evaluate and time each variant as it comes: a cut-short run still has rows
        t0 = time.perf_counter()
        out = build(name, root, params, args.task, data)
        new = {name: quantize.load_variant(str(out), get_task(args.task).num_labels)}
        if args.compile and "PT2E" in name:  # compiled once per input shape, in the first pass's warm-up
            new[f"{name}, torch.compile"] = torch.compile(new[name])
        if name not in rows:
            rows[name] = row(name, new[name], out, args.task, data)
        for label in new:
            rows[label] = {**rows[name], "variant": label}
        print(f"built {name} in {time.perf_counter() - t0:.0f} s: {rows[name]}", flush=True)
        timed(rows, new, args)
        models.update(new)
        write(rows, args.task, args)
    for _ in range(args.rounds - 1):  # more passes over all variants of this run, interleaved, at the end
        timed(rows, models, args)
        write(rows, args.task, args)
    print(RESULTS.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
