"""Shipped artifacts side by side: each one's runtime (its manifest's format) loaded in one process, timed at
batch 1 and 8 (length 128, synthetic ids, bertcompress/latency.py) in interleaved rounds, the best round's median
kept; ratios against the first artifact (the baseline, e.g. the dense model exported the same way).

    python -m bench.shipped results/export/dense results/export/mrpc --names dense champion \
        --json bench/results/shipped-mrpc-cpu.json

Like with like: the same inputs, threads and process for every artifact; the CPU is named in the output.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from bertcompress import archive
from bertcompress.artifact import artifact_model, read_manifest
from bertcompress.latency import LENGTH, machine, measure


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.shipped", description=__doc__.split("\n\n")[0])
    parser.add_argument("artifacts", nargs="+", help="artifact folders or .tar.zst archives; the first is the baseline")
    parser.add_argument("--names", nargs="+", help="a label per artifact (default: its path)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=15, help="timed passes per round (median)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (the best median is kept)")
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args(argv)
    names = args.names or args.artifacts
    if len(names) != len(args.artifacts):
        print("error: give one --names label per artifact", file=sys.stderr)
        return 2
    models, formats = [], []
    for path in args.artifacts:
        manifest = read_manifest(path)
        if manifest is None:
            print(f"error: {path} is no exported artifact (no manifest.json); export it first", file=sys.stderr)
            return 2
        formats.append(manifest["format"])
        models.append(artifact_model(archive.folder(path), manifest["format"], manifest["max_length"], args.threads))
    best: list[dict] = [{} for _ in models]
    for _ in range(args.rounds):
        for i, model in enumerate(models):
            timed = measure(model, runs=args.runs, threads=args.threads)
            for k in ("batch1_ms", "batch8_ms"):
                best[i][k] = min(best[i].get(k, float("inf")), timed[k])
    cpu = machine()
    print(f"{cpu['cpu']} ({', '.join(cpu['flags'])}), {args.threads} threads, length {LENGTH}, "
          f"best of {args.rounds} interleaved rounds of {args.runs}")  # fmt: skip
    rows = []
    for name, fmt, b in zip(names, formats, best):
        ratio = {k: best[0][k] / b[k] for k in b}
        rows.append({"name": name, "format": fmt, **b, **{f"x_{k}": v for k, v in ratio.items()}})
        print(
            f"  {name:<12} {fmt:<9} batch 1 {b['batch1_ms']:6.2f} ms  batch 8 {b['batch8_ms']:7.2f} ms  "
            f"x{names[0]}: {ratio['batch1_ms']:.2f} / {ratio['batch8_ms']:.2f}"
        )
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": cpu, "threads": args.threads, "rows": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
