"""The report, built from the MLflow runs alone: the seed paper's Tables 1–3, a summary of every variant over
seeds with paired bootstrap CIs against the dense model, the lr sweep, and figures (its Figures 4–7, metric vs
sparsity, a metric vs size Pareto plot).

    python -m tasks.report --task mrpc          # after `python -m flows.compress --task mrpc` or `dvc repro`

params.yaml (with the same overrides as the run) says what to report: every variant of its table × its
quantization modes × the experiment's seeds. Each variant's runs are found by their `config` tag, the digest
of every leaf param its chain of steps reads (tasks/plan.py), so runs logged by the flow, by a rerun of it
whose steps came from the cache (a changed pruning param leaves the dense fine-tunes cached) or by DVC's stages
are all found; a variant's metrics are merged from its FINISHED runs, the latest value of each metric winning.
Writes
results/report/<task>/{report.md, summary.csv, tables.json, figures/*.png} (to a temp folder, then renamed) and
logs the same files as artifacts of the parent run.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from bertcompress import io, shapes
from bertcompress import params as P
from bertcompress.glue import get_task

from . import figures, keys, plan, recipes, refusals, tracking
from .tables import SIZES, aligned, brief, epoch_keys, epoch_tables, markdown, quantization_table, summary_table, words


def _runs(task: str, p: P.Params, name: str, mode: str, seed: int) -> list:
    """FINISHED runs of one (task, variant, mode, seed) configuration, oldest first."""
    c, exp = tracking.client()
    where = (
        f"tags.task = '{task}' and tags.method = '{plan.method(name, mode)}' and tags.seed = '{seed}' "
        f"and tags.config = '{keys.digest(task, p, name, seed, mode)}' and attributes.status = 'FINISHED'"
    )
    return list(reversed(c.search_runs([exp], where, order_by=["attributes.start_time DESC"], max_results=5000)))


def _variant(task: str, p: P.Params, name: str, mode: str, seed: int) -> dict:
    """One variant's merged record: metrics, per-epoch history (fine-tuned models), predictions, run ids."""
    c, _ = tracking.client()
    runs, q = _runs(task, p, name, mode, seed), p.variant(name, seed)
    target = {"none": 0.0, "structured": np.nan}.get(q.prune.method, q.prune.final_sparsity)
    record = {
        "task": task,
        "model": name,
        "mode": mode,
        "method": plan.method(name, mode),
        "seed": seed,
        "lr": q.finetune.lr,
        "target": target,
        "scope": q.prune.scope,
        "run_ids": [r.info.run_id for r in runs],
        "metrics": {},
        "history": None,
        "predictions": None,
        "evaluated": None,
    }
    for run in runs:  # later runs override earlier ones
        record["metrics"] |= run.data.metrics
        if "val_loss" in run.data.metrics:  # the fine-tune step logged per-epoch metrics here
            history = {k: {m.step: m.value for m in c.get_metric_history(run.info.run_id, k)} for k in epoch_keys(task)}
            record["history"] = pd.DataFrame(history).sort_index().rename_axis("epoch")
        if any(f.path == "evaluate" for f in c.list_artifacts(run.info.run_id)):
            record["evaluated"] = run.info.run_id  # the latest run that evaluated it (tag model_dir: what ships)
            with tempfile.TemporaryDirectory() as tmp:
                record["predictions"] = json.loads(
                    Path(c.download_artifacts(run.info.run_id, tracking.PREDICTIONS, tmp)).read_text()
                )
    return record


def collect(task: str, p: P.Params) -> list[dict]:
    """Every variant × mode × seed of the experiment; a missing one is a one-line error naming the fix."""
    records = []
    for name, v in p.variants.items():
        for mode in ["none", *v.quantize]:
            for seed in p.experiment.seeds:
                r = _variant(task, p, name, mode, seed)
                if r["predictions"] is None or get_task(task).metric not in r["metrics"]:
                    raise P.UserError(
                        f"no finished, evaluated MLflow run of {task} {r['method']} seed {seed} "
                        f"(lr {r['lr']:g}) in {tracking.tracking_uri()}; run `python -m flows.compress "
                        f"--task {task}` (or dvc repro) with the same params first"
                    )
                records.append(r)
    return records


