"""Tables and figures of the pruning study (bench/studies/pruning_study.py): bench/RESULTS-pruning.md from its rows.

    python -m bench.studies.pruning_report /work/.device/*/study*.json     # the device calls' files: merged, then
    reported
    python -m bench.studies.pruning_report bench/results/pruning-study.json  # the merged rows again

Each pruned run started from, and was distilled from, the dense model trained in the same call for the same
(task, seed): differences are paired with that dense row (`call` in the JSON), then averaged over seeds.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

BENCH = Path(__file__).resolve().parent.parent  # bench/: its RESULTS-*.md and results/
JSON, MD = BENCH / "results" / "pruning-study.json", BENCH / "RESULTS-pruning.md"
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
not a recipe to use. The runs shared the GPU as 8–16 processes, so a run's train_seconds there is several times
its time alone; the dense runs of the same seed differ slightly between calls (GPU nondeterminism), which is why
every difference is paired with its own call's dense run. Not run: block / N:M patterns (tested on CPU, not
studied). Structured pruning: its own section below.
"""
STRUCTURED = """
## Structured pruning under distillation: accuracy (H200) and the speed it buys (this CPU)

`prune.method: structured` of each seed's dense model: half the attention heads and half the FFN neurons of every
layer (or the other fractions shown) removed by first-order importance |w·∂L/∂w| (8 batches), in `prune.stages`
stages along the cubic schedule (each stage scores what is left again, removes up to its share and trains its
share of the recovery steps), recovery on the GPU (CUDA graphs, TF32) with the teacher = that dense model
(logits KL at T 2, with or without the hidden-state MSE), or without a teacher. Δ: accuracy points vs the same
call's dense run, mean over seeds; runs > n: a seed was run twice (both kept). Parameters kept include the
embeddings (11.7 M of MiniLM's 22.7 M), which structured pruning leaves whole.

    python3 -m bench.studies.pruning_study run mrpc:42,43,44:structured@4:0.5/0.5:kd:hidden_weight=0,lr=5e-5 \\
        --json $OUT/s.json

"""
READING_STRUCTURED = """
Reading: on SST-2 every recipe keeps accuracy within 0.4 points (2 epochs of recovery). On MRPC (408 validation
pairs: one point is
4 pairs; the dense run of one seed varies by up to 1.7 points between calls) the recipes that distil the
logits only are within a point (−0.4 to −0.7 over 3 seeds, worst seed −1.2 to −1.5), while adding the
hidden-state MSE (−1.2 to −1.5), removing at once instead of in stages (−1.3), no teacher (−0.7 to −1.1) and
removing more (heads 50 % + FFN 75 %: −2.1) do worse. The recipe chosen for params.yaml's `structured` variant:
4 stages, logits only, lr 5e-5, 10 epochs of recovery (1150 MRPC steps). Chosen after seeing these rows: its
−0.4 is the best of 8 MRPC recipes, and all logits-only recipes lie within −0.4 to −0.7 of each other. The
same recipe on SST-2, run after the choice: +0.4.
"""
EARLIER = "\n## Earlier: the seed protocol alone (3 epochs, magnitude, no teacher)\n"


def merged(paths: list[str]) -> dict:
    """The device calls' files in order (a merged file's calls and rows kept as they are, numbered first)."""
    calls, rows = [], []
    for path in paths:
        d = json.loads(Path(path).read_text())
        if "calls" in d:
            calls, rows = calls + d["calls"], rows + d["rows"]
            continue
        i = len(calls) + 1
        calls.append(
            {
                "call": i,
                "gpu": d["gpu"],
                "torch": d["torch"],
                "jobs": d["jobs"],
                "wall_seconds": round(d["wall_seconds"], 1),
                **({"cost": d["cost"]} if "cost" in d else {}),
            }
        )
        rows += [
            {"call": i, **{k: v for k, v in r.items() if k != "history"}}
            for r in d["rows"]
            if r["variant"] != "cost_kd"
        ]
    for r in rows:  # the first structured calls did not record it: logits only where the name says weight0
        if r.get("criterion") == "structured" and "hidden_weight" not in r:
            r["hidden_weight"] = (0.0 if "weight0" in r["variant"] else 1.0) if r["distill"] else None
    return {"calls": calls, "rows": rows}


def paired(rows: pd.DataFrame) -> pd.DataFrame:
    """Pruned rows with their dense row's accuracy and metric (same call, task, seed) and the differences."""
    dense = rows[rows.variant == "dense"].set_index(["call", "task", "seed"])[["accuracy", "metric"]]
    pruned = rows[rows.variant != "dense"].merge(
        dense, left_on=["call", "task", "seed"], right_index=True, suffixes=("", "_dense")
    )
    pruned["d_acc"] = 100 * (pruned.accuracy - pruned.accuracy_dense)
    pruned["d_metric"] = 100 * (pruned.metric - pruned.metric_dense)
    pruned["kept"] = pruned.metric / pruned.metric_dense
    pruned["recipe"] = (
        pruned.criterion
        + np.where(pruned.ranking == "layer", " (per layer)", "")
        + np.where(pruned.distill, " + distillation", "")
    )
    return pruned


