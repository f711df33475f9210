"""The Prefect flow on a tiny MRPC slice, ephemeral API: every variant of the table evaluated, a second run all
cache hits, a changed parameter reruns exactly the steps that read it (a pruning param: the pruned variants only;
a runtime knob: nothing), bad params fail before any work with the CLI's message."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pipeline_runs as pr
import pytest


@pytest.fixture(scope="session")
def flow(tmp_path_factory):
    yield pr.flow_twice(tmp_path_factory)
    pr.stop_ephemeral_server()


def test_first_run_evaluates_every_variant(flow):
    rows = flow["first"].result()
    assert [r["method"] for r in rows] == pr.METHODS and {r["seed"] for r in rows} == {42}
    by = {r["method"]: r for r in rows}
    for row in rows:
        assert 0 <= row["accuracy"] <= 1 and 0 <= row["f1"] <= 1 and row["loss"] > 0
    assert by["dense"]["nonzero_parameters"] > 0.99 * by["dense"]["parameters"]
    for pruned in ("gradual", "oneshot"):  # half the encoder's Linear weights, most of the model's parameters
        assert by[pruned]["nonzero_parameters"] < 0.8 * by["dense"]["nonzero_parameters"]
    # the flow wrote into its workspace, never the work tree (which may hold `make run`'s or `make smoke`'s own)
    made = {p.name for p in (flow["root"] / "outputs" / "flow" / "mrpc").iterdir()}
    assert made and not made & {p.name for p in (pr.REPO / "outputs" / "flow" / "mrpc").glob("*")}


def test_second_run_takes_every_task_from_the_cache(flow):
    with pr.isolated(flow["root"]):
        first, second = pr.task_runs(flow["first"], 15), pr.task_runs(flow["second"], 15)
    assert set(first.values()) == {"Completed"}
    # the report reads the MLflow store as it is now: never cached (tasks/steps.py)
    assert second == dict.fromkeys(first, "Cached") | {"report-mrpc": "Completed"}
    assert len(second) == 3 + 2 + 1 + 3 + 6 + 1  # download, tokenize, pretrained; fine-tunes, pruning, ...
    assert {"download-mrpc", "pretrained", "finetune-mrpc-gradual-s42", "evaluate-mrpc-oneshot+dynamic-s42"} <= set(
        second
    )
    assert flow["second"].result() == flow["first"].result()


def rerun(flow, *overrides: str) -> dict[str, str]:
    from flows.compress import compress

    with pr.isolated(flow["root"]):
        state = compress("mrpc", list(overrides), str(flow["params"]), return_state=True)
        assert state.is_completed()
        return pr.task_runs(state, 16)


def test_a_changed_param_reruns_only_the_steps_that_read_it(flow):
    runs = rerun(flow, "quantize.calibration_size=8")  # read by static/qat only: dynamic int8 ignores it
    assert {n: s for n, s in runs.items() if s != "Cached"} == {"report-mrpc": "Completed"}
    runs = rerun(flow, "evaluate.latency_runs=2")
    assert {n for n, s in runs.items() if s != "Cached"} == {f"evaluate-mrpc-{m}-s42" for m in pr.METHODS} | {
        "report-mrpc"
    }


def test_a_pruning_param_reruns_only_the_pruned_variants(flow):
    runs = rerun(flow, "prune.final_sparsity=0.7")
    rerun_now = {n for n, s in runs.items() if s == "Completed"}
    pruned = {f"{step}-mrpc-{m}-s42" for m in ("gradual", "oneshot") for step in ("evaluate",)}
    pruned |= {
        "finetune-mrpc-gradual-s42",
        "prune-mrpc-oneshot-s42",
        "quantize-mrpc-gradual+dynamic-s42",
        "quantize-mrpc-oneshot+dynamic-s42",
        "evaluate-mrpc-gradual+dynamic-s42",
        "evaluate-mrpc-oneshot+dynamic-s42",
    }
    assert rerun_now == pruned | {"report-mrpc"}  # the dense fine-tune and its int8 model: cache hits


def test_a_runtime_knob_reruns_nothing(flow):
    runs = rerun(flow, "runtime.log_every=1", "runtime.threads=2", "runtime.cuda_graphs=false")
    assert {n: s for n, s in runs.items() if s != "Cached"} == {"report-mrpc": "Completed"}


@pytest.mark.parametrize(
    "task,overrides,cli_overrides",
    [
        ("mrpc", ["finetune.lr=-1"], ["finetune.lr=-1"]),
        ("mrcp", [], []),
        ("mrpc", ["variants.dense.quantize=[int3]"], ["variants.dense.quantize=[int3]"]),
        ("mrpc", ["data.dev_fraction=0.7"], ["data.dev_fraction=0.7"]),  # outside (0, 0.5]
        (
            "mrpc",
            ["data.dev_fraction=null", "experiment.choose_on=dev"],  # choosing on a split the run does not have
            ["data.dev_fraction=null", "experiment.choose_on=dev"],
        ),
        ("mrpc", ["data.max_train_samples=3"], ["data.max_train_samples=3"]),  # one 'not_equivalent' row: no dev side
    ],
)
def test_bad_params_fail_with_the_cli_message(flow, capsys, task, overrides, cli_overrides):
    from bertcompress.cli import main
    from flows.compress import compress
    from tasks import tracking

    assert (
        main(
            [
                "finetune",
                "--task",
                task,
                "--params",
                str(flow["params"]),
                *[arg for o in cli_overrides for arg in ("-S", o)],
            ]
        )
        == 2
    )
    message = capsys.readouterr().err.strip().removeprefix("error: ")
    with pr.isolated(flow["root"]):
        client, experiment = tracking.client()
        runs_before = len(client.search_runs([experiment]))
        state = compress(task, overrides, str(flow["params"]), return_state=True)
        assert state.is_failed() and message in state.message, (message, state.message)
        assert len(client.search_runs([experiment])) == runs_before  # it failed before opening any run
        from flows.compress import main as flow_main

        capsys.readouterr()
        assert (
            flow_main(["--task", task, "--params", str(flow["params"]), *[arg for o in overrides for arg in ("-S", o)]])
            == 2
        )
        said = capsys.readouterr()
        assert said.err.strip() == f"error: {message}" and "Traceback" not in said.out + said.err  # before Prefect


@pytest.mark.parametrize(
    "key", ["prune.method=oneshot", "distill.teacher=dense", "quantize.mode=static", "finetune.seed=7"]
)
def test_keys_the_experiment_sets_per_run_are_refused(flow, capsys, key):
    """Accepted, they would change nothing: each variant's entry and experiment.seeds decide them."""
    from flows.compress import main as flow_main

    with pr.isolated(flow["root"]):
        assert flow_main(["--task", "mrpc", "--params", str(flow["params"]), "-S", key]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {key} is not read by the experiment") and len(err.splitlines()) == 1
    assert ("experiment.seeds" if key.startswith("finetune.seed") else "variants.<name>.") in err


def status(flow, *overrides: str) -> dict[str, tuple[str, str]]:
    from bertcompress import params as P
    from tasks.status import states

    with pr.isolated(flow["root"]):
        return {r.id: (s, why) for r, s, why in states(P.load(str(flow["params"]), list(overrides)), "mrpc")}


def test_status_after_the_flow_says_every_step_is_done(flow):
    said = status(flow)
    assert len(said) == 3 + 3 + 3 + 6 and {s for s, _ in said.values()} == {"done"}  # data; made; int8; evaluated


def test_status_names_exactly_the_chain_a_change_reruns_and_why(flow):
    said = status(flow, "variants.gradual.finetune.precision=bf16")
    again = {run for run, (s, _) in said.items() if s == "will run"}
    assert again == {
        "finetune gradual-s42",
        "evaluate gradual-s42",
        "quantize gradual+dynamic-s42",
        "evaluate gradual+dynamic-s42",
    }
    assert said["finetune gradual-s42"][1] == "finetune.precision fp32 -> bf16"
    assert said["quantize gradual+dynamic-s42"][1] == "after finetune gradual-s42"
    # one-shot pruning without recovery steps trains nothing: precision is not its read, so nothing reruns
    assert not {
        run for run, (s, _) in status(flow, "variants.oneshot.finetune.precision=bf16").items() if s == "will run"
    }


def test_a_cache_entry_whose_output_is_gone_is_a_miss(flow):
    import shutil

    (folder,) = [  # the one made at the params' own sparsity (other tests made others)
        d
        for d in (flow["root"] / "outputs/flow/mrpc").glob("oneshot-s42-*")
        if d.is_dir() and json.loads(Path(f"{d}.step.json").read_text())["reads"]["prune.final_sparsity"] == 0.5
    ]
    shutil.rmtree(folder)
    assert status(flow)["prune oneshot-s42"][0] == "will run"  # its record is no use without it
    runs = rerun(flow)
    assert runs["prune-mrpc-oneshot-s42"] == "Completed" and folder.is_dir()
    # the same weights again: what is made from them is still the cache's
    assert {n for n, s in runs.items() if s != "Cached"} == {"prune-mrpc-oneshot-s42", "report-mrpc"}
    with open(folder / "metrics.json", "a") as f:  # edited since it was made: not done either
        f.write(" ")
    assert status(flow)["prune oneshot-s42"] == ("will run", "its output changed since it was made")
    assert rerun(flow)["prune-mrpc-oneshot-s42"] == "Completed" and status(flow)["prune oneshot-s42"][0] == "done"


def test_a_tracking_store_moved_aside_is_logged_again_from_the_outputs(tmp_path_factory):
    """Issue 35: every output made, the MLflow store moved aside (or lost). The next run, a new process as a user's
    is, redoes no work (no training, no export) yet logs every step's run again from its output and step record,
    so the report, the champion and its registration come back as they were; the run after is all cache hits.
    SST-2 (dev above validation): its flow ships."""
    import shutil
    import subprocess
    import sys

    import pandas as pd

    variants = {"dense": {"from": "pretrained", "quantize": ["dynamic"]}}
    enough = {"max_train_samples": 400, "max_eval_samples": 64}  # beats the majority class: there is a champion
    ws = pr.flow_once(
        tmp_path_factory, "aside", "sst2", variants=variants, data=enough, finetune={"lr": 1e-4, "epochs": 2}
    )
    root, report = ws["root"], ws["report"]
    before = pd.read_csv(report / "summary.csv", index_col="method")
    assert "registered as models:/sst2-compressed@champion (version 1)" in (report / "summary.md").read_text()
    made = {f: f.stat().st_mtime_ns for f in (root / "outputs").rglob("*") if f.is_file()}
    shutil.move(root / "mlflow", root / "mlflow-aside")
    (root / "mlflow").mkdir()
    home = root / "prefect"
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"} | {
        "PREFECT_HOME": str(home),
        "PREFECT_LOCAL_STORAGE_PATH": str(home / "storage"),
        "PREFECT_SERVER_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{home}/prefect.db",
        "MLFLOW_TRACKING_URI": f"sqlite:///{root}/mlflow/mlflow.db",
        "PYTHONPATH": str(pr.REPO),
    }
    command = [sys.executable, "-m", "flows.compress", "--task", "sst2", "--params", str(ws["params"])]
    again = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "logged again from" in again.stdout + again.stderr
    third = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, timeout=600)
    assert third.returncode == 0, third.stderr[-3000:]
    states = re.findall(r"Task run '([^']+)' - Finished in state (\w+)", third.stdout + third.stderr)
    assert {n for n, s in states if s != "Cached"} == {"report-sst2"} and len(states) == 8, states
    assert {f: f.stat().st_mtime_ns for f in (root / "outputs").rglob("*") if f.is_file()} == made  # no work
    after = pd.read_csv(report / "summary.csv", index_col="method")
    timed = [c for c in before.columns if c.endswith("ms")]
    pd.testing.assert_frame_equal(before.drop(columns=timed), after.drop(columns=timed))
    summary = (report / "summary.md").read_text()
    assert "not exported again" in summary and "registered as models:/sst2-compressed@champion (version 1)" in summary
