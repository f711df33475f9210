"""Export a variant folder as an artifact to ship: the model in a standard format its own runtime loads with no
code of ours, the tokenizer, config.json, manifest.json and a model card (README.md), in a folder laid out as
Optimum's, and the same folder as one tar + zstd archive beside it (bertcompress/archive.py).

    bertcompress export --task mrpc --model-dir outputs/mrpc/finetune-s42 --out artifacts/mrpc --format auto
    bertcompress predict --model artifacts/mrpc.tar.zst "The cat sat." "A cat was sitting."

Formats (each made from a float variant: fine-tuned, gradual or one-shot pruned, structured):
- onnx: the fp32 graph (torch.onnx, dynamo; dynamic batch and length), run by ONNX Runtime;
- onnx_int8: ONNX Runtime's dynamic int8 quantization of it (per channel, embeddings included);
- openvino: OpenVINO IR converted from the torch model (fused attention), int8 by NNCF's post-training
  quantization (transformer preset), calibrated on the train split, never validation;
- pt2e_int8: a static/qat variant's PT2E program as quantize saved it, compiled by Inductor on load (torch);
- auto: every format above that is made from a float variant, each checked on the dev split (validation when
  the run has none) and timed here (batch 1 and 8, length 128, the given threads); ships the fastest (geometric
  mean of the two latencies) within `budget` points of the float model's metric on that split. Every
  candidate's figures go in the manifest and the card.

With the validation split, the artifact is evaluated as it ships (its metric with a bootstrap CI, and latency
when latency_runs > 0), and the figures go in the manifest and the card.
"""

from __future__ import annotations

import contextlib
import io as _io
import logging
import math
import platform
import shutil
import warnings
from pathlib import Path

import torch
from torch import nn
from transformers import AutoConfig

from . import archive, io, variant
from .artifact import CARD, MANIFEST, artifact_model
from .compiled import PROGRAM
from .glue import get_task
from .latency import machine
from .model import load_tokenizer
from .onnx_model import INPUTS, MODEL, OPENVINO
from .params import QUANTIZE_MODES, UserError

FORMATS = ("onnx_int8", "onnx", "openvino", "pt2e_int8", "auto")
CANDIDATES = ("onnx", "onnx_int8", "openvino")  # what auto tries: every format made from a float variant
PT2E = ("static", "qat")  # the quantize modes whose folder holds a PT2E int8 program
CALIBRATION = 300  # train examples NNCF calibrates on (Optimum-Intel's default subset size)
ONNX_INLINE = 2**31 - 2**27  # past this many bytes of weights ONNX's protobuf limit (2 GB) needs external data


