"""Unpadded steps (finetune.unpad): the same function as the padded model, on the real tokens only."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from torch.nn.utils import prune

from bertcompress import loop, masks
from bertcompress.model import load_model
from bertcompress.tokenize import Encoded
from bertcompress.unpad import Unpadded, supports


@pytest.fixture(scope="module")
def mrpc128(tmp_path_factory, tiny_params, glue_dir) -> Encoded:
    """The tiny MRPC train slice at length 128 (the tiny runs' 32 truncates every pair to the same width)."""
    from bertcompress.tokenize import prepared

    root = tmp_path_factory.mktemp("unpad")
    p = tiny_params.replace({"tokenize.max_length": 128})
    return Encoded.load(prepared("mrpc", p, root / "glue", root / "tokenized")["train"])


@pytest.fixture(scope="module")
def batch(mrpc128):
    data = mrpc128
    idx = np.array([0, 7, 3, 12, 21, 5])
    assert len(set(data.lengths[idx])) > 3  # sequences of different lengths: real padding in the batch
    b = data.batch(idx, 8)
    b.pop("labels")
    return b


def padded_and_unpadded(model, batch):
    with torch.no_grad():
        return model(**batch, output_hidden_states=True), Unpadded(model)(**batch, output_hidden_states=True)


def test_unpadded_logits_and_hidden_states_equal_the_padded_models(tiny_params, batch):
    model = load_model(tiny_params.model.name, 2).eval()
    assert supports(model)
    p, u = padded_and_unpadded(model, batch)
    assert torch.allclose(p.logits, u.logits, atol=1e-5)
    real = batch["attention_mask"].bool()
    assert len(u.hidden_states) == len(p.hidden_states) == model.config.num_hidden_layers + 1
    for a, b in zip(p.hidden_states, u.hidden_states):
        assert torch.allclose(a[real], b[real], atol=1e-4)  # every layer, at every real token
        assert not b[~real].any()  # padding: zeros, never computed


def test_unpadded_structured_and_masked_models_equal_the_padded_ones(tiny_params, batch):
    """Heads and FFN neurons physically removed (masks.keep), and torch.nn.utils.prune masks on a projection: the
    wrapper calls the model's own modules, so both apply as in the padded forward."""
    torch.manual_seed(0)
    model = load_model(tiny_params.model.name, 2).eval()
    masks.keep(model.bert.encoder.layer[0], torch.tensor([1, 4, 7]), torch.arange(0, 1536, 3))
    masks.keep(model.bert.encoder.layer[3], torch.tensor([0]), torch.arange(100))
    prune.random_unstructured(model.bert.encoder.layer[1].intermediate.dense, "weight", amount=0.5)
    p, u = padded_and_unpadded(model, batch)
    assert model.bert.encoder.layer[3].attention.self.num_attention_heads == 1
    assert torch.allclose(p.logits, u.logits, atol=1e-5)


def test_unpadded_dropout_follows_train_and_eval(tiny_params, batch):
    model = load_model(tiny_params.model.name, 2)
    u = Unpadded(model)
    u.train()
    with torch.no_grad():
        a, b = u(**batch).logits, u(**batch).logits
    assert not torch.allclose(a, b)  # dropout draws
    u.eval()
    with torch.no_grad():
        assert torch.equal(u(**batch).logits, u(**batch).logits)


@pytest.mark.parametrize("group", [0, 50])
def test_unpadded_training_steps_match_the_padded_ones(tiny_params, mrpc128, group):
    """Without dropout (its masks are drawn per shape), a few optimizer steps of the training loop give the same
    losses and weights padded and unpadded, and the unpadded loop did wrap the model."""
    data = mrpc128
    results = {}
    for unpad in (False, True):
        f = dataclasses.replace(tiny_params.finetune, unpad=unpad, group_by_length=group, batch_size=8)
        loop.seed_everything(0)
        model = load_model(tiny_params.model.name, 2, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
        calls = []
        model.bert.encoder.register_forward_hook(lambda m, i, o: calls.append(1))  # the padded path's encoder
        opt, sched = loop.optimizer_and_schedule(model, f, 4)
        done = loop.train(model, data, f, tiny_params.runtime, 4, opt, sched)
        results[unpad] = done["loss"], model.classifier.weight.detach().clone(), len(calls)
    (lp, wp, cp), (lu, wu, cu) = results[False], results[True]
    assert cp == 4 and cu == 0  # the unpadded steps never ran the padded encoder
    assert lu == pytest.approx(lp, rel=1e-5)
    assert torch.allclose(wp, wu, atol=1e-5)
