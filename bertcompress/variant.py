"""A saved variant: write one (any kind) as a folder, and load any folder back as what it was saved as.

A variant folder holds config.json, the tokenizer, the weights, variant.json (mode, base, weights file,
structure) and metrics.json. `load_variant` rebuilds the architecture, re-applies structure and quantization,
then loads the weights, so an int8 model comes back int8 with identical predictions; transformers'
from_pretrained would silently give fp32 (or random weights), so quantized weights never use its file names.
A plain fine-tuned or magnitude-pruned model is a save_pretrained folder.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from . import io, masks
from .model import load_model, load_tokenizer
from .params import QUANTIZE_MODES, UserError

DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}
# torch 2.13 warns on every eager int8 tensor it creates and on loading their storages: the eager dynamic-int8
# path is deprecated upstream (../shared/notes/quantization-torch-2.13.md) but is still what works here.
warnings.filterwarnings("ignore", r"torch\.quantize_per_tensor, torch\.quantize_per_channel", UserWarning)
warnings.filterwarnings("ignore", "TypedStorage is deprecated", UserWarning)


def convert(model: nn.Module, mode: str) -> nn.Module:
    """The in-memory conversions (no data needed): int8 dynamic, optionally with int8 embeddings, or half."""
    from torch.ao.quantization import default_dynamic_qconfig, float_qparams_weight_only_qconfig, quantize_dynamic

    if mode in ("dynamic", "dynamic_emb"):
        spec = {nn.Linear: default_dynamic_qconfig}
        if mode == "dynamic_emb":
            spec[nn.Embedding] = float_qparams_weight_only_qconfig
        return quantize_dynamic(model.eval(), spec, dtype=torch.qint8)
    if mode in DTYPES:
        return model.to(DTYPES[mode])
    return model


def save_weights(model: nn.Module, path: Path) -> None:
    """safetensors for plain tensors; torch.save where dynamic int8 keeps packed params safetensors can't hold."""
    if Path(path).suffix == ".safetensors":
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, path)
    else:
        torch.save(model.state_dict(), path)


def save(out_dir: str, base_dir: str, variant: dict, metrics: dict, write_weights) -> None:
    """Write config, tokenizer, weights (write_weights(tmp)), variant.json, metrics.json; appear atomically."""
    with io.atomic_dir(out_dir) as tmp:
        write_weights(tmp)
        if not (tmp / "config.json").is_file():
            from transformers import AutoConfig

            AutoConfig.from_pretrained(base_dir).save_pretrained(tmp)
        load_tokenizer(str(base_dir)).save_pretrained(tmp)
        io.write_json(tmp / "variant.json", variant)
        io.write_json(tmp / "metrics.json", metrics)


def read(model_dir: str) -> dict | None:
    path = Path(model_dir) / "variant.json"
    return json.loads(path.read_text()) if path.is_file() else None


def load_float(model_dir: str, num_labels: int, **kwargs) -> nn.Module:
    """A model to prune or quantize: fine-tuned, pruned or structured, not already quantized."""
    mode = (read(model_dir) or {}).get("mode")
    if mode in QUANTIZE_MODES:
        raise UserError(f"{model_dir} is already quantized ({mode}); pass a fine-tuned or pruned model folder")
    return load_variant(model_dir, num_labels, **kwargs)


def _head(n: int) -> str:
    return "a regression head (1 output)" if n == 1 else f"a {n}-class head"


def check_head(model_dir: str, num_labels: int) -> None:
    """A fine-tuned folder's head must fit the task (STS-B: regression, one output); a pretrained base (no
    head yet) fits any."""
    from transformers import AutoConfig

    from . import archive

    if (Path(archive.folder(model_dir)) / "manifest.json").is_file():
        return  # an exported artifact: load_variant checks its manifest
    config = AutoConfig.from_pretrained(model_dir)
    tuned = any(a.endswith("ForSequenceClassification") for a in config.architectures or [])
    if (tuned or read(model_dir)) and config.num_labels != num_labels:
        raise UserError(
            f"{model_dir} has {_head(config.num_labels)} and the task needs {_head(num_labels)}; "
            "check --task, or fine-tune a model for this task first"
        )


def load_variant(model_dir: str, num_labels: int, **kwargs) -> nn.Module:
    """Any saved model as what it was saved as: fp32 (dense, pruned), structured, int8 dynamic, half, PT2E, or an
    exported artifact, its folder or its archive (an ONNX Runtime session or OpenVINO model, bertcompress/onnx_model.py,
    or a PT2E program compiled by Inductor, bertcompress/compiled.py)."""
    from . import archive

    model_dir = archive.folder(model_dir)
    if (Path(model_dir) / "manifest.json").is_file():
        from .artifact import artifact_model

        manifest = json.loads((Path(model_dir) / "manifest.json").read_text())
        if manifest["regression"] != (num_labels == 1) or len(manifest["labels"] or [None]) != num_labels:
            raise UserError(f"{model_dir} is an artifact for task {manifest['task']}; check --task")
        return artifact_model(model_dir, manifest["format"], manifest["max_length"])
    check_head(model_dir, num_labels)
    v = read(model_dir)
    if v is None or (v["mode"] == "oneshot"):
        return load_model(str(model_dir), num_labels, **kwargs)  # a plain save_pretrained folder
    weights = Path(model_dir) / v["weights"]
    if weights.suffix == ".pt2":
        import torchao.quantization.pt2e as pt2e  # registers the quantized ops the program calls
        import transformers.modeling_outputs  # noqa: F401  registers SequenceClassifierOutput with pytree

        module = torch.export.load(weights).module()
        pt2e.allow_exported_model_train_eval(module)
        return module
    from transformers import AutoConfig, AutoModelForSequenceClassification

    config = AutoConfig.from_pretrained(model_dir)
    model = AutoModelForSequenceClassification.from_config(config, dtype=torch.float32, **kwargs)
    if "structure" in v:
        masks.apply_structure(model, v["structure"])
    model = convert(model, v["mode"])
    state = load_file(weights) if weights.suffix == ".safetensors" else torch.load(weights, weights_only=True)
    model.load_state_dict(state)
    return model.eval()
