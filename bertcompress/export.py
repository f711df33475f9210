"""Export a variant folder as a self-contained artifact to ship: an ONNX model run by ONNX Runtime (int8 by
default: ONNX Runtime's dynamic quantization of the exported fp32 graph, embeddings included), the tokenizer,
and manifest.json (task, label names, max length, the source variant and its params and validation metrics,
sizes, file hashes). The weights are stored apart from the graph, deflated, a pruned weight as a bitmask of its
nonzeros and their values (onnx_model.pack): the artifact's size is the size of what ships.

    bertcompress export --task mrpc --model-dir outputs/mrpc/finetune-s42 --out artifacts/mrpc
    bertcompress predict --model artifacts/mrpc "The cat sat." "A cat was sitting."

Takes a float variant (fine-tuned, gradual or one-shot pruned, structured) and quantizes it itself; the graph is
exported by torch.onnx (dynamo) with dynamic batch and length. The artifact reloads as an OnnxModel
(bertcompress/onnx_model.py) wherever a model folder is accepted (evaluate, predict).
"""

from __future__ import annotations

import json
import logging
import platform
import shutil
import warnings
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn
from transformers import AutoConfig

from . import io, variant
from .compiled import PROGRAM, CompiledModel
from .glue import get_task
from .model import load_tokenizer
from .onnx_model import INPUTS, MODEL, SPARSE_AT, WEIGHTS, OnnxModel, pack
from .params import QUANTIZE_MODES, UserError

FORMATS = ("onnx_int8", "onnx", "pt2e_int8")
PT2E = ("static", "qat")  # the quantize modes whose folder holds a PT2E int8 program
MANIFEST = "manifest.json"


class _Logits(nn.Module):
    """The classifier with positional inputs and one output: what the ONNX graph holds."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids, token_type_ids, attention_mask):
        return self.model(input_ids=input_ids, token_type_ids=token_type_ids, attention_mask=attention_mask).logits


@contextmanager
def _quiet():
    """The exporter's and the quantizer's advice (torchvision ops, axis names, pre-processing): not for users."""
    loggers = [logging.getLogger(n) for n in ("", "torch.onnx", "torch.onnx._internal.exporter._registration")]
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
    example = tokenizer(["a first example sentence", "two"], ["and its pair", "b"], padding=True, return_tensors="pt")
    args = tuple(example[k] for k in INPUTS)
    batch, length = torch.export.Dim("batch", min=1, max=4096), torch.export.Dim("length", min=2, max=max_length)
    torch.onnx.export(
        _Logits(model.eval()),
        args,
        str(path),
        input_names=list(INPUTS),
        output_names=["logits"],
        dynamo=True,
        external_data=False,
        verbose=False,
        dynamic_shapes={k: {0: batch, 1: length} for k in INPUTS},
    )


def export(model_dir: str, out_dir: str, task: str, fmt: str = "onnx_int8", max_length: int = 128) -> dict:
    """Write the artifact of the variant in model_dir to out_dir (atomically); its manifest."""
    spec = get_task(task)
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
    tokenizer = load_tokenizer(model_dir)
    config = AutoConfig.from_pretrained(model_dir)
    with io.atomic_dir(out_dir) as tmp, _quiet():
        if fmt == "pt2e_int8":  # the calibrated program as quantize saved it; Inductor compiles it on load
            shutil.copy2(Path(model_dir) / info["weights"], tmp / PROGRAM)
            storage = {"program": PROGRAM, "compile": "torch.compile(freezing=True), shapes bucketed"}
        else:
            model = variant.load_float(model_dir, spec.num_labels)
            fp32 = tmp / ("model-fp32.onnx" if fmt == "onnx_int8" else MODEL)
            _onnx(model, tokenizer, fp32, min(max_length, config.max_position_embeddings))
        if fmt == "onnx_int8":
            import onnx
            from onnxruntime.quantization import QuantType, quantize_dynamic

            graph = onnx.load(str(fp32))
            graph.graph.ClearField("value_info")  # the exporter's intermediate shapes trip ORT's shape inference
            onnx.save(graph, str(fp32))
            quantize_dynamic(str(fp32), str(tmp / MODEL), weight_type=QuantType.QInt8, per_channel=True)
            fp32.unlink()
        if fmt != "pt2e_int8":  # weights.npz: deflated; a pruned (mostly zero) weight as bitmask + values
            storage = {"weights": WEIGHTS, "tensors": pack(tmp), "bitmask_at_zeros": SPARSE_AT}
        tokenizer.save_pretrained(tmp)
        config.save_pretrained(tmp)  # the architecture and labels, for reference and for the tokenizer's load
        source = Path(model_dir)
        metrics = json.loads((source / "metrics.json").read_text()) if (source / "metrics.json").is_file() else {}
        params = json.loads((source / "params.json").read_text()) if (source / "params.json").is_file() else None
        manifest = {
            "task": task,
            "format": fmt,
            "labels": list(spec.names) or None,
            "regression": spec.regression,
            "text_columns": list(spec.keys),
            "max_length": max_length,
            "source": str(source.resolve()),
            "source_variant": info or {"mode": "finetune"},
            "source_params": params,
            "source_metrics": {k: v for k, v in metrics.items() if k.startswith("val_")},
            "storage": storage,
            "sizes": artifact_model(tmp, fmt, max_length, threads=1).sizes(),
            "built_with": {"torch": torch.__version__, "python": platform.python_version()},
        }
        manifest["files"] = {f.name: io.content_hash(f) for f in sorted(tmp.iterdir()) if f.is_file()}
        io.write_json(tmp / MANIFEST, manifest)
    return manifest


def artifact_model(folder: str | Path, fmt: str, max_length: int, threads: int | None = None):
    """The runnable model of an artifact: an ONNX Runtime session, or the PT2E program compiled by Inductor."""
    return CompiledModel(folder, max_length, threads) if fmt == "pt2e_int8" else OnnxModel(folder, threads)


def read_manifest(folder: str | Path) -> dict | None:
    path = Path(folder) / MANIFEST
    return json.loads(path.read_text()) if path.is_file() else None