def structured_table(pruned: pd.DataFrame) -> str:
    """Structured runs: one row per task and recipe, over seeds, with the speed of the shape on this CPU."""
    t = pruned[pruned.criterion == "structured"].copy()
    if t.empty:
        return ""
    t["teacher"] = np.where(~t.distill, "none", np.where(t.hidden_weight.fillna(0) > 0, "logits + hidden", "logits"))
    t["kept"] = t.parameters / t.parameters_before
    g = t.groupby(["task", "heads_fraction", "ffn_fraction", "stages", "epochs", "lr", "teacher"]).agg(
        accuracy=("accuracy", "mean"),
        std=("accuracy", "std"),
        d=("d_acc", "mean"),
        worst=("d_acc", "min"),
        metric=("metric", "mean"),
        params=("kept", "mean"),
        n=("seed", "nunique"),
        runs=("seed", "size"),
    )
    g = g.reset_index().rename(
        columns={
            "heads_fraction": "heads removed",
            "ffn_fraction": "FFN removed",
            "epochs": "recovery epochs",
            "d": "Δ acc (points)",
            "worst": "worst seed Δ",
            "params": "parameters kept",
        }
    )
    return g.to_markdown(index=False, floatfmt=".3g") + "\n"


def table(task: str, pruned: pd.DataFrame, dense: pd.DataFrame) -> str:
    t = pruned[(pruned.task == task) & (pruned.criterion != "structured")]
    g = t.groupby(["recipe", "target_sparsity"]).agg(
        acc=("accuracy", "mean"),
        std=("accuracy", "std"),
        d=("d_acc", "mean"),
        metric=("metric", "mean"),
        n=("seed", "nunique"),
    )
    metric = (lambda r: "") if METRIC[task] == "accuracy" else (lambda r: f"; {METRIC[task]} {r.metric:.3f}")  # noqa: E731
    cell = lambda r: (
        f"{r.acc:.3f} ± {0 if np.isnan(r['std']) else r['std']:.3f} ({r.d:+.1f}{metric(r)}; "  # noqa: E731
        f"n={int(r.n)})"
    )
    wide = g.apply(cell, axis=1).unstack("target_sparsity").fillna("")
    wide.columns = [f"{round(c * 100)} %" for c in wide.columns]
    d = dense[dense.task == task]
    head = (
        f"### {task.upper()}\n\nDense (3 epochs, lr {d.lr.iloc[0]:g}): accuracy {d.accuracy.mean():.3f} ± "
        f"{d.accuracy.std():.3f}{metric(d.agg({'metric': 'mean'}))} over "
        f"{d.seed.nunique()} seeds ({len(d)} dense runs, one per call and seed). Majority class: accuracy "
        f"{d.majority_accuracy.iloc[0]:.3f}. Pruned runs: {int(t.epochs.iloc[0])} epochs, lr {t.lr.iloc[0]:g}.\n\n"
        f"Cell: accuracy mean ± std over seeds (accuracy points vs the paired dense run"
        f"{'' if METRIC[task] == 'accuracy' else f'; mean {METRIC[task]}'}; seeds)\n\n"
    )
    return head + wide.reset_index().rename(columns={"recipe": "recipe"}).to_markdown(index=False) + "\n"


def figure(task: str, pruned: pd.DataFrame, dense: pd.DataFrame) -> str:
    t = pruned[(pruned.task == task) & (pruned.criterion != "structured")]
    fig, ax = plt.subplots(figsize=(6, 4))
    for recipe, g in t.groupby("recipe"):
        m = g.groupby("target_sparsity").accuracy.agg(["mean", "std"]).fillna(0)
        ax.errorbar(m.index * 100, m["mean"], yerr=m["std"], marker="o", capsize=3, label=recipe)
    d = dense[dense.task == task]
    ax.axhline(d.accuracy.mean(), color="black", ls="--", label="dense")
    ax.axhline(d.majority_accuracy.iloc[0], color="grey", ls=":", label="majority class")
    ax.set(xlabel="encoder sparsity (%)", ylabel="validation accuracy", title=f"{task.upper()}: MiniLM, 3 seeds")
    ax.legend(fontsize=7)
    path = BENCH / "results" / f"pruning-{task}.png"
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
        lines.append(
            f"| {task.upper()} {round(s * 100)} %: ≤ {limit:.1f} points below dense | {d:+.2f} points "
            f"(n={g.seed.nunique()}) | {'met' if -d <= limit else f'missed by {-d - limit:.2f}'} |"
        )
    for s, share in COLA_GOALS.items():
        for label, g in (
            ("", best),
            (", no distillation", pruned[(pruned.criterion == "first_order") & ~pruned.distill]),
        ):
            g = g[(g.task == "cola") & (g.target_sparsity == s)]
            kept = g.metric.mean() / g.metric_dense.mean()
            lines.append(
                f"| CoLA {round(s * 100)} %{label}: ≥ {share:.0%} of dense MCC | {kept:.1%} "
                f"(n={g.seed.nunique()}) | {'met' if kept >= share else 'missed'} |"
            )
    return "\n".join(lines) + "\n"


