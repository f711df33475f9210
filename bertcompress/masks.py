"""Sparsity: which layers a scope covers, masks from scores in a pattern, the polynomial schedule, shrinking.

Masks live in torch.nn.utils.prune's parametrization (weight = weight_orig * weight_mask). Every `frequency`
steps between begin_step and end_step the mask is recomputed to the scheduled sparsity from the criterion's
scores (|weight|, movement or first-order importance), per layer or over all pruned layers at once (global), in
the pattern (single weights, RxC blocks, N:M groups); after end_step the mask is held. After every optimizer
step pruned weights are zeroed again. At the end torch.nn.utils.prune.remove makes the zeros permanent: no mask
buffers or _orig copies are saved. Structured pruning keeps whole attention heads and FFN neurons
(transformers' prune_linear_layer), so a model is physically smaller; `apply_structure` re-applies recorded
shapes to a freshly built model.
"""

from __future__ import annotations

import torch
import torch.nn.utils.prune as tprune
from torch import nn
from transformers.pytorch_utils import prune_linear_layer

from . import checks
from .params import Prune, UserError
from .sizes import SCOPES


def polynomial_sparsity(step: int, initial: float, final: float, begin: int, end: int, power: int = 3) -> float:
    """s(t) = s_f + (s_i - s_f) * (1 - (t - t_begin) / (t_end - t_begin)) ** power, clamped to [begin, end]."""
    t = min(max(step, begin), end)
    return final + (initial - final) * (1 - (t - begin) / (end - begin)) ** power


def target_modules(model: nn.Module, scope: str) -> dict[str, nn.Linear]:
    """The Linear layers a scope covers, by qualified name."""
    return {n: m for n, m in model.named_modules() if isinstance(m, nn.Linear) and SCOPES[scope](n)}


