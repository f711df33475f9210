"""Quantize a fine-tuned model (dense or pruned) and save it as a variant folder.

    bertcompress quantize --task mrpc --model-dir outputs/mrpc/finetune-s42 -S quantize.mode=dynamic

Modes: dynamic (int8 Linear weights, activations quantized on the fly: torch.ao quantize_dynamic), dynamic_emb
(the same plus int8 weight-only embeddings, which are half of MiniLM's bytes), fp16, bf16, static (PT2E with
X86InductorQuantizer, observers calibrated on calibration_size training examples) and qat (PT2E fake-quant
trained for qat_steps by the one training loop, with eager attention: sdpa would bake its dropout into the
exported graph). Saved and loaded back by bertcompress/variant.py.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from . import loop, sizes, variant
from .glue import get_task
from .params import Params, UserError
from .tokenize import Encoded


def reads(p: Params) -> list[str]:
    """The params keys a quantized model depends on (besides the model it quantizes and the training data)."""
    mode = p.quantize.mode
    if mode == "static":
        return ["quantize.mode", "quantize.calibration_size", "finetune.seed", "evaluate.batch_size"]
    if mode == "qat":
        return ["quantize.mode", "quantize.qat_steps", *[f"finetune.{k}" for k in loop.STEPS_READ]]
    return ["quantize.mode"]


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


def pt2e(model: nn.Module, params: Params, train_path: str, qat: bool):
    """Static int8 by PT2E: export, insert observers (or fake-quant), calibrate (or train), convert, re-export."""
    from torchao.quantization.pt2e import allow_exported_model_train_eval, move_exported_model_to_eval
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e, prepare_qat_pt2e
    from torchao.quantization.pt2e.quantizer import x86_inductor_quantizer as xiq

    q, f = params.quantize, params.finetune
    data = Encoded.load(train_path)
    example, max_length = _example(data), model.config.max_position_embeddings
    quantizer = xiq.X86InductorQuantizer().set_global(xiq.get_default_x86_inductor_quantization_config(is_qat=qat))
    gm = _export(model.train(qat), example, max_length).module()
    prepared = (prepare_qat_pt2e if qat else prepare_pt2e)(gm, quantizer)
    allow_exported_model_train_eval(prepared)  # lets predict() and the training loop call .eval() / .train()
    if qat:
        loss = loop.steps(prepared, train_path, f, params.runtime, q.qat_steps, desc="qat")
        info = {"qat_steps": q.qat_steps, "qat_loss": loss}
    else:
        loop.predict(prepared, _subset(data, q.calibration_size, f.seed), params.evaluate.batch_size)
        info = {"calibration_size": min(q.calibration_size, len(data))}
    move_exported_model_to_eval(prepared)
    converted = convert_pt2e(prepared)
    _drop_unused(converted)
    move_exported_model_to_eval(converted)
    program = _export(converted, example, max_length)
    module = program.module()
    allow_exported_model_train_eval(module)
    return module, program, info


def quantize(model_dir: str, out_dir: str, params: Params, task: str, train_path: str | None = None) -> dict:
    """Quantize the model in model_dir with params.quantize.mode (static calibrates on, and qat trains on, the
    training split train_path); save the variant to out_dir; its metrics."""
    q = params.quantize
    if q.mode == "none":
        raise UserError("quantize.mode is none: nothing to do; set e.g. -S quantize.mode=dynamic")
    if q.mode in ("static", "qat") and not train_path:
        raise UserError(f"quantize.mode={q.mode} needs the tokenized training split; pass train_path")
    attn = {"attn_implementation": "eager"} if q.mode == "qat" else {}
    model = variant.load_float(model_dir, get_task(task).num_labels, **attn)
    shapes = (variant.read(model_dir) or {}).get("structure")  # a structured base keeps its shapes
    info = {"mode": q.mode, "base": str(model_dir), **({"structure": shapes} if shapes else {})}
    if q.mode in ("static", "qat"):
        model, program, extra = pt2e(model, params, train_path, qat=q.mode == "qat")
        info["weights"] = "model.pt2"
        write = lambda tmp: torch.export.save(program, tmp / "model.pt2")  # noqa: E731
    else:
        model, extra = variant.convert(model, q.mode), {}
        info["weights"] = "weights.pt" if q.mode.startswith("dynamic") else "weights.safetensors"
        write = lambda tmp: variant.save_weights(model, tmp / info["weights"])  # noqa: E731
    result = {"task": task, "mode": q.mode, "base": str(model_dir), **extra, **sizes.measure(model)}
    variant.save(out_dir, model_dir, info, result, write)
    return result