def lr_sweep(task: str, p: P.Params) -> pd.DataFrame:
    """The baseline (first seed) at each of experiment.lr_candidates, read from MLflow, the chosen one marked."""
    e, metric, rows = p.experiment, get_task(task).metric, []
    for lr in e.lr_candidates:
        r = _variant(task, plan.with_lr(p, lr), e.baseline, "none", e.seeds[0])
        if metric not in r["metrics"]:
            raise P.UserError(
                f"no finished MLflow run of the lr sweep's {task} {e.baseline} seed {e.seeds[0]} at "
                f"lr {lr:g} in {tracking.tracking_uri()}; run `python -m flows.compress --task {task}` "
                "first, or set experiment.lr_candidates=[]"
            )
        row = {"lr": lr, **{f"{e.baseline} {m}": r["metrics"][m] for m in get_task(task).metrics}}
        if P.choice_split(p) == "dev":
            row[f"{e.baseline} dev {metric}"] = r["metrics"].get(f"dev_{metric}", np.nan)
        rows.append(row | {"score": plan.score(task, p, r["metrics"]) if choosable(task, p, r["metrics"]) else np.nan})
    table = pd.DataFrame(rows)
    chosen = plan.best_lr(dict(zip(table["lr"], table.pop("score"))))
    table["chosen"] = np.where(table["lr"] == chosen, "yes", "")
    return table


def choosable(task: str, p: P.Params, metrics: dict) -> bool:
    """Does a run's record hold the number choices read (a run evaluated before the dev split existed does not)?"""
    name = get_task(task).metric
    return (f"dev_{name}" if P.choice_split(p) == "dev" else name) in metrics


# experiment.objective: the summary column the champion minimises (ties: the next), and how the report says so
OBJECTIVES = {
    "latency": (("latency b8 ms", "latency b1 ms", "compressed_mb"), "the fastest at batch 8 on this CPU"),
    "size": (("compressed_mb", "latency b8 ms"), "the smallest (compressed MB)"),
}


def choose(task: str, p: P.Params, summary: pd.DataFrame) -> str | None:
    """The champion's method: of the variants whose headline metric on the choice split (dev when the run has one:
    P.choice_split) is within experiment.champion_budget points of the baseline's on it and that did not collapse,
    the best at experiment.objective (latency: the least batch-8 CPU latency as evaluated; size: the least
    compressed_mb); None if none is within."""
    e, metric = p.experiment, get_task(task).metric
    column = f"{'dev ' if P.choice_split(p) == 'dev' else ''}{metric} mean"
    s = summary[summary["verdict"] != "baseline"]
    floor = s.loc[e.baseline, column] - e.champion_budget / 100
    ok = s[(s[column] >= floor) & ~s["verdict"].str.startswith("collapsed")]
    if ok.empty:
        return None
    order = list(OBJECTIVES[e.objective][0])
    return ok.sort_values(order, kind="stable", na_position="last").index[0]


def rule(task: str, p: P.Params) -> tuple[str, str]:
    """The champion's rule in words: ('objective latency: the fastest at batch 8 on this CPU', 'within 1 point of
    dense's score on dev')."""
    e = p.experiment
    return (
        f"objective {e.objective}: {OBJECTIVES[e.objective][1]}",
        f"within {e.champion_budget:g} point{'s' * (e.champion_budget != 1)} of {e.baseline}'s "
        f"{get_task(task).metric} on {P.choice_split(p)}",
    )


def champion(task: str, p: P.Params, folder: str | Path) -> tuple[str, str] | None:
    """(method, run id of its first seed) of the champion (`choose`) of the report in folder; None if none."""
    method = choose(task, p, pd.read_csv(Path(folder) / "summary.csv", index_col="method"))
    if method is None:
        return None
    runs = pd.read_csv(Path(folder) / "runs.csv")
    e = p.experiment
    return method, runs[(runs["method"] == method) & (runs["seed"] == e.seeds[0])]["run_id"].iloc[0]


