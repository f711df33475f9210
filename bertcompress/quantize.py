"""Quantize a fine-tuned model (dense or pruned), save it, and load any saved variant back as what it is.

    bertcompress quantize --task mrpc --model-dir outputs/mrpc/finetune-s42 -S quantize.mode=dynamic

Modes: dynamic (int8 Linear weights, activations quantized on the fly: torch.ao quantize_dynamic), dynamic_emb
(the same plus int8 weight-only embeddings, which are half of MiniLM's bytes), fp16, bf16, static (PT2E with
X86InductorQuantizer, observers calibrated on calibration_size training examples) and qat (PT2E fake-quant
trained for qat_steps, with eager attention: sdpa would bake its dropout into the exported graph).

A saved variant is a folder: config.json, tokenizer, the weights, variant.json (mode, base, weights file,
structure) and metrics.json. `load_variant` rebuilds the architecture, re-applies structure and quantization,
then loads the weights, so an int8 model comes back int8 with identical predictions; transformers'
from_pretrained would silently give fp32 (or random weights), so quantized weights never use its file names.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from . import prune, sizes
from .glue import get_task
from .model import load_model, load_tokenizer
from .params import Params, Quantize, UserError
from .tokenize import Encoded

MODES = ("none", "dynamic", "dynamic_emb", "fp16", "bf16", "static", "qat")
DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


def validate(q: Quantize) -> None:
    if q.mode not in MODES:
        raise UserError(f"quantize.mode '{q.mode}' is unknown; choose one of: {', '.join(MODES)}")
    if q.calibration_size <= 0:
        raise UserError(f"quantize.calibration_size must be > 0 examples, got {q.calibration_size}")
    if q.qat_steps <= 0:
        raise UserError(f"quantize.qat_steps must be > 0, got {q.qat_steps}")


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


def _example(data: Encoded) -> dict[str, torch.Tensor]:
    """Two examples, padded: export must not see a batch or length of 1, which it would specialise on."""
    order = np.argsort(-data.lengths, kind="stable")[:2]
    batch = data.batch(order)
    batch.pop("labels")
    return batch


def _export(model: nn.Module, example: dict, max_length: int):
    batch, length = torch.export.Dim("batch", min=1, max=4096), torch.export.Dim("length", min=2, max=max_length)
    return torch.export.export(model, (), example, dynamic_shapes={k: {0: batch, 1: length} for k in example})


def _subset(data: Encoded, n: int, seed: int) -> Encoded:
    idx = np.sort(np.random.default_rng(seed).permutation(len(data))[:n])
    spans = [slice(data.offsets[i], data.offsets[i + 1]) for i in idx]
    return Encoded(np.concatenate([data.input_ids[s] for s in spans]),
                   np.concatenate([data.token_type_ids[s] for s in spans]),
                   np.concatenate([[0], np.cumsum(data.lengths[idx])]), data.labels[idx])


def _drop_unused(gm: torch.fx.GraphModule) -> None:
    """convert_pt2e leaves the fp32 weights it replaced by int8 constants attached: drop them (44 MB)."""
    used = {n.target for n in gm.graph.nodes if n.op == "get_attr"}
    for name in [n for n, _ in gm.named_parameters()] + [n for n, _ in gm.named_buffers()]:
        if name not in used:
            owner, _, attr = name.rpartition(".")
            delattr(gm.get_submodule(owner) if owner else gm, attr)


def pt2e(model: nn.Module, params: Params, calib_path: str | None, train_path: str | None, qat: bool):
    """Static int8 by PT2E: export, insert observers (or fake-quant), calibrate (or train), convert, re-export."""
    from torchao.quantization.pt2e import allow_exported_model_train_eval, move_exported_model_to_eval
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e, prepare_qat_pt2e
    from torchao.quantization.pt2e.quantizer import x86_inductor_quantizer as xiq

    from .evaluate import predict

    q, f = params.quantize, params.finetune
    data = Encoded.load(train_path if qat else calib_path)
    example, max_length = _example(data), model.config.max_position_embeddings
    quantizer = xiq.X86InductorQuantizer().set_global(xiq.get_default_x86_inductor_quantization_config(is_qat=qat))
    gm = _export(model.train(qat), example, max_length).module()
    prepared = (prepare_qat_pt2e if qat else prepare_pt2e)(gm, quantizer)
    allow_exported_model_train_eval(prepared)  # lets predict() and recover() call .eval() / .train()
    if qat:
        loss = prune.recover(prepared, train_path, q.qat_steps, f)
        info = {"qat_steps": q.qat_steps, "qat_loss": loss}
    else:
        predict(prepared, _subset(data, q.calibration_size, f.seed), f.eval_batch_size)
        info = {"calibration_size": min(q.calibration_size, len(data))}
    move_exported_model_to_eval(prepared)
    converted = convert_pt2e(prepared)
    _drop_unused(converted)
    move_exported_model_to_eval(converted)
    program = _export(converted, example, max_length)
    module = program.module()
    allow_exported_model_train_eval(module)
    return module, program, info


def quantize(model_dir: str, out_dir: str, params: Params, task: str, calib_path: str | None = None,
             train_path: str | None = None) -> dict:
    """Quantize the model in model_dir with params.quantize.mode; save the variant to out_dir; its metrics."""
    q = params.quantize
    validate(q)
    if q.mode == "none":
        raise UserError("quantize.mode is none: nothing to do; set e.g. -S quantize.mode=dynamic")
    if q.mode == "static" and not calib_path:
        raise UserError("quantize.mode=static needs calibration data; pass calib_path (the tokenized train split)")
    if q.mode == "qat" and not train_path:
        raise UserError("quantize.mode=qat needs training data; pass train_path (the tokenized train split)")
    attn = {"attn_implementation": "eager"} if q.mode == "qat" else {}
    model = load_float(model_dir, get_task(task).num_labels, **attn)
    structure = (read_variant(model_dir) or {}).get("structure")  # a structured base keeps its shapes
    variant = {"mode": q.mode, "base": str(model_dir), **({"structure": structure} if structure else {})}
    if q.mode in ("static", "qat"):
        model, program, info = pt2e(model, params, calib_path, train_path, qat=q.mode == "qat")
        variant["weights"] = "model.pt2"
        write = lambda tmp: torch.export.save(program, tmp / "model.pt2")  # noqa: E731
    else:
        model, info = convert(model, q.mode), {}
        variant["weights"] = "weights.pt" if q.mode.startswith("dynamic") else "weights.safetensors"
        write = lambda tmp: save_weights(model, tmp / variant["weights"])  # noqa: E731
    result = {"task": task, "mode": q.mode, "base": str(model_dir), **info, **sizes.measure(model)}
    save_variant(out_dir, model_dir, variant, result, write)
    return result


def save_weights(model: nn.Module, path: Path) -> None:
    """safetensors for plain tensors; torch.save where dynamic int8 keeps packed params safetensors can't hold."""
    if Path(path).suffix == ".safetensors":
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, path)
    else:
        torch.save(model.state_dict(), path)


