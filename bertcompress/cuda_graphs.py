"""Whole-step CUDA graphs: forward, loss, backward and optimizer step captured once per batch shape, replayed.

A small BERT on a big GPU is bound by Python and kernel launches, not arithmetic: a MiniLM step at batch 32
took ~15 ms eagerly on an H100, almost all of it host overhead (bench/profile_step.py). The first batch of each
(batch, width) shape runs eagerly — a real training step — and the same step is then captured; later batches
of that shape copy their tensors into the graph's static inputs and replay it as one launch. All graphs share
the parameters, the gradient buffers (allocated once, zeroed inside each graph) and the optimizer state, which
needs AdamW(capturable=True) with a tensor learning rate that the scheduler fills in place. The gradients stay
in .grad after a replay (the pruning scores read them). The attention mask goes in as a ready 4-D mask, so
transformers makes no data-dependent check (a host sync, which capture forbids).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn


def mask_4d(attention_mask: torch.Tensor) -> torch.Tensor:
    """(batch, 1, query, key) boolean mask, True where a key may be attended to (sdpa's convention)."""
    b, n = attention_mask.shape
    return attention_mask.bool()[:, None, None, :].expand(b, 1, n, n)


class GraphedTrainStep:
    """step(batch, labels) -> (loss, logits): one optimizer step, replayed from a CUDA graph after the first."""

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, objective: Callable):
        """objective(model, inputs, labels) -> (loss, logits): loop.plain, or distillation with its teacher's
        forward inside the same graph (bertcompress/distill.py)."""
        self.model, self.optimizer, self.objective, self.graphs = model, optimizer, objective, {}
        for p in model.parameters():
            if p.requires_grad and p.grad is None:
                p.grad = torch.zeros_like(p)  # static: every graph accumulates into these

    def _release_autograd(self) -> None:
        """torch.nn.utils.prune keeps the last `weight = weight_orig * mask` (and so its autograd graph) on the
        module; an AccumulateGrad node kept alive from another stream breaks capture. Forward recomputes it."""
        for m in self.model.modules():
            if hasattr(m, "weight_orig"):
                m.weight = m.weight.detach()

    def _step(self, batch: dict, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self._release_autograd()
        self.optimizer.zero_grad(set_to_none=False)
        inputs = {
            "input_ids": batch["input_ids"],
            "token_type_ids": batch["token_type_ids"],
            "attention_mask": mask_4d(batch["attention_mask"]),
            **({"teacher_logits": batch["teacher_logits"]} if "teacher_logits" in batch else {}),  # distill.py's
        }
        loss, logits = self.objective(self.model, inputs, labels)
        loss.backward()
        self.optimizer.step()
        return loss.detach(), logits.detach()

    def __call__(self, batch: dict, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        key = tuple(batch["input_ids"].shape)
        if key in self.graphs:
            static, static_labels, graph, loss, logits = self.graphs[key]
            for k, v in batch.items():
                static[k].copy_(v)
            static_labels.copy_(labels)
            graph.replay()
            return loss, logits
        side = torch.cuda.Stream()  # the eager step doubles as the warm-up capture needs, on a side stream
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            result = self._step(batch, labels)
        torch.cuda.current_stream().wait_stream(side)
        static, static_labels = {k: v.clone() for k, v in batch.items()}, labels.clone()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            loss, logits = self._step(static, static_labels)
        self.graphs[key] = (static, static_labels, graph, loss, logits)
        return result