def protocol(p: P.Params, records: list[dict]) -> str:
    """Which split chose (the lr sweep, the champion, the shipped format) and which reports: the report's first
    words after its header."""
    if P.choice_split(p) == "dev":
        rows = int(records[0]["metrics"].get("dev_examples", 0))
        return (
            f"**Chosen on dev, reported on validation.** The lr sweep, the champion and the shipped format were "
            f"chosen on the dev split ({rows} examples: data.dev_fraction={p.data.dev_fraction:g} of train, "
            "stratified and carved by content, never trained on); every table below reports the validation "
            "split, which no choice read. Each variant's dev metric is in summary.csv beside it."
        )
    why = "experiment.choose_on=validation" if p.data.dev_fraction else "data.dev_fraction is null"
    return (
        f"**Chosen and reported on validation ({why}).** The lr sweep, the champion and the shipped format were "
        "chosen on the validation split that the tables below report: their numbers are in sample, and the "
        "chosen variants' are biased upwards. Set data.dev_fraction=0.1 to choose on a dev split instead."
    )


def summary_markdown(folder: str | Path) -> str:
    """The whole summary as markdown, read back from summary.csv: what report.md shows."""
    return markdown(pd.read_csv(Path(folder) / "summary.csv", index_col="method"))


def summary_text(folder: str | Path) -> str:
    """The summary in 120 columns, read back from summary.csv, with what its columns mean: what the flow prints
    (and the Prefect artifact and summary.md show); report.md has every column."""
    s = pd.read_csv(Path(folder) / "summary.csv", index_col="method")
    metric = next(c for c in s.columns if c.endswith(" mean")).removesuffix(" mean")  # the headline comes first
    baseline = next(c for c in s.columns if c.startswith("Δ vs ")).removeprefix("Δ vs ")
    return "\n".join(
        [
            aligned(brief(s), left=("variant", "verdict")),
            "",
            f"Δ: {metric} − {baseline}'s in points (×100, as experiment.champion_budget), paired by "
            "seed; 95 % CI: paired bootstrap.",
            "MB: compact size; b1/b8 ms: CPU latency at batch 1/8; collapsed: no better than the constant predictor.",
        ]
    )


