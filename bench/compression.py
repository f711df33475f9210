"""Compression benchmark: every variant of a params file's table on one GLUE task, one seed, one table.

    nohup .venv/bin/python -m bench.compression --task mrpc > /tmp/bench_compression.log 2>&1 &
    .venv/bin/python -m bench.compression --only 'dense+static|gradual80'     # build and time only these

The variants are bench/params-compression.yaml's `variants` table (laid over params.yaml; -S overrides as for
the flow), made by the flow's own plan and step functions (tasks/plan.py `runs`, in its order): each variant
fine-tuned or pruned
from the one it names (distilled from its teacher), then quantized in each of its modes, then evaluated on the
validation split (tasks/stage.py's `made`: the tasks of tasks/steps.py as plain functions, skipped when their
output holds the same step record). Outputs: outputs/bench/<task>/<variant>[.<mode>]; MLflow runs under one parent in
outputs/bench/mlflow.db
unless $MLFLOW_TRACKING_URI is set. On top of the flow: CPU latency at batch 1 and 8, length 128, with --threads
threads (latency.measure: warm-up, median of --runs; one pass as each model is built, then the best of --rounds
passes, because the CPU is shared), and torch.compile rows for the PT2E (static, qat) models. rows.json keeps
every row's accuracy and sizes, so a rerun with --only keeps every row in the table and times only the rows it
names. The table goes to bench/RESULTS-compression.md and the rows to bench/results/compression-<task>.json
after every row (not with --no-results: the table is printed).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch
import torch._inductor.config

from bertcompress import latency
from bertcompress import model as core_model
from bertcompress import params as P
from bertcompress.glue import get_task
from bertcompress.tokenize import prepared
from bertcompress.variant import load_variant
from tasks import plan, tracking
from tasks.stage import made

BENCH = Path(__file__).resolve().parent
RESULTS, JSON = BENCH / "RESULTS-compression.md", BENCH / "results" / "compression-{task}.json"
COMPILED, PT2E = ", torch.compile", ("static", "qat")
MODES = {
    "dynamic": "int8 dynamic",
    "dynamic_emb": "int8 dynamic + int8 embeddings",
    "fp16": "fp16",
    "bf16": "bf16",
    "static": "static int8 (PT2E)",
    "qat": "QAT int8 (PT2E, {q.quantize.qat_steps} steps)",
}
KEPT = ("accuracy", "f1", "state_dict_mb", "compact_mb", "compressed_mb", "parameters", "nonzero_parameters")


def describe(p: P.Params, name: str, mode: str) -> str:
    """What the row is, in words, from the variant's params: 'one-shot 90 % (encoder) of dense + int8 dynamic'."""
    q, v = p.variant(name, p.experiment.seeds[0], mode), p.variants[name]
    r, pct = q.prune, lambda x: f"{100 * x:g} %"
    what = {
        "none": "fine-tuned",
        "gradual": f"gradual {pct(r.final_sparsity)} ({r.scope})",
        "oneshot": f"one-shot {pct(r.final_sparsity)} ({r.scope}) of {v.source}",
        "structured": f"structured {pct(r.heads_fraction)} heads + {pct(r.ffn_fraction)} FFN of {v.source}",
    }
    text = what[r.method] + (f", {r.recovery_steps} recovery steps" if r.recovery_steps and not v.finetuned else "")
    return text + (f" + {MODES[mode].format(q=q)}" if mode != "none" else "")


class Bench:
    """The plan's runs of one seed, made in outputs/bench/<task>/<variant>[.<mode>] (evaluations in eval/)."""

    def __init__(self, args, p: P.Params, parent: str):
        self.p, self.task, self.parent, self.root = p, args.task, parent, Path(args.out) / args.task
        self.root.mkdir(parents=True, exist_ok=True)
        base = str(Path(args.out) / "pretrained" / p.model.name.replace("/", "--"))
        if not Path(base, "source.json").is_file():
            core_model.pretrained(p.model.name, base)
        self.outs = {f"tokenize {self.task}": prepared(args.task, p), f"pretrained {self.task}": base}

    def where(self, r: plan.Run) -> str:
        label = plan.method(r.name, r.mode)
        return (
            str(self.root / "eval" / f"{label}.json")
            if r.step == "evaluate"
            else str(self.root / (r.name + (f".{r.mode}" if r.mode != "none" else "")))
        )

    def model(self, evaluation: plan.Run, runs: dict[str, plan.Run]) -> tuple[str, dict]:
        """(folder, row) of one evaluation of the plan: what it needs made first (each step skipped when its
        output holds its record), then evaluated."""
        for r in needed(evaluation, runs):
            if r.id not in self.outs:
                self.outs[r.id] = made(r, self.p, self.outs, self.parent, out=self.where(r))
        folder, row = self.outs[evaluation.source], self.outs[evaluation.id]
        return folder, {k: row.get(k) for k in KEPT} | {"sparsity": sparsity(folder)}


