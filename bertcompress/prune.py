"""Prune a fine-tuned model after training: one-shot magnitude pruning or structured pruning.

    bertcompress prune --task mrpc --model-dir outputs/mrpc/finetune-s42 -S prune.method=oneshot
    bertcompress prune --task mrpc --model-dir outputs/mrpc/finetune-s42 -S prune.method=structured

One-shot applies the gradual pruner's magnitude masks (bertcompress/masks.py, in prune.pattern) at final_sparsity
at once, then optionally recovers with a few fine-tuning steps of the one training loop (bertcompress/loop.py);
it ranks by magnitude whatever prune.criterion says (the other criteria score gradients while training).
Recovery steps are distilled from a teacher when distill.teacher is set, and run on the GPU when there is one.
Structured pruning removes whole attention heads and FFN neurons, per layer, by weight magnitude (or first-order
importance |w * dL/dw| when training data is given), so the saved model is physically smaller; it reloads
through bertcompress/variant.py, which re-applies the recorded shapes. With prune.stages > 1 it removes them
gradually: each stage scores what is left again, removes more along the cubic schedule (prune.power) and
trains its share of the recovery steps. (Gradual unstructured pruning runs inside fine-tuning.)
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from . import distill, loop, masks, sizes, variant
from .glue import get_task
from .params import Finetune, Params, UserError
from .tokenize import Encoded

READS = {
    "oneshot": ("method", "scope", "ranking", "pattern", "final_sparsity", "recovery_steps", "embedding_sparsity"),
    "structured": ("method", "heads_fraction", "ffn_fraction", "recovery_steps", "stages", "embedding_sparsity"),
}


def reads(p: Params) -> list[str]:
    """The params keys a pruning's result depends on (besides the model it prunes and the training data)."""
    keys = [f"prune.{k}" for k in READS[p.prune.method]]
    if p.prune.method == "structured":
        keys += ["finetune.batch_size", "finetune.seed"]  # the importance scores' batches
        keys += ["prune.power"] if p.prune.stages > 1 else []  # the stages' schedule
    if p.prune.recovery_steps:
        keys += [f"finetune.{k}" for k in loop.STEPS_READ]
        keys += [f"distill.{k}" for k in distill.READS] if p.distill.teacher else ["distill.teacher"]
    return list(dict.fromkeys(keys))


def prune(
    model_dir: str,
    out_dir: str,
    params: Params,
    task: str,
    train_path: str | None = None,
    teacher: str | None = None,
    device: str | None = None,
) -> dict:
    """prune.method = oneshot | structured of the model in model_dir, saved to out_dir; its metrics. With
    distill.teacher (and recovery steps), the recovery is distilled from `teacher` (a folder). Recovery runs on
    `device` (default: the GPU if there is one)."""
    method = params.prune.method
    if method not in READS:
        raise UserError(
            f"prune needs prune.method oneshot or structured, got '{method}' "
            "(gradual pruning runs in `bertcompress finetune`)"
        )
    if params.prune.recovery_steps and not train_path:
        raise UserError(
            f"prune.recovery_steps={params.prune.recovery_steps} needs training data; "
            "pass train_path or set prune.recovery_steps=0"
        )
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    objective = loop.plain
    if params.prune.recovery_steps and params.distill.teacher:
        objective = distill.Distiller(
            variant.load_float(distill.teacher_of(params, teacher), get_task(task).num_labels).to(device),
            params.distill,
        )
    return (oneshot if method == "oneshot" else structured)(
        model_dir, out_dir, params, task, train_path, objective, device
    )


def oneshot(
    model_dir: str,
    out_dir: str,
    params: Params,
    task: str,
    train_path: str | None = None,
    objective=loop.plain,
    device: str = "cpu",
) -> dict:
    """Magnitude-prune a fine-tuned model to final_sparsity at once, optionally recover; save it to out_dir."""
    p = params.prune
    if "structure" in (variant.read(model_dir) or {}):
        raise UserError(f"{model_dir} is structured-pruned; one-shot pruning takes a fine-tuned folder")
    model = variant.load_float(model_dir, get_task(task).num_labels).to(device)
    # the gradual pruner with a schedule that is at final_sparsity from its first (and only) mask update
    pruner = masks.GradualPruner(
        dataclasses.replace(
            p,
            initial_sparsity=p.final_sparsity,
            begin_step=0,
            end_step=1,
            hold_steps=None,
            frequency=1,
            power=1,
            criterion="magnitude",
        ),
        1,
    )  # no gradients yet
    pruner.attach(model)
    pruner.after_step(1)
    embeddings = _prune_embeddings(model, p.embedding_sparsity)
    loss = None
    if p.recovery_steps:  # steps past the schedule's end only re-apply the masks
        loss = loop.steps(
            model,
            train_path,
            params.finetune,
            params.runtime,
            p.recovery_steps,
            lambda s: pruner.after_step(1 + s),
            objective=objective,
            device=device,
        )
    embeddings()
    model.cpu()
    result = {
        "task": task,
        "method": "oneshot",
        "base": str(model_dir),
        "recovery_steps": p.recovery_steps,
        "recovery_loss": loss,
        "sparsity": pruner.finish(model),
        **sizes.measure(model),
    }
    info = {"mode": "oneshot", "base": str(model_dir), "weights": "model.safetensors"}
    variant.save(out_dir, model_dir, info, result, lambda tmp: model.save_pretrained(tmp))
    return result


