"""The report's tables, from the records tasks/report.py reads out of MLflow: the summary of every variant over
seeds (the task's metrics beside the constant predictor's, three sparsity numbers, sizes, latency, a paired
bootstrap CI against the baseline variant, the collapse check), the seed's per-epoch Tables 1/2 and its
quantization Table 3, and their markdown.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from bertcompress import metrics, stats
from bertcompress.glue import get_task

SIZES = ("state_dict_mb", "compact_mb", "compressed_mb")
VERDICTS = {"—": "baseline", "baseline": "constant"}  # brief's words for the baseline's and the constant's rows


def epoch_keys(task: str) -> tuple[str, ...]:
    """What fine-tuning logs per epoch: losses, and accuracy (classification) or the correlations (regression)."""
    if get_task(task).regression:
        return ("train_loss", "val_loss", *[f"val_{m}" for m in get_task(task).metrics])
    return ("train_loss", "val_loss", "train_accuracy", "val_accuracy")


def constant_name(task: str) -> str:
    return "mean score (constant)" if get_task(task).regression else "majority class (constant)"


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


def aligned(df: pd.DataFrame, left: tuple[str, ...]) -> str:
    """A markdown table of strings with padded cells, the `left` columns left-aligned and the others right: it
    reads as printed and renders as markdown."""
    cells = [list(df.columns), *[list(row) for row in df.itertuples(index=False)]]
    width = [max(len(row[i]) for row in cells) for i in range(len(df.columns))]
    lefts = [c in left for c in df.columns]
    pad = lambda row: "| " + " | ".join(v.ljust(w) if at else v.rjust(w) for v, w, at in zip(row, width, lefts)) + " |"
    rule = "|" + "|".join("-" * (w + 2) if at else "-" * (w + 1) + ":" for w, at in zip(width, lefts)) + "|"
    return "\n".join([pad(cells[0]), rule, *map(pad, cells[1:])])


def brief(summary: pd.DataFrame) -> pd.DataFrame:
    """summary.csv's table as the flow prints it, within 120 columns: the headline metric mean ± std, Δ vs the
    baseline and its 95 % CI in points (×100, the unit of experiment.champion_budget), the compact size, CPU latency
    and a one-word verdict (baseline: the variant Δ is measured from). report.md keeps every column."""
    metric = next(c for c in summary.columns if c.endswith(" mean")).removesuffix(" mean")  # the headline, first
    delta, several = next(c for c in summary.columns if c.startswith("Δ vs ")), (summary["seeds"] > 1).any()
    num = lambda v, f: "" if pd.isna(v) else format(v, f)
    rows = []
    for method, r in summary.iterrows():
        own = method == delta.removeprefix("Δ vs ") or r["seeds"] == 0  # the baseline, the constant: no Δ
        rows.append(
            {
                "variant": method,
                f"{metric} (mean ± std)" if several else metric: num(r[f"{metric} mean"], ".4f")
                + (f" ± {r[f'{metric} std']:.4f}" if r["seeds"] > 1 else ""),
                f"Δ {metric} (pts)": "" if own else num(100 * r[delta], "+.2f"),
                "95 % CI (pts)": "" if own else f"[{100 * r['CI low']:+.2f}, {100 * r['CI high']:+.2f}]",
                "MB": num(r["compact_mb"], ".1f"),
                "b1 ms": num(r["latency b1 ms"], ".1f"),
                "b8 ms": num(r["latency b8 ms"], ".1f"),
                "verdict": VERDICTS.get(r["verdict"], r["verdict"].split(" to ")[0]),
            }
        )  # collapsed to ...
    return pd.DataFrame(rows)


def epoch_tables(task: str, records: list[dict], methods: list[str]) -> dict[str, pd.DataFrame]:
    """Tables 1/2: per epoch, mean over seeds of training/validation loss and accuracy (or correlation), each
    fine-tuned method beside the baseline (methods[0]), with a difference column (method − baseline)."""
    mean = {m: pd.concat([r["history"] for r in records if r["method"] == m]).groupby("epoch").mean() for m in methods}
    tables = {}
    for m in methods[1:]:
        cols = {}
        for k in epoch_keys(task):
            cols[(k, methods[0])], cols[(k, m)] = mean[methods[0]][k], mean[m][k]
            cols[(k, "Δ")] = mean[m][k] - mean[methods[0]][k]
        table = pd.DataFrame(cols)
        table.columns = [f"{k} {who}" for k, who in table.columns]
        tables[m] = table
    return tables


def _sparsity(rs: list[dict]) -> dict:
    """The three sparsity numbers, each named: the target the params ask for, the zeros reached in the pruned
    scope's Linear weights, and the zeros over all parameters."""
    scope = rs[0]["scope"]
    return {
        "target sparsity": rs[0]["target"],
        "scope": scope,
        "achieved (scope)": np.mean([r["metrics"].get(f"zeros_{scope}", np.nan) for r in rs]),
        "zeros (all)": float(
            np.mean([1 - r["metrics"]["nonzero_parameters"] / r["metrics"]["parameters"] for r in rs])
        ),
    }