def needed(r: plan.Run, runs: dict[str, plan.Run]) -> list[plan.Run]:
    """r and the model runs it reads (its source's chain, teachers), oldest first."""
    out = [r]
    for d in (r.source, r.teacher):
        if d in runs:
            out = [x for x in needed(runs[d], runs) if x not in out] + out
    return out


def sparsity(folder: str) -> float:
    """Zeros in the pruned scope; a quantized model reports that of the model it quantized."""
    saved = json.loads(Path(folder, "metrics.json").read_text())
    if "sparsity" in saved:
        return saved["sparsity"]["overall"]
    return sparsity(saved["base"]) if "base" in saved else 0.0


def carried(p: P.Params, root: Path, name: str) -> str | None:
    """Where the variant (or one it is made from) was fine-tuned, if not here (bench/gpu_variants.py)."""
    for n in reversed(plan.chain(p, name)):
        path = root / n / "metrics.json"
        if path.is_file() and (prov := json.loads(path.read_text()).get("provenance")):
            return prov["trained_on"]
    return None


def timed(rows: dict, models: dict, args) -> None:
    """One latency pass over these models; each row keeps its best median (the CPU is shared)."""
    for label, m in models.items():
        t, r = latency.measure(m, runs=args.runs, threads=args.threads), rows[label]
        for k in ("batch1_ms", "batch8_ms"):
            r[k] = min(r.get(k) or float("inf"), t[k])
        r["passes"] = r.get("passes", 0) + 1
        print(f"latency {label}: {t}", flush=True)


def table(rows: dict, order: list[str], p: P.Params, args) -> str:
    dense, f = rows.get(p.experiment.baseline, {}), p.finetune
    lines = [
        f"# Compression benchmark: {args.task}, {p.model.name}, seed protocol ({args.params}: lr {f.lr:g}, "
        f"batch {f.batch_size}, {f.epochs} epochs, seed {p.experiment.seeds[0]})",
        "",
        f"Measured on this CPU ({os.cpu_count()} cores, shared), torch {torch.__version__}, "
        f"{args.threads} thread(s), length 128, median of {args.runs} runs after 3 warm-up, the best of the "
        "passes made (one as each variant is built, then passes over all). Sizes in MB (10^6 bytes): "
        "(a) torch.save(state_dict), (b) compact (non-zero values + bitmask, int8/fp16 at their size), "
        "(c) zstd -9 of (a). Sparsity: zeros in the pruned scope. † fine-tuned on a lent GPU with the same "
        "code, params and seed (bench/gpu_variants.py), carried back in fp16 and restored to fp32, then "
        "evaluated, sized and timed here; (c) is not shown for them: fp16-rounded fp32 weights compress better "
        "than trained ones.",
        "",
        "| variant | made as | acc | F1 | Δacc | (a) MB | (b) MB | (c) MB | params | non-zero | sparsity "
        "| b1 ms | b8 ms | b8 speed-up |",
        "|" + "---|" * 14,
    ]
    for r in sorted(rows.values(), key=lambda r: order.index(r["variant"])):
        fmt = lambda k, s="{:.1f}": s.format(r[k]) if r.get(k) is not None else "–"  # noqa: E731
        fast = r.get("batch8_ms") and dense.get("batch8_ms")
        gain = f"{dense['batch8_ms'] / r['batch8_ms']:.1f}×" if fast else "–"
        delta = f"{100 * (r['accuracy'] - dense['accuracy']):+.1f}" if dense else "–"
        gpu = carried(p, Path(args.out) / args.task, r["name"])
        lines.append(
            f"| {r['variant']}{' †' if gpu else ''} | {r['description']} | {fmt('accuracy', '{:.3f}')} | "
            f"{fmt('f1', '{:.3f}')} | {delta} | {fmt('state_dict_mb')} | {fmt('compact_mb')} | "
            f"{'–' if gpu else fmt('compressed_mb')} | {r['parameters'] / 1e6:.2f} M | "
            f"{r['nonzero_parameters'] / 1e6:.2f} M | {100 * r['sparsity']:.1f} % | {fmt('batch1_ms')} | "
            f"{fmt('batch8_ms')} | {gain} |"
        )
    return "\n".join(lines) + "\n"


