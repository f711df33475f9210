"""Structured shapes for a latency target, measured before any training.

    bertcompress shapes --target-speedup 3          # time the candidate cuts here, pick the smallest that is 3x

How fast a structured cut runs depends on its shape (heads and FFN neurons kept per layer), not on its weights.
So each candidate of `GRID` is built from the model's config with random weights, cut to its shape
(masks.keep, as prune.structured cuts), converted to OpenVINO and quantized to int8 by NNCF on a few synthetic
batches — the runtime `export --format auto` ships on x86 CPUs — and timed at batch 8, length 128, beside the
dense model the same way. The pick is the smallest cut (the most parameters kept) whose batch-8 speed-up reaches
the target; the flow trains only that shape (`experiment.target_speedup`). Seconds per candidate, no training.
"""

from __future__ import annotations

import contextlib
import io as _io
import statistics
import time
from collections.abc import Callable

import torch

from . import latency, masks, sizes
from .params import UserError

# (heads_fraction, ffn_fraction) removed per layer: the structured cuts the picker considers
GRID = tuple((h, f) for h in (0.0, 0.25, 0.5, 0.67, 0.83) for f in (0.0, 0.25, 0.5, 0.625, 0.75, 0.875))
BATCH, CALIBRATION = 8, 8  # timed at batch 8 (the report's b8), NNCF calibrated on 8 synthetic batches


def shaped(name: str, heads_fraction: float, ffn_fraction: float) -> torch.nn.Module:
    """The model's architecture (random weights) with heads_fraction of every layer's heads and ffn_fraction of
    its FFN neurons removed, as prune.structured removes them (round, at least one kept)."""
    from transformers import AutoConfig, AutoModelForSequenceClassification

    from .model import resolve

    config = AutoConfig.from_pretrained(resolve(name), num_labels=2)
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_config(config).eval()
    for layer in model.base_model.encoder.layer:
        heads, ffn = layer.attention.self.num_attention_heads, layer.intermediate.dense.out_features
        keep = lambda n, fraction: torch.arange(max(1, n - round(fraction * n)))  # noqa: E731
        masks.keep(layer, keep(heads, heads_fraction), keep(ffn, ffn_fraction))
    return model


def openvino_int8(model: torch.nn.Module, threads: int):
    """The model as export ships it on this CPU, compiled: OpenVINO, int8 by NNCF (calibrated on synthetic
    full-length batches: the speed, not the accuracy, is what is asked of it here)."""
    import nncf
    import openvino as ov

    from .export import INPUTS, _Logits

    example = latency.inputs(BATCH, latency.LENGTH)
    converted = ov.convert_model(_Logits(model), example_input={k: example[k] for k in INPUTS})
    items = [
        {k: v.numpy() for k, v in latency.inputs(BATCH, latency.LENGTH, seed).items()} for seed in range(CALIBRATION)
    ]
    with contextlib.redirect_stdout(_io.StringIO()), contextlib.redirect_stderr(_io.StringIO()):
        quantized = nncf.quantize(
            converted, nncf.Dataset(items), model_type=nncf.ModelType.TRANSFORMER, subset_size=len(items)
        )
    return ov.Core().compile_model(quantized, "CPU", {"INFERENCE_NUM_THREADS": threads})


def timed_ms(run: Callable[[dict], object], inputs: dict, runs: int = 10, warmup: int = 3) -> float:
    """Median milliseconds of run(inputs) over runs passes, after warmup."""
    for _ in range(warmup):
        run(inputs)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        run(inputs)
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def openvino_int8_ms(model: torch.nn.Module, threads: int, runs: int = 10) -> float:
    """Median batch-8 milliseconds of the model as export ships it on this CPU: OpenVINO, int8 by NNCF."""
    compiled = openvino_int8(model, threads)
    return timed_ms(compiled, {k: v.numpy() for k, v in latency.inputs(BATCH, latency.LENGTH).items()}, runs)