def summary_table(task: str, records: list[dict], n_resamples: int, baseline: str) -> pd.DataFrame:
    """One row per variant, after the constant predictor's: the task's metrics mean ± std over seeds, the three
    sparsity numbers, sizes, latency, the paired bootstrap 95 % CI of (variant − baseline) of the headline
    metric, and the verdict; a variant no better than the constant predictor (stats.collapse, over its seeds)
    gets the verdict 'collapsed to the majority class'."""
    names = get_task(task).metrics
    dense = {r["seed"]: r for r in records if r["method"] == baseline}
    labels = np.asarray(records[0]["predictions"]["labels"])
    constant = metrics.compute(task, labels, metrics.constant(task, labels))
    rows = [
        {
            "method": constant_name(task),
            "seeds": 0,
            **{c: v for m in names for c, v in ((f"{m} mean", constant[m]), (f"{m} std", 0.0))},
            "verdict": "baseline",
            "collapse check": "",
        }
    ]
    for method in dict.fromkeys(r["method"] for r in records):
        rs = sorted((r for r in records if r["method"] == method), key=lambda r: r["seed"])
        row = {"method": method, "seeds": len(rs)}
        for m in names:
            row[f"{m} mean"], row[f"{m} std"] = stats.mean_std([r["metrics"].get(m, np.nan) for r in rs])
        if any(f"dev_{names[0]}" in r["metrics"] for r in records):  # the split choices are made on
            row[f"dev {names[0]} mean"], row[f"dev {names[0]} std"] = stats.mean_std(
                [r["metrics"].get(f"dev_{names[0]}", np.nan) for r in rs]
            )
        row |= _sparsity(rs)
        row |= {k: np.mean([r["metrics"].get(k, np.nan) for r in rs]) for k in SIZES}
        row |= {
            f"latency b{b} ms": np.mean([r["metrics"].get(f"latency_batch{b}_ms", np.nan) for r in rs]) for b in (1, 8)
        }
        preds = [r["predictions"]["predictions"] for r in rs]
        ci = stats.paired_bootstrap(
            task, labels, [dense[r["seed"]]["predictions"]["predictions"] for r in rs], preds, n_resamples
        )
        collapse = stats.collapse(task, labels, preds, n_resamples)
        verdict = collapse["verdict"] if collapse["collapsed"] else "—" if method == baseline else ci["verdict"]
        row |= {
            f"Δ vs {baseline}": ci["delta"],
            "CI low": ci["low"],
            "CI high": ci["high"],
            "verdict": verdict,
            "collapse check": collapse["why"],
        }
        rows.append(row)
    return pd.DataFrame(rows).set_index("method")


def quantization_table(task: str, records: list[dict]) -> pd.DataFrame:
    """Table 3: the task's metrics and state_dict size of each model without and with quantization."""
    rows = []
    for model in dict.fromkeys(r["model"] for r in records):
        row = {"model": model}
        for mode in dict.fromkeys(r["mode"] for r in records):
            rs = [r["metrics"] for r in records if r["model"] == model and r["mode"] == mode]
            if not rs:
                continue
            name = "fp32" if mode == "none" else mode
            row |= {f"{name} {m}": np.mean([x.get(m, np.nan) for x in rs]) for m in get_task(task).metrics}
            row[f"{name} MB"] = np.mean([x["state_dict_mb"] for x in rs])
        rows.append(row)
    return pd.DataFrame(rows).set_index("model")


def words(task: str, summary: pd.DataFrame, baseline: str) -> list[str]:
    metric, out = get_task(task).metric, []
    delta = f"Δ vs {baseline}"
    for method, row in summary[~summary["verdict"].isin(["—", "baseline"])].iterrows():
        ci = f"{row[delta]:+.4f} [{row['CI low']:+.4f}, {row['CI high']:+.4f}]"
        if row["verdict"].startswith("collapsed"):
            out.append(f"- **{method}** {row['verdict']} ({row['collapse check']}): Δ{metric} {ci}.")
            continue
        say = {
            "within noise": f"is within noise of {baseline} (the 95 % interval holds 0)",
            "better": f"is better than {baseline} (the whole 95 % interval is above 0)",
            "worse": f"is worse than {baseline} (the whole 95 % interval is below 0)",
        }[row["verdict"]]
        out.append(f"- **{method}** {say}: Δ{metric} {ci}.")
    return out
