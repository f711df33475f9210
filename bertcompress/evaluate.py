"""Evaluate a saved model, any variant, on a split: loss, the task's metrics beside the constant predictor's
(majority class; STS-B: mean score) and whether it collapsed to it, parameters, sizes, sparsity, latency.

    bertcompress evaluate --task mrpc --model-dir outputs/mrpc/finetune-s42 --split validation

The evaluation loop itself is loop.predict, the one fine-tuning calls every epoch.
"""

from __future__ import annotations

import numpy as np

from . import loop, metrics, sizes, stats
from .glue import get_task
from .params import Params
from .tokenize import Encoded
from .variant import load_variant


def reads(p: Params) -> list[str]:
    """The params keys an evaluation's numbers depend on (besides the model and the split)."""
    timing = ["evaluate.latency_runs", "evaluate.latency_threads"] if p.evaluate.latency_runs else []
    return ["evaluate.batch_size", *timing, "tokenize.max_length"]  # + the MLflow model logged with it encodes at it


def evaluate_model(
    model, data: Encoded, task: str, batch_size: int = 128, device: str = "cpu", keep_predictions: bool = False
) -> dict:
    """Loss, the task's metrics, the constant predictor's ('baseline_<metric>') and the collapse verdict
    (stats.collapse), parameter counts, state_dict size; with keep_predictions also the per-example
    'predictions' and 'labels' (lists, in split order: what the report's paired bootstrap needs)."""
    loss, preds = loop.predict(model, data, batch_size, device)
    params, nonzero = sizes.parameter_counts(model) if hasattr(model, "state_dict") else (None, None)
    baseline = metrics.compute(task, data.labels, metrics.constant(task, data.labels))
    out = {
        "loss": loss,
        **metrics.compute(task, data.labels, preds),
        **{f"baseline_{k}": v for k, v in baseline.items()},
        **stats.collapse(task, data.labels, preds),
        "parameters": params,
        "nonzero_parameters": nonzero,
        "size_mb": sizes.state_dict_bytes(model) / 1e6 if hasattr(model, "state_dict") else None,
    }
    if keep_predictions:
        out |= {"predictions": preds.tolist(), "labels": np.asarray(data.labels).tolist()}
    return out


def evaluate(
    model_dir: str,
    task: str,
    tokenized_path: str,
    batch_size: int = 128,
    latency_runs: int = 0,
    keep_predictions: bool = False,
    threads: int | None = None,
    dev: str | None = None,
) -> dict:
    """Load a saved model, any variant (fine-tuned, pruned, quantized), and evaluate it on one tokenized split:
    the metrics, sizes three ways and, with latency_runs, CPU latency (ms) at batch 1 and 8 on `threads` torch
    threads (None: torch's default), reported beside it. With dev (the tokenized dev split), its loss and metrics
    too, as dev_<metric>: what the experiment's choices read."""
    model = load_variant(model_dir, get_task(task).num_labels)
    data = Encoded.load(tokenized_path)
    result = {
        **evaluate_model(model, data, task, batch_size, keep_predictions=keep_predictions),
        **(sizes.measure(model) if hasattr(model, "state_dict") else model.sizes()),
    }  # an artifact: its file
    if dev:
        data = Encoded.load(dev)
        loss, preds = loop.predict(model, data, batch_size)
        scores = {"loss": loss, **metrics.compute(task, data.labels, preds), "examples": len(data)}
        result |= {f"dev_{k}": v for k, v in scores.items()}
    if latency_runs:
        from .latency import measure

        timed = measure(model, runs=latency_runs, threads=threads)
        result |= {f"latency_{k}": v for k, v in timed.items() if k.endswith("_ms")} | {"threads": timed["threads"]}
    return result
