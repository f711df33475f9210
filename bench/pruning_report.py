"""Tables and figures of the pruning study (bench/pruning_study.py): bench/RESULTS-pruning.md from its rows.

    python bench/pruning_report.py /work/.device/*/study*.json     # the device calls' files: merged, then reported
    python bench/pruning_report.py bench/results/pruning-study.json  # the merged rows again

Each pruned run started from, and was distilled from, the dense model trained in the same call for the same
(task, seed): differences are paired with that dense row (`call` in the JSON), then averaged over seeds.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

HERE = Path(__file__).resolve().parent
JSON, MD = HERE / "results" / "pruning-study.json", HERE / "RESULTS-pruning.md"
METRIC = {"mrpc": "F1", "sst2": "accuracy", "cola": "MCC"}
# the goals: (task, sparsity) -> allowed accuracy drop in points (CoLA: kept share of dense MCC)
GOALS = {("mrpc", 0.8): 1.0, ("sst2", 0.8): 1.0, ("mrpc", 0.9): 2.0, ("sst2", 0.9): 2.0, ("sst2", 0.95): 4.0}
COLA_GOALS = {0.8: 0.90, 0.9: 0.75}
READING = """
Reading (the tables below): the criterion decides it. First-order importance keeps MRPC and SST-2 within a point
at 80 % and CoLA's MCC at 90 %, where magnitude loses 4–13 points; distillation adds most where the criterion is
weak (magnitude) and at the highest sparsity, and on CoLA first-order without a teacher scores as well. Movement
pruning as implemented here (hard top-k of the accumulated −w·∂L/∂w, started from the fine-tuned model, no
learned scores) falls to the majority class at every sparsity, per layer or global, with or without a teacher:
not a recipe to use. The runs shared the GPU as 8–12 processes, so a run's train_seconds there is several times
its time alone; the dense runs of the same seed differ slightly between calls (GPU nondeterminism), which is why
every difference is paired with its own call's dense run. Not run: structured variants under distillation, and
block / N:M patterns (tested on CPU, not studied).
"""
EARLIER = "\n## Earlier: the seed protocol alone (3 epochs, magnitude, no teacher)\n"


def merged(paths: list[str]) -> dict:
    if len(paths) == 1 and Path(paths[0]).resolve() == JSON:
        return json.loads(JSON.read_text())
    calls, rows = [], []
    for i, path in enumerate(paths, 1):
        d = json.loads(Path(path).read_text())
        calls.append({"call": i, "gpu": d["gpu"], "torch": d["torch"], "jobs": d["jobs"],
                      "wall_seconds": round(d["wall_seconds"], 1), **({"cost": d["cost"]} if "cost" in d else {})})
        rows += [{"call": i, **{k: v for k, v in r.items() if k != "history"}} for r in d["rows"]
                 if r["variant"] != "cost_kd"]
    return {"calls": calls, "rows": rows}


def paired(rows: pd.DataFrame) -> pd.DataFrame:
    """Pruned rows with their dense row's accuracy and metric (same call, task, seed) and the differences."""
    dense = rows[rows.variant == "dense"].set_index(["call", "task", "seed"])[["accuracy", "metric"]]
    pruned = rows[rows.variant != "dense"].merge(dense, left_on=["call", "task", "seed"], right_index=True,
                                                 suffixes=("", "_dense"))
    pruned["d_acc"] = 100 * (pruned.accuracy - pruned.accuracy_dense)
    pruned["d_metric"] = 100 * (pruned.metric - pruned.metric_dense)
    pruned["kept"] = pruned.metric / pruned.metric_dense
    pruned["recipe"] = pruned.criterion + np.where(pruned.ranking == "layer", " (per layer)", "") + np.where(
        pruned.distill, " + distillation", "")
    return pruned


