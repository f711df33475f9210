"""The report, built from the MLflow runs alone: the seed paper's Tables 1–3, a summary of every variant over
seeds with paired bootstrap CIs against the dense model, the lr sweep, and figures (its Figures 4–7, metric vs
sparsity, a metric vs size Pareto plot).

    python -m tasks.report --task mrpc          # after `python -m flows.compress --task mrpc` or `dvc repro`

params.yaml (with the same overrides as the run) says what to report: every variant of its table × its
quantization modes × the experiment's seeds. Each variant's runs are found by their `config` tag, the digest
of every leaf param its chain of steps reads (tasks/variants.py), so runs logged by the flow, by a rerun of it
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

from bertcompress import io, stats
from bertcompress import params as P
from bertcompress.glue import get_task

from . import figures, tracking, variants

EPOCH_KEYS = ("train_loss", "train_accuracy", "val_loss", "val_accuracy")
SIZES = ("state_dict_mb", "compact_mb", "compressed_mb")


def _runs(task: str, p: P.Params, name: str, mode: str, seed: int) -> list:
    """FINISHED runs of one (task, variant, mode, seed) configuration, oldest first."""
    c, exp = tracking.client()
    where = (f"tags.task = '{task}' and tags.method = '{variants.method(name, mode)}' and tags.seed = '{seed}' "
             f"and tags.config = '{variants.digest(task, p, name, seed, mode)}' and attributes.status = 'FINISHED'")
    return list(reversed(c.search_runs([exp], where, order_by=["attributes.start_time DESC"], max_results=5000)))


def _variant(task: str, p: P.Params, name: str, mode: str, seed: int) -> dict:
    """One variant's merged record: metrics, per-epoch history (fine-tuned models), predictions, run ids."""
    c, _ = tracking.client()
    runs = _runs(task, p, name, mode, seed)
    record = {"task": task, "model": name, "mode": mode, "method": variants.method(name, mode), "seed": seed,
              "lr": p.variant(name, seed).finetune.lr, "run_ids": [r.info.run_id for r in runs], "metrics": {},
              "history": None, "predictions": None}
    for run in runs:  # later runs override earlier ones
        record["metrics"] |= run.data.metrics
        if "val_loss" in run.data.metrics:  # the fine-tune step logged per-epoch metrics here
            history = {k: {m.step: m.value for m in c.get_metric_history(run.info.run_id, k)} for k in EPOCH_KEYS}
            record["history"] = pd.DataFrame(history).sort_index().rename_axis("epoch")
        if any(f.path == "evaluate" for f in c.list_artifacts(run.info.run_id)):
            with tempfile.TemporaryDirectory() as tmp:
                record["predictions"] = json.loads(Path(c.download_artifacts(
                    run.info.run_id, tracking.PREDICTIONS, tmp)).read_text())
    return record


def collect(task: str, p: P.Params) -> list[dict]:
    """Every variant × mode × seed of the experiment; a missing one is a one-line error naming the fix."""
    records = []
    for name, v in p.variants.items():
        for mode in ["none", *v.quantize]:
            for seed in p.experiment.seeds:
                r = _variant(task, p, name, mode, seed)
                if r["predictions"] is None or "accuracy" not in r["metrics"]:
                    raise P.UserError(f"no finished, evaluated MLflow run of {task} {r['method']} seed {seed} "
                                      f"(lr {r['lr']:g}) in {tracking.tracking_uri()}; run `python -m flows.compress "
                                      f"--task {task}` (or dvc repro) with the same params first")
                records.append(r)
    return records


def _fmt(v) -> str:
    """Markdown cell: metrics and deltas to 4 decimals, sizes and latencies (>= 10) to 1, counts as they are."""
    if isinstance(v, (str, int, np.integer)):
        return str(v)
    if v is None or np.isnan(v):
        return "–"
    return f"{v:.1f}" if abs(v) >= 10 else f"{v:.4f}" if abs(v) >= 1e-3 or v == 0 else f"{v:.3g}"  # lr: 2e-05


def markdown(df: pd.DataFrame, index: bool = True) -> str:
    df = df.reset_index() if index else df
    head = "| " + " | ".join(map(str, df.columns)) + " |"
    rows = ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join([head, "|" + "---|" * len(df.columns), *rows])


