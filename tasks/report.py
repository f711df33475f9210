"""The report, built from the MLflow runs alone: the seed paper's Tables 1–3, a summary of every variant over
seeds with paired bootstrap CIs against the dense model, the lr sweep, and figures (its Figures 4–7, metric vs
sparsity, a metric vs size Pareto plot).

    python -m tasks.report --task mrpc          # after `python -m flows.compress --task mrpc` or `dvc repro`

params.yaml (with the same overrides as the run) says which variants to report: every model × quantization mode
× seed of its experiment section. Each variant's runs are found by their logged params (tracking.identity: every
key its results depend on), so runs logged by the flow, by a rerun of it whose steps came from the cache (a changed
quantize or evaluate param leaves the fine-tunes cached) or by dvc stages are all found; a variant's metrics are
merged from its FINISHED runs, the latest value of each metric winning. Writes
results/report/<task>/{report.md, summary.csv, tables.json, figures/*.png} (to a temp folder, then renamed) and
logs the same files as artifacts of the parent run.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from bertcompress import params as P
from bertcompress import stats
from bertcompress.glue import get_task

from . import steps, tracking

EPOCH_KEYS = ("train_loss", "train_accuracy", "val_loss", "val_accuracy")
SIZES = ("state_dict_mb", "compact_mb", "compressed_mb")


def _runs(task: str, q: P.Params, method: str) -> list:
    """FINISHED runs of one variant, oldest first: its (task, method, seed) runs whose logged params equal the
    variant's on every key its results depend on (tracking.identity)."""
    c, exp = tracking.client()
    where = (f"tags.task = '{task}' and tags.method = '{method}' and tags.seed = '{q.finetune.seed}' "
             "and attributes.status = 'FINISHED'")
    want = tracking.identity(task, q)
    runs = c.search_runs([exp], where, order_by=["attributes.start_time DESC"], max_results=5000)
    return [r for r in reversed(runs) if all(r.data.params.get(k) == v for k, v in want.items())]


def _variant(task: str, p: P.Params, model: str, mode: str, seed: int) -> dict:
    """One variant's merged record: metrics, per-epoch history (fine-tuned models), predictions, run ids."""
    c, _ = tracking.client()
    q = steps.configure(p.to_dict(), model, seed, mode)
    runs = _runs(task, q, steps.method(model, mode))
    record = {"task": task, "model": model, "mode": mode, "method": steps.method(model, mode), "seed": seed,
              "lr": q.finetune.lr, "run_ids": [r.info.run_id for r in runs], "metrics": {}, "history": None,
              "predictions": None}
    for run in runs:  # later runs override earlier ones
        record["metrics"] |= run.data.metrics
        if "val_loss" in run.data.metrics:  # the fine-tune step logged per-epoch metrics here
            history = {k: {m.step: m.value for m in c.get_metric_history(run.info.run_id, k)} for k in EPOCH_KEYS}
            record["history"] = pd.DataFrame(history).sort_index().rename_axis("epoch")
        if any(f.path == "evaluate" for f in c.list_artifacts(run.info.run_id)):
            with tempfile.TemporaryDirectory() as tmp:
                record["predictions"] = json.loads(Path(c.download_artifacts(
                    run.info.run_id, steps.PREDICTIONS, tmp)).read_text())
    return record


def collect(task: str, p: P.Params) -> list[dict]:
    """Every variant the experiment section names; a missing one is a one-line error naming the fix."""
    e, records = p.experiment, []
    for model in e.models:
        for mode in ["none", *e.quantize]:
            for seed in e.seeds:
                r = _variant(task, p, model, mode, seed)
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
    return f"{v:.1f}" if abs(v) >= 10 else f"{v:.4f}"


def markdown(df: pd.DataFrame, index: bool = True) -> str:
    df = df.reset_index() if index else df
    head = "| " + " | ".join(map(str, df.columns)) + " |"
    rows = ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join([head, "|" + "---|" * len(df.columns), *rows])