def table(task: str, pruned: pd.DataFrame, dense: pd.DataFrame) -> str:
    t = pruned[pruned.task == task]
    g = t.groupby(["recipe", "target_sparsity"]).agg(acc=("accuracy", "mean"), std=("accuracy", "std"),
                                                     d=("d_acc", "mean"), metric=("metric", "mean"),
                                                     n=("seed", "nunique"))
    metric = (lambda r: "") if METRIC[task] == "accuracy" else (lambda r: f"; {METRIC[task]} {r.metric:.3f}")  # noqa: E731
    cell = lambda r: (f"{r.acc:.3f} ± {0 if np.isnan(r['std']) else r['std']:.3f} ({r.d:+.1f}{metric(r)}; "  # noqa: E731
                      f"n={int(r.n)})")
    wide = g.apply(cell, axis=1).unstack("target_sparsity").fillna("")
    wide.columns = [f"{round(c * 100)} %" for c in wide.columns]
    d = dense[dense.task == task]
    head = (f"### {task.upper()}\n\nDense (3 epochs, lr {d.lr.iloc[0]:g}): accuracy {d.accuracy.mean():.3f} ± "
            f"{d.accuracy.std():.3f}{metric(d.agg({'metric': 'mean'}))} over "
            f"{d.seed.nunique()} seeds ({len(d)} dense runs, one per call and seed). Majority class: accuracy "
            f"{d.majority_accuracy.iloc[0]:.3f}. Pruned runs: {int(t.epochs.iloc[0])} epochs, lr {t.lr.iloc[0]:g}.\n\n"
            f"Cell: accuracy mean ± std over seeds (accuracy points vs the paired dense run"
            f"{'' if METRIC[task] == 'accuracy' else f'; mean {METRIC[task]}'}; seeds)\n\n")
    return head + wide.reset_index().rename(columns={"recipe": "recipe"}).to_markdown(index=False) + "\n"


def figure(task: str, pruned: pd.DataFrame, dense: pd.DataFrame) -> str:
    t = pruned[pruned.task == task]
    fig, ax = plt.subplots(figsize=(6, 4))
    for recipe, g in t.groupby("recipe"):
        m = g.groupby("target_sparsity").accuracy.agg(["mean", "std"]).fillna(0)
        ax.errorbar(m.index * 100, m["mean"], yerr=m["std"], marker="o", capsize=3, label=recipe)
    d = dense[dense.task == task]
    ax.axhline(d.accuracy.mean(), color="black", ls="--", label="dense")
    ax.axhline(d.majority_accuracy.iloc[0], color="grey", ls=":", label="majority class")
    ax.set(xlabel="encoder sparsity (%)", ylabel="validation accuracy", title=f"{task.upper()}: MiniLM, 3 seeds")
    ax.legend(fontsize=7)
    path = HERE / "results" / f"pruning-{task}.png"
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return f"![{task}](results/{path.name})\n"


def goals(pruned: pd.DataFrame) -> str:
    best = pruned[(pruned.criterion == "first_order") & pruned.distill & (pruned.ranking == "global")]
    lines = ["| goal | measured (first-order, global, distillation; 3 seeds) | |", "|---|---|---|"]
    for (task, s), limit in GOALS.items():
        g = best[(best.task == task) & (best.target_sparsity == s)]
        d = g.d_acc.mean()
        lines.append(f"| {task.upper()} {round(s * 100)} %: ≤ {limit:.1f} points below dense | {d:+.2f} points "
                     f"(n={g.seed.nunique()}) | {'met' if -d <= limit else f'missed by {-d - limit:.2f}'} |")
    for s, share in COLA_GOALS.items():
        for label, g in (("", best), (", no distillation", pruned[(pruned.criterion == "first_order") & ~pruned.distill])):
            g = g[(g.task == "cola") & (g.target_sparsity == s)]
            kept = g.metric.mean() / g.metric_dense.mean()
            lines.append(f"| CoLA {round(s * 100)} %{label}: ≥ {share:.0%} of dense MCC | {kept:.1%} "
                         f"(n={g.seed.nunique()}) | {'met' if kept >= share else 'missed'} |")
    return "\n".join(lines) + "\n"


