"""Quantization: each mode yields quantized modules, saves, and reloads as itself with identical predictions."""

from __future__ import annotations

import json

import pytest
import torch
from torch.ao.nn.quantized import Embedding as QEmbedding
from torch.ao.nn.quantized.dynamic import Linear as DynamicLinear

from bertcompress import latency, quantize
from bertcompress import params as P
from bertcompress.cli import main
from bertcompress.evaluate import evaluate
from bertcompress.loop import predict
from bertcompress.model import load_model
from bertcompress.tokenize import Encoded
from bertcompress.variant import convert, load_variant


def quantized(tiny_run, tiny_params, tiny_mrpc, out, **kw) -> dict:
    p = tiny_params.replace({f"quantize.{k}": v for k, v in kw.items()})
    dense, _ = tiny_run
    return quantize.quantize(str(dense), str(out), p, "mrpc", train_path=tiny_mrpc["train"])


@pytest.mark.parametrize("mode", ["dynamic", "dynamic_emb"])
def test_int8_reloads_as_int8_with_identical_predictions(mode, tiny_run, tiny_params, tiny_mrpc, tmp_path):
    result = quantized(tiny_run, tiny_params, tiny_mrpc, tmp_path / mode, mode=mode)
    model = load_variant(str(tmp_path / mode), 2)
    linears = [m for n, m in model.named_modules() if n.endswith(("query", "dense", "classifier"))]
    assert linears and all(isinstance(m, DynamicLinear) for m in linears)
    assert not any(isinstance(m, torch.nn.Linear) for m in model.modules())
    assert isinstance(model.bert.embeddings.word_embeddings, QEmbedding) == (mode == "dynamic_emb")
    # the same conversion in memory, from the fine-tuned weights, gives the very same predictions and loss
    data = Encoded.load(tiny_mrpc["validation"])
    in_memory = convert(load_model(str(tiny_run[0]), 2), mode)
    (loss_a, preds_a), (loss_b, preds_b) = predict(in_memory, data), predict(model, data)
    assert (preds_a == preds_b).all() and loss_a == loss_b
    assert result["state_dict_mb"] < (30 if mode == "dynamic_emb" else 62)
    assert json.loads((tmp_path / mode / "variant.json").read_text())["mode"] == mode
    with pytest.raises(P.UserError, match="no file named"):  # none that transformers would load as fp32
        load_model(str(tmp_path / mode), 2)


@pytest.mark.parametrize("mode,dtype", [("fp16", torch.float16), ("bf16", torch.bfloat16)])
def test_half_reloads_as_half(mode, dtype, tiny_run, tiny_params, tiny_mrpc, tmp_path):
    result = quantized(tiny_run, tiny_params, tiny_mrpc, tmp_path / mode, mode=mode)
    model = load_variant(str(tmp_path / mode), 2)
    assert {p.dtype for p in model.parameters()} == {dtype}
    assert 44 < result["state_dict_mb"] < 47 and result["compact_mb"] < 46
    metrics = evaluate(str(tmp_path / mode), "mrpc", tiny_mrpc["validation"], 64)
    assert 0 <= metrics["accuracy"] <= 1


def quantized_ops(module) -> set[str]:
    return {str(n.target) for n in module.graph.nodes if n.op == "call_function" and "quantize" in str(n.target)}


@pytest.mark.slow  # two PT2E programs made and compiled: the slow tier
@pytest.mark.parametrize("mode,extra", [("static", {"calibration_size": 16}), ("qat", {"qat_steps": 2})])
def test_pt2e_static_and_qat_produce_quantized_program(mode, extra, tiny_run, tiny_params, tiny_mrpc, tmp_path):
    out = tmp_path / mode
    result = quantized(tiny_run, tiny_params, tiny_mrpc, out, mode=mode, **extra)
    module = load_variant(str(out), 2)
    ops = quantized_ops(module)
    assert any("quantize_per_tensor" in o for o in ops) and any("dequantize_per_channel" in o for o in ops)
    int8 = [t for t in module.state_dict().values() if t.dtype == torch.int8]
    assert sum(t.numel() for t in int8) > 10_000_000  # the encoder's Linear weights are stored as int8
    assert result["state_dict_mb"] < 62  # the replaced fp32 weights are not carried along
    data = Encoded.load(tiny_mrpc["validation"])
    loss, preds = predict(module, data, 64)
    assert preds.shape == (len(data),) and loss > 0
    if mode == "qat":
        assert result["qat_steps"] == 2 and result["qat_loss"] > 0
    timing = latency.measure(module, batch_sizes=(1, 3), length=16, warmup=1, runs=1)  # the bench's inputs fit
    assert timing["batch1_ms"] > 0 and timing["batch3_ms"] > 0 and timing["threads"] >= 1


