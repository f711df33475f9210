"""bench/compression.py builds params.yaml's own variant table from the plan (tasks/plan.py), on a tiny real MRPC
slice: every evaluation of the plan is a row, a variant trained on from another (gradual, from dense) is a
fine-tune of that variant's folder distilled from it, and structured pruning is distilled from its teacher."""

from __future__ import annotations

import json
from pathlib import Path

import pipeline_runs as pr
import pytest

pytestmark = pytest.mark.slow  # subprocesses, servers or a whole bench: the slow tier (make test)

TINY = [
    "data.max_train_samples=32",
    "data.max_eval_samples=32",
    "tokenize.max_length=32",
    "finetune.batch_size=16",
    "finetune.epochs=2",
    "evaluate.batch_size=32",
    "runtime.threads=1",
    "variants.gradual.finetune.epochs=2",
    "variants.structured.prune.recovery_steps=4",
    "variants.oneshot.prune.recovery_steps=0",
]


def test_the_bench_builds_the_projects_own_table(tmp_path):  # no capsys: the bench imports Prefect, whose log
    # handler would keep the test's captured stdout, closed after it, for every later flow of the session
    from bench import compression
    from bertcompress import io
    from bertcompress import params as P
    from tasks import plan

    with pr.env_vars(MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path}/mlflow.db"):
        assert (
            compression.main(
                [
                    "--task",
                    "mrpc",
                    "--params",
                    str(pr.REPO / "params.yaml"),
                    "--out",
                    str(tmp_path),
                    "--runs",
                    "1",
                    "--rounds",
                    "1",
                    "--threads",
                    "1",
                    "--no-compile",
                    "--no-results",
                    *[a for o in TINY for a in ("-S", o)],
                ]
            )
            == 0
        )
    p = P.load(pr.REPO / "params.yaml", TINY)
    labels = [plan.method(r.name, r.mode) for r in plan.runs(p, "mrpc") if r.step == "evaluate" and r.seed == 42]
    rows = [r["variant"] for r in json.loads((tmp_path / "mrpc" / "rows.json").read_text())]
    assert rows == labels and {"gradual", "structured+dynamic_emb"} <= set(rows)
    root, dense = tmp_path / "mrpc", io.content_hash(tmp_path / "mrpc" / "dense")
    gradual = json.loads(Path(f"{root}/gradual.step.json").read_text())
    assert gradual["step"] == "finetune" and gradual["inputs"]["base"] == gradual["inputs"]["teacher"] == dense
    structured = json.loads(Path(f"{root}/structured.step.json").read_text())
    assert structured["step"] == "prune" and structured["inputs"]["teacher"] == dense
