"""Quantize a fine-tuned model (dense or pruned) and save it as a variant folder.

    bertcompress quantize --task mrpc --model-dir outputs/mrpc/finetune-s42 -S quantize.mode=dynamic

Modes: dynamic (int8 Linear weights, activations quantized on the fly: torch.ao quantize_dynamic), dynamic_emb
(the same plus int8 weight-only embeddings, which are half of MiniLM's bytes), fp16, bf16, static (PT2E with
X86InductorQuantizer, observers calibrated on calibration_size training examples) and qat (PT2E fake-quant,
with PTQ's observers calibrated the same way and then frozen, trained qat_steps at qat_lr by the one training
loop, distilled from the float model; the graph is exported in eval mode, so QAT trains without dropout).
Saved and loaded back by bertcompress/variant.py.
"""

from __future__ import annotations

import dataclasses
import types

import numpy as np
import torch
from torch import nn

from . import loop, sizes, variant
from .distill import Distiller
from .glue import get_task
from .params import Params, UserError
from .tokenize import Encoded


def reads(p: Params) -> list[str]:
    """The params keys a quantized model depends on (besides the model it quantizes and the training data)."""
    mode = p.quantize.mode
    if mode == "static":
        return ["quantize.mode", "quantize.calibration_size", "finetune.seed", "evaluate.batch_size"]
    if mode == "qat":
        steps = [f"finetune.{k}" for k in loop.STEPS_READ if k != "lr"] + ["evaluate.batch_size"]
        distill = [f"distill.{k}" for k in ("temperature", "weight", "hidden_weight")] if p.quantize.qat_distill else []
        return [
            *(f"quantize.{k}" for k in ("mode", "qat_steps", "qat_lr", "qat_observers", "qat_distill")),
            *(["quantize.calibration_size"] if p.quantize.qat_observers == "calibrate" else []),
            *steps,
            *distill,
        ]
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
    return Encoded(
        np.concatenate([data.input_ids[s] for s in spans]),
        np.concatenate([data.token_type_ids[s] for s in spans]),
        np.concatenate([[0], np.cumsum(data.lengths[idx])]),
        data.labels[idx],
    )


def _drop_unused(gm: torch.fx.GraphModule) -> None:
    """convert_pt2e leaves the fp32 weights it replaced by int8 constants attached: drop them (44 MB)."""
    used = {n.target for n in gm.graph.nodes if n.op == "get_attr"}
    for name in [n for n, _ in gm.named_parameters()] + [n for n, _ in gm.named_buffers()]:
        if name not in used:
            owner, _, attr = name.rpartition(".")
            delattr(gm.get_submodule(owner) if owner else gm, attr)


def _fixed_mode(gm: torch.fx.GraphModule) -> torch.fx.GraphModule:
    """The exported graph stays as exported, in eval mode, with no dropout (QAT trains without it): train() and
    eval() only set the flag the loops read. torchao's allow_exported_model_train_eval would rewrite every dropout
    node to p=0.5 in train mode, whatever the model's p (torchao 0.18 export_utils._replace_dropout), and that
    was why QAT lost 3-7 points to PTQ (bench/RESULTS-qat.md)."""

    def train(self, mode: bool = True):
        for m in self.modules():
            m.training = mode
        return self

    gm.train = types.MethodType(train, gm)
    gm.eval = types.MethodType(lambda self: self.train(False), gm)
    return gm


def _calibrated_qat(xiq):
    """QAT whose fake-quant nodes hold static PTQ's observers (histogram for activations, per-channel min-max
    for weights): calibrated as PTQ is, then frozen, QAT starts from PTQ's int8 model. The default QAT config's
    moving-average min-max ranges are wide on BERT's outlier activations (bench/RESULTS-qat.md)."""
    from torchao.quantization.pt2e import FakeQuantize

    static = xiq.get_default_x86_inductor_quantization_config(is_qat=False)
    act, weight = (
        dataclasses.replace(
            spec, observer_or_fake_quant_ctr=FakeQuantize.with_args(observer=spec.observer_or_fake_quant_ctr)
        )
        for spec in (static.input_activation, static.weight)
    )
    return dataclasses.replace(static, input_activation=act, output_activation=act, weight=weight, is_qat=True)