def pick(target: float, measure: Callable[[float, float], tuple[float, int]], grid=GRID) -> dict:
    """Time every candidate (measure(heads_fraction, ffn_fraction) -> (batch-8 ms, parameters); (0, 0) is the
    dense model) and pick the smallest cut — the most parameters kept — whose speed-up over dense reaches target.
    {'target', 'dense_ms', 'candidates': [{heads_fraction, ffn_fraction, ms, parameters, speedup}], 'chosen'}.
    UserError when no candidate reaches it, naming the fastest."""
    dense_ms, dense_params = measure(0.0, 0.0)
    rows = []
    for heads, ffn in grid:
        ms, params = (dense_ms, dense_params) if (heads, ffn) == (0.0, 0.0) else measure(heads, ffn)
        rows.append(
            {"heads_fraction": heads, "ffn_fraction": ffn, "ms": ms, "parameters": params, "speedup": dense_ms / ms}
        )
    meeting = [r for r in rows if r["speedup"] >= target]
    if not meeting:
        best = max(rows, key=lambda r: r["speedup"])
        raise UserError(
            f"experiment.target_speedup={target:g} is out of reach: the fastest cut timed here, heads "
            f"{best['heads_fraction']:g} / FFN {best['ffn_fraction']:g}, is {best['speedup']:.2f}x dense at batch 8; "
            "set a lower target"
        )
    chosen = max(meeting, key=lambda r: (r["parameters"], -r["heads_fraction"]))
    return {"target": target, "dense_ms": dense_ms, "candidates": rows, "chosen": chosen}


def measured(name: str, threads: int) -> Callable[[float, float], tuple[float, int]]:
    """The real measure for `pick`: (OpenVINO int8 batch-8 ms, parameters) of the model cut to a shape."""

    def measure(heads: float, ffn: float) -> tuple[float, int]:
        model = shaped(name, heads, ffn)
        return openvino_int8_ms(model, threads), sizes.parameter_counts(model)[0]

    return measure


def table(result: dict) -> str:
    """The timed candidates as markdown, the chosen one marked."""
    lines = ["| heads removed | FFN removed | parameters | b8 ms | speed-up | |", "|---|---|---|---|---|---|"]
    for r in result["candidates"]:
        mark = "chosen" if r is result["chosen"] or r == result["chosen"] else ""
        lines.append(
            f"| {r['heads_fraction']:g} | {r['ffn_fraction']:g} | {r['parameters'] / 1e6:.1f} M | {r['ms']:.1f} | "
            f"{r['speedup']:.2f}x | {mark} |"
        )
    return "\n".join(lines)


def choose(p, folder: str = "results/shapes") -> dict:
    """`pick` for p's model and experiment.target_speedup on this CPU, timed once: the result is kept in
    folder/<model>-x<target>.json with the CPU, threads and grid it was measured with, and reused while they
    match (timing is noisy: a shape picked once stays picked, and the runs keyed on it stay cached)."""
    from pathlib import Path

    from . import io

    e, threads = p.experiment, p.evaluate.latency_threads
    where = {"model": p.model.name, "target": e.target_speedup, "threads": threads, "grid": [list(g) for g in GRID]}
    where["cpu"] = latency.machine()["cpu"]
    path = Path(folder) / f"{p.model.name.replace('/', '--')}-x{e.target_speedup:g}.json"
    kept = io.read_json(path) if path.is_file() else {}
    if {k: v for k, v in kept.items() if k in where} == where:
        return kept | {"path": str(path)}
    print(f"timing {len(GRID)} structured shapes of {p.model.name} for {e.target_speedup:g}x (OpenVINO int8, batch 8)")
    result = where | pick(e.target_speedup, measured(p.model.name, threads))
    io.write_json(path, result)
    return result | {"path": str(path)}


def apply(p, result: dict):
    """p with every structured variant cut to the chosen shape (its recovery, teacher and stages unchanged)."""
    import dataclasses

    c, variants = result["chosen"], {}
    for name, v in p.variants.items():
        prune = v.overrides.get("prune", {})
        if prune.get("method") == "structured":
            prune = prune | {"heads_fraction": c["heads_fraction"], "ffn_fraction": c["ffn_fraction"]}
            v = dataclasses.replace(v, overrides=v.overrides | {"prune": prune})
        variants[name] = v
    return dataclasses.replace(p, variants=variants)
