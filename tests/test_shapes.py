"""Shapes for a latency target (issue 36): the picker takes the smallest cut that meets the target on a stubbed
timer, says which is fastest when none does, and the real measure cuts and times a model in OpenVINO int8."""

from __future__ import annotations

import pytest

from bertcompress import params as P
from bertcompress import shapes


def stub(heads: float, ffn: float) -> tuple[float, int]:
    """A made-up CPU: time falls with what is removed, heads weigh half as much as FFN neurons."""
    kept = 1 - (heads + 2 * ffn) / 3
    return 100 * (0.1 + 0.9 * kept), int(1e6 * (0.5 + 0.5 * kept))


def test_the_picker_takes_the_smallest_cut_that_meets_the_target():
    result = shapes.pick(3.0, stub)
    c = result["chosen"]
    assert result["dense_ms"] == 100 and c["speedup"] >= 3.0
    meeting = [r for r in result["candidates"] if r["speedup"] >= 3.0]
    assert c["parameters"] == max(r["parameters"] for r in meeting)  # the least removed of those fast enough
    assert (c["heads_fraction"], c["ffn_fraction"]) == (0.5, 0.875)  # kept 1/4 of the stub's work: 3.08x
    assert len(result["candidates"]) == len(shapes.GRID)
    assert shapes.pick(1.5, stub)["chosen"]["parameters"] > c["parameters"]  # an easier target: a smaller cut
    with pytest.raises(
        P.UserError, match=r"target_speedup=9 is out of reach: the fastest cut .* heads 0.83 / FFN 0.875"
    ):
        shapes.pick(9.0, stub)
    assert "| 0.5 | 0.875 |" in shapes.table(result) and "chosen" in shapes.table(result)


def test_apply_cuts_every_structured_variant_to_the_chosen_shape():
    p = P.defaults().for_task("cola")
    chosen = {"chosen": {"heads_fraction": 0.25, "ffn_fraction": 0.5}}
    q = shapes.apply(p, chosen)
    s = q.variant("structured", 42).prune
    assert (s.heads_fraction, s.ffn_fraction, s.recovery_steps) == (0.25, 0.5, 1040)  # the recipe's recovery kept
    assert q.variant("gradual", 42).flat() == p.variant("gradual", 42).flat()
    with pytest.raises(P.UserError, match="experiment.target_speedup must be > 1"):
        P.load(None, ["experiment.target_speedup=1"])


@pytest.mark.slow  # seconds of subprocesses or servers: make test-fast leaves it to the slow tier
def test_the_real_measure_cuts_and_times_in_openvino_int8():
    measure = shapes.measured(P.defaults().model.name, threads=1)
    dense_ms, dense_params = measure(0.0, 0.0)
    cut_ms, cut_params = measure(0.67, 0.75)
    model = shapes.shaped(P.defaults().model.name, 0.67, 0.75)
    layer = model.base_model.encoder.layer[0]
    assert (layer.attention.self.num_attention_heads, layer.intermediate.dense.out_features) == (4, 384)
    assert cut_params < 0.8 * dense_params and 0 < cut_ms < dense_ms


def test_the_flow_resolves_structured_variants_to_the_pick_kept_on_disk(tmp_path, monkeypatch):
    """recipes.resolve (what the flow, DVC, status and the report call): with experiment.target_speedup the pick kept
    in results/shapes for this model, target, threads, grid and CPU is reused, not timed again; another CPU's is
    not trusted (it would be timed again here)."""
    from bertcompress import io, latency
    from tasks import recipes

    monkeypatch.chdir(tmp_path)
    p = P.load(None, ["experiment.target_speedup=3"])
    result = shapes.pick(3.0, stub)
    where = {"model": p.model.name, "target": 3.0, "threads": p.evaluate.latency_threads}
    where |= {"grid": [list(g) for g in shapes.GRID], "cpu": latency.machine()["cpu"]}
    path = tmp_path / "results" / "shapes" / f"{p.model.name}-x3.json"
    io.write_json(path, where | result)
    q = recipes.resolve(p, "sst2")
    s = q.variant("structured", 42).prune
    assert (s.heads_fraction, s.ffn_fraction, s.recovery_steps) == (0.5, 0.875, 7580)  # the pick, SST-2's recovery
    assert shapes.choose(q)["path"] == str(path.relative_to(tmp_path))
    io.write_json(path, where | result | {"cpu": "another CPU"})
    timed = []
    monkeypatch.setattr(shapes, "measured", lambda name, threads: lambda h, f: timed.append((h, f)) or stub(h, f))
    assert shapes.choose(q)["chosen"] == result["chosen"] and len(timed) == len(shapes.GRID)  # timed again, here
