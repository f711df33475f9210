"""How much CPU speed structured pruning buys: eager fp32 latency of the dense model and of structured variants
(heads and FFN neurons removed, bertcompress/prune.py), side by side in one process, rounds interleaved.

    python -m bench.structured_speed --model-dir outputs/bench/mrpc/dense --threads 2 \
        --json bench/results/structured-speed-cpu.json

Speed depends on the shapes only, so the variants are pruned by magnitude without recovery; what accuracy each
keeps after distilled recovery is the pruning study's question (bench/RESULTS-pruning.md).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

import torch

from bertcompress import latency, prune, sizes
from bertcompress import params as P
from bertcompress.variant import load_variant

FRACTIONS = [(0.25, 0.25), (0.5, 0.5), (0.5, 0.75), (0.67, 0.75)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model-dir", required=True, help="a fine-tuned dense folder")
    ap.add_argument("--task", default="mrpc")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    models = {"dense": load_variant(args.model_dir, 2)}
    with tempfile.TemporaryDirectory() as tmp:
        for heads, ffn in FRACTIONS:
            p = P.load(None, ["prune.method=structured", f"prune.heads_fraction={heads}", f"prune.ffn_fraction={ffn}"])
            out = Path(tmp) / f"h{heads}-f{ffn}"
            prune.structured(args.model_dir, str(out), p, args.task)
            models[f"structured heads {heads:.0%} ffn {ffn:.0%}"] = load_variant(str(out), 2)
    times: dict = {name: {1: [], 8: []} for name in models}
    for _ in range(args.rounds):  # interleaved: every model sees the same machine noise
        for name, model in models.items():
            m = latency.measure(model, (1, 8), 128, warmup=2, runs=args.runs, threads=args.threads)
            for b in (1, 8):
                times[name][b].append(m[f"batch{b}_ms"])
    rows = []
    for name, model in models.items():
        b1, b8 = (statistics.median(times[name][b]) for b in (1, 8))
        rows.append({"model": name, "parameters": sizes.parameter_counts(model)[0], "batch1_ms": b1, "batch8_ms": b8})
    for r in rows:
        r["speedup_b1"], r["speedup_b8"] = rows[0]["batch1_ms"] / r["batch1_ms"], rows[0]["batch8_ms"] / r["batch8_ms"]
    print(f"eager fp32, length 128, {args.threads} threads, median of {args.rounds} interleaved rounds x {args.runs}")
    print("| model | parameters | b1 ms | b8 ms | b1 × | b8 × |\n|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['model']} | {r['parameters'] / 1e6:.1f} M | {r['batch1_ms']:.1f} | {r['batch8_ms']:.1f} | "
            f"{r['speedup_b1']:.2f}× | {r['speedup_b8']:.2f}× |"
        )
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "threads": args.threads,
                    "length": 128,
                    "rounds": args.rounds,
                    "runs": args.runs,
                    "cpu": cpu(),
                    "rows": rows,
                },
                indent=1,
            )
        )


def cpu() -> str:
    try:
        return next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        return "unknown"


if __name__ == "__main__":
    main()
