"""Prune a fine-tuned model after training: one-shot magnitude pruning or structured pruning.

    bertcompress prune --task mrpc --model-dir outputs/mrpc/finetune-s42 -S prune.method=oneshot
    bertcompress prune --task mrpc --model-dir outputs/mrpc/finetune-s42 -S prune.method=structured

One-shot applies the gradual pruner's magnitude masks (bertcompress/masks.py, in prune.pattern) at final_sparsity
at once, then optionally recovers with a few fine-tuning steps of the one training loop (bertcompress/loop.py);
it ranks by magnitude whatever prune.criterion says (the other criteria score gradients while training).
Recovery steps are distilled from a teacher when distill.teacher is set. Structured pruning removes whole attention heads and FFN neurons, per layer, by weight magnitude (or first-order importance
|w * dL/dw| when training data is given), so the saved model is physically smaller; it reloads through
bertcompress/variant.py, which re-applies the recorded shapes. (Gradual pruning runs inside fine-tuning.)
"""
from __future__ import annotations

import dataclasses

import torch
from torch import nn

from . import distill, loop, masks, sizes, variant
from .glue import get_task
from .params import Finetune, Params, UserError
from .tokenize import Encoded

READS = {"oneshot": ("method", "scope", "ranking", "pattern", "final_sparsity", "recovery_steps"),
         "structured": ("method", "heads_fraction", "ffn_fraction", "recovery_steps")}


def reads(p: Params) -> list[str]:
    """The params keys a pruning's result depends on (besides the model it prunes and the training data)."""
    keys = [f"prune.{k}" for k in READS[p.prune.method]]
    if p.prune.method == "structured":
        keys += ["finetune.batch_size", "finetune.seed"]  # the importance scores' batches
    if p.prune.recovery_steps:
        keys += [f"finetune.{k}" for k in loop.STEPS_READ]
        keys += [f"distill.{k}" for k in distill.READS] if p.distill.teacher else []
    return list(dict.fromkeys(keys))


def prune(model_dir: str, out_dir: str, params: Params, task: str, train_path: str | None = None,
          teacher: str | None = None) -> dict:
    """prune.method = oneshot | structured of the model in model_dir, saved to out_dir; its metrics. With
    distill.teacher (and recovery steps), the recovery is distilled from `teacher` (a folder)."""
    method = params.prune.method
    if method not in READS:
        raise UserError(f"prune needs prune.method oneshot or structured, got '{method}' "
                        "(gradual pruning runs in `bertcompress finetune`)")
    if params.prune.recovery_steps and not train_path:
        raise UserError(f"prune.recovery_steps={params.prune.recovery_steps} needs training data; "
                        "pass train_path or set prune.recovery_steps=0")
    objective = loop.plain
    if params.distill.teacher and params.prune.recovery_steps:
        objective = distill.Distiller(variant.load_float(distill.teacher_of(params, teacher),
                                                         get_task(task).num_labels), params.distill)
    return (oneshot if method == "oneshot" else structured)(model_dir, out_dir, params, task, train_path, objective)


def oneshot(model_dir: str, out_dir: str, params: Params, task: str, train_path: str | None = None,
            objective=loop.plain) -> dict:
    """Magnitude-prune a fine-tuned model to final_sparsity at once, optionally recover; save it to out_dir."""
    p = params.prune
    if "structure" in (variant.read(model_dir) or {}):
        raise UserError(f"{model_dir} is structured-pruned; one-shot pruning takes a fine-tuned folder")
    model = variant.load_float(model_dir, get_task(task).num_labels)
    # the gradual pruner with a schedule that is at final_sparsity from its first (and only) mask update
    pruner = masks.GradualPruner(dataclasses.replace(p, initial_sparsity=p.final_sparsity, begin_step=0, end_step=1,
                                                     hold_steps=None, criterion="magnitude"), 1)  # no gradients yet
    pruner.attach(model)
    pruner.after_step(1)
    loss = None
    if p.recovery_steps:  # steps past the schedule's end only re-apply the masks
        loss = loop.steps(model, train_path, params.finetune, params.runtime, p.recovery_steps,
                          lambda s: pruner.after_step(1 + s), objective=objective)
    result = {"task": task, "method": "oneshot", "base": str(model_dir), "recovery_steps": p.recovery_steps,
              "recovery_loss": loss, "sparsity": pruner.finish(model), **sizes.measure(model)}
    info = {"mode": "oneshot", "base": str(model_dir), "weights": "model.safetensors"}
    variant.save(out_dir, model_dir, info, result, lambda tmp: model.save_pretrained(tmp))
    return result


def _scores(model: nn.Module, train_path: str | None, f: Finetune) -> tuple[dict[int, torch.Tensor], str]:
    """Per-weight scores by parameter id: |w|, or |w * dL/dw| summed over the first 8 training batches."""
    if train_path is None:
        return {id(w): w.detach().abs() for w in model.parameters()}, "magnitude"
    data = Encoded.load(train_path)
    model.eval()  # no dropout: the gradient of the model that will be pruned
    model.zero_grad(set_to_none=True)
    for idx in loop.epoch_batches(len(data), f.batch_size, f.seed, 0)[:8]:
        batch = data.batch(idx)
        labels = batch.pop("labels")
        loop.loss_of(model(**batch).logits, labels).backward()
    scores = {id(w): (w.detach() * w.grad).abs() for w in model.parameters() if w.grad is not None}
    model.zero_grad(set_to_none=True)
    return scores, "importance"


def _top(scores: torch.Tensor, fraction: float) -> torch.Tensor:
    """Indices (ascending) of the highest-scoring groups, dropping round(fraction * n), keeping at least one."""
    keep = max(1, len(scores) - round(fraction * len(scores)))
    return torch.sort(torch.topk(scores, keep).indices).values


def structured(model_dir: str, out_dir: str, params: Params, task: str, train_path: str | None = None,
               objective=loop.plain) -> dict:
    """Remove heads_fraction of the heads and ffn_fraction of the FFN neurons of every layer; save to out_dir."""
    p = params.prune
    model = variant.load_float(model_dir, get_task(task).num_labels)
    before = sizes.parameter_counts(model)[0]
    scores, criterion = _scores(model, train_path, params.finetune)
    s = lambda linear: scores[id(linear.weight)]  # noqa: E731
    for layer in model.base_model.encoder.layer:
        att, d = layer.attention.self, layer.attention.self.attention_head_size
        head = sum(s(getattr(att, n)).view(-1, d * att.query.in_features).sum(1) for n in ("query", "key", "value"))
        head += s(layer.attention.output.dense).view(-1, len(head), d).sum((0, 2))
        neuron = s(layer.intermediate.dense).sum(1) + s(layer.output.dense).sum(0)
        masks.keep(layer, _top(head, p.heads_fraction), _top(neuron, p.ffn_fraction))
    loss = (loop.steps(model, train_path, params.finetune, params.runtime, p.recovery_steps, objective=objective)
            if p.recovery_steps else None)
    shapes = masks.structure(model)
    result = {"task": task, "method": "structured", "base": str(model_dir), "criterion": criterion,
              "structure": shapes, "parameters_before": before, "recovery_steps": p.recovery_steps,
              "recovery_loss": loss, **sizes.measure(model)}
    # not model.safetensors: transformers would load these shrunken tensors into full-size layers
    info = {"mode": "structured", "base": str(model_dir), "weights": "weights.safetensors", "structure": shapes}
    variant.save(out_dir, model_dir, info, result, lambda tmp: variant.save_weights(model, tmp / "weights.safetensors"))
    return result
