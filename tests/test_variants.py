"""The experiment as data: a variant added to params.yaml (the README's gradual80 entry, exactly) runs in the flow,
is logged to MLflow and reported, with no code change; each step is keyed on the leaf params it reads; the code
has no import cycle (function-local imports included), keeps its layers, and no module is over 250 lines."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pipeline_runs as pr
import pytest
import yaml

NEW = (
    "finetune-mrpc-gradual80-s42",
    "evaluate-mrpc-gradual80-s42",
    "quantize-mrpc-gradual80+dynamic_emb-s42",
    "evaluate-mrpc-gradual80+dynamic_emb-s42",
)


def readme_entry() -> dict:
    """The variant entry the README shows a user to add: {name: entry}."""
    text = (pr.REPO / "README.md").read_text()
    block = re.search(r"```yaml\n(variants:\n(?:(?!```).)*gradual80:(?:(?!```).)*)```", text, re.S).group(1)
    return yaml.safe_load(block)["variants"]


def with_entry(params: Path, out: Path) -> Path:
    raw = yaml.safe_load(params.read_text())
    raw["variants"] |= readme_entry()
    out.write_text(yaml.safe_dump(raw, sort_keys=False))
    return out


@pytest.fixture(scope="module")
def flow(tmp_path_factory):
    yield pr.flow_twice(tmp_path_factory)
    pr.stop_ephemeral_server()


def test_the_readme_entry_is_one_variant():
    assert list(readme_entry()) == ["gradual80"]
    from bertcompress import params as P

    p = P.load(None, [f"variants.gradual80={yaml.safe_dump(readme_entry()['gradual80'], default_flow_style=True)}"])
    p = p.for_task("mrpc")
    q = p.variant("gradual80", 42)
    assert q.prune.method == "gradual" and q.prune.final_sparsity == 0.8
    assert p.variant("gradual", 42).flat() == P.defaults().for_task("mrpc").variant("gradual", 42).flat()  # untouched


def test_an_added_variant_runs_is_logged_and_reported(flow):
    import pandas as pd

    from flows.compress import compress
    from tasks import tracking

    params = with_entry(flow["params"], flow["root"] / "params-gradual80.yaml")
    with pr.isolated(flow["root"]):
        state = compress("mrpc", params_file=str(params), return_state=True)
        runs = pr.task_runs(state, 20)
        client, experiment = tracking.client()
        (parent,) = client.search_runs([experiment], f"tags.invocation = '{state.state_details.flow_run_id}'")
        logged = {
            r.data.tags["method"]: r
            for r in client.search_runs([experiment], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
        }
    assert state.is_completed()
    assert {n for n, s in runs.items() if s == "Completed"} == {*NEW, "report-mrpc"}  # the rest: cache hits
    rows = {r["method"]: r for r in state.result()}
    for method in ("gradual80", "gradual80+dynamic_emb"):
        assert method in rows and method in logged and logged[method].info.status == "FINISHED"
    assert logged["gradual80"].data.params["prune.final_sparsity"] == "0.8"
    assert logged["gradual80"].data.metrics["sparsity.overall"] == pytest.approx(0.8, abs=0.01)
    assert rows["gradual80"]["nonzero_parameters"] < rows["gradual"]["nonzero_parameters"]
    summary = pd.read_csv(flow["root"] / "results/report/mrpc/summary.csv", index_col="method")
    assert {"majority class (constant)", "gradual80", "gradual80+dynamic_emb", *pr.METHODS} == set(summary.index)
    assert summary.loc["gradual80", "f1 mean"] == pytest.approx(logged["gradual80"].data.metrics["f1"])


def test_each_step_reads_only_its_leaf_params():
    from bertcompress import params as P
    from tasks import keys

    p = P.load(None, ["prune.recovery_steps=0"]).for_task("mrpc")
    dense, gradual, oneshot = (p.variant(n, 42) for n in ("dense", "gradual", "oneshot"))
    assert [k for k in keys.reads("finetune", dense) if k.startswith("prune.")] == ["prune.method"]  # none: no schedule
    assert {"prune.final_sparsity", "prune.end_step", "prune.frequency"} <= set(keys.reads("finetune", gradual))
    assert set(keys.reads("prune", oneshot)) == {
        "prune.method",
        "prune.scope",
        "prune.ranking",
        "prune.pattern",
        "prune.final_sparsity",
        "prune.recovery_steps",
        "prune.embedding_sparsity",
    }
    assert {"distill.teacher", "prune.criterion", "prune.momentum"} <= set(keys.reads("finetune", gradual))
    assert keys.reads("quantize", p.variant("dense", 42, "dynamic")) == {"quantize.mode": "dynamic"}
    every = {
        k
        for step in keys.MODULES
        for q in (dense, gradual, oneshot)
        if (step == "prune") == (q is oneshot)
        for k in keys.reads(step, q)
    }
    assert not [k for k in every if k.startswith(("runtime.", "experiment."))]
    # a pruning param changes the pruned variants' configuration, never the dense one's
    q = P.load(None, ["prune.final_sparsity=0.8"])
    assert keys.digest("mrpc", q, "dense", 42) == keys.digest("mrpc", p, "dense", 42)
    assert keys.digest("mrpc", q, "oneshot", 42) != keys.digest("mrpc", p, "oneshot", 42)
    assert keys.digest("mrpc", P.load(None, ["runtime.threads=1"]), "gradual", 42) == keys.digest(
        "mrpc", p, "gradual", 42
    )


def test_a_step_is_keyed_on_the_code_it_imports():
    from bertcompress import record

    finetune, prune = set(record.code_files("finetune")), set(record.code_files("prune"))
    assert {"bertcompress/finetune.py", "bertcompress/loop.py", "bertcompress/masks.py"} <= finetune
    assert not {"bertcompress/prune.py", "bertcompress/quantize.py", "bertcompress/evaluate.py"} & finetune
    assert "bertcompress/variant.py" in prune and "bertcompress/finetune.py" not in prune


def _graph() -> dict[str, set[str]]:
    """module -> project modules it imports, anywhere in its body (function-local imports included)."""
    mods = {
        ".".join(f.relative_to(pr.REPO).with_suffix("").parts): f
        for pkg in ("bertcompress", "tasks", "flows", "bench", "bench/studies")
        for f in (pr.REPO / pkg).glob("*.py")
    }
    graph = {}
    for name, path in mods.items():
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = name.rsplit(".", 1)[0] if node.level else ""
                target = ".".join(filter(None, [base, node.module or ""]))
                deps |= {f"{target}.{a.name}" if f"{target}.{a.name}" in mods else target for a in node.names}
            elif isinstance(node, ast.Import):
                deps |= {a.name for a in node.names}
        graph[name] = {d for d in deps if d in mods and d != name and not d.endswith("__init__")}
    return graph


def test_no_import_cycles_and_downward_layers():
    graph = _graph()
    state: dict[str, int] = {}

    def visit(node, path):
        state[node] = 1
        for dep in graph[node]:
            assert state.get(dep) != 1, f"import cycle: {' -> '.join(path + [dep])}"
            if dep not in state:
                visit(dep, path + [dep])
        state[node] = 2

    for node in graph:
        if node not in state:
            visit(node, [node])
    steps = {f"bertcompress.{m}" for m in ("finetune", "prune", "quantize", "evaluate")}
    for step in steps:
        assert not graph[step] & steps, f"{step} imports another step: {graph[step] & steps}"
    for name, deps in graph.items():
        if name.startswith("bench."):  # benchmarks: no cycles (checked above), any library
            continue
        if name.startswith("bertcompress."):
            assert not [d for d in deps if not d.startswith("bertcompress.")], name
            assert "bertcompress.cli" not in deps, name
        text = (pr.REPO / (name.replace(".", "/") + ".py")).read_text()
        mlflow_code = ("tasks.tracking", "tasks.mlflow_model")  # the latter is MLflow's model code, never imported
        assert ("import mlflow" in text or "from mlflow" in text) == (name in mlflow_code), name
        assert "tasks.mlflow_model" not in {d for deps in graph.values() for d in deps}
        if name.startswith("bertcompress."):
            assert "prefect" not in text.replace("Prefect", ""), name


def test_the_make_run_preset_is_a_quick_experiment_of_the_embedded_default():
    """`make run` runs the flow on presets/quick.yaml: a valid experiment (every check that needs no data passes)
    on the packaged model, one seed, no sweep, dense and a structured cut distilled from it (the export makes the
    int8 artifact); make smoke's preset is the same kinds on SST-2."""
    from bertcompress import params as P
    from bertcompress.model import preflight

    assert "--params presets/quick.yaml" in (pr.REPO / "Makefile").read_text()
    p = P.load(pr.REPO / "presets" / "quick.yaml")
    preflight("mrpc", p)
    assert p.model.name == P.load(None).model.name and len(p.experiment.seeds) == 1 and not p.experiment.lr_candidates
    assert {v.prune.method for v in (p.variant(n, 42) for n in p.variants)} == {"none", "structured"}
    assert p.variant("structured", 42).distill.teacher == "dense"
    smoke = P.load(pr.REPO / "presets" / "smoke.yaml")
    preflight("sst2", smoke)
    assert smoke.experiment.tasks == ["sst2"] and set(smoke.variants) == set(p.variants)
