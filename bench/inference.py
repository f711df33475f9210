"""Inference of what ships, side by side in one run on this CPU: eager fp32, eager dynamic int8 (the product's
int8 path before export), ONNX Runtime fp32, the exported int8 ONNX artifact (bertcompress export, what Optimum
users get), the PT2E int8 artifact compiled by Inductor (export --format pt2e_int8 of a static variant), and
the int8 ONNX artifacts of a structured-pruned (25 % of heads and FFN neurons, 100 recovery steps) and a one-shot
90 %-pruned model, on the same fine-tuned model, and, where <task>/structured50_kd is there
(bench/studies/pruning_study.py's
structured 50 % of heads and FFN neurons, distilled on a GPU, carried by bench/gpu_variants.py), that model as
int8 ONNX and as PT2E int8 + Inductor; latency at batch 1, 8 and 32 at length 128, throughput over the
real validation split, the artifact's size and the validation metrics beside each.

    .venv/bin/python -m bench.inference --tasks mrpc sst2 --threads 2      # needs outputs/bench/<task>/dense

The models are outputs/bench/<task>/dense (fine-tuned here by bench/compression.py, or carried from a GPU by
bench/gpu_variants.py). Latency: latency.measure (synthetic full-length pairs, warm-up, median of --runs), in
--rounds interleaved rounds (the machine is shared: the best round's median is kept, every round's is saved).
Writes bench/results/inference-cpu.json and the table in bench/RESULTS-inference.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch

from bertcompress import evaluate as ev
from bertcompress import latency, variant
from bertcompress import params as P
from bertcompress.compiled import CompiledModel
from bertcompress.export import export
from bertcompress.glue import get_task
from bertcompress.tokenize import Encoded, prepared

BATCHES = (1, 8, 32)
ROWS = {
    "eager fp32": "the fine-tuned model, torch eager",
    "eager int8 (dynamic_emb)": "torch quantize_dynamic, Linear + embeddings",
    "ONNX Runtime fp32": "bertcompress export --format onnx",
    "ONNX Runtime int8 (the artifact)": "bertcompress export (default)",
    "PT2E int8 + Inductor (artifact)": "quantize static, then export --format pt2e_int8",
    "structured + ONNX Runtime int8": "prune structured (heads 0.25, FFN 0.25, 100 recovery steps), export",
    "one-shot 90 % + ONNX Runtime int8": "prune oneshot 0.9 (encoder), export (zeros packed by the archive's zstd)",
    "structured 50 % distilled + ONNX Runtime int8": "the pruning study's structured 50/50, export",
    "structured 50 % distilled + PT2E int8 + Inductor": "the same, quantize static, export --format pt2e_int8",
}
DERIVED = {
    "static": {"quantize.mode": "static"},
    "structured": {
        "prune.method": "structured",
        "prune.heads_fraction": 0.25,
        "prune.ffn_fraction": 0.25,
        "prune.recovery_steps": 100,
    },
    "oneshot90": {"prune.method": "oneshot", "prune.final_sparsity": 0.9},
}


def models(task: str, root: Path, p: P.Params, train: str) -> dict:
    """Every model of the table, made (and exported) once under root/<task>/ from root/<task>/dense."""
    from bertcompress import prune, quantize

    folder, n = root / task, get_task(task).num_labels
    for name, changes in DERIVED.items():
        if not (folder / name / "metrics.json").is_file():
            step = quantize.quantize if name == "static" else prune.prune
            step(str(folder / "dense"), str(folder / name), p.replace(changes), task, train)
    carried = (folder / "structured50_kd" / "metrics.json").is_file()
    if carried and not (folder / "structured50_kd_static" / "metrics.json").is_file():
        quantize.quantize(
            str(folder / "structured50_kd"),
            str(folder / "structured50_kd_static"),
            p.replace(DERIVED["static"]),
            task,
            train,
        )
    for source, fmt, out in [
        ("dense", "onnx", "artifact-onnx"),
        ("dense", "onnx_int8", "artifact-onnx_int8"),
        ("static", "pt2e_int8", "artifact-pt2e"),
        ("structured", "onnx_int8", "artifact-structured"),
        ("oneshot90", "onnx_int8", "artifact-oneshot90"),
    ] + carried * [
        ("structured50_kd", "onnx_int8", "artifact-s50"),
        ("structured50_kd_static", "pt2e_int8", "artifact-s50-pt2e"),
    ]:
        if not (folder / out / "manifest.json").is_file():
            export(str(folder / source), str(folder / out), task, fmt)
    load = lambda name: variant.load_variant(str(folder / name), n)  # noqa: E731
    return {
        "eager fp32": load("dense"),
        "eager int8 (dynamic_emb)": variant.convert(variant.load_float(str(folder / "dense"), n), "dynamic_emb"),
        "ONNX Runtime fp32": load("artifact-onnx"),
        "ONNX Runtime int8 (the artifact)": load("artifact-onnx_int8"),
        "PT2E int8 + Inductor (artifact)": load("artifact-pt2e"),
        "structured + ONNX Runtime int8": load("artifact-structured"),
        "one-shot 90 % + ONNX Runtime int8": load("artifact-oneshot90"),
        **(
            {
                "structured 50 % distilled + ONNX Runtime int8": load("artifact-s50"),
                "structured 50 % distilled + PT2E int8 + Inductor": load("artifact-s50-pt2e"),
            }
            if carried
            else {}
        ),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tasks", nargs="+", default=["mrpc", "sst2"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=15)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--root", default="outputs/bench")
    ap.add_argument(
        "--splits",
        help="a folder with <task>/train.npz and validation.npz (tokenized, as on a lent "
        "machine without GLUE parquet) instead of preparing GLUE here",
    )
    ap.add_argument("--json", default="bench/results/inference-cpu.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    p, rows, t0 = P.load("params.yaml"), [], time.perf_counter()
    for task in args.tasks:
        data = (
            {s: f"{args.splits}/{task}/{s}.npz" for s in ("train", "validation")}
            if args.splits
            else prepared(task, p, "data/glue", "data/tokenized")
        )
        val = data["validation"]
        built = models(task, Path(args.root), p, data["train"])
        metrics = get_task(task).metrics
        for name, model in built.items():  # accuracy, and throughput over the real validation lengths
            if hasattr(model, "set_threads"):
                model.set_threads(args.threads)
            if isinstance(model, CompiledModel):  # Inductor compiles each shape bucket on first use: not timed
                ev.evaluate_model(model, Encoded.load(val), task, 32)
            start = time.perf_counter()
            m = ev.evaluate_model(model, Encoded.load(val), task, 32)
            seconds = time.perf_counter() - start
            size = model.sizes()["compact_mb"] if hasattr(model, "sizes") else m["size_mb"]  # the files that ship
            rows.append(
                {
                    "task": task,
                    "model": name,
                    "how": ROWS[name],
                    **{k: m[k] for k in metrics},
                    "size_mb": size,
                    "validation_samples_per_s": len(Encoded.load(val)) / seconds,
                    "rounds": {},
                }
            )
        for r in range(args.rounds):  # interleaved: every model once per round
            for name, model in built.items():
                timed = latency.measure(model, BATCHES, 128, runs=args.runs, threads=args.threads)
                row = next(x for x in rows if x["task"] == task and x["model"] == name)
                row["rounds"][r] = {b: timed[f"batch{b}_ms"] for b in BATCHES}
                print(
                    f"{task} {name:34} round {r}: "
                    + " ".join(f"b{b} {timed[f'batch{b}_ms']:7.1f} ms" for b in BATCHES),
                    flush=True,
                )
        for row in rows:
            if row["task"] == task:
                row |= {f"batch{b}_ms": min(x[b] for x in row["rounds"].values()) for b in BATCHES}
    machine = (
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores (this process may use "
        f"{len(os.sched_getaffinity(0))}), torch {torch.__version__}"
    )
    out = {
        "machine": machine,
        "threads": args.threads,
        "length": 128,
        "runs": args.runs,
        "rounds": args.rounds,
        "wall_s": time.perf_counter() - t0,
        "rows": rows,
    }
    Path(args.json).write_text(json.dumps(out, indent=1))
    print(table(out))


def table(out: dict) -> str:
    lines = []
    for task in dict.fromkeys(r["task"] for r in out["rows"]):
        rs = [r for r in out["rows"] if r["task"] == task]
        base = rs[0]
        metrics = get_task(task).metrics
        lines += [
            f"### {task} (validation, {out['threads']} threads, length 128; speed-up vs eager fp32)",
            "",
            "| model | "
            + " | ".join(metrics)
            + " | MB | "
            + " | ".join(f"b{b} ms" for b in BATCHES)
            + " | b8 samples/s | validation samples/s | b1 × | b8 × | b32 × |",
            "|---" * (10 + len(metrics)) + "|",
        ]
        for r in rs:
            lines.append(
                f"| {r['model']} | "
                + " | ".join(f"{r[k]:.4f}" for k in metrics)
                + f" | {r['size_mb']:.1f} | "
                + " | ".join(f"{r[f'batch{b}_ms']:.1f}" for b in BATCHES)
                + f" | {8e3 / r['batch8_ms']:.0f} | {r['validation_samples_per_s']:.0f} | "
                + " | ".join(f"{base[f'batch{b}_ms'] / r[f'batch{b}_ms']:.1f}×" for b in BATCHES)
                + " |"
            )
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
