"""How fast each task's structured recipe ships: the shapes params.yaml's per-task recipes cut to, side by side
with the dense model on this CPU, eager fp32 and as `export --format auto` ships on x86 (OpenVINO, int8 by NNCF).

    .venv/bin/python -m bench.recipe_speed --json bench/results/recipe-speed-cpu.json

Speed depends on the shape, not the weights: every model is the packaged MiniLM's architecture with random
weights cut to the recipe's shape (bertcompress/shapes.py, as prune.structured cuts), so no training is needed.
Batch 8 (and 1), length 128, `--threads` threads; each model built once, then timed in interleaved rounds (every
model sees the same machine noise), the median of the rounds' medians reported. Accuracy is the pruning study's
(bench/RESULTS-pruning.md); this is the speed half of bench/RESULTS-recipes.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import torch

from bertcompress import latency, shapes, sizes
from bertcompress import params as P

TASKS = ("mrpc", "sst2", "cola", "stsb", "rte", "wnli")


def recipe_shapes() -> dict[tuple[float, float], list[str]]:
    """{(heads_fraction, ffn_fraction): [tasks whose structured recipe cuts to it]} from params.yaml."""
    out: dict = {}
    p = P.defaults()
    for task in TASKS:
        s = p.for_task(task).variant("structured", 42).prune
        out.setdefault((s.heads_fraction, s.ffn_fraction), []).append(task)
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.recipe_speed", description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    name = P.defaults().model.name
    cuts = {(0.0, 0.0): ["dense"], **recipe_shapes()}
    models = {cut: shapes.shaped(name, *cut) for cut in cuts}
    shipped = {cut: shapes.openvino_int8(m, args.threads) for cut, m in models.items()}
    inputs = {b: latency.inputs(b, latency.LENGTH) for b in (1, 8)}
    numpy = {b: {k: v.numpy() for k, v in x.items()} for b, x in inputs.items()}
    times: dict = {(cut, kind, b): [] for cut in cuts for kind in ("eager", "openvino") for b in (1, 8)}
    with torch.inference_mode():
        for _ in range(args.rounds):  # interleaved: every model sees the same noise
            for cut in cuts:
                for b in (1, 8):
                    times[(cut, "eager", b)].append(shapes.timed_ms(lambda x: models[cut](**x), inputs[b], args.runs))
                    times[(cut, "openvino", b)].append(shapes.timed_ms(shipped[cut], numpy[b], args.runs))
    ms = {k: statistics.median(v) for k, v in times.items()}
    dense = (0.0, 0.0)
    rows = []
    for cut, tasks in cuts.items():
        row = {"heads_fraction": cut[0], "ffn_fraction": cut[1], "tasks": tasks}
        row["parameters"] = sizes.parameter_counts(models[cut])[0]
        for kind in ("eager", "openvino"):
            for b in (1, 8):
                row[f"{kind}_b{b}_ms"] = ms[(cut, kind, b)]
        row["speedup_eager_b8"] = ms[(dense, "eager", 8)] / ms[(cut, "eager", 8)]  # structure alone
        row["speedup_shipped_vs_dense_shipped_b8"] = ms[(dense, "openvino", 8)] / ms[(cut, "openvino", 8)]
        row["speedup_shipped_vs_eager_dense_b8"] = ms[(dense, "eager", 8)] / ms[(cut, "openvino", 8)]
        rows.append(row)
    print(
        f"random weights cut to each recipe's shape; batch 8 (1), length 128, {args.threads} threads, median of "
        f"{args.rounds} interleaved rounds x {args.runs} passes; {latency.machine()['cpu']}"
    )
    print("| shape (heads / FFN removed) | tasks | params | eager b8 ms | shipped b8 ms | × eager | × dense shipped |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['heads_fraction']:g} / {r['ffn_fraction']:g} | {', '.join(r['tasks'])} | "
            f"{r['parameters'] / 1e6:.1f} M | {r['eager_b8_ms']:.1f} | {r['openvino_b8_ms']:.1f} | "
            f"{r['speedup_eager_b8']:.2f}× | {r['speedup_shipped_vs_dense_shipped_b8']:.2f}× |"
        )
    if args.json:
        meta = {"threads": args.threads, "rounds": args.rounds, "runs": args.runs, "length": latency.LENGTH}
        Path(args.json).write_text(json.dumps(meta | {"machine": latency.machine(), "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