def epoch_tables(records: list[dict], methods: list[str]) -> dict[str, pd.DataFrame]:
    """Tables 1/2: per epoch, mean over seeds of training/validation loss and accuracy, each fine-tuned method
    beside the baseline (methods[0]), with a difference column (method − baseline)."""
    mean = {m: pd.concat([r["history"] for r in records if r["method"] == m]).groupby("epoch").mean()
            for m in methods}
    tables = {}
    for m in methods[1:]:
        cols = {}
        for k in EPOCH_KEYS:
            cols[(k, methods[0])], cols[(k, m)] = mean[methods[0]][k], mean[m][k]
            cols[(k, "Δ")] = mean[m][k] - mean[methods[0]][k]
        table = pd.DataFrame(cols)
        table.columns = [f"{k} {who}" for k, who in table.columns]
        tables[m] = table
    return tables


def summary_table(task: str, records: list[dict], n_resamples: int, baseline: str) -> pd.DataFrame:
    """One row per variant: the task metric mean ± std over seeds, accuracy, sizes, sparsity, latency, and the
    paired bootstrap 95 % CI of (variant − baseline) of the metric with its verdict."""
    metric = get_task(task).metric
    dense = {r["seed"]: r for r in records if r["method"] == baseline}
    rows = []
    for method in dict.fromkeys(r["method"] for r in records):
        rs = sorted((r for r in records if r["method"] == method), key=lambda r: r["seed"])
        values = lambda k: [r["metrics"].get(k, np.nan) for r in rs]  # noqa: E731
        m, s = stats.mean_std(values(metric))
        row = {"method": method, "seeds": len(rs), f"{metric} mean": m, f"{metric} std": s,
               "accuracy mean": np.mean(values("accuracy"))}
        row |= {f"{k}": np.mean(values(k)) for k in SIZES}
        row["sparsity"] = float(np.mean([1 - r["metrics"]["nonzero_parameters"] / r["metrics"]["parameters"]
                                         for r in rs]))
        row |= {f"latency b{b} ms": np.mean(values(f"latency_batch{b}_ms")) for b in (1, 8)}
        labels = rs[0]["predictions"]["labels"]
        ci = stats.paired_bootstrap(task, labels, [dense[r["seed"]]["predictions"]["predictions"] for r in rs],
                                    [r["predictions"]["predictions"] for r in rs], n_resamples)
        row |= {"Δ vs dense": ci["delta"], "CI low": ci["low"], "CI high": ci["high"],
                "verdict": "—" if method == baseline else ci["verdict"]}
        rows.append(row)
    return pd.DataFrame(rows).set_index("method")


def quantization_table(task: str, records: list[dict]) -> pd.DataFrame:
    """Table 3: accuracy, the task metric and state_dict size of each model without and with quantization."""
    metric = get_task(task).metric
    rows = []
    for model in dict.fromkeys(r["model"] for r in records):
        row = {"model": model}
        for mode in dict.fromkeys(r["mode"] for r in records):
            rs = [r["metrics"] for r in records if r["model"] == model and r["mode"] == mode]
            if not rs:
                continue
            name = "fp32" if mode == "none" else mode
            row |= {f"{name} acc": np.mean([x["accuracy"] for x in rs]),
                    f"{name} {metric}": np.mean([x.get(metric, np.nan) for x in rs]),
                    f"{name} MB": np.mean([x["state_dict_mb"] for x in rs])}
        rows.append(row)
    return pd.DataFrame(rows).set_index("model")


def lr_sweep(task: str, p: P.Params) -> pd.DataFrame:
    """The baseline (first seed) at each of experiment.lr_candidates, read from MLflow, the chosen one marked."""
    e, metric, rows = p.experiment, get_task(task).metric, []
    for lr in e.lr_candidates:
        r = _variant(task, variants.with_lr(p, lr), e.baseline, "none", e.seeds[0])
        if metric not in r["metrics"]:
            raise P.UserError(f"no finished MLflow run of the lr sweep's {task} {e.baseline} seed {e.seeds[0]} at "
                              f"lr {lr:g} in {tracking.tracking_uri()}; run `python -m flows.compress --task {task}` "
                              "first, or set experiment.lr_candidates=[]")
        rows.append({"lr": lr, f"{e.baseline} {metric}": r["metrics"][metric],
                     f"{e.baseline} accuracy": r["metrics"]["accuracy"]})
    table = pd.DataFrame(rows)
    chosen = variants.best_lr(dict(zip(table["lr"], table[f"{e.baseline} {metric}"])))
    table["chosen"] = np.where(table["lr"] == chosen, "yes", "")
    return table