def _groups(score: torch.Tensor, pat: tuple | None) -> torch.Tensor:
    """A layer's scores per prunable group: each weight (unstructured), each RxC block (summed)."""
    if pat is None:
        return score.flatten()
    _, r, c = pat
    out, inp = score.shape
    return score.view(out // r, r, inp // c, c).sum((1, 3)).flatten()


def _expand(keep: torch.Tensor, shape: torch.Size, pat: tuple | None) -> torch.Tensor:
    """A group mask back to the weight's shape."""
    if pat is None:
        return keep.view(shape)
    _, r, c = pat
    return keep.view(shape[0] // r, shape[1] // c).repeat_interleave(r, 0).repeat_interleave(c, 1)


def top_masks(
    scores: dict[str, torch.Tensor], sparsity: float, ranking: str = "layer", pattern: str = "unstructured"
) -> dict[str, torch.Tensor]:
    """Masks keeping the highest scores: exactly round(sparsity * n) of the n groups (weights, RxC blocks) zeroed
    per tensor (layer) or over all tensors (global); N:M zeroes round(sparsity * M) of every M consecutive weights
    of a row, so at 1 - N/M sparsity each group of M keeps exactly N. Ties go to the lower index."""
    pat = checks.pattern(pattern)
    if pat and pat[0] == "n:m":
        m, out = pat[2], {}
        for name, score in scores.items():
            k, rows = round(sparsity * m), score.reshape(-1, m)
            keep = torch.ones_like(rows, dtype=torch.bool)
            if k:
                keep.scatter_(1, torch.argsort(rows, dim=1, stable=True)[:, :k], False)
            out[name] = keep.view_as(score).to(score.dtype)
        return out
    groups = [[name] for name in scores] if ranking == "layer" else [list(scores)]
    masks = {}
    for names in groups:
        per = [_groups(scores[n].detach(), pat) for n in names]
        flat = torch.cat(per)
        k = round(sparsity * flat.numel())
        keep = torch.ones_like(flat, dtype=torch.bool)
        if k:
            keep[torch.argsort(flat, stable=True)[:k]] = False
        for n, chunk in zip(names, keep.split([g.numel() for g in per])):
            masks[n] = _expand(chunk, scores[n].shape, pat).to(scores[n].dtype)
    return masks


def magnitude_masks(
    weights: dict[str, torch.Tensor], sparsity: float, ranking: str, pattern: str = "unstructured"
) -> dict[str, torch.Tensor]:
    """Masks zeroing exactly round(sparsity * n) smallest-magnitude entries (or groups), per tensor or overall."""
    return top_masks({n: w.detach().abs() for n, w in weights.items()}, sparsity, ranking, pattern)


def check_pattern(modules: dict[str, nn.Linear], pattern: str) -> None:
    """Every layer's weight must split into the pattern's groups."""
    if (pat := checks.pattern(pattern)) is None:
        return
    rows, cols = (1, pat[2]) if pat[0] == "n:m" else pat[1:]
    for name, m in modules.items():
        if m.weight.shape[0] % rows or m.weight.shape[1] % cols:
            raise UserError(
                f"prune.pattern {pattern}: layer {name} ({tuple(m.weight.shape)}) does not split into "
                f"{rows}x{cols} groups; choose a pattern that divides it, or prune.scope encoder"
            )


def sparsity_report(model: nn.Module, scope: str) -> dict:
    """Per-layer and overall fraction of zero weights in the scope's layers."""
    modules = target_modules(model, scope)
    layers = {n: float((m.weight == 0).float().mean()) for n, m in modules.items()}
    sizes = {n: m.weight.numel() for n, m in modules.items()}
    overall = sum(layers[n] * sizes[n] for n in layers) / max(sum(sizes.values()), 1)
    return {"overall": overall, "layers": layers}


class GradualPruner:
    """Holds the schedule and the scores; the training loop calls after_step() each step (the step's gradients
    still in .grad); attach() before, finish() after.

    Criteria: magnitude ranks |w|; movement ranks the accumulated -w * dL/dw (weights moving away from zero are
    kept, Sanh et al. 2020); first_order ranks an EMA (prune.momentum) of |w * dL/dw| (snip-momentum). A pruned
    weight is zero, so its first-order score decays and its movement score stops: the masks only tighten."""

    def __init__(self, p: Prune, total_steps: int):
        self.p = p
        hold = p.hold_steps if p.hold_steps is not None else total_steps - (2 * total_steps) // 3
        self.end = p.end_step if p.end_step is not None else max(p.begin_step + 1, total_steps - hold)
        self.modules: dict[str, nn.Linear] = {}
        self.scores: dict[str, torch.Tensor] = {}

    def attach(self, model: nn.Module) -> None:
        self.modules = target_modules(model, self.p.scope)
        check_pattern(self.modules, self.p.pattern)
        for n, m in self.modules.items():
            tprune.identity(m, "weight")
            if self.p.criterion != "magnitude":
                self.scores[n] = torch.zeros_like(m.weight_orig, dtype=torch.float32)

    def sparsity_at(self, step: int) -> float:
        p = self.p
        return polynomial_sparsity(step, p.initial_sparsity, p.final_sparsity, p.begin_step, self.end, p.power)

    @torch.no_grad()
    def score(self) -> None:
        """Fold this step's gradients into the scores (before the mask is updated)."""
        for n, s in self.scores.items():
            w = self.modules[n].weight_orig
            if w.grad is None:
                continue
            wg = (w * w.grad).float()
            if self.p.criterion == "movement":
                s.sub_(wg)
            else:
                s.mul_(self.p.momentum).add_(wg.abs(), alpha=1 - self.p.momentum)

    @torch.no_grad()
    def after_step(self, step: int) -> None:
        p = self.p
        if step <= self.end:
            self.score()
        due = p.begin_step <= step <= self.end and ((step - p.begin_step) % p.frequency == 0 or step == self.end)
        if due:
            if self.scores:  # the pruned stay pruned: their score is the lowest there is
                scores = {
                    n: torch.where(self.modules[n].weight_mask.bool(), s, -torch.inf) for n, s in self.scores.items()
                }
            else:
                scores = {n: (m.weight_orig * m.weight_mask).abs() for n, m in self.modules.items()}
            for n, mask in top_masks(scores, self.sparsity_at(step), p.ranking, p.pattern).items():
                self.modules[n].weight_mask.copy_(mask)
        for m in self.modules.values():  # keep pruned weights at zero under AdamW's momentum and decay
            m.weight_orig.mul_(m.weight_mask)

    def finish(self, model: nn.Module) -> dict:
        """Make the zeros permanent; the sparsity reached."""
        for m in self.modules.values():
            tprune.remove(m, "weight")
        self.scores = {}
        return sparsity_report(model, self.p.scope)


def gradual(p: Prune, total_steps: int) -> GradualPruner | None:
    """The pruner of a fine-tune under prune.method=gradual (None otherwise); its schedule fits the run."""
    if p.method != "gradual":
        return None
    if p.begin_step >= total_steps:
        raise UserError(
            f"prune.begin_step ({p.begin_step}) is at or beyond the run's {total_steps} steps, so the "
            f"schedule would never prune; set prune.begin_step < {total_steps}"
        )
    if p.end_step is not None and p.end_step > total_steps:
        raise UserError(
            f"prune.end_step ({p.end_step}) is beyond the run's {total_steps} steps; "
            f"set prune.end_step <= {total_steps} or null"
        )
    if p.hold_steps is not None and p.hold_steps >= total_steps - p.begin_step:
        raise UserError(
            f"prune.hold_steps ({p.hold_steps}) leaves no step to prune in the run's {total_steps} steps "
            f"(from prune.begin_step {p.begin_step}); set prune.hold_steps < {total_steps - p.begin_step}"
        )
    return GradualPruner(p, total_steps)


def keep(layer: nn.Module, heads: torch.Tensor, neurons: torch.Tensor) -> None:
    """Physically keep only these attention heads and FFN neurons of one BertLayer."""
    att = layer.attention.self
    d = att.attention_head_size
    rows = (heads[:, None] * d + torch.arange(d, device=heads.device)).flatten()
    for name in ("query", "key", "value"):
        setattr(att, name, prune_linear_layer(getattr(att, name), rows, dim=0))
    layer.attention.output.dense = prune_linear_layer(layer.attention.output.dense, rows, dim=1)
    att.num_attention_heads, att.all_head_size = len(heads), len(rows)
    layer.intermediate.dense = prune_linear_layer(layer.intermediate.dense, neurons, dim=0)
    layer.output.dense = prune_linear_layer(layer.output.dense, neurons, dim=1)


def structure(model: nn.Module) -> dict:
    layers = model.base_model.encoder.layer
    return {
        "heads": [layer.attention.self.num_attention_heads for layer in layers],
        "intermediate": [layer.intermediate.dense.out_features for layer in layers],
    }


def apply_structure(model: nn.Module, shapes: dict) -> None:
    """Shrink a freshly built model to the recorded shapes, so a structured-pruned state_dict loads into it."""
    for layer, heads, ffn in zip(model.base_model.encoder.layer, shapes["heads"], shapes["intermediate"]):
        keep(layer, torch.arange(heads), torch.arange(ffn))