class _Logits(nn.Module):
    """The classifier with positional inputs and one output: what the ONNX graph holds."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids, token_type_ids, attention_mask):
        return self.model(input_ids=input_ids, token_type_ids=token_type_ids, attention_mask=attention_mask).logits


@contextlib.contextmanager
def _quiet():
    """The exporters' and quantizers' advice (torchvision ops, axis names, pre-processing): not for users."""
    names = ("", "torch.onnx", "torch.onnx._internal.exporter._registration", "nncf", "transformers")
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        try:
            yield
        finally:
            for lg, level in zip(loggers, levels):
                lg.setLevel(level)


def _onnx(model: nn.Module, tokenizer, path: Path, max_length: int) -> None:
    """The fp32 ONNX graph, weights inside (external data only past ONNX's 2 GB limit)."""
    import onnx

    example = tokenizer(["a first example sentence", "two"], ["and its pair", "b"], padding=True, return_tensors="pt")
    args = tuple(example[k] for k in INPUTS)
    batch, length = torch.export.Dim("batch", min=1, max=4096), torch.export.Dim("length", min=2, max=max_length)
    program = torch.onnx.export(
        _Logits(model.eval()),
        args,
        input_names=list(INPUTS),
        output_names=["logits"],
        dynamo=True,
        verbose=False,
        dynamic_shapes={k: {0: batch, 1: length} for k in INPUTS},
    )
    graph = program.model_proto
    graph.graph.ClearField("value_info")  # the exporter's intermediate shapes trip ORT's quantizer's inference
    big = sum(p.numel() * p.element_size() for p in model.parameters()) > ONNX_INLINE
    onnx.save(graph, str(path), save_as_external_data=big, location=f"{path.name}_data")


def _onnx_int8(fp32: Path, out: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(fp32), str(out), weight_type=QuantType.QInt8, per_channel=True)


def _openvino(model: nn.Module, tokenizer, out: Path, train: str, max_length: int) -> dict:
    """The model converted by OpenVINO from torch (as Optimum-Intel converts it: attention becomes OpenVINO's fused
    ScaledDotProductAttention, which the ONNX graph's MatMul + Softmax do not), then NNCF's post-training int8
    quantization, calibrated on `CALIBRATION` train examples (shuffled with a fixed seed, each at its own length)."""
    import nncf
    import numpy as np
    import openvino as ov

    from .tokenize import Encoded

    data = Encoded.load(train)
    picked = np.random.default_rng(0).permutation(len(data.labels))[:CALIBRATION]
    items = []
    for i in picked:
        lo, hi = data.offsets[i], data.offsets[i + 1]
        ids = data.input_ids[lo:hi].astype(np.int64)[None, :max_length]
        items.append(
            {
                "input_ids": ids,
                "token_type_ids": data.token_type_ids[lo:hi].astype(np.int64)[None, :max_length],
                "attention_mask": np.ones_like(ids),
            }
        )
    example = tokenizer(["a first example sentence", "two"], ["and its pair", "b"], padding=True, return_tensors="pt")
    converted = ov.convert_model(_Logits(model.eval()), example_input={k: example[k] for k in INPUTS})
    converted.outputs[0].get_tensor().set_names({"logits"})  # the name Optimum-Intel's from_pretrained reads
    with contextlib.redirect_stdout(_io.StringIO()):  # NNCF's progress bars (rich): not for a pipeline's log
        quantized = nncf.quantize(
            converted, nncf.Dataset(items), model_type=nncf.ModelType.TRANSFORMER, subset_size=len(items)
        )
    ov.save_model(quantized, str(out / OPENVINO))
    return {"calibration": f"{len(items)} train examples", "nncf": nncf.__version__, "openvino": ov.__version__}


def check(model_dir: str, fmt: str, train: str | None) -> dict:
    """The variant's record, once the format fits it (one line naming the fix, before any work)."""
    if fmt not in FORMATS:
        raise UserError(f"export format '{fmt}' is unknown; choose one of: {', '.join(FORMATS)}")
    info = variant.read(model_dir) or {}
    if fmt == "pt2e_int8" and info.get("mode") not in PT2E:
        raise UserError(
            f"--format pt2e_int8 takes a PT2E int8 variant and {model_dir} is "
            f"{info.get('mode', 'a fine-tuned model')}; quantize it first (bertcompress quantize "
            "-S quantize.mode=static), then export that folder"
        )
    if fmt != "pt2e_int8" and info.get("mode") in QUANTIZE_MODES:
        raise UserError(
            f"{model_dir} is already quantized ({info['mode']}); export its float source "
            f"({info.get('base', 'the fine-tuned folder')}): export makes the int8 model itself"
            + (", or pass --format pt2e_int8" if info["mode"] in PT2E else "")
        )
    if fmt in ("openvino", "auto") and not train:
        raise UserError(f"--format {fmt} calibrates NNCF's int8 on the train split; give it (train=...)")
    return info


def export(
    model_dir: str,
    out_dir: str,
    task: str,
    fmt: str = "onnx_int8",
    max_length: int = 128,
    train: str | None = None,
    validation: str | None = None,
    threads: int | None = None,
    latency_runs: int = 0,
    budget: float = 1.0,
    choose: str | None = None,
    onnx_fp32: str | None = None,
) -> dict:
    """Write the artifact of the variant in model_dir to out_dir (atomically) and its archive beside it; its
    manifest. train: the tokenized train split (NNCF's calibration); validation: the tokenized validation split
    (the artifact evaluated as it ships; auto needs it); choose: the tokenized dev split auto chooses on (None:
    it chooses on validation); onnx_fp32: an fp32 ONNX graph of this model that onnx_int8 quantizes (auto's)."""
    info = check(model_dir, fmt, train)
    if fmt == "auto":
        runs = latency_runs or 10
        return _auto(model_dir, out_dir, task, max_length, train, validation, threads, runs, budget, choose)
    spec = get_task(task)
    tokenizer = load_tokenizer(model_dir)
    config = AutoConfig.from_pretrained(model_dir)
    with io.atomic_dir(out_dir) as tmp, _quiet():
        storage: dict = {}
        if fmt == "pt2e_int8":  # the calibrated program as quantize saved it; Inductor compiles it on load
            shutil.copy2(Path(model_dir) / info["weights"], tmp / PROGRAM)
            storage = {"program": PROGRAM, "compile": "torch.compile(freezing=True), shapes bucketed"}
        else:
            model = variant.load_float(model_dir, spec.num_labels)
            if fmt == "openvino":
                storage = _openvino(model, tokenizer, tmp, train, max_length)
            elif fmt == "onnx_int8" and onnx_fp32:  # auto made the fp32 graph already: quantized, not exported again
                _onnx_int8(Path(onnx_fp32), tmp / MODEL)
                storage = {"quantization": "onnxruntime quantize_dynamic, int8 per channel"}
            else:
                with io.scratch_dir(tmp.with_name(f"{tmp.name}-fp32")) as work:
                    fp32 = work / MODEL
                    _onnx(model, tokenizer, fp32, min(max_length, config.max_position_embeddings))
                    if fmt == "onnx":
                        for f in work.iterdir():
                            shutil.move(f, tmp / f.name)
                    else:
                        _onnx_int8(fp32, tmp / MODEL)
                        storage = {"quantization": "onnxruntime quantize_dynamic, int8 per channel"}
        tokenizer.save_pretrained(tmp)
        config.save_pretrained(tmp)  # the architecture and labels: Optimum's from_pretrained reads it
        source = Path(model_dir)
        metrics = io.read_json(source / "metrics.json") if (source / "metrics.json").is_file() else {}
        manifest = {
            "task": task,
            "format": fmt,
            "labels": list(spec.names) or None,
            "regression": spec.regression,
            "text_columns": list(spec.keys),
            "max_length": max_length,
            "source": str(source.resolve()),
            "source_variant": info or {"mode": "finetune"},
            "source_params": io.read_json(source / "params.json") if (source / "params.json").is_file() else None,
            "source_metrics": {k: v for k, v in metrics.items() if k.startswith("val_")},
            "storage": storage,
            "built_with": _versions(fmt),
        }
        if validation:
            manifest["validation"] = figures(tmp, fmt, task, max_length, validation, threads, latency_runs)
        _finish(tmp, manifest)
        shipped = archive.pack(tmp, archive.path_of(out_dir))  # before the folder: it appears last, whole
    return manifest | {"archive": str(shipped), "archive_mb": shipped.stat().st_size / 1e6}


def _versions(fmt: str) -> dict:
    from importlib.metadata import version

    runtime = {"onnx": ["onnx", "onnxruntime"], "onnx_int8": ["onnx", "onnxruntime"], "openvino": ["openvino", "nncf"]}
    names = ["torch", "transformers", *runtime.get(fmt, ["torchao"])]
    return {"python": platform.python_version(), **{n: version(n) for n in names}}


def _finish(tmp: Path, manifest: dict) -> None:
    """The manifest (with the files' hashes) and the model card, into the artifact folder."""
    from . import card

    manifest["files"] = {
        f.relative_to(tmp).as_posix(): io.content_hash(f)
        for f in sorted(tmp.rglob("*"))
        if f.is_file() and f.name not in (MANIFEST, CARD)
    }
    io.write_json(tmp / MANIFEST, manifest)
    (tmp / CARD).write_text(card.text(manifest))


def figures(
    folder: Path,
    fmt: str,
    task: str,
    max_length: int,
    validation: str,
    threads: int | None,
    runs: int,
    split: str = "validation",
) -> dict:
    """The artifact as it ships, on the validation split (or the named one): every metric, the headline's
    bootstrap CI over examples; with runs, latency at batch 1 and 8 (length 128, `threads`) on this machine."""
    from . import latency, loop, metrics, stats
    from .tokenize import Encoded

    model = artifact_model(folder, fmt, max_length, threads)
    data = Encoded.load(validation)
    _, preds = loop.predict(model, data, 32)
    out = {
        "split": split,
        "examples": len(data.labels),
        **metrics.compute(task, data.labels, preds),
        "ci": stats.interval(task, data.labels, preds),
    }
    if runs:
        timed = latency.measure(model, runs=runs, threads=threads)
        out |= {k: v for k, v in timed.items() if k.endswith("_ms")} | {"threads": timed["threads"]}
        out["machine"] = latency.machine()
    return out


def _float_metric(model_dir: str, task: str, validation: str) -> float:
    from . import loop, metrics
    from .tokenize import Encoded

    data = Encoded.load(validation)
    _, preds = loop.predict(variant.load_float(model_dir, get_task(task).num_labels), data, 32)
    return metrics.headline(task, metrics.compute(task, data.labels, preds))


def _auto(model_dir, out_dir, task, max_length, train, validation, threads, runs, budget, choose=None) -> dict:
    """Every candidate format exported, checked on one split (choose, the dev split, when given; else validation)
    against the float model on that same split, and timed here; the fastest within budget ships. With choose, each
    candidate's validation figures and its delta there are reported beside, never read."""
    if not validation:
        raise UserError("--format auto checks every format on the validation split; give it (validation=...)")
    name, split = get_task(task).metric, "dev" if choose else "validation"
    reference = _float_metric(model_dir, task, choose or validation)
    reported = _float_metric(model_dir, task, validation) if choose else reference
    # the candidates in a scratch folder beside out_dir (whose parent it makes: a fresh clone has no results/export)
    with io.scratch_dir(Path(out_dir).with_name(f"{Path(out_dir).name}-auto")) as work:
        rows, made = [], {}
        for fmt in CANDIDATES:  # onnx first: onnx_int8 quantizes its graph
            graph = str(work / "onnx" / MODEL) if fmt == "onnx_int8" else None
            made[fmt] = export(
                model_dir, str(work / fmt), task, fmt, max_length, train, validation, threads, runs, onnx_fp32=graph
            )
            v = made[fmt]["validation"]
            c = figures(work / fmt, fmt, task, max_length, choose, threads, 0, "dev") if choose else v
            delta = 100 * (c[name] - reference)  # like with like: the candidate and the float model on one split
            rows.append(
                {
                    "format": fmt,
                    "split": split,
                    name: c[name],
                    "delta_points": delta,
                    **(
                        {f"validation_{name}": v[name], "validation_delta_points": 100 * (v[name] - reported)}
                        if choose
                        else {}
                    ),
                    "batch1_ms": v["batch1_ms"],
                    "batch8_ms": v["batch8_ms"],
                    "archive_mb": made[fmt]["archive_mb"],
                    "within_budget": delta >= -budget,
                }
            )
        fits = [r for r in rows if r["within_budget"]]
        if not fits:
            raise UserError(
                f"no format keeps {name} on {split} within {budget:g} points of the float model's ({reference:.4f}): "
                + ", ".join(f"{r['format']} {r['delta_points']:+.2f}" for r in rows)
            )
        best = min(fits, key=lambda r: math.sqrt(r["batch1_ms"] * r["batch8_ms"]))
        manifest = {k: v for k, v in made[best["format"]].items() if k not in ("archive", "archive_mb", "files")}
        manifest["auto"] = {
            "rule": f"the fastest (geometric mean of batch 1 and 8 ms) within {budget:g} point"
            f"{'s' * (budget != 1)} of the float model's {name} on {split}",
            "chosen_on": split,
            "float_" + name: reference,
            **({f"float_validation_{name}": reported} if choose else {}),
            "machine": machine(),
            "threads": made[best["format"]]["validation"].get("threads"),
            "candidates": rows,
            "chosen": best["format"],
        }
        chosen = work / best["format"]
        _finish(chosen, manifest)
        shipped = archive.pack(chosen, archive.path_of(out_dir))
        io.replace_dir(chosen, Path(out_dir))
    return manifest | {"archive": str(shipped), "archive_mb": shipped.stat().st_size / 1e6}
