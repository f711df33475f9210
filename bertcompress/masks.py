"""Sparsity: which layers a scope covers, magnitude masks, the polynomial schedule, and structural shrinking.

Masks live in torch.nn.utils.prune's parametrization (weight = weight_orig * weight_mask). Every `frequency`
steps between begin_step and end_step the mask is recomputed from |weight| to the scheduled sparsity, per layer
or over all pruned layers at once (global); after every optimizer step pruned weights are zeroed again. At the
end torch.nn.utils.prune.remove makes the zeros permanent: no mask buffers or _orig copies are saved.
Structured pruning keeps whole attention heads and FFN neurons (transformers' prune_linear_layer), so a
model is physically smaller; `apply_structure` re-applies recorded shapes to a freshly built model.
"""
from __future__ import annotations

import torch
import torch.nn.utils.prune as tprune
from torch import nn
from transformers.pytorch_utils import prune_linear_layer

from .params import Prune, UserError
from .sizes import SCOPES


def polynomial_sparsity(step: int, initial: float, final: float, begin: int, end: int, power: int = 3) -> float:
    """s(t) = s_f + (s_i - s_f) * (1 - (t - t_begin) / (t_end - t_begin)) ** power, clamped to [begin, end]."""
    t = min(max(step, begin), end)
    return final + (initial - final) * (1 - (t - begin) / (end - begin)) ** power


def target_modules(model: nn.Module, scope: str) -> dict[str, nn.Linear]:
    """The Linear layers a scope covers, by qualified name."""
    return {n: m for n, m in model.named_modules() if isinstance(m, nn.Linear) and SCOPES[scope](n)}


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
    modules = target_modules(model, scope)
    layers = {n: float((m.weight == 0).float().mean()) for n, m in modules.items()}
    sizes = {n: m.weight.numel() for n, m in modules.items()}
    overall = sum(layers[n] * sizes[n] for n in layers) / max(sum(sizes.values()), 1)
    return {"overall": overall, "layers": layers}


class GradualPruner:
    """Holds the schedule; the training loop calls after_step() each step; attach() before, finish() after."""

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
    def after_step(self, step: int) -> None:
        p = self.p
        due = p.begin_step <= step <= self.end and ((step - p.begin_step) % p.frequency == 0 or step == self.end)
        if due:
            weights = {n: m.weight_orig * m.weight_mask for n, m in self.modules.items()}
            for n, mask in magnitude_masks(weights, self.sparsity_at(step), p.ranking).items():
                self.modules[n].weight_mask.copy_(mask)
        for m in self.modules.values():  # keep pruned weights at zero under AdamW's momentum and decay
            m.weight_orig.mul_(m.weight_mask)

    def finish(self, model: nn.Module) -> dict:
        """Make the zeros permanent; the sparsity reached."""
        for m in self.modules.values():
            tprune.remove(m, "weight")
        return sparsity_report(model, self.p.scope)


def gradual(p: Prune, total_steps: int) -> GradualPruner | None:
    """The pruner of a fine-tune under prune.method=gradual (None otherwise); its schedule fits the run."""
    if p.method != "gradual":
        return None
    if p.begin_step >= total_steps:
        raise UserError(f"prune.begin_step ({p.begin_step}) is at or beyond the run's {total_steps} steps, so the "
                        f"schedule would never prune; set prune.begin_step < {total_steps}")
    if p.end_step is not None and p.end_step > total_steps:
        raise UserError(f"prune.end_step ({p.end_step}) is beyond the run's {total_steps} steps; "
                        f"set prune.end_step <= {total_steps} or null")
    return GradualPruner(p, total_steps)


def keep(layer: nn.Module, heads: torch.Tensor, neurons: torch.Tensor) -> None:
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


def structure(model: nn.Module) -> dict:
    layers = model.base_model.encoder.layer
    return {"heads": [l.attention.self.num_attention_heads for l in layers],
            "intermediate": [l.intermediate.dense.out_features for l in layers]}


def apply_structure(model: nn.Module, shapes: dict) -> None:
    """Shrink a freshly built model to the recorded shapes, so a structured-pruned state_dict loads into it."""
    for layer, heads, ffn in zip(model.base_model.encoder.layer, shapes["heads"], shapes["intermediate"]):
        keep(layer, torch.arange(heads), torch.arange(ffn))