@pytest.mark.parametrize("observers", ["calibrate", "train"])
def test_qat_trains_the_graph_without_dropout_and_calibrated_scales_stay_frozen(
    observers, tiny_run, tiny_params, tiny_mrpc
):
    from bertcompress import loop
    from bertcompress.variant import load_float

    p = tiny_params.replace(
        {"quantize.mode": "qat", "quantize.qat_observers": observers, "quantize.calibration_size": 16}
    )
    data = Encoded.load(tiny_mrpc["train"])
    model = load_float(str(tiny_run[0]), 2, attn_implementation="eager")
    prepared, _, calibrated = quantize.prepare(model, p, data, qat=True)
    assert calibrated == (16 if observers == "calibrate" else None)
    batch = data.batch(list(range(8)))
    batch.pop("labels")
    prepared.train()
    with torch.no_grad():
        train_a, train_b = prepared(**batch).logits, prepared(**batch).logits
        prepared.eval()
        evaluated = prepared(**batch).logits
    # the exported graph runs as exported: no dropout in train mode (torchao's train() would make it p=0.5)
    assert torch.equal(train_a, train_b) and torch.equal(train_a, evaluated)
    scales = lambda: {n: b.clone() for n, b in prepared.named_buffers() if n.endswith(".scale")}  # noqa: E731
    before = scales()
    assert before and all((s > 0).all() for s in before.values())
    loop.steps(prepared, tiny_mrpc["train"], p.finetune, p.runtime, 2, desc="qat")
    after = scales()
    changed = [n for n in before if not torch.equal(before[n], after[n])]
    assert (not changed) if observers == "calibrate" else changed  # frozen after calibration, or learning


def test_quantizing_a_quantized_model_is_refused(tiny_run, tiny_params, tiny_mrpc, tmp_path):
    quantized(tiny_run, tiny_params, tiny_mrpc, tmp_path / "q", mode="dynamic")
    p = tiny_params.replace({"quantize.mode": "fp16"})
    with pytest.raises(P.UserError, match="already quantized"):
        quantize.quantize(str(tmp_path / "q"), str(tmp_path / "qq"), p, "mrpc")


@pytest.mark.parametrize(
    "override,words",
    [
        ("quantize.mode=int4", "quantize.mode"),
        ("quantize.calibration_size=0", "calibration_size"),
        ("quantize.qat_steps=-1", "qat_steps"),
        ("quantize.qat_observers=never", "qat_observers"),
        ("quantize.qat_lr=0", "qat_lr"),
    ],
)
def test_bad_quantization_input_is_one_line(override, words, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["quantize", "--task", "mrpc", "--model-dir", str(tmp_path), "-S", override]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and words in err and "\n" not in err
    assert not (tmp_path / "data").exists()  # refused before any data was prepared


def test_int8_of_a_structured_model_keeps_its_shapes(tiny_run, tiny_params, tiny_mrpc, tmp_path):
    from bertcompress import prune

    p = tiny_params.replace(
        {
            "prune.method": "structured",
            "prune.heads_fraction": 0.25,
            "prune.ffn_fraction": 0.5,
            "quantize.mode": "dynamic",
        }
    )
    prune.structured(str(tiny_run[0]), str(tmp_path / "small"), p, "mrpc")
    quantize.quantize(str(tmp_path / "small"), str(tmp_path / "small-int8"), p, "mrpc")
    model = load_variant(str(tmp_path / "small-int8"), 2)
    query = model.bert.encoder.layer[0].attention.self.query
    assert isinstance(query, DynamicLinear) and query.out_features == 9 * 32
    data = Encoded.load(tiny_mrpc["validation"])
    in_memory = convert(load_variant(str(tmp_path / "small"), 2), "dynamic")
    assert (predict(in_memory, data)[1] == predict(model, data)[1]).all()