def words(task: str, summary: pd.DataFrame) -> list[str]:
    metric, out = get_task(task).metric, []
    for method, row in summary[summary["verdict"] != "—"].iterrows():
        ci = f"{row['Δ vs dense']:+.4f} [{row['CI low']:+.4f}, {row['CI high']:+.4f}]"
        say = {"within noise": "is within noise of dense (the 95 % interval holds 0)",
               "better": "is better than dense (the whole 95 % interval is above 0)",
               "worse": "is worse than dense (the whole 95 % interval is below 0)"}[row["verdict"]]
        out.append(f"- **{method}** {say}: Δ{metric} {ci}.")
    return out


def build(task: str, p: P.Params, out: str | Path | None = None, parent: str | None = None) -> Path:
    """Write the report of one task from MLflow; returns the path of report.md. With experiment.lr_candidates
    the variants reported are those at the lr the sweep chose, as in the flow and DVC."""
    out = Path(out or Path("results", "report", task))
    e, metric = p.experiment, get_task(task).metric
    lrs = lr_sweep(task, p) if e.lr_candidates else None
    if lrs is not None:
        p = variants.with_lr(p, float(lrs.loc[lrs["chosen"] == "yes", "lr"].iloc[0]))  # the sweep read once
    records = collect(task, p)
    methods = [e.baseline, *[n for n, v in p.variants.items() if v.finetuned and n != e.baseline]]
    summary = summary_table(task, records, e.bootstrap_samples, e.baseline)
    epochs, quant = epoch_tables(records, methods), quantization_table(task, records)
    with io.atomic_dir(out) as tmp:
        (tmp / "figures").mkdir()
        names = figures.draw(task, records, summary, methods, tmp / "figures")
        per_run = pd.DataFrame([{"method": r["method"], "seed": r["seed"], "run_id": r["run_ids"][-1],
                                 **{k: r["metrics"].get(k) for k in ("accuracy", metric, *SIZES)}} for r in records])
        summary.to_csv(tmp / "summary.csv")
        per_run.to_csv(tmp / "runs.csv", index=False)
        (tmp / "tables.json").write_text(json.dumps({"summary": summary.reset_index().to_dict("records"),
                                                     "quantization": quant.reset_index().to_dict("records"),
                                                     "lr_sweep": None if lrs is None else lrs.to_dict("records")},
                                                    indent=1, default=float))
        lines = [f"# {task}: compression report", "",
                 f"Model `{p.model.name}`, lr {p.finetune.lr:g}, seeds {', '.join(map(str, e.seeds))}; "
                 f"every number below is read from the MLflow runs in `{tracking.tracking_uri()}` (runs.csv lists "
                 f"them). Δ = variant − dense of the validation {metric}, averaged over seeds paired by seed, with a "
                 f"paired bootstrap 95 % interval over validation examples ({e.bootstrap_samples} resamples).", "",
                 "## Summary: every variant", "", markdown(summary), "", *words(task, summary), ""]
        for m, table in epochs.items():
            lines += [f"## Table 1/2: per epoch, {m} vs dense (mean over seeds)", "", markdown(table), ""]
        lines += ["## Table 3: without and with quantization (mean over seeds)", "", markdown(quant), "",
                  "## Learning rate", ""]
        if lrs is None:
            lines += [f"No sweep: finetune.lr = {p.finetune.lr:g} for every variant.", ""]
        else:
            lines += [f"The baseline ({e.baseline}), seed {e.seeds[0]}, at each candidate; the best validation {metric} "
                      "is used for every variant that sets no lr of its own.", "", markdown(lrs, index=False), ""]
        lines += ["## Figures", "", *[f"![{n}](figures/{n})" for n in names], ""]
        (tmp / "report.md").write_text("\n".join(lines))
    if parent:
        tracking.log_folder(parent, str(out), "report")
    return out / "report.md"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tasks.report", description=__doc__.split("\n")[0])
    parser.add_argument("--task", default="mrpc")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("-S", "--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE")
    parser.add_argument("--out", help="output folder (default: results/report/<task>)")
    args = parser.parse_args(argv)
    try:
        p = P.load(args.params, args.overrides)
        with tracking.parent_run("report", f"report-{args.task}", key=f"report-{os.getpid()}-{os.times().elapsed}") as parent:
            path = build(args.task, p, args.out, parent)
    except P.UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(path.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
