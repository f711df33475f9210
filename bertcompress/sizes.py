"""Model size, measured honestly: the seed's serialized state_dict bytes, parameter and non-zero counts.

Pruned weights do not shrink a dense file: compact and compressed sizes (issue 3) sit beside these.
"""
from __future__ import annotations

import io

import torch


def state_dict_bytes(model: torch.nn.Module) -> int:
    """Bytes of torch.save(model.state_dict()): the seed paper's model-size measure."""
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    return buf.getbuffer().nbytes


def parameter_counts(model: torch.nn.Module) -> tuple[int, int]:
    """(parameters, non-zero parameters) over the model's floating-point tensors."""
    total = nonzero = 0
    for t in model.state_dict().values():
        if isinstance(t, torch.Tensor) and t.is_floating_point():
            total += t.numel()
            nonzero += int(torch.count_nonzero(t))
    return total, nonzero
