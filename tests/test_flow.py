"""The Prefect flow on a tiny MRPC slice, ephemeral API: every variant evaluated, a second run all cache hits,
a changed parameter reruns only the steps that read it, bad params fail before any work with the CLI's message."""
from __future__ import annotations

import pytest

import pipeline_runs as pr

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
    assert (flow["root"] / "outputs" / "mrpc").is_dir() and not (pr.REPO / "outputs" / "mrpc" / "flow").exists()


def test_second_run_takes_every_task_from_the_cache(flow):
    with pr.isolated(flow["root"]):
        first, second = pr.task_runs(flow["first"], 15), pr.task_runs(flow["second"], 15)
    assert set(first.values()) == {"Completed"}
    # the report reads the MLflow store as it is now: never cached (tasks/steps.py)
    assert second == dict.fromkeys(first, "Cached") | {"report-mrpc": "Completed"}
    assert len(second) == 2 + 2 + 1 + 3 + 6 + 1
    assert {"download-mrpc", "finetune-mrpc-gradual-s42", "evaluate-mrpc-oneshot+dynamic-s42"} <= set(second)
    assert flow["second"].result() == flow["first"].result()


def test_a_changed_param_reruns_only_the_steps_that_read_it(flow):
    from flows.compress import compress

    with pr.isolated(flow["root"]):
        state = compress("mrpc", ["quantize.calibration_size=8"], str(flow["params"]), return_state=True)
        runs = pr.task_runs(state, 14)
    assert state.is_completed()
    assert {n: s for n, s in runs.items() if n.startswith("quantize")} == dict.fromkeys(
        ["quantize-mrpc-dense+dynamic-s42", "quantize-mrpc-gradual+dynamic-s42",
         "quantize-mrpc-oneshot+dynamic-s42"], "Completed")
    assert all(s == "Cached" for n, s in runs.items() if n.split("-")[0] in ("download", "tokenize", "finetune",
                                                                               "prune"))


@pytest.mark.parametrize("task,overrides,cli_overrides", [
    ("mrpc", ["finetune.lr=-1"], ["finetune.lr=-1"]),
    ("mrcp", [], []),
    ("mrpc", ["experiment.quantize=[int3]"], ["quantize.mode=int3"]),
])
def test_bad_params_fail_with_the_cli_message(flow, capsys, task, overrides, cli_overrides):
    from bertcompress.cli import main
    from flows.compress import compress
    from tasks import tracking

    assert main(["finetune", "--task", task, "--params", str(flow["params"]),
                 *[arg for o in cli_overrides for arg in ("-S", o)]]) == 2
    message = capsys.readouterr().err.strip().removeprefix("error: ")
    with pr.isolated(flow["root"]):
        client, experiment = tracking.client()
        runs_before = len(client.search_runs([experiment]))
        state = compress(task, overrides, str(flow["params"]), return_state=True)
        assert state.is_failed() and message in state.message, (message, state.message)
        assert len(client.search_runs([experiment])) == runs_before  # it failed before opening any run
