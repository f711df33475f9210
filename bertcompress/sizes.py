"""Model size, measured three ways, plus parameter and non-zero counts, for any variant (dense, pruned, int8, half).

    bertcompress evaluate --task mrpc --model-dir outputs/mrpc/quantize-dynamic   # reports these

(a) state_dict_mb: bytes of torch.save(state_dict), the seed paper's measure; pruned zeros still cost 4 bytes.
(b) compact_mb: each tensor stored at its element size (int8 where quantized, 2 bytes where half), and where
    that is smaller, only its non-zero values plus a one-bit-per-entry mask; scales and zero points included.
(c) compressed_mb: zstd (level 9: level 19 gains 3 % for 40x the time) of the bytes (a) counts.
Sparsity two ways: zeros over all parameters (embeddings, norms and biases included), and zeros over the Linear
weights of each pruning scope (what prune.final_sparsity targets).
"""

from __future__ import annotations

import io

import torch

_QPARAM_NAMES = ("scale", "zero_point")  # quantization parameters: stored, but not model parameters
SCOPES = {
    "classifier": lambda name: name.split(".")[0] == "classifier",  # which Linear layers a scope covers
    "encoder": lambda name: ".encoder.layer." in f".{name}",
    "all_linear": lambda name: True,
}


def _serialized(model: torch.nn.Module) -> bytes:
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    return buf.getvalue()


def state_dict_bytes(model: torch.nn.Module) -> int:
    """Bytes of torch.save(model.state_dict()): the seed paper's model-size measure."""
    return len(_serialized(model))


def tensors(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Every stored tensor as a plain one with its element size and its zeros: what sizes and counts read.

    Dynamically quantized Linear and Embedding keep their weights in packed params that state_dict() shows
    as opaque objects, so those are read through the modules' weight()/bias(). A quantized tensor becomes its
    integers, non-zero exactly where its real value is (an affine row's minimum is integer 0 but not 0.0),
    plus its scales and zero points.
    """
    out: dict[str, torch.Tensor] = {}
    for name, t in model.state_dict().items():
        if "_packed_params" not in name and isinstance(t, torch.Tensor):
            out[name] = t
    for name, m in model.named_modules():
        if hasattr(m, "_packed_params") and callable(getattr(m, "weight", None)):
            out[f"{name}.weight"] = m.weight()
            bias = m.bias() if callable(getattr(m, "bias", None)) else None
            if bias is not None:
                out[f"{name}.bias"] = bias
    for name in [n for n, t in out.items() if t.is_quantized]:
        q = out.pop(name)
        ints, real = q.int_repr(), q.dequantize()
        out[name] = torch.where(real == 0, 0, torch.where(ints == 0, 1, ints)).to(ints.dtype)
        if q.qscheme() in (torch.per_tensor_affine, torch.per_tensor_symmetric):
            out[f"{name}.scale"] = torch.tensor([q.q_scale()], dtype=torch.float64)
            out[f"{name}.zero_point"] = torch.tensor([q.q_zero_point()], dtype=torch.int64)
        else:
            out[f"{name}.scale"], out[f"{name}.zero_point"] = q.q_per_channel_scales(), q.q_per_channel_zero_points()
    return out


def _is_value(name: str, t: torch.Tensor) -> bool:
    """A weight, bias, norm or embedding entry (float or int8), not a qparam or an index buffer."""
    if any(part in name.rsplit(".", 1)[-1] for part in _QPARAM_NAMES):
        return False
    return t.is_floating_point() or t.dtype in (torch.int8, torch.uint8)


def parameter_counts(model: torch.nn.Module) -> tuple[int, int]:
    """(parameters, non-zero parameters): float and int8 weight values; an int8 zero is a pruned zero."""
    total = nonzero = 0
    for name, t in tensors(model).items():
        if _is_value(name, t):
            total += t.numel()
            nonzero += int(torch.count_nonzero(t))
    return total, nonzero


def scope_sparsity(model: torch.nn.Module) -> dict[str, float]:
    """Zeros over the Linear weights of each scope (float or int8; {} for a PT2E program, whose int8 weights
    are unnamed constants)."""
    from torch.ao.nn.quantized import Linear as QuantizedLinear  # dynamic int8 Linear derives from it

    stored = tensors(model)
    weights = {
        n: stored[f"{n}.weight"]
        for n, m in model.named_modules()
        if isinstance(m, (torch.nn.Linear, QuantizedLinear)) and f"{n}.weight" in stored
    }
    out = {}
    for scope, covers in SCOPES.items():
        chosen = [w for n, w in weights.items() if covers(n)]
        if chosen:
            out[scope] = 1 - sum(int(torch.count_nonzero(w)) for w in chosen) / sum(w.numel() for w in chosen)
    return out


def compact_bytes(model: torch.nn.Module) -> int:
    """Bytes to store every tensor dense at its element size, or as non-zero values + bitmask if smaller."""
    total = 0
    for t in tensors(model).values():
        dense = t.numel() * t.element_size()
        sparse = int(torch.count_nonzero(t)) * t.element_size() + (t.numel() + 7) // 8
        total += min(dense, sparse)
    return total


def measure(model: torch.nn.Module) -> dict:
    """The three sizes in MB (10^6 bytes), the two counts (zeros over all parameters = 1 - nonzero / parameters)
    and the zeros over each scope's Linear weights, for one model in memory."""
    blob = _serialized(model)
    params, nonzero = parameter_counts(model)
    return {
        "state_dict_mb": len(blob) / 1e6,
        "compact_mb": compact_bytes(model) / 1e6,
        "compressed_mb": len(_zstd().ZstdCompressor(level=9).compress(blob)) / 1e6,
        "parameters": params,
        "nonzero_parameters": nonzero,
        **{f"zeros_{scope}": v for scope, v in scope_sparsity(model).items()},
    }


def _zstd():
    import zstandard  # imported on use: the core also runs where it is not installed (a bare GPU machine)

    return zstandard