def save_variant(out_dir: str, base_dir: str, variant: dict, metrics: dict, write_weights) -> None:
    """Write config, tokenizer, weights (write_weights(tmp)), variant.json, metrics.json; appear atomically."""
    from .finetune import write_json

    out = Path(out_dir)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    write_weights(tmp)
    if not (tmp / "config.json").is_file():
        from transformers import AutoConfig

        AutoConfig.from_pretrained(base_dir).save_pretrained(tmp)
    load_tokenizer(str(base_dir)).save_pretrained(tmp)
    write_json(tmp / "variant.json", variant)
    write_json(tmp / "metrics.json", metrics)
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)


def read_variant(model_dir: str) -> dict | None:
    path = Path(model_dir) / "variant.json"
    return json.loads(path.read_text()) if path.is_file() else None


def load_float(model_dir: str, num_labels: int, **kwargs) -> nn.Module:
    """A model to prune or quantize: fine-tuned, pruned or structured, not already quantized."""
    mode = (read_variant(model_dir) or {}).get("mode")
    if mode in MODES:
        raise UserError(f"{model_dir} is already quantized ({mode}); pass a fine-tuned or pruned model folder")
    return load_variant(model_dir, num_labels, **kwargs)


def load_variant(model_dir: str, num_labels: int, **kwargs) -> nn.Module:
    """Any saved model as what it was saved as: fp32 (dense, pruned), structured, int8 dynamic, half, PT2E."""
    v = read_variant(model_dir)
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
    if config.num_labels != num_labels:
        raise UserError(f"{model_dir} has {config.num_labels} labels, the task {num_labels}; check --task")
    model = AutoModelForSequenceClassification.from_config(config, dtype=torch.float32, **kwargs)
    if "structure" in v:
        prune.apply_structure(model, v["structure"])
    model = convert(model, v["mode"])
    state = load_file(weights) if weights.suffix == ".safetensors" else torch.load(weights, weights_only=True)
    model.load_state_dict(state)
    return model.eval()