def epoch_tables(records: list[dict], methods: list[str]) -> dict[str, pd.DataFrame]:
    """Tables 1/2: per epoch, mean over seeds of training/validation loss and accuracy, each fine-tuned method
    beside dense, with a difference column (method − dense)."""
    mean = {m: pd.concat([r["history"] for r in records if r["method"] == m]).groupby("epoch").mean()
            for m in methods}
    tables = {}
    for m in methods[1:]:
        cols = {}
        for k in EPOCH_KEYS:
            cols[(k, "dense")], cols[(k, m)] = mean["dense"][k], mean[m][k]
            cols[(k, "Δ")] = mean[m][k] - mean["dense"][k]
        table = pd.DataFrame(cols)
        table.columns = [f"{k} {who}" for k, who in table.columns]
        tables[m] = table
    return tables


def summary_table(task: str, records: list[dict], n_resamples: int) -> pd.DataFrame:
    """One row per variant: the task metric mean ± std over seeds, accuracy, sizes, sparsity, latency, and the
    paired bootstrap 95 % CI of (variant − dense) of the metric with its verdict."""
    metric = get_task(task).metric
    dense = {r["seed"]: r for r in records if r["method"] == "dense"}
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
                "verdict": "—" if method == "dense" else ci["verdict"]}
        rows.append(row)
    return pd.DataFrame(rows).set_index("method")


def quantization_table(task: str, records: list[dict], modes: list[str]) -> pd.DataFrame:
    """Table 3: accuracy, the task metric and state_dict size of each model without and with quantization."""
    metric = get_task(task).metric
    rows = []
    for model in dict.fromkeys(r["model"] for r in records):
        row = {"model": model}
        for mode in ["none", *modes]:
            rs = [r["metrics"] for r in records if r["model"] == model and r["mode"] == mode]
            name = "fp32" if mode == "none" else mode
            row |= {f"{name} acc": np.mean([x["accuracy"] for x in rs]),
                    f"{name} {metric}": np.mean([x.get(metric, np.nan) for x in rs]),
                    f"{name} MB": np.mean([x["state_dict_mb"] for x in rs])}
        rows.append(row)
    return pd.DataFrame(rows).set_index("model")


def lr_sweep(task: str, p: P.Params) -> pd.DataFrame:
    """The dense model (first seed) at each of experiment.lr_candidates, read from MLflow, best marked."""
    metric, rows = get_task(task).metric, []
    for lr in p.experiment.lr_candidates:
        r = _variant(task, with_lr(p, lr), "dense", "none", p.experiment.seeds[0])
        if metric not in r["metrics"]:
            raise P.UserError(f"no finished MLflow run of the lr sweep's {task} dense seed {p.experiment.seeds[0]} at "
                              f"lr {lr:g} in {tracking.tracking_uri()}; run `python -m flows.compress --task {task}` "
                              "first, or set experiment.lr_candidates=[]")
        rows.append({"lr": lr, f"dense {metric}": r["metrics"][metric], "dense accuracy": r["metrics"]["accuracy"]})
    table = pd.DataFrame(rows)
    chosen = best_lr(dict(zip(table["lr"], table[f"dense {metric}"])))
    table["chosen"] = np.where(table["lr"] == chosen, "yes", "")
    return table


def best_lr(scores: dict[float, float]) -> float:
    """The seed's rule: the candidate lr with the best validation metric of the dense model; ties go to the
    candidate listed first. The flow applies it to the sweep's results, the report to the same runs in MLflow."""
    return max(scores, key=lambda lr: scores[lr])


def with_lr(p: P.Params, lr: float) -> P.Params:
    q = P.from_dict(p.to_dict())
    q.finetune.lr = lr
    return q


