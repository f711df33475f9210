"""CPU latency of a classifier: median milliseconds per forward pass at fixed batch sizes and length.

    python -m bench.compression        # one table, every variant, batch 1 and 8 at length 128

Inputs are synthetic token ids at full length (no padding), so every variant sees the same work; a few warm-up
passes first (allocator, packed-weight caches, compiled kernels), then the median of `runs` timed passes. The
thread count is set and reported, since it decides the numbers as much as the model does.
"""

from __future__ import annotations

import statistics
import time

import torch


def inputs(batch_size: int, length: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """A sentence-pair-shaped batch, in the key order Encoded.batch uses (exported programs need it)."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1000, 28000, (batch_size, length), generator=g)
    types = torch.zeros_like(ids)
    types[:, length // 2 :] = 1
    return {"input_ids": ids, "token_type_ids": types, "attention_mask": torch.ones_like(ids)}


LENGTH = 128  # synthetic full-length inputs: the seed recipe's max length


@torch.inference_mode()
def measure(
    model, batch_sizes=(1, 8), length: int = LENGTH, warmup: int = 3, runs: int = 20, threads: int | None = None
) -> dict:
    """{'batch1_ms': ..., 'batch8_ms': ..., 'threads': n, 'length': 128, 'runs': runs}."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads or before)
    if hasattr(model, "set_threads"):  # an ONNX Runtime session: its own intra-op threads
        model.set_threads(torch.get_num_threads())
    model.eval()
    out = {"threads": torch.get_num_threads(), "length": length, "runs": runs}
    try:
        for b in batch_sizes:
            x = inputs(b, length)
            for _ in range(warmup):
                model(**x)
            times = []
            for _ in range(runs):
                t0 = time.perf_counter()
                model(**x)
                times.append(time.perf_counter() - t0)
            out[f"batch{b}_ms"] = statistics.median(times) * 1e3
    finally:
        torch.set_num_threads(before)  # the caller's setting (fine-tuning in the same process) is not ours
    return out


def machine() -> dict:
    """The CPU the figures were measured on: its model name, logical cores and the instruction sets that decide
    int8 and bf16 speed (a format that wins on one CPU may lose on another: measure where it runs)."""
    import os
    import platform

    name, flags = platform.processor() or platform.machine(), set()
    try:
        for line in open("/proc/cpuinfo"):
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                name = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
                break
    except OSError:
        pass
    wanted = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_int8", "amx_bf16")
    return {"cpu": name, "cores": os.cpu_count(), "flags": [f for f in wanted if f in flags]}
