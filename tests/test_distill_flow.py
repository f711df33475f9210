"""Distillation through both drivers' wiring: the flow trains a variant `from: dense` under gradual first-order
pruning, distilled from the same seed's dense model (not a new fine-tune); the teacher's folder is one of the
step's inputs (its cache key and resume identity), and MLflow shows the recipe."""

from __future__ import annotations

import json
from pathlib import Path

import pipeline_runs as pr
import pytest

import mlflow
from bertcompress import io

KD = {
    "dense": {"from": "pretrained"},
    "kd": {
        "from": "dense",
        "finetune": {"epochs": 3},
        "prune": {"method": "gradual", "criterion": "first_order", "ranking": "global", "final_sparsity": 0.8},
        "distill": {"teacher": "dense", "hidden_weight": 1.0},
    },
}


def test_a_distilled_variant_trains_on_from_its_teacher(tmp_path_factory):
    run = pr.flow_once(tmp_path_factory, "kd", "mrpc", variants=KD)
    try:
        assert run["state"].is_completed()
        rows = {r["method"]: r for r in run["state"].result()}
        assert set(rows) == {"dense", "kd"}
        assert rows["kd"]["nonzero_parameters"] < rows["dense"]["nonzero_parameters"] - 8_000_000  # 80 % of 10.6 M
        outputs = run["root"] / "outputs" / "flow" / "mrpc"
        dense = next(d for d in outputs.glob("dense-s42-*") if d.is_dir())
        kd = next(d for d in outputs.glob("kd-s42-*") if d.is_dir())
        made = json.loads(Path(f"{kd}.step.json").read_text())  # its step record
        # the student started from the dense variant's weights and was taught by that same folder
        assert made["inputs"]["teacher"] == made["inputs"]["base"] == io.content_hash(dense)
        assert made["reads"]["distill.teacher"] == "dense" and made["reads"]["prune.criterion"] == "first_order"
        metrics = json.loads((kd / "metrics.json").read_text())
        assert metrics["sparsity"]["overall"] == pytest.approx(0.8, abs=0.002)
        with pr.isolated(run["root"]):
            logged = mlflow.search_runs(
                search_all_experiments=True, filter_string="tags.method = 'kd'", output_format="list"
            )
        assert logged and {r.data.params["distill.teacher"] for r in logged} == {"dense"}
        assert {r.data.params["prune.criterion"] for r in logged} == {"first_order"}
    finally:
        pr.stop_ephemeral_server()
