"""The DVC pipeline in a workspace of its own (a tmp git repo with the project's sources and a tiny params.yaml):
dvc repro end to end, then a no-op; metrics and plots show; dvc exp run -S reruns exactly the stages whose plan
reads the param (a pruning param: the pruned variants only; a runtime knob: none); the same metrics as the Prefect
flow; bad params stop it with the CLI's message; a killed stage's run is KILLED."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pipeline_runs as pr
import pytest

VARIANTS = {
    "dense": {"from": "pretrained", "quantize": ["dynamic"]},
    "oneshot": {"from": "dense", "prune": {"method": "oneshot"}},
}


def dvc(repo: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run(
        [sys.executable, "-m", "dvc", *args], cwd=repo, capture_output=True, text=True, env=_env(repo), timeout=900
    )
    if check and done.returncode:
        pytest.fail(f"dvc {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
    return done


def _env(repo: Path) -> dict:
    bin_dir = str(Path(sys.executable).parent)  # `python` in dvc.yaml's commands is this venv's
    return {
        **os.environ,
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "DVC_NO_ANALYTICS": "1",
        "MLFLOW_TRACKING_URI": f"sqlite:///{repo}/mlflow/mlflow.db",
        "PREFECT_HOME": str(repo / ".prefect"),
    }


@pytest.fixture(scope="session")
def repo(tmp_path_factory):
    """The workspace after two `dvc repro`: (root, first output, second output)."""
    root = pr.copy_project(
        tmp_path_factory.mktemp("dvc"),
        "bertcompress",
        "tasks",
        "dvc.yaml",
        ".dvc",
        ".dvcignore",
        ".gitignore",
        "prefect.toml",
    )
    pr.write_params(root / "params.yaml", variants=VARIANTS)
    (root / "mlflow").mkdir()
    git = lambda *a: subprocess.run(["git", *a], cwd=root, check=True, capture_output=True)  # noqa: E731
    git("init", "-q")
    git("-c", "user.name=t", "-c", "user.email=t@t", "add", "-A")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "tiny workspace")
    first, second = dvc(root, "repro"), dvc(root, "repro")
    git("add", "dvc.lock")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "repro")
    return root, first.stdout, second.stdout


@pytest.fixture(scope="session")
def flow(tmp_path_factory):
    yield pr.flow_twice(tmp_path_factory)
    pr.stop_ephemeral_server()


ALWAYS = {"download@mrpc"}  # always_changed: its source (outside the repo) is read every time, rewritten unchanged


def running(out: str, always: bool = False) -> set[str]:
    """The stages a dvc command ran (the always-run download stages only if `always`)."""
    ran = {line.split("'")[1] for line in out.splitlines() if line.startswith("Running stage '")}
    return ran if always else ran - ALWAYS


def test_repro_runs_every_stage_then_is_a_no_op(repo):
    root, first, second = repo
    assert running(first, always=True) == {
        "plan",
        "download@mrpc",
        "tokenize@mrpc",
        "pretrained",
        "sweep",
        "variant@dense",
        "variant@oneshot",
        "report@mrpc",
    }
    assert running(second, always=True) == ALWAYS  # it read the source, found it unchanged: nothing after it ran
    assert (root / "outputs/dense/mrpc-s42/model.safetensors").is_file()
    assert (root / "outputs/dense/mrpc-s42.dynamic/weights.pt").is_file()
    assert (root / "outputs/oneshot/mrpc-s42/model.safetensors").is_file()
    report = (root / "results/report/mrpc/report.md").read_text()
    assert "| dense+dynamic | 1 |" in report and "| oneshot | 1 |" in report
    assert "No sweep: finetune.lr = 2e-05" in report


def test_metrics_and_plots_show(repo):
    root = repo[0]
    metrics = json.loads(dvc(root, "metrics", "show", "--json").stdout)
    data = next(iter(metrics.values()))["data"]["results/variants/dense.json"]["data"]["mrpc-s42"]
    assert set(data) == {"fp32", "dynamic"} and 0 <= data["fp32"]["accuracy"] <= 1
    assert data["dynamic"]["size_mb"] < data["fp32"]["size_mb"]
    plots = json.loads(dvc(root, "plots", "show", "--json").stdout)
    (plot,) = plots["data"]["results/history/dense.json"]
    assert [row["epoch"] for row in plot["content"]["data"]["values"]] == [1, 2]
    figures = {f"results/report/mrpc/figures/mrpc-{n}.png" for n in ("epochs", "metric-vs-sparsity", "pareto")}
    assert figures <= set(plots["data"])


def test_same_metrics_as_the_flow(repo, flow):
    dvc_rows = json.loads((repo[0] / "results/variants/dense.json").read_text())["mrpc-s42"]
    flow_rows = {r["method"]: r for r in flow["first"].result()}
    for mode, method in (("fp32", "dense"), ("dynamic", "dense+dynamic")):
        for key in ("accuracy", "f1", "parameters", "nonzero_parameters", "state_dict_mb", "compact_mb"):
            assert dvc_rows[mode][key] == flow_rows[method][key], (mode, key)
        assert dvc_rows[mode]["loss"] == pytest.approx(flow_rows[method]["loss"], rel=1e-6)


def test_exp_run_with_a_set_param_reruns_only_what_reads_it(repo):
    root = repo[0]
    out = dvc(root, "exp", "run", "-S", "quantize.calibration_size=8").stdout  # read by no variant here
    assert running(out) == {"plan"}
    out = dvc(root, "exp", "run", "-S", "prune.final_sparsity=0.7").stdout  # read by the pruned variant only
    assert running(out) == {"plan", "variant@oneshot", "report@mrpc"}
    out = dvc(root, "exp", "run", "-S", "runtime.log_every=1", "-S", "runtime.threads=2").stdout
    assert running(out) == {"plan"}  # the plan's files come out the same: no stage after it runs
    out = dvc(root, "exp", "run", "-S", "evaluate.latency_runs=2").stdout  # inside the stage: evaluation only
    assert running(out) == {"plan", "variant@dense", "variant@oneshot", "report@mrpc"}
    assert "finetune mrpc dense-s42: up to date" in out and "quantize mrpc dense+dynamic-s42: up to date" in out
    assert "prune mrpc oneshot-s42: up to date" in out
    exps = json.loads(dvc(root, "exp", "show", "--json").stdout)
    params = [
        e["data"]["params"]["params.yaml"]["data"]["quantize"]["calibration_size"]
        for b in exps
        for e in [b, *[x for run in b.get("experiments") or [] for x in run["revs"]]]
        if e.get("data")
    ]
    assert 8 in params and 16 in params


def test_dvc_runs_nest_under_one_parent_per_repro(repo):
    from tasks import tracking

    with pr.env_vars(MLFLOW_TRACKING_URI=f"sqlite:///{repo[0]}/mlflow/mlflow.db"):
        client, experiment = tracking.client()
        parents = client.search_runs([experiment], "tags.driver = 'dvc'", order_by=["attributes.start_time"])
        repro = parents[0]
        runs = {
            r.data.tags["method"]: r
            for r in client.search_runs([experiment], f"tags.`mlflow.parentRunId` = '{repro.info.run_id}'")
        }
    assert repro.data.tags["git_commit"] and repro.info.status == "FINISHED"
    assert sorted(runs) == ["dense", "dense+dynamic", "oneshot"]
    assert all(r.info.status == "FINISHED" for r in runs.values())
    assert [m.step for m in client.get_metric_history(runs["dense"].info.run_id, "val_loss")] == [1, 2]
    assert {"state_dict_mb", "compressed_mb", "latency_batch1_ms"} <= set(runs["dense+dynamic"].data.metrics)


def test_bad_params_stop_repro_with_the_cli_message(repo, capsys):
    from bertcompress.cli import main

    root = repo[0]
    params = (root / "params.yaml").read_text()
    assert main(["finetune", "--task", "mrpc", "--params", str(root / "params.yaml"), "-S", "finetune.lr=-1"]) == 2
    message = capsys.readouterr().err.strip()
    try:
        (root / "params.yaml").write_text(params.replace("lr: 2.0e-05", "lr: -1"))
        done = dvc(root, "repro", check=False)
    finally:
        (root / "params.yaml").write_text(params)
    assert done.returncode != 0 and message in done.stderr + done.stdout
    assert "Running stage 'plan'" in done.stdout


@pytest.mark.parametrize("key", ["prune.method=oneshot", "finetune.seed=7"])
def test_exp_run_refuses_a_key_the_experiment_sets_per_run(repo, key):
    """`dvc exp run -S prune.method=oneshot` would change nothing (each variant's entry decides it): refused at
    the plan stage with one line, before any variant stage runs."""
    root = repo[0]
    params = (root / "params.yaml").read_text()
    try:
        done = dvc(root, "exp", "run", "-S", key, check=False)
    finally:
        (root / "params.yaml").write_text(params)  # a failed `exp run` leaves its -S in the workspace
    assert done.returncode != 0 and f"error: {key} is not read by the experiment" in done.stderr + done.stdout
    assert "Running stage 'plan'" in done.stdout and "Running stage 'variant@" not in done.stdout


def test_a_killed_stage_leaves_its_run_killed(repo, tmp_path):
    import shutil

    from tasks import tracking

    root = repo[0]
    slow = pr.write_params(
        tmp_path / "slow.yaml", variants=VARIANTS, finetune={"epochs": 50}, experiment={"seeds": [7]}
    )
    stage = subprocess.Popen(
        [sys.executable, "-m", "tasks.stage", "variant", "--name", "dense", "--params", str(slow)],
        cwd=root,
        env=_env(root),
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 300
        while not stage.stdout.readline().startswith("epoch=1") and time.monotonic() < deadline:
            pass
        stage.send_signal(signal.SIGTERM)
        assert stage.wait(timeout=120) == 143
    finally:
        stage.kill()
        shutil.rmtree(root / "outputs/dense/mrpc-s7.partial", ignore_errors=True)  # and the key it resumes under:
        (root / "outputs/dense/mrpc-s7.partial.step.json").unlink(missing_ok=True)  # the stage's outs as they were
        (root / "outputs/dense/mrpc-s7.lock").unlink(missing_ok=True)
    with pr.env_vars(MLFLOW_TRACKING_URI=f"sqlite:///{root}/mlflow/mlflow.db"):
        client, experiment = tracking.client()
        (run,) = client.search_runs([experiment], "tags.seed = '7'")
    assert run.info.status == "KILLED"


def test_the_variant_stages_expand_the_table():
    """dvc.yaml holds no list of variants: its variant stages are the params.yaml table, whatever it holds."""
    done = dvc(pr.REPO, "stage", "list", "--name-only")
    from bertcompress import params as P

    assert {s for s in done.stdout.split() if s.startswith("variant@")} == {
        f"variant@{n}" for n in P.load(pr.REPO / "params.yaml").variants
    }


def test_an_added_variant_is_one_more_stage(repo):
    """The README's gradual80 entry added to params.yaml: dvc repro runs its stage (and the plan and the report)
    only, its metrics and the report's rows appear, and the next repro is a no-op."""
    import yaml
    from test_variants import readme_entry

    root = repo[0]
    raw = yaml.safe_load((root / "params.yaml").read_text())
    raw["variants"] |= readme_entry()
    (root / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    assert running(dvc(root, "repro").stdout) == {"plan", "variant@gradual80", "report@mrpc"}
    metrics = json.loads((root / "results/variants/gradual80.json").read_text())["mrpc-s42"]
    assert set(metrics) == {"fp32", "dynamic_emb"}
    assert metrics["fp32"]["nonzero_parameters"] < 0.75 * metrics["fp32"]["parameters"]
    report = (root / "results/report/mrpc/report.md").read_text()
    assert "| gradual80 | 1 |" in report and "| gradual80+dynamic_emb | 1 |" in report
    assert running(dvc(root, "repro").stdout) == set()


def test_a_changed_glue_source_reruns_what_reads_it(repo, tmp_path, glue_dir):
    """The same GLUE_DIR, one label flipped in its files: `dvc repro` re-reads it and re-tokenizes (the source is
    outside the repo, so the download stage always runs and decides by content); put back, the data is as before."""
    import shutil

    import pandas as pd

    root = repo[0]
    src = tmp_path / "glue"
    shutil.copytree(glue_dir / "mrpc", src / "mrpc")
    before = sorted(f.name for f in (root / "data/dvc/tokenized/mrpc").iterdir())
    with pr.env_vars(GLUE_DIR=str(src)):
        assert running(dvc(root, "repro", "tokenize@mrpc").stdout) == {"tokenize@mrpc"}  # a new path, same files
        unchanged = sorted(f.name for f in (root / "data/dvc/tokenized/mrpc").iterdir())
        assert running(dvc(root, "repro", "tokenize@mrpc").stdout) == set()
        train = src / "mrpc" / "train-00000-of-00001.parquet"
        df = pd.read_parquet(train)
        df.loc[0, "label"] = 1 - df.loc[0, "label"]
        df.to_parquet(train, index=False)
        assert running(dvc(root, "repro", "tokenize@mrpc").stdout) == {"tokenize@mrpc"}
        relabelled = sorted(f.name for f in (root / "data/dvc/tokenized/mrpc").iterdir())
        assert relabelled != unchanged  # tokenized files are named by content: the flipped label is in them
    dvc(root, "repro", "tokenize@mrpc")  # the source as it was: DVC's run cache gives back the first outputs
    assert sorted(f.name for f in (root / "data/dvc/tokenized/mrpc").iterdir()) == before


def test_a_dry_run_on_a_fresh_clone_lists_every_stage_and_writes_nothing(tmp_path):
    """The README's preview for a fresh clone (plain --dry needs the upstream outputs to hash: treeverse/dvc#9021)."""
    root = pr.copy_project(
        tmp_path, "bertcompress", "tasks", "dvc.yaml", ".dvc", ".dvcignore", ".gitignore", "prefect.toml"
    )
    pr.write_params(root / "params.yaml", variants=VARIANTS)
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    tree = lambda: sorted(p.relative_to(root) for p in root.rglob("*") if not {".git", ".dvc"} & set(p.parts))  # noqa: E731
    before = tree()
    out = dvc(root, "repro", "--dry", "--force").stdout
    assert running(out, always=True) == {
        "plan",
        "download@mrpc",
        "tokenize@mrpc",
        "pretrained",
        "sweep",
        "variant@dense",
        "variant@oneshot",
        "report@mrpc",
    }
    assert "> python -m tasks.stage variant --name dense" in out
    assert tree() == before