def write(rows: dict, order: list[str], p: P.Params, args) -> str:
    text, root = table(rows, order, p, args), Path(args.out) / args.task
    (root / "rows.json").write_text(json.dumps(list(rows.values()), indent=1))
    if args.results:  # the hand-written sections (## ...) below the table stay
        notes = RESULTS.read_text().partition("\n## ") if RESULTS.is_file() else ("", "", "")
        RESULTS.write_text(text + (f"\n## {notes[2]}" if notes[1] else ""))
        meta = {k: getattr(args, k) for k in ("task", "params", "overrides", "threads", "runs")}
        JSON.parent.mkdir(exist_ok=True)
        Path(str(JSON).format(task=args.task)).write_text(
            json.dumps(
                {
                    **meta,
                    "torch": torch.__version__,
                    "cpu_count": os.cpu_count(),
                    "rows": sorted(rows.values(), key=lambda r: order.index(r["variant"])),
                },
                indent=1,
            )
            + "\n"
        )
    return text


def saved_rows(root: Path, order: list[str]) -> dict:
    """Rows of earlier runs (of methods still in the table) without their latency: accuracy and sizes stand, but
    timings (and speed-ups) are comparable only within one run on a shared CPU."""
    old = json.loads((root / "rows.json").read_text()) if (root / "rows.json").is_file() else []
    return {
        r["variant"]: {**r, "batch1_ms": None, "batch8_ms": None, "passes": 0} for r in old if r["variant"] in order
    }


def run(args, p: P.Params, parent: str) -> str:
    runs = {r.id: r for r in plan.runs(p, args.task) if r.step not in ("download", "tokenize", "pretrained")}
    evaluations = [r for r in runs.values() if r.step == "evaluate"]  # the table's rows, in the plan's order
    order = [
        label
        for r in evaluations
        for label in [plan.method(r.name, r.mode)]
        + ([plan.method(r.name, r.mode) + COMPILED] if args.compile and r.mode in PT2E else [])
    ]
    only = [s.strip() for s in args.only.split("|")] if args.only else None
    if only and (unknown := [o for o in only if o not in order]):
        raise P.UserError(f"--only: unknown method(s) {', '.join(unknown)}; choose from: {'|'.join(order)}")
    bench = Bench(args, p, parent)
    rows, models = saved_rows(bench.root, order), {}
    for r in evaluations:  # build, evaluate and time each as it comes: a cut-short run still has rows
        name, mode, label = r.name, r.mode, plan.method(r.name, r.mode)
        if only and label not in only and label + COMPILED not in only:
            continue
        t0 = time.perf_counter()
        folder, row = bench.model(r, runs)
        rows[label] = {"variant": label, "name": name, "mode": mode, "description": describe(p, name, mode), **row}
        new = {label: load_variant(folder, get_task(args.task).num_labels)}
        if args.compile and mode in PT2E:  # compiled once per input shape, in the first pass's warm-up
            new[label + COMPILED] = torch.compile(new[label])
            rows[label + COMPILED] = {**rows[label], "variant": label + COMPILED}
        print(f"built {label} in {time.perf_counter() - t0:.0f} s: {rows[label]}", flush=True)
        timed(rows, new, args)
        models.update(new)
        write(rows, order, p, args)
    for _ in range(args.rounds - 1):  # more passes over all models of this run, interleaved, at the end
        timed(rows, models, args)
        write(rows, order, p, args)
    return write(rows, order, p, args)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", default="mrpc")
    parser.add_argument("--params", default=str(Path("bench") / "params-compression.yaml"))
    parser.add_argument("-S", "--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE")
    parser.add_argument("--out", default="outputs/bench")
    parser.add_argument("--only", help="method names separated by | (dense+static, gradual80, ...; default: all)")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads for the latency passes (default 2)")
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--no-compile", dest="compile", action="store_false")
    parser.add_argument(
        "--no-results",
        dest="results",
        action="store_false",
        help="leave bench/RESULTS-compression.md and bench/results/ alone (smoke runs)",
    )
    args = parser.parse_args(argv)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{Path(args.out).resolve() / 'mlflow.db'}")
    try:
        p = P.load(args.params, args.overrides).for_task(args.task)
        core_model.preflight(args.task, p)
        e = p.experiment
        if len(e.seeds) != 1 or e.lr_candidates:  # one seed at finetune.lr: params.yaml's own table runs as is
            print(
                f"the bench runs one seed at finetune.lr: seed {e.seeds[0]}, lr {p.finetune.lr:g} "
                f"(of experiment.seeds {e.seeds}, lr_candidates {e.lr_candidates})",
                flush=True,
            )
            p = p.replace({"experiment.seeds": e.seeds[:1], "experiment.lr_candidates": []})
        torch._inductor.config.freezing = True  # torch.compile constant-folds the int8 weights into its kernels
        with tracking.parent_run("bench", f"compression-{args.task}", key=f"{os.getpid()}-{time.time()}") as parent:
            print(run(args, p, parent))
    except P.UserError as e:
        return P.refused(e)
    return 0


if __name__ == "__main__":
    sys.exit(main())