def _prune_embeddings(model: nn.Module, sparsity: float):
    """Zero the `sparsity` share of the word embeddings' entries of least magnitude (torch.nn.utils.prune: the
    mask holds while recovery trains); returns the call that makes the zeros permanent. The artifact's zstd archive
    packs them (bertcompress/archive.py): MiniLM's word embeddings are half its int8 bytes."""
    if not sparsity:
        return lambda: None
    from torch.nn.utils import prune as torch_prune

    table = model.get_input_embeddings()
    torch_prune.l1_unstructured(table, "weight", amount=sparsity)
    return lambda: torch_prune.remove(table, "weight")


def _scores(
    model: nn.Module, train_path: str | None, f: Finetune, epoch: int = 0, device: str = "cpu"
) -> tuple[dict[int, torch.Tensor], str]:
    """Per-weight scores by parameter id: |w|, or |w * dL/dw| summed over the epoch's first 8 training batches."""
    if train_path is None:
        return {id(w): w.detach().abs() for w in model.parameters()}, "magnitude"
    data = Encoded.load(train_path).to(device)
    model.eval()  # no dropout: the gradient of the model that will be pruned
    model.zero_grad(set_to_none=True)
    for idx in loop.epoch_batches(len(data), f.batch_size, f.seed, epoch)[:8]:
        batch = data.batch(idx)
        labels = batch.pop("labels")
        loop.loss_of(model(**batch).logits, labels).backward()
    scores = {id(w): (w.detach() * w.grad).abs() for w in model.parameters() if w.grad is not None}
    model.zero_grad(set_to_none=True)
    return scores, "importance"


def _top(scores: torch.Tensor, fraction: float, n: int) -> torch.Tensor:
    """Indices (ascending) of the highest-scoring groups left, so that n - round(fraction * n) of the n groups
    the layer had stay (at least one)."""
    keep = min(len(scores), max(1, n - round(fraction * n)))
    return torch.sort(torch.topk(scores, keep).indices).values


def structured(
    model_dir: str,
    out_dir: str,
    params: Params,
    task: str,
    train_path: str | None = None,
    objective=loop.plain,
    device: str = "cpu",
) -> dict:
    """Remove heads_fraction of the heads and ffn_fraction of the FFN neurons of every layer, in prune.stages
    stages (each: score, remove up to the schedule's share, recover); save to out_dir."""
    p = params.prune
    model = variant.load_float(model_dir, get_task(task).num_labels).to(device)
    before = sizes.parameter_counts(model)[0]
    layers = model.base_model.encoder.layer
    full = [(layer.attention.self.num_attention_heads, layer.intermediate.dense.out_features) for layer in layers]
    loss, criterion = None, "magnitude"
    embeddings = _prune_embeddings(model, p.embedding_sparsity)  # held through the recovery
    if p.recovery_steps and hasattr(objective, "cached"):  # the teacher's logits once, for every stage's steps
        objective.cached(
            Encoded.load(train_path).to(device), device, visits=p.recovery_steps * params.finetune.batch_size
        )
    for stage in range(1, p.stages + 1):
        share = masks.polynomial_sparsity(stage, 0.0, 1.0, 0, p.stages, p.power)  # of the final fractions
        scores, criterion = _scores(model, train_path, params.finetune, stage - 1, device)
        s = lambda linear: scores[id(linear.weight)]  # noqa: E731
        for layer, (heads, ffn) in zip(layers, full):
            att, d = layer.attention.self, layer.attention.self.attention_head_size
            head = sum(s(getattr(att, n)).view(-1, d * att.query.in_features).sum(1) for n in ("query", "key", "value"))
            head += s(layer.attention.output.dense).view(-1, len(head), d).sum((0, 2))
            neuron = s(layer.intermediate.dense).sum(1) + s(layer.output.dense).sum(0)
            masks.keep(layer, _top(head, share * p.heads_fraction, heads), _top(neuron, share * p.ffn_fraction, ffn))
        n = p.recovery_steps // p.stages + (p.recovery_steps % p.stages if stage == p.stages else 0)
        if n:  # the last stage's mean training loss is reported
            loss = loop.steps(model, train_path, params.finetune, params.runtime, n, objective=objective, device=device)
    embeddings()
    model.cpu()
    shapes = masks.structure(model)
    result = {
        "task": task,
        "method": "structured",
        "base": str(model_dir),
        "criterion": criterion,
        "stages": p.stages,
        "structure": shapes,
        "parameters_before": before,
        "recovery_steps": p.recovery_steps,
        "recovery_loss": loss,
        **sizes.measure(model),
    }
    # not model.safetensors: transformers would load these shrunken tensors into full-size layers
    info = {"mode": "structured", "base": str(model_dir), "weights": "weights.safetensors", "structure": shapes}
    variant.save(out_dir, model_dir, info, result, lambda tmp: variant.save_weights(model, tmp / "weights.safetensors"))
    return result