def prepare(model: nn.Module, params: Params, data: Encoded, qat: bool, device: str = "cpu"):
    """The model exported in eval mode (no dropout) with observers (QAT: fake-quant nodes) inserted and, unless
    QAT's observers train (quantize.qat_observers=train), calibrated on calibration_size training examples, then
    (QAT) frozen; (prepared graph, export example, calibrated examples or None)."""
    from torchao.quantization.pt2e import disable_observer
    from torchao.quantization.pt2e.quantize_pt2e import prepare_pt2e, prepare_qat_pt2e
    from torchao.quantization.pt2e.quantizer import x86_inductor_quantizer as xiq

    q = params.quantize
    example = {k: v.to(device) for k, v in _example(data).items()}
    calibrate = not qat or q.qat_observers == "calibrate"
    config = _calibrated_qat(xiq) if qat and calibrate else xiq.get_default_x86_inductor_quantization_config(is_qat=qat)
    gm = _export(model.to(device).eval(), example, model.config.max_position_embeddings).module()
    prepared = (prepare_qat_pt2e if qat else prepare_pt2e)(gm, xiq.X86InductorQuantizer().set_global(config))
    prepared = _fixed_mode(prepared).to(device)  # the observers' buffers too
    if not calibrate:
        return prepared, example, None
    loop.predict(prepared, _subset(data, q.calibration_size, params.finetune.seed), params.evaluate.batch_size, device)
    if qat:
        prepared.apply(disable_observer)  # scales stay those of calibration: training adapts the weights
    return prepared, example, min(q.calibration_size, len(data))


def pt2e(
    model: nn.Module, params: Params, train_path: str, qat: bool, teacher: nn.Module | None = None, device: str = "cpu"
):
    """Static int8 by PT2E: prepare, (QAT) train qat_steps at quantize.qat_lr, distilled from `teacher` (the float
    model) when given, convert, re-export. On `device`: the program holds that device's tensors."""
    from torchao.quantization.pt2e import move_exported_model_to_eval
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e

    q, f = params.quantize, params.finetune
    prepared, example, calibrated = prepare(model, params, Encoded.load(train_path), qat, device)
    info = {"calibration_size": calibrated} if calibrated else {}
    if qat:
        objective = Distiller(teacher.to(device), params.distill) if teacher is not None else loop.plain
        loss = loop.steps(
            prepared,
            train_path,
            dataclasses.replace(f, lr=q.qat_lr),
            params.runtime,
            q.qat_steps,
            desc="qat",
            objective=objective,
            device=device,
        )
        info |= {"qat_steps": q.qat_steps, "qat_loss": loss}
    move_exported_model_to_eval(prepared)
    converted = convert_pt2e(prepared)
    _drop_unused(converted)
    move_exported_model_to_eval(converted)
    program = _export(converted, example, model.config.max_position_embeddings)
    return _fixed_mode(program.module()), program, info


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
        qat = q.mode == "qat"
        teacher = variant.load_float(model_dir, get_task(task).num_labels, **attn) if qat and q.qat_distill else None
        model, program, extra = pt2e(model, params, train_path, qat, teacher)
        info["weights"] = "model.pt2"
        write = lambda tmp: torch.export.save(program, tmp / "model.pt2")  # noqa: E731
    else:
        model, extra = variant.convert(model, q.mode), {}
        info["weights"] = "weights.pt" if q.mode.startswith("dynamic") else "weights.safetensors"
        write = lambda tmp: variant.save_weights(model, tmp / info["weights"])  # noqa: E731
    result = {"task": task, "mode": q.mode, "base": str(model_dir), **extra, **sizes.measure(model)}
    variant.save(out_dir, model_dir, info, result, write)
    return result
