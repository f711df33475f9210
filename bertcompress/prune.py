"""Pruning: gradual magnitude pruning during fine-tuning, one-shot magnitude pruning, structured pruning.

    bertcompress finetune --task mrpc -S prune.method=gradual -S prune.final_sparsity=0.9
    bertcompress prune --task mrpc --model-dir outputs/mrpc/finetune-s42 -S prune.method=oneshot
    bertcompress prune --task mrpc --model-dir outputs/mrpc/finetune-s42 -S prune.method=structured

Masks live in torch.nn.utils.prune's parametrization (weight = weight_orig * weight_mask). Every `frequency`
steps between begin_step and end_step the mask is recomputed from |weight| to the scheduled sparsity, per layer
or over all pruned layers at once (global); after every optimizer step pruned weights are zeroed again. At the
end torch.nn.utils.prune.remove makes the zeros permanent: no mask buffers or _orig copies are saved.
One-shot pruning applies the same masks at final_sparsity to a fine-tuned model at once, then optionally
recovers with a few fine-tuning steps. Structured pruning removes whole attention heads and FFN neurons, per
layer, by weight magnitude (or first-order importance |w * dL/dw| when training data is given), so the saved
model is physically smaller; it reloads through quantize.load_variant, which re-applies the recorded shapes.
"""
from __future__ import annotations

import dataclasses
import itertools
import math
from pathlib import Path

import torch
import torch.nn.functional as F
import torch.nn.utils.prune as tprune
from torch import nn
from transformers.pytorch_utils import prune_linear_layer

from . import sizes
from .glue import get_task
from .params import Finetune, Params, Prune, UserError
from .tokenize import Encoded

SCOPES = ("classifier", "encoder", "all_linear")
RANKINGS = ("layer", "global")
METHODS = ("none", "gradual", "oneshot", "structured")


def validate(p: Prune, total_steps: int | None = None) -> None:
    if p.method not in METHODS:
        raise UserError(f"prune.method '{p.method}' is unknown; choose one of: {', '.join(METHODS)}")
    if p.scope not in SCOPES:
        raise UserError(f"prune.scope '{p.scope}' is unknown; choose one of: {', '.join(SCOPES)}")
    if p.ranking not in RANKINGS:
        raise UserError(f"prune.ranking '{p.ranking}' is unknown; choose one of: {', '.join(RANKINGS)}")
    if not 0 <= p.final_sparsity < 1:
        raise UserError(f"prune.final_sparsity must be in [0, 1), got {p.final_sparsity}")
    if not 0 <= p.initial_sparsity <= p.final_sparsity:
        raise UserError(f"prune.initial_sparsity must be in [0, final_sparsity={p.final_sparsity}], "
                        f"got {p.initial_sparsity}")
    if p.frequency <= 0:
        raise UserError(f"prune.frequency must be > 0 steps, got {p.frequency}")
    for key in ("heads_fraction", "ffn_fraction"):
        if not 0 <= getattr(p, key) < 1:
            raise UserError(f"prune.{key} must be in [0, 1), got {getattr(p, key)}")
    if p.recovery_steps < 0:
        raise UserError(f"prune.recovery_steps must be >= 0, got {p.recovery_steps}")
    if p.begin_step < 0:
        raise UserError(f"prune.begin_step must be >= 0, got {p.begin_step}")
    if p.end_step is not None and p.end_step <= p.begin_step:
        raise UserError(f"prune.end_step ({p.end_step}) must be > prune.begin_step ({p.begin_step})")
    if total_steps is not None and p.end_step is not None and p.end_step > total_steps:
        raise UserError(f"prune.end_step ({p.end_step}) is beyond the run's {total_steps} steps; "
                        f"set prune.end_step <= {total_steps} or null")


def polynomial_sparsity(step: int, initial: float, final: float, begin: int, end: int, power: int = 3) -> float:
    """s(t) = s_f + (s_i - s_f) * (1 - (t - t_begin) / (t_end - t_begin)) ** power, clamped to [begin, end]."""
    t = min(max(step, begin), end)
    return final + (initial - final) * (1 - (t - begin) / (end - begin)) ** power


def target_modules(model: nn.Module, scope: str) -> dict[str, nn.Linear]:
    """The Linear layers a scope covers, by qualified name."""
    linears = {n: m for n, m in model.named_modules() if isinstance(m, nn.Linear)}
    if scope == "classifier":
        return {n: m for n, m in linears.items() if n.split(".")[0] == "classifier"}
    if scope == "encoder":
        return {n: m for n, m in linears.items() if ".encoder.layer." in f".{n}"}
    return linears


def magnitude_masks(weights: dict[str, torch.Tensor], sparsity: float, ranking: str) -> dict[str, torch.Tensor]:
    """Masks zeroing exactly round(sparsity * n) smallest-magnitude entries, per tensor or over all of them."""
    groups = [[name] for name in weights] if ranking == "layer" else [list(weights)]
    masks = {}
    for names in groups:
        scores = torch.cat([weights[n].detach().abs().flatten() for n in names])
        k = round(sparsity * scores.numel())
        keep = torch.ones_like(scores, dtype=torch.bool)
        if k:
            keep[torch.argsort(scores, stable=True)[:k]] = False
        for n, chunk in zip(names, keep.split([weights[n].numel() for n in names])):
            masks[n] = chunk.view_as(weights[n]).to(weights[n].dtype)
    return masks