def structured_speed() -> str:
    """The speed half of the structured goal, from bench/structured_speed.py's JSON (this CPU)."""
    path = HERE / "results" / "structured-speed-cpu.json"
    if not path.is_file():
        return ""
    d = json.loads(path.read_text())
    t = pd.DataFrame(d["rows"])[["model", "parameters", "batch1_ms", "batch8_ms", "speedup_b1", "speedup_b8"]]
    return ("## Structured pruning: the speed it buys (CPU)\n\n"
            f"`bench/structured_speed.py` on {d['cpu']}, eager fp32, length 128, {d['threads']} threads, median of "
            f"{d['rounds']} interleaved rounds × {d['runs']} passes, side by side in one process (shapes only: "
            "pruned by magnitude, no recovery). Goal: ≥ 1.8× at batch 8 at ≤ 1.0 point below dense; the accuracy "
            "half (distilled recovery of these shapes on the GPU) was not run.\n\n"
            + t.to_markdown(index=False, floatfmt=".2f") + "\n")


def report(paths: list[str]) -> None:
    study = merged(paths)
    JSON.write_text(json.dumps(study, indent=1))
    rows = pd.DataFrame(study["rows"])
    pruned, dense = paired(rows), rows[rows.variant == "dense"]
    calls = study["calls"]
    cost = next(c["cost"] for c in calls if "cost" in c)
    wall = sum(c["wall_seconds"] for c in calls)
    out = ["# Pruning MiniLM to 50–95 % encoder sparsity: criteria and distillation (one H200, 3 seeds)\n",
           f"Measured with `bench/pruning_study.py` on {calls[0]['gpu']} (torch {calls[0]['torch']}), packaged "
           "all-MiniLM-L6-v2, the pipeline's own fine-tune (bertcompress/finetune.py: CUDA graphs, TF32 matmuls, "
           "batch 32, length 128, AdamW, linear decay after 10 % warm-up). Each pruned run starts from the dense "
           "fine-tune of its seed (`from: dense`, `prune.method: gradual`), encoder scope, cubic ramp from 0 to the "
           "target over the first 2/3 of its steps (masks every 10 steps), then the last third on the fixed mask; "
           "global ranking unless marked per layer; distillation = logits KL at T 2 (weight 1) + hidden-state MSE "
           "(weight 1) from that same dense model. "
           f"{len(rows)} runs in {len(calls)} device calls ({', '.join(str(c['jobs']) for c in calls)} runs in "
           f"parallel processes on the one GPU under MPS), study wall time {wall / 60:.1f} min. JSON: "
           "`results/pruning-study.json` (rows: task, variant, criterion, distill, target/achieved sparsity, seed, "
           "accuracy, metric, epochs, train_seconds, call).\n",
           "    python3 bench/pruning_study.py run mrpc:42,43,44:magnitude,movement,first_order:0.5,0.7,0.8,0.9:both "
           "--jobs 12 --cost --json $OUT/study1.json\n",
           f"Cost (MRPC, alone on the GPU, one after the other): dense {cost['dense']:.0f} samples/s, first-order "
           f"90 % with logits + hidden distillation {cost['cost_kd']:.0f} samples/s = **{cost['ratio']:.0%}** of "
           "dense (goal ≥ 60 %).\n", "## Goals\n", goals(pruned), READING]
    for task in ("mrpc", "sst2", "cola"):
        if task in set(rows.task):
            out += [table(task, pruned, dense), figure(task, pruned, dense)]
    out.append(structured_speed())
    text = MD.read_text() if MD.exists() else ""
    earlier = text[text.index(EARLIER):] if EARLIER in text else ""
    MD.write_text("\n".join(out) + earlier)
    print(f"{MD}: {len(rows)} rows")


if __name__ == "__main__":
    report(sys.argv[1:])
