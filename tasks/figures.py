"""The report's figures: the seed's Figures 4–7 (loss and accuracy per epoch per fine-tuned variant), the task
metric vs sparsity, and the metric vs compressed size with its Pareto front. Drawn by tasks/report.py.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from bertcompress.glue import get_task


def draw(task: str, records: list[dict], summary: pd.DataFrame, methods: list[str], folder: Path) -> list[str]:
    """The three figures, as PNG files in folder; their names."""
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
        style = "s" if row["verdict"] == "—" else ("^" if "+" in row["method"] else "o")
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
