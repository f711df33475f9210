"""Reads that cannot drift: every step of the plan runs on a tiny real MRPC slice through a Params that notes each
key it reads, and no step may read a key that its step record (its cache key) lacks. The variants below take
every branch of the steps' reads: a dense fine-tune, gradual first-order pruning distilled with hidden states,
one-shot and staged structured pruning with distilled recovery, and every quantization mode."""

from __future__ import annotations

import pipeline_runs as pr
import pytest

VARIANTS = {
    "dense": {"from": "pretrained", "quantize": ["dynamic", "dynamic_emb", "fp16", "bf16", "static", "qat"]},
    "gradual": {
        "from": "dense",
        "distill": {"teacher": "dense", "hidden_weight": 1.0},
        "prune": {"method": "gradual", "criterion": "first_order", "ranking": "global"},
    },
    "oneshot": {
        "from": "dense",
        "prune": {"method": "oneshot", "recovery_steps": 2, "embedding_sparsity": 0.5},
        "distill": {"teacher": "dense"},
    },
    "structured": {
        "from": "dense",
        "prune": {"method": "structured", "recovery_steps": 2, "stages": 2, "heads_fraction": 0.5, "ffn_fraction": 0.5},
    },
}
QUIET = ("tasks.plan", "tasks.tracking")  # they read params to key and describe a step, not to compute it


@pytest.fixture(scope="module")
def read_by_step(tmp_path_factory):
    """[(run, keys it read, keys in its record)] for every run of the plan."""
    from recording import recording

    from bertcompress import params as P
    from tasks import keys, plan, steps

    root = tmp_path_factory.mktemp("reads")
    (root / "mlflow").mkdir()
    changes = {"variants": VARIANTS, "quantize": {"calibration_size": 8, "qat_steps": 2, "qat_distill": True}}
    params = pr.write_params(root / "params.yaml", **changes)
    found, made = [], {}
    with pr.isolated(root):
        p = P.load(str(params))
        for r in plan.runs(p, "mrpc"):
            with recording(p, QUIET) as (watched, seen):
                args = plan.arguments(r, watched, made)
                made[r.id] = getattr(steps, r.step).fn(**args)
            found.append((r, seen, set(keys.step_record(r.step, plan.arguments(r, p, made))["reads"])))
    return found


def test_every_step_of_the_plan_ran(read_by_step):
    ran = {(r.step, r.name, r.mode) for r, _, _ in read_by_step}
    assert {"download", "tokenize", "pretrained", "finetune", "prune", "quantize", "evaluate"} == {s for s, _, _ in ran}
    assert {m for s, _, m in ran if s == "quantize"} == set(VARIANTS["dense"]["quantize"])
    assert {("finetune", "gradual", "none"), ("prune", "oneshot", "none"), ("prune", "structured", "none")} <= ran


def test_no_step_reads_a_key_missing_from_its_record(read_by_step):
    missing = {
        r.id: {k: seen[k] for k in sorted(seen.keys() - keyed) if not k.startswith("runtime.")}
        for r, seen, keyed in read_by_step
    }
    missing = {k: v for k, v in missing.items() if v}
    assert not missing, f"read but not in the step's key (its module's reads()): {missing}"


def test_the_recorder_notes_reads_and_ignores_copies():
    import dataclasses

    from recording import recording

    from bertcompress import params as P

    with recording(P.defaults().for_task("mrpc")) as (p, seen):
        q = p.variant("structured", 7)
        copy = dataclasses.replace(q.finetune, lr=1e-3)
        _ = copy.precision, copy.lr  # the copy's lr is this code's, not params'
        q.flat(), q.to_dict()
    assert set(seen) == {"finetune.precision"} and seen["finetune.precision"].startswith(__name__)
