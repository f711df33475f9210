"""Per-task recipes (issue 36): params.yaml's variant table resolved for each GLUE task (`variants.<name>.tasks`),
what the flow, DVC, `status` and the report read; bad input refused before work; every task's tiny flow runs
its own recipe to the end and its structured cut exports."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pipeline_runs as pr
import pytest
import yaml

from bertcompress import params as P
from tasks import plan, recipes, stage

TASKS = ("mrpc", "sst2", "cola", "stsb", "rte", "wnli")  # the six with data in ../shared/glue


def test_each_task_resolves_its_own_recipe():
    p = P.defaults()
    s = {t: p.for_task(t).variant("structured", 42).prune for t in TASKS}
    assert (s["mrpc"].heads_fraction, s["mrpc"].ffn_fraction, s["mrpc"].recovery_steps) == (0.67, 0.75, 1040)
    assert (s["sst2"].heads_fraction, s["sst2"].recovery_steps) == (0.67, 7580)  # 4 SST-2 epochs, not half of one
    assert (s["cola"].heads_fraction, s["cola"].ffn_fraction, s["cola"].recovery_steps) == (0.5, 0.625, 1040)
    assert s["stsb"] == s["rte"] == s["wnli"] == s["mrpc"]  # none studied: the entry's values
    g = {t: p.for_task(t).variant("gradual", 42).finetune for t in TASKS}
    assert (g["sst2"].epochs, g["sst2"].lr) == (3, 5e-5) and (g["mrpc"].epochs, g["mrpc"].lr) == (15, 1e-4)
    rte = p.for_task("rte")  # dense's recipe sets its lr: no sweep
    assert rte.variant("dense", 42).finetune.lr == 1e-4 and rte.experiment.lr_candidates == []
    assert plan.sweep(rte, "rte") == [] and plan.sweep(p, "sst2") != []
    assert recipes.recipes(p.for_task("sst2"), "sst2") == "recipes (sst2): own: dense, gradual, structured"
    assert recipes.recipes(p.for_task("cola"), "cola") == (
        "recipes (cola): own: dense, structured; none studied: gradual (the table's values, mrpc's recipe)"
    )
    assert recipes.recipes(p.for_task("wnli"), "wnli") == (
        "recipes (wnli): none studied: dense, gradual, structured (the table's values, mrpc's recipe)"
    )
    assert recipes.recipes(P.load(pr.REPO / "presets" / "quick.yaml").for_task("sst2"), "sst2") == ""  # its own table
    assert p.for_task("sst2").for_task("sst2") is not None  # resolving again is a no-op
    with pytest.raises(RuntimeError, match="for_task"):  # which task's recipe? never silently the entry's
        p.variant("structured", 42)


def test_an_override_reaches_the_recipe_it_names_and_dvc_plans_per_task():
    p = P.load(
        None, ["variants.structured.tasks.sst2.prune.recovery_steps=100", "variants.structured.prune.recovery_steps=50"]
    )
    assert p.for_task("sst2").variant("structured", 42).prune.recovery_steps == 100  # the recipe's key wins
    assert p.for_task("mrpc").variant("structured", 42).prune.recovery_steps == 50  # mrpc: {} runs the entry's
    files = stage.dvc_plan(P.load(None, ["experiment.tasks=[mrpc, sst2, rte]"]))
    runs = files["structured.json"]["runs"]
    assert [runs[t]["42"]["prune"]["prune.recovery_steps"] for t in ("mrpc", "sst2", "rte")] == [1040, 7580, 1040]
    assert files["sweep.json"]["rte"] == {"lr_candidates": []} and files["sweep.json"]["sst2"]["lr_candidates"]
    assert files["dense.json"]["runs"]["rte"]["42"]["finetune"]["finetune.lr"] == 1e-4  # its own, not "sweep"
    assert files["dense.json"]["runs"]["sst2"]["42"]["finetune"]["finetune.lr"] == "sweep"
    assert files["report.json"]["objective"] == "latency"


@pytest.mark.slow  # a process each: make test-fast leaves them to the slow tier
@pytest.mark.parametrize(
    "override,said",
    [
        ("variants.structured.tasks.sst-2.prune.recovery_steps=5", "variants.structured.tasks: unknown task 'sst-2'"),
        ("variants.structured.tasks.sst2.prune.recovery_step=5", "variants.structured.tasks.sst2: unknown key"),
        ("variants.structured.tasks.sst2.prune.heads_fraction=1.5", "the sst2 recipe: "),
        ("experiment.objective=speed", "experiment.objective 'speed' is unknown; choose one of: latency, size"),
    ],
)
def test_bad_recipes_and_objectives_are_one_line_before_work(override, said, tmp_path):
    """`bertcompress status` (what the flow and DVC check first): exit 2, one line naming the key, nothing
    written."""
    shown = subprocess.run(
        [sys.executable, "-m", "tasks.status", "--task", "sst2", "-S", override],
        cwd=pr.REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert shown.returncode == 2 and len(shown.stderr.strip().splitlines()) == 1, shown.stderr
    assert said in shown.stderr and not shown.stdout


def few_steps(entry: dict) -> dict:
    """The table's entry with its recipes kept but every recovery cut to 4 steps (one a stage): the path, not the
    accuracy."""
    entry = {k: v for k, v in entry.items() if k != "quantize"}
    for recipe in [entry, *(entry.get("tasks") or {}).values()]:
        if "recovery_steps" in (recipe or {}).get("prune", {}):
            recipe["prune"]["recovery_steps"] = 4  # one a stage
    return entry


# CoLA: its own cut and MCC, end to end (SST-2 and MRPC run in tests/test_flow.py, STS-B's regression path in
# tests/test_stsb.py); every task's resolution is checked above, without training. One flow: CI's time is short.
@pytest.mark.parametrize("task", ["cola"])
def test_a_tasks_tiny_flow_runs_its_recipe_and_its_structured_cut_exports(tmp_path_factory, task):
    """params.yaml's dense and structured entries, recipes and all (recovery cut to 4 steps), on a tiny slice of
    the task: the flow ends (its report names each variant's recipe), the structured model has the task's shape,
    and it exports (ONNX, loaded and run by onnxruntime in the manifest's check)."""
    from bertcompress.export import export

    table = yaml.safe_load((pr.REPO / "params.yaml").read_text())["variants"]
    variants = {n: few_steps(table[n]) for n in ("dense", "structured")}
    ws = pr.flow_once(tmp_path_factory, f"recipe-{task}", task, variants=variants)
    assert ws["state"].is_completed()
    summary = (ws["report"] / "summary.md").read_text()
    assert recipes.recipes(P.load(ws["params"]).for_task(task), task) in summary
    assert "champion: " in summary  # shipped, or none (a 32-row slice rarely beats the majority class)
    recipe = P.defaults().for_task(task).variant("structured", 42).prune
    (folder,) = [f for f in (ws["root"] / "outputs" / "flow" / task).glob("structured-s42-*") if f.is_dir()]
    shape = json.loads((folder / "variant.json").read_text())["structure"]  # MiniLM: 12 heads, 1536 neurons a layer
    assert shape["heads"] == [12 - round(12 * recipe.heads_fraction)] * 6
    assert shape["intermediate"] == [1536 - round(1536 * recipe.ffn_fraction)] * 6
    m = export(str(folder), str(ws["root"] / "export"), task, "onnx", 32, validation=str(next(
        (ws["root"] / "data" / "tokenized" / task).glob("validation-*.npz"))))  # fmt: skip
    assert m["format"] == "onnx" and m["validation"]["examples"] == 32


@pytest.mark.slow  # seconds of subprocesses or servers: make test-fast leaves it to the slow tier
def test_a_refusal_names_the_override_and_how_to_restore_what_dvc_rewrote(tmp_path):
    """Issue 37's newcomer list: a typo inside a variant given with -S is blamed on that -S, not on the params
    file; a refused `dvc exp run -S` (DVC writes the value into params.yaml first) says how to restore the file."""
    with pytest.raises(P.UserError, match=r"^override -S variants.structured.finetune.lrr=1: variants.structured: "):
        P.load(pr.REPO / "presets" / "quick.yaml", ["variants.structured.finetune.lrr=1"])
    params = tmp_path / "params.yaml"
    params.write_text((pr.REPO / "params.yaml").read_text())
    git = ["git", "-c", "user.email=t@t", "-c", "user.name=t"]
    subprocess.run([*git, "init", "-q"], cwd=tmp_path, check=True)
    subprocess.run([*git, "add", "params.yaml"], cwd=tmp_path, check=True)
    subprocess.run([*git, "commit", "-qm", "params"], cwd=tmp_path, check=True)
    params.write_text(params.read_text().replace("  method: none               # none", "  method: oneshot  # none"))
    env = {**os.environ, "PYTHONPATH": str(pr.REPO)}
    said = subprocess.run(
        [sys.executable, "-m", "tasks.stage", "plan"], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert said.returncode == 2 and len(said.stderr.strip().splitlines()) == 1, said.stderr
    assert "prune.method=oneshot is not read by the experiment" in said.stderr
    assert "`git checkout params.yaml` restores it" in said.stderr and not (tmp_path / "plan").exists()