def figures(task: str, records: list[dict], summary: pd.DataFrame, methods: list[str], folder: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metric, names = get_task(task).metric, []
    fig, axes = plt.subplots(2, 2, figsize=(10, 7), sharex=True)  # the seed's Figures 4–7, per method
    for ax, key in zip(axes.flat, ("train_loss", "val_loss", "train_accuracy", "val_accuracy")):
        for m in methods:
            h = pd.concat([r["history"][key].rename(r["seed"]) for r in records if r["method"] == m], axis=1)
            ax.plot(h.index, h.mean(axis=1), marker="o", label=m)
            ax.fill_between(h.index, h.min(axis=1), h.max(axis=1), alpha=0.2)
        ax.set(title=key.replace("_", " "), xlabel="epoch")
        ax.legend()
    fig.suptitle(f"{task}: per-epoch loss and accuracy (mean over seeds, band = min–max)")
    names.append(_save(fig, folder / f"{task}-epochs.png"))

    s = summary.reset_index()
    fig, ax = plt.subplots(figsize=(6, 4.5))
    ax.errorbar(s["sparsity"], s[f"{metric} mean"], yerr=s[f"{metric} std"], fmt="o", capsize=3)
    for _, row in s.iterrows():
        ax.annotate(row["method"], (row["sparsity"], row[f"{metric} mean"]), fontsize=8, xytext=(3, 3),
                    textcoords="offset points")
    ax.set(xlabel="sparsity (zeros / all parameters)", ylabel=f"validation {metric}", title=f"{task}: {metric} vs sparsity")
    names.append(_save(fig, folder / f"{task}-metric-vs-sparsity.png"))

    fig, ax = plt.subplots(figsize=(6, 4.5))
    for _, row in s.iterrows():
        style = "s" if row["method"] == "dense" else ("^" if "+" in row["method"] else "o")
        ax.errorbar(row["compressed_mb"], row[f"{metric} mean"], yerr=row[f"{metric} std"], fmt=style, capsize=3)
        ax.annotate(row["method"], (row["compressed_mb"], row[f"{metric} mean"]), fontsize=8, xytext=(3, 3),
                    textcoords="offset points")
    front = s.sort_values("compressed_mb")
    front = front[front[f"{metric} mean"] >= front[f"{metric} mean"].cummax()]  # nothing smaller scores higher
    ax.plot(front["compressed_mb"], front[f"{metric} mean"], "k--x", lw=1, label="Pareto front")
    ax.set(xlabel="compressed size, MB (zstd of the state_dict)", ylabel=f"validation {metric}",
           title=f"{task}: {metric} vs size (■ dense, ▲ quantized)")
    ax.legend()
    names.append(_save(fig, folder / f"{task}-pareto.png"))
    return names


def _save(fig, path: Path) -> str:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path.name


def words(task: str, summary: pd.DataFrame) -> list[str]:
    metric, out = get_task(task).metric, []
    for method, row in summary.drop(index="dense").iterrows():
        ci = f"{row['Δ vs dense']:+.4f} [{row['CI low']:+.4f}, {row['CI high']:+.4f}]"
        say = {"within noise": "is within noise of dense (the 95 % interval holds 0)",
               "better": "is better than dense (the whole 95 % interval is above 0)",
               "worse": "is worse than dense (the whole 95 % interval is below 0)"}[row["verdict"]]
        out.append(f"- **{method}** {say}: Δ{metric} {ci}.")
    return out


def build(task: str, p: P.Params, out: str | Path | None = None, parent: str | None = None,
          sweep: bool = True) -> Path:
    """Write the report of one task from MLflow; returns the path of report.md. With sweep (and
    experiment.lr_candidates) the variants reported are those at the lr the sweep chose, as in the flow."""
    out = Path(out or Path("results", "report", task))
    e, metric = p.experiment, get_task(task).metric
    lrs = lr_sweep(task, p) if sweep and e.lr_candidates else None
    if lrs is not None:
        p = with_lr(p, float(lrs.loc[lrs["chosen"] == "yes", "lr"].iloc[0]))  # the sweep read once
    records = collect(task, p)
    methods = list(e.finetune)
    summary = summary_table(task, records, e.bootstrap_samples)
    epochs, quant = epoch_tables(records, methods), quantization_table(task, records, e.quantize)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent if out.parent.exists() else None))
    (tmp / "figures").mkdir()
    names = figures(task, records, summary, methods, tmp / "figures")
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
        lines += [f"The dense model, seed {e.seeds[0]}, at each candidate; the best validation {metric} is used "
                  "for every variant.", "", markdown(lrs, index=False), ""]
    lines += ["## Figures", "", *[f"![{n}](figures/{n})" for n in names], ""]
    (tmp / "report.md").write_text("\n".join(lines))
    out.parent.mkdir(parents=True, exist_ok=True)
    old = out.with_name(f".{out.name}.old-{os.getpid()}")
    if out.exists():
        out.rename(old)
    tmp.rename(out)
    shutil.rmtree(old, ignore_errors=True)
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
