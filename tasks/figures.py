"""The report's figures: the seed's Figures 4–7 (loss and accuracy, or correlation, per epoch per fine-tuned
variant), the task metric vs the achieved sparsity, and the metric vs compressed size and vs CPU latency with
their Pareto fronts and the champion marked; the constant predictor's score (majority class; STS-B: mean
score) is a dashed line on each. Drawn by
tasks/report.py.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from bertcompress.glue import get_task

from .tables import constant_name, epoch_keys


def draw(
    task: str, records: list[dict], summary: pd.DataFrame, methods: list[str], folder: Path, champion: str | None = None
) -> list[str]:
    """The three figures, as PNG files in folder; their names. champion: the method marked on the fronts."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    metric, names = get_task(task).metric, []
    constant = summary.loc[constant_name(task)]
    fig, axes = plt.subplots(2, 2, figsize=(10, 7), sharex=True)  # the seed's Figures 4–7, per method
    for ax, key in zip(axes.flat, epoch_keys(task)):
        for m in methods:
            h = pd.concat([r["history"][key].rename(r["seed"]) for r in records if r["method"] == m], axis=1)
            ax.plot(h.index, h.mean(axis=1), marker="o", label=m)
            ax.fill_between(h.index, h.min(axis=1), h.max(axis=1), alpha=0.2)
        if key.startswith("val_") and f"{key[4:]} mean" in constant:
            ax.axhline(constant[f"{key[4:]} mean"], ls="--", c="grey", lw=1, label=constant_name(task))
        ax.set(title=key.replace("_", " "), xlabel="epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.legend()
    fig.suptitle(
        f"{task}: per-epoch loss and {'correlation' if get_task(task).regression else 'accuracy'} "
        "(mean over seeds, band = min–max)"
    )
    names.append(_save(fig, folder / f"{task}-epochs.png"))

    s = summary.drop(constant_name(task)).reset_index()
    fig, ax = plt.subplots(figsize=(6, 4.5))
    ax.errorbar(s["achieved (scope)"], s[f"{metric} mean"], yerr=s[f"{metric} std"], fmt="o", capsize=3)
    for _, row in s.iterrows():
        ax.annotate(
            row["method"],
            (row["achieved (scope)"], row[f"{metric} mean"]),
            fontsize=8,
            xytext=(3, 3),
            textcoords="offset points",
        )
    ax.axhline(constant[f"{metric} mean"], ls="--", c="grey", lw=1, label=constant_name(task))
    ax.set(
        xlabel="achieved sparsity (zeros in the pruned scope's Linear weights)",
        ylabel=f"validation {metric}",
        title=f"{task}: {metric} vs sparsity",
    )
    ax.legend()
    names.append(_save(fig, folder / f"{task}-metric-vs-sparsity.png"))

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5), sharey=True)  # the fronts the objective chooses on
    for ax, (x, xlabel) in zip(
        axes,
        (
            ("compressed_mb", "compressed size, MB (zstd of the state_dict)"),
            ("latency b8 ms", "CPU latency at batch 8, ms (as evaluated)"),
        ),
    ):
        for _, row in s.iterrows():
            style = "s" if row["method"] == methods[0] else ("^" if "+" in row["method"] else "o")
            ax.errorbar(row[x], row[f"{metric} mean"], yerr=row[f"{metric} std"], fmt=style, capsize=3)
            ax.annotate(
                row["method"], (row[x], row[f"{metric} mean"]), fontsize=8, xytext=(3, 3), textcoords="offset points"
            )
        front = s.dropna(subset=[x]).sort_values(x)
        front = front[
            front[f"{metric} mean"] >= front[f"{metric} mean"].cummax()
        ]  # nothing smaller/faster scores higher
        ax.plot(front[x], front[f"{metric} mean"], "k--x", lw=1, label="Pareto front")
        if champion in set(s["method"]):
            c = s.set_index("method").loc[champion]
            ax.plot(c[x], c[f"{metric} mean"], "*", ms=16, mfc="none", mec="red", label=f"champion ({champion})")
        ax.axhline(constant[f"{metric} mean"], ls="--", c="grey", lw=1, label=constant_name(task))
        ax.set(xlabel=xlabel, ylabel=f"validation {metric}")
        ax.legend(fontsize=8)
    fig.suptitle(f"{task}: {metric} vs size and vs latency (■ dense, ▲ quantized, ☆ champion)")
    names.append(_save(fig, folder / f"{task}-pareto.png"))
    return names


def _save(fig, path: Path) -> str:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path.name


def history(history: list[dict]):
    """Loss and the metrics per epoch of one fine-tune, training beside validation: a figure (MLflow's
    plots/history.png of its run)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [r["epoch"] for r in history]
    scores = [k for k in history[0] if k not in ("epoch", "step") and not k.endswith("_loss")]
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    for ax, (title, keys) in zip(axes, (("loss", ["train_loss", "val_loss"]), ("metrics", scores))):
        for k in keys:
            ax.plot(epochs, [r[k] for r in history], marker="o", label=k)
        ax.set(xlabel="epoch", title=title)
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.legend()
    fig.tight_layout()
    return fig
