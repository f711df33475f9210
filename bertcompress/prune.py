"""Magnitude pruning: the gradual schedule applied during fine-tuning (tfmot's PolynomialDecay).

    bertcompress finetune --task mrpc -S prune.method=gradual -S prune.final_sparsity=0.9

Masks live in torch.nn.utils.prune's parametrization (weight = weight_orig * weight_mask). Every `frequency`
steps between begin_step and end_step the mask is recomputed from |weight| to the scheduled sparsity, per layer
or over all pruned layers at once (global); after every optimizer step pruned weights are zeroed again. At the
end torch.nn.utils.prune.remove makes the zeros permanent: no mask buffers or _orig copies are saved.
"""
from __future__ import annotations

import torch
import torch.nn.utils.prune as tprune
from torch import nn

from .params import Prune, UserError

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