def structured_speed() -> str:
    """The speed half of the structured goal, from bench/structured_speed.py's JSON (this CPU)."""
    path = BENCH / "results" / "structured-speed-cpu.json"
    if not path.is_file():
        return ""
    d = json.loads(path.read_text())
    t = pd.DataFrame(d["rows"])[["model", "parameters", "batch1_ms", "batch8_ms", "speedup_b1", "speedup_b8"]]
    return (
        "### Speed (CPU)\n\n"
        f"`bench/structured_speed.py` on {d['cpu']}, eager fp32, length 128, {d['threads']} threads, median of "
        f"{d['rounds']} interleaved rounds × {d['runs']} passes, side by side in one process (shapes only: "
        "pruned by magnitude, no recovery; the speed depends on the shapes alone).\n\n"
        + t.to_markdown(index=False, floatfmt=".2f")
        + "\n"
    )


def structured_goal(pruned: pd.DataFrame) -> str:
    """The structured goal for the chosen recipe (params.yaml's `structured`): ≥ 1.8× at batch 8, ≤ 1.0 point."""
    speed = BENCH / "results" / "structured-speed-cpu.json"
    rows = json.loads(speed.read_text())["rows"] if speed.is_file() else []
    b8 = next((r["speedup_b8"] for r in rows if r["model"] == "structured heads 50% ffn 50%"), float("nan"))
    t = pruned[(pruned.criterion == "structured") & (pruned.heads_fraction == 0.5) & (pruned.ffn_fraction == 0.5)]
    lines = [
        "| goal: structured ≥ 1.8× eager fp32 at batch 8 (this CPU), ≤ 1.0 point below dense | Δ accuracy | |",
        "|---|---|---|",
    ]
    chosen = (t.stages == 4) & (t.lr == 5e-5) & t.distill & (t.hidden_weight == 0)  # params.yaml's `structured`
    for task in ("mrpc", "sst2"):
        g = t[(t.task == task) & chosen]
        ok = -g.d_acc.mean() <= 1.0 and b8 >= 1.8
        lines.append(
            f"| {task.upper()}, heads 50 % + FFN 50 %, 4 stages, logits distilled, lr 5e-5, "
            f"{g.epochs.mean():g} epochs of recovery: {b8:.2f}× at batch 8 | "
            f"{g.d_acc.mean():+.2f} points (n={g.seed.nunique()}) | {'met' if ok else 'missed'} |"
        )
    return "\n".join(lines) + "\n"


def report(paths: list[str]) -> None:
    study = merged(paths)
    JSON.write_text(json.dumps(study, indent=1))
    rows = pd.DataFrame(study["rows"])
    pruned, dense = paired(rows), rows[rows.variant == "dense"]
    calls = study["calls"]
    cost = next(c["cost"] for c in calls if "cost" in c)
    wall = sum(c["wall_seconds"] for c in calls)
    out = [
        "# Pruning MiniLM to 50–95 % encoder sparsity: criteria and distillation (one H200, 3 seeds)\n",
        f"Measured with `bench/studies/pruning_study.py` on {calls[0]['gpu']} (torch {calls[0]['torch']}), packaged "
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
        "    python3 -m bench.studies.pruning_study run "
        "mrpc:42,43,44:magnitude,movement,first_order:0.5,0.7,0.8,0.9:both --jobs 12 --cost --json $OUT/study1.json\n",
        f"Cost (MRPC, alone on the GPU, one after the other): dense {cost['dense']:.0f} samples/s, first-order "
        f"90 % with logits + hidden distillation {cost['cost_kd']:.0f} samples/s = **{cost['ratio']:.0%}** of "
        "dense (goal ≥ 60 %).\n",
        "## Goals\n",
        goals(pruned),
        READING,
    ]
    for task in ("mrpc", "sst2", "cola"):
        if task in set(rows.task):
            out += [table(task, pruned, dense), figure(task, pruned, dense)]
    out += [STRUCTURED, structured_goal(pruned), "", structured_table(pruned), READING_STRUCTURED, structured_speed()]
    text = MD.read_text() if MD.exists() else ""
    earlier = text[text.index(EARLIER) :] if EARLIER in text else ""
    MD.write_text("\n".join(out) + earlier)
    print(f"{MD}: {len(rows)} rows")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("rows", nargs="+", help="the device calls' study JSON files, or the merged one")
    report(ap.parse_args().rows)


if __name__ == "__main__":
    main()