def build(task: str, p: P.Params, out: str | Path | None = None, parent: str | None = None) -> Path:
    """Write the report of one task from MLflow; returns the path of report.md. With experiment.lr_candidates
    the variants reported are those at the lr the sweep chose, as in the flow and DVC."""
    out = Path(out or Path("results", "report", task))
    e, metric = p.experiment, get_task(task).metric
    lrs = lr_sweep(task, p) if e.lr_candidates else None
    if lrs is not None:
        p = plan.with_lr(p, float(lrs.loc[lrs["chosen"] == "yes", "lr"].iloc[0]))  # the sweep read once
    records = collect(task, p)
    methods = [e.baseline, *[n for n, v in p.variants.items() if v.finetuned and n != e.baseline]]
    summary = summary_table(task, records, e.bootstrap_samples, e.baseline)
    epochs, quant = epoch_tables(task, records, methods), quantization_table(task, records)
    n, split = (
        f"{len(e.seeds)} seed{'s' if len(e.seeds) > 1 else ''}",
        f"validation split ({len(records[0]['predictions']['labels'])} examples)",
    )
    with io.atomic_dir(out) as tmp:
        (tmp / "figures").mkdir()
        best = choose(task, p, summary)
        names = figures.draw(task, records, summary, methods, tmp / "figures", best)
        per_run = pd.DataFrame(
            [
                {
                    "method": r["method"],
                    "seed": r["seed"],
                    "run_id": r["evaluated"],  # not a later run that only logged an unchanged pruning again
                    **{k: r["metrics"].get(k) for k in (*get_task(task).metrics, *SIZES)},
                }
                for r in records
            ]
        )
        summary.to_csv(tmp / "summary.csv")
        per_run.to_csv(tmp / "runs.csv", index=False)
        (tmp / "tables.json").write_text(
            json.dumps(
                {
                    "summary": summary.reset_index().to_dict("records"),
                    "quantization": quant.reset_index().to_dict("records"),
                    "lr_sweep": None if lrs is None else lrs.to_dict("records"),
                },
                indent=1,
                default=float,
            )
        )
        lines = [
            f"# {task}: compression report",
            "",
            f"Model `{p.model.name}`, lr {p.finetune.lr:g}, seeds {', '.join(map(str, e.seeds))}; "
            f"every number below is read from the MLflow runs in `{tracking.tracking_uri()}` (runs.csv lists "
            f"them). Δ = variant − {e.baseline} of the validation {metric}, averaged over seeds paired by seed, "
            f"with a paired bootstrap 95 % interval over validation examples ({e.bootstrap_samples} resamples). "
            "The first row is the constant predictor (the "
            f"{'mean score' if get_task(task).regression else 'majority class'}"
            " of the split); a variant whose predictions are no better than it is marked collapsed. Sparsity: the "
            "target the params ask for, the zeros reached in the pruned scope's Linear weights, the zeros over all "
            "parameters.",
            "",
            protocol(p, records),
            "",
            *(
                [f"{said}: params.yaml's `variants.<name>.tasks.{task}`.", ""]
                if (said := recipes.recipes(p, task))
                else []
            ),
            f"## Summary: every variant ({split}, mean ± std over {n})",
            "",
            summary_markdown(tmp),
            "",
            *words(task, summary, e.baseline),
            "",
            f"**Champion: {best or 'none'}** — {' '.join(rule(task, p))}, not collapsed "
            "(experiment.objective, experiment.champion_budget; tasks/ship.py exports and registers it).",
            "",
        ]
        for m, table in epochs.items():
            lines += [f"## Table 1/2: per epoch, {m} vs {e.baseline} ({split}, mean over {n})", "", markdown(table), ""]
        lines += [
            f"## Table 3: without and with quantization ({split}, mean over {n})",
            "",
            markdown(quant),
            "",
            "## Learning rate",
            "",
        ]
        if lrs is None:
            lines += [f"No sweep: finetune.lr = {p.finetune.lr:g} for every variant.", ""]
        else:
            lines += [
                f"The baseline ({e.baseline}), seed {e.seeds[0]}, at each candidate; the lr with the best "
                f"{P.choice_split(p)} {metric} is used for every variant that sets no lr of its own.",
                "",
                markdown(lrs, index=False),
                "",
            ]
        if e.target_speedup:
            picked = shapes.choose(p)
            lines += [
                f"## Shapes timed for experiment.target_speedup={e.target_speedup:g}",
                "",
                f"Random weights cut to each shape, OpenVINO int8 at batch 8, length 128, {picked['threads']} threads "
                f"on {picked['cpu']}; the smallest cut at or above the target was trained ({picked['path']}).",
                "",
                shapes.table(picked),
                "",
            ]
        lines += ["## Figures", "", *[f"![{n}](figures/{n})" for n in names], ""]
        (tmp / "report.md").write_text("\n".join(lines))
    if parent:
        tracking.log_folder(parent, str(out), "report")
    return out / "report.md"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tasks.report", description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", default="mrpc")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("-S", "--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE")
    parser.add_argument("--out", help="output folder (default: results/report/<task>)")
    args = parser.parse_args(argv)
    try:
        p = P.load(args.params, args.overrides)
        refusals.refuse(p)
        p = recipes.resolve(p, args.task)
        with tracking.parent_run(
            "report", f"report-{args.task}", key=f"report-{os.getpid()}-{os.times().elapsed}", entry="tasks/report.py"
        ) as parent:
            path = build(args.task, p, args.out, parent)
    except P.UserError as e:
        return P.refused(e)
    print(path.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
