"""Evaluate a saved model on a split: loss, accuracy, the task metric, parameters and size.

    bertcompress evaluate --task mrpc --model-dir outputs/mrpc/finetune-s42 --split validation

`predict` is the one evaluation loop: fine-tuning calls it every epoch, evaluation calls it here.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from . import metrics, sizes
from .tokenize import Encoded


@torch.inference_mode()
def predict(model, data: Encoded, batch_size: int = 128, device: str = "cpu") -> tuple[float, np.ndarray]:
    """(mean cross-entropy, predicted labels); batches go in length order to minimise padding."""
    was_training = model.training
    model.eval()
    order = np.argsort(data.lengths, kind="stable")
    preds = np.empty(len(data), dtype=np.int64)
    loss_sum = 0.0
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        batch = {k: v.to(device, non_blocking=True) for k, v in data.batch(idx, 8).items()}
        labels = batch.pop("labels")
        logits = model(**batch).logits.float()
        loss_sum += float(F.cross_entropy(logits, labels, reduction="sum"))
        preds[idx] = logits.argmax(-1).cpu().numpy()
    model.train(was_training)
    return loss_sum / len(data), preds


def evaluate_model(model, data: Encoded, task: str, batch_size: int = 128, device: str = "cpu",
                   keep_predictions: bool = False) -> dict:
    """Loss, accuracy, the task metric, parameter counts, state_dict size; with keep_predictions also the
    per-example 'predictions' and 'labels' (lists, in split order: what the report's paired bootstrap needs)."""
    loss, preds = predict(model, data, batch_size, device)
    params, nonzero = sizes.parameter_counts(model)
    out = {"loss": loss, **metrics.compute(task, data.labels, preds), "parameters": params,
           "nonzero_parameters": nonzero, "size_mb": sizes.state_dict_bytes(model) / 1e6}
    if keep_predictions:
        out |= {"predictions": preds.tolist(), "labels": np.asarray(data.labels).tolist()}
    return out


def evaluate(model_dir: str, task: str, tokenized_path: str, batch_size: int = 128, latency_runs: int = 0,
             keep_predictions: bool = False) -> dict:
    """Load a saved model, any variant (fine-tuned, pruned, quantized), and evaluate it on one tokenized split:
    the metrics, sizes three ways and, with latency_runs, CPU latency (ms) at batch 1 and 8."""
    from .glue import get_task
    from .quantize import load_variant

    model = load_variant(model_dir, get_task(task).num_labels)
    data = Encoded.load(tokenized_path)
    result = {**evaluate_model(model, data, task, batch_size, keep_predictions=keep_predictions),
              **sizes.measure(model)}
    if latency_runs:
        from .latency import measure

        timed = measure(model, runs=latency_runs)
        result |= {f"latency_{k}": v for k, v in timed.items() if k.endswith("_ms")} | {"threads": timed["threads"]}
    return result