def sparsity_report(model: nn.Module, scope: str) -> dict:
    """Per-layer and overall fraction of zero weights in the scope's layers."""
    layers = {n: float((m.weight == 0).float().mean()) for n, m in target_modules(model, scope).items()}
    sizes = {n: m.weight.numel() for n, m in target_modules(model, scope).items()}
    overall = sum(layers[n] * sizes[n] for n in layers) / max(sum(sizes.values()), 1)
    return {"overall": overall, "layers": layers}


class GradualPruner:
    """Holds the schedule; finetune calls attach() before training, after_step() each step, finish() at the end."""

    def __init__(self, p: Prune, total_steps: int):
        self.p = p
        self.end = p.end_step if p.end_step is not None else max(p.begin_step + 1, (2 * total_steps) // 3)
        self.modules: dict[str, nn.Linear] = {}

    def attach(self, model: nn.Module) -> None:
        self.modules = target_modules(model, self.p.scope)
        for m in self.modules.values():
            tprune.identity(m, "weight")

    def sparsity_at(self, step: int) -> float:
        p = self.p
        return polynomial_sparsity(step, p.initial_sparsity, p.final_sparsity, p.begin_step, self.end, p.power)

    @torch.no_grad()
    def after_step(self, model: nn.Module, step: int) -> None:
        p = self.p
        due = p.begin_step <= step <= self.end and ((step - p.begin_step) % p.frequency == 0 or step == self.end)
        if due:
            weights = {n: m.weight_orig * m.weight_mask for n, m in self.modules.items()}
            for n, mask in magnitude_masks(weights, self.sparsity_at(step), p.ranking).items():
                self.modules[n].weight_mask.copy_(mask)
        for m in self.modules.values():  # keep pruned weights at zero under AdamW's momentum and decay
            m.weight_orig.mul_(m.weight_mask)

    def finish(self, model: nn.Module) -> None:
        for m in self.modules.values():
            tprune.remove(m, "weight")

    def report(self, model: nn.Module) -> dict:
        return sparsity_report(model, self.p.scope)


def make_pruner(p: Prune, total_steps: int) -> GradualPruner | None:
    validate(p, total_steps)
    return GradualPruner(p, total_steps) if p.method == "gradual" else None


def recover(model: nn.Module, train_path: str, steps: int, f: Finetune, after_step=None) -> float:
    """A short fine-tune with the seed's optimizer and schedule (after pruning, or QAT); the mean loss.

    finetune() trains a model it loads itself from a name; this trains one already in memory, reusing its
    optimizer and shuffling. after_step(step) runs after every optimizer step (to keep pruned weights zero).
    """
    from transformers import get_linear_schedule_with_warmup

    from .finetune import epoch_batches, make_optimizer, seed_everything

    train = Encoded.load(train_path)
    seed_everything(f.seed)
    optimizer = make_optimizer(model, f.lr, f.weight_decay)
    scheduler = get_linear_schedule_with_warmup(optimizer, math.ceil(f.warmup_ratio * steps), steps)
    batches = (b for epoch in itertools.count()
               for b in epoch_batches(len(train), f.batch_size, f.seed, epoch, train.lengths, f.group_by_length))
    model.train()
    loss_sum = 0.0
    for step, idx in zip(range(1, steps + 1), batches):
        batch = train.batch(idx, f.pad_to_multiple)
        labels = batch.pop("labels")
        loss = F.cross_entropy(model(**batch).logits.float(), labels)
        loss.backward()
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        if after_step:
            after_step(step)
        loss_sum += loss.item()
    model.eval()
    return loss_sum / max(steps, 1)


def _needs_training_data(p: Prune, train_path: str | None) -> None:
    if p.recovery_steps and not train_path:
        raise UserError(f"prune.recovery_steps={p.recovery_steps} needs training data; "
                        "pass train_path or set prune.recovery_steps=0")


def oneshot(model_dir: str, out_dir: str, params: Params, task: str, train_path: str | None = None) -> dict:
    """Magnitude-prune a fine-tuned model to final_sparsity at once, optionally recover; save it to out_dir."""
    from . import quantize

    p = params.prune
    validate(p)
    _needs_training_data(p, train_path)
    if "structure" in (quantize.read_variant(model_dir) or {}):
        raise UserError(f"{model_dir} is structured-pruned; one-shot pruning takes a fine-tuned folder")
    model = quantize.load_float(model_dir, get_task(task).num_labels)
    # the gradual pruner with a schedule that is at final_sparsity from its first (and only) mask update
    pruner = GradualPruner(dataclasses.replace(p, initial_sparsity=p.final_sparsity, begin_step=0, end_step=1), 1)
    pruner.attach(model)
    pruner.after_step(model, 1)
    loss = None
    if p.recovery_steps:  # steps past the schedule's end only re-apply the masks
        loss = recover(model, train_path, p.recovery_steps, params.finetune, lambda s: pruner.after_step(model, 1 + s))
    pruner.finish(model)
    result = {"task": task, "method": "oneshot", "base": str(model_dir), "recovery_steps": p.recovery_steps,
              "recovery_loss": loss, "sparsity": pruner.report(model), **sizes.measure(model)}
    variant = {"mode": "oneshot", "base": str(model_dir), "weights": "model.safetensors"}
    quantize.save_variant(out_dir, model_dir, variant, result, lambda tmp: model.save_pretrained(tmp))
    return result


def _scores(model: nn.Module, train_path: str | None, f: Finetune) -> tuple[dict[int, torch.Tensor], str]:
    """Per-weight scores by parameter id: |w|, or |w * dL/dw| summed over the first 8 training batches."""
    if train_path is None:
        return {id(w): w.detach().abs() for w in model.parameters()}, "magnitude"
    from .finetune import epoch_batches

    data = Encoded.load(train_path)
    model.eval()  # no dropout: the gradient of the model that will be pruned
    model.zero_grad(set_to_none=True)
    for idx in epoch_batches(len(data), f.batch_size, f.seed, 0)[:8]:
        batch = data.batch(idx)
        labels = batch.pop("labels")
        F.cross_entropy(model(**batch).logits.float(), labels).backward()
    scores = {id(w): (w.detach() * w.grad).abs() for w in model.parameters() if w.grad is not None}
    model.zero_grad(set_to_none=True)
    return scores, "importance"


def _keep(layer: nn.Module, heads: torch.Tensor, neurons: torch.Tensor) -> None:
    """Physically keep only these attention heads and FFN neurons of one BertLayer."""
    att = layer.attention.self
    d = att.attention_head_size
    rows = (heads[:, None] * d + torch.arange(d)).flatten()
    for name in ("query", "key", "value"):
        setattr(att, name, prune_linear_layer(getattr(att, name), rows, dim=0))
    layer.attention.output.dense = prune_linear_layer(layer.attention.output.dense, rows, dim=1)
    att.num_attention_heads, att.all_head_size = len(heads), len(rows)
    layer.intermediate.dense = prune_linear_layer(layer.intermediate.dense, neurons, dim=0)
    layer.output.dense = prune_linear_layer(layer.output.dense, neurons, dim=1)


def apply_structure(model: nn.Module, structure: dict) -> None:
    """Shrink a freshly built model to the recorded shapes, so a structured-pruned state_dict loads into it."""
    for layer, heads, ffn in zip(model.base_model.encoder.layer, structure["heads"], structure["intermediate"]):
        _keep(layer, torch.arange(heads), torch.arange(ffn))


def _top(scores: torch.Tensor, fraction: float) -> torch.Tensor:
    """Indices (ascending) of the highest-scoring groups, dropping round(fraction * n), keeping at least one."""
    keep = max(1, len(scores) - round(fraction * len(scores)))
    return torch.sort(torch.topk(scores, keep).indices).values


def structured(model_dir: str, out_dir: str, params: Params, task: str, train_path: str | None = None) -> dict:
    """Remove heads_fraction of the heads and ffn_fraction of the FFN neurons of every layer; save to out_dir."""
    from . import quantize

    p = params.prune
    validate(p)
    _needs_training_data(p, train_path)
    model = quantize.load_float(model_dir, get_task(task).num_labels)
    before = sizes.parameter_counts(model)[0]
    scores, criterion = _scores(model, train_path, params.finetune)
    s = lambda linear: scores[id(linear.weight)]  # noqa: E731
    for layer in model.base_model.encoder.layer:
        att, d = layer.attention.self, layer.attention.self.attention_head_size
        head = sum(s(getattr(att, n)).view(-1, d * att.query.in_features).sum(1) for n in ("query", "key", "value"))
        head += s(layer.attention.output.dense).view(-1, len(head), d).sum((0, 2))
        neuron = s(layer.intermediate.dense).sum(1) + s(layer.output.dense).sum(0)
        _keep(layer, _top(head, p.heads_fraction), _top(neuron, p.ffn_fraction))
    loss = recover(model, train_path, p.recovery_steps, params.finetune) if p.recovery_steps else None
    layers = model.base_model.encoder.layer
    structure = {"heads": [l.attention.self.num_attention_heads for l in layers],
                 "intermediate": [l.intermediate.dense.out_features for l in layers]}
    result = {"task": task, "method": "structured", "base": str(model_dir), "criterion": criterion,
              "structure": structure, "parameters_before": before, "recovery_steps": p.recovery_steps,
              "recovery_loss": loss, **sizes.measure(model)}
    # not model.safetensors: transformers would load these shrunken tensors into full-size layers
    variant = {"mode": "structured", "base": str(model_dir), "weights": "weights.safetensors", "structure": structure}
    quantize.save_variant(out_dir, model_dir, variant, result,
                          lambda tmp: quantize.save_weights(model, tmp / "weights.safetensors"))
    return result
