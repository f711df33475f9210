"""Fault injection: commands killed with SIGKILL at random points (tests/faults.py: after an optimizer step, at
a file put in place, in the middle of a checkpoint write), damaged data and checkpoints, Ctrl-C and SIGTERM, two
runs of one output at once. Each case asserts what it ends with: the rerun gives the metrics of a run never
interrupted (or the same files), or one clear line; never a half-written result folder, never a FINISHED MLflow
run for a step that did not finish. Tiny slices of real MRPC, CPU, real processes."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pipeline_runs as pr
import pytest

REPO = Path(__file__).resolve().parent.parent
RNG = random.Random(15)  # random kill points, the same in every run of the suite
INJECTED: Counter = Counter()  # what the suite did, printed at its end: the closing note's counts
STEPS = 8  # 64 training pairs, batch 16, 2 epochs


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    """A workspace with tiny params, and the references: a fine-tune never interrupted, its dynamic int8 and export."""
    root = tmp_path_factory.mktemp("faults")
    pr.write_params(root / "params.yaml", data={"max_train_samples": 64, "max_eval_samples": 32})
    cli(root, "finetune", "--out", "ref")
    cli(root, "quantize", "--model-dir", "ref", "--out", "ref-int8", "-S", "quantize.mode=dynamic")
    cli(root, "export", "--model-dir", "ref", "--out", "ref-export", "-S", "evaluate.latency_runs=0")
    yield root
    print(f"\nfault suite: injected {dict(INJECTED)}")


def command(root: Path, *args: str, fault: str | None = None, module: str = "bertcompress.cli") -> list[str]:
    lead = [str(REPO / "tests" / "faults.py"), fault] if fault else []
    params = ["--params", str(root / "params.yaml"), *([] if "--task" in args else ["--task", "mrpc"])]
    return [sys.executable, *lead, "-m", module, *args, *params]


def cli(root: Path, *args: str, fault: str | None = None, expect: int = 0, **kw) -> subprocess.CompletedProcess:
    done = subprocess.run(
        command(root, *args, fault=fault), cwd=root, capture_output=True, text=True, timeout=600, env=env(), **kw
    )
    assert done.returncode == expect, (
        f"{args} {fault}: exit {done.returncode}\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    )
    if fault and expect == -signal.SIGKILL:
        INJECTED["kills"] += 1
    return done


def env(**extra: str) -> dict:
    return {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", **extra}


def history(folder: Path) -> list[dict]:
    return json.loads((folder / "metrics.json").read_text())["history"]


def files(folder: Path) -> dict[str, str]:
    from bertcompress.io import content_hash

    return {str(f.relative_to(folder)): content_hash(f) for f in sorted(folder.rglob("*")) if f.is_file()}


def leftovers(root: Path) -> list[str]:
    """Temp files and folders of atomic writes still lying around (a killed write may leave its own, never a
    final name)."""
    return [str(p.relative_to(root)) for p in root.rglob(".*.tmp*")]


@pytest.mark.parametrize("step", sorted(RNG.sample(range(1, STEPS), 3)))
def test_finetune_killed_after_a_random_step_resumes_to_the_same_metrics(ws, step):
    out = f"killed-step{step}"
    cli(ws, "finetune", "--out", out, fault=f"step:{step}", expect=-signal.SIGKILL)
    assert not (ws / out).exists() and (ws / f"{out}.partial").is_dir()  # no result folder, only the resumable work
    cli(ws, "finetune", "--out", out)
    assert history(ws / out) == history(ws / "ref")
    assert not (ws / f"{out}.partial").exists()


@pytest.mark.parametrize(
    "name,k,resumed_from", [("state.pt", 2, 1), ("model.safetensors", 1, 0), ("model.safetensors", 3, 2)]
)
def test_a_torn_write_resumes_from_the_last_complete_checkpoint(ws, name, k, resumed_from, capsys):
    """Cut in half mid-write, then killed: epoch 2's checkpoint, epoch 1's weights, the final weights."""
    out = f"torn-{name}-{k}"
    cli(ws, "finetune", "--out", out, fault=f"torn:{name}:{k}", expect=-signal.SIGKILL)
    INJECTED["torn writes"] += 1
    assert not (ws / out).exists()
    done = cli(ws, "finetune", "--out", out)
    trained = [line for line in done.stdout.splitlines() if line.startswith("epoch=")]
    assert len(trained) == 2 - resumed_from  # the epochs it trained again
    assert history(ws / out) == history(ws / "ref")


def test_an_unreadable_checkpoint_is_set_aside_and_the_run_starts_over(ws):
    out = "rotten"
    cli(ws, "finetune", "--out", out, fault="torn:state.pt:2", expect=-signal.SIGKILL)  # epoch 1 complete
    weights = ws / f"{out}.partial" / "checkpoints" / "epoch-1" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 3])  # damaged after it was complete
    INJECTED["corrupted files"] += 1
    done = cli(ws, "finetune", "--out", out)
    said = [line for line in done.stdout.splitlines() if "cannot be read back" in line]
    assert len(said) == 1 and "set aside as epoch-1.unreadable; starting over" in said[0]
    assert history(ws / out) == history(ws / "ref")


@pytest.mark.parametrize(
    "command_args,reference",
    [
        (("quantize", "--model-dir", "ref", "-S", "quantize.mode=dynamic"), "ref-int8"),
        (("export", "--model-dir", "ref", "-S", "evaluate.latency_runs=0"), "ref-export"),  # no timings: same bytes
    ],
)
def test_killed_at_a_commit_leaves_nothing_or_all_of_it(ws, command_args, reference):
    """Killed just before renames that put a file or folder in place (the last one and two at random): the result
    folder is absent until the run completes; the run after a kill gives the reference's files."""
    kind, out = command_args[0], ws / f"{command_args[0]}-killed"
    counted = cli(ws, *command_args, "--out", f"{kind}-counted", fault="commit:0").stderr
    n = int(counted.rsplit("faults: ", 1)[1].split()[0])
    assert n >= 1, f"{kind} put nothing in place"
    for k in sorted({n, *RNG.sample(range(1, n + 1), min(2, n))}):
        cli(ws, *command_args, "--out", out.name, fault=f"commit:{k}", expect=-signal.SIGKILL)
        assert not out.exists(), f"{kind} killed at rename {k} of {n} left {out.name}"
    cli(ws, *command_args, "--out", out.name)
    assert files(out) == files(ws / reference)
    assert not [p for p in leftovers(ws) if p.startswith(f".{out.name}.")]  # the killed runs' temp folders: gone


def test_predictions_after_a_killed_export_equal_the_reference(ws):
    texts = ["The cat sat on the mat.", "A cat was sitting on the mat.", "Stocks fell.", "It rained all day."]
    ref = cli(ws, "predict", "--model", "ref-export", "--task", "mrpc", *texts).stdout
    again = cli(ws, "predict", "--model", "export-killed", "--task", "mrpc", *texts).stdout
    assert [json.loads(x)["label"] for x in again.splitlines()] == [json.loads(x)["label"] for x in ref.splitlines()]


def test_a_damaged_prepared_copy_is_made_again_from_the_source(ws):
    copy = ws / "data" / "glue" / "mrpc" / "train.parquet"
    good = copy.read_bytes()
    copy.write_bytes(good[: len(good) // 2])
    INJECTED["corrupted files"] += 1
    cli(ws, "tokenize", "--task", "mrpc")
    assert copy.read_bytes() == good


def test_a_damaged_source_is_one_line_and_nothing_is_written(ws, tmp_path, glue_dir):
    import shutil

    src = tmp_path / "glue"
    shutil.copytree(glue_dir / "mrpc", src / "mrpc")
    train = src / "mrpc" / "train-00000-of-00001.parquet"
    train.write_bytes(train.read_bytes()[:1000])
    INJECTED["corrupted files"] += 1
    before = files(ws / "data")
    done = subprocess.run(
        command(ws, "finetune", "--task", "mrpc", "--out", "never"),
        cwd=ws,
        capture_output=True,
        text=True,
        env=env(GLUE_DIR=str(src)),
        timeout=600,
    )
    assert done.returncode == 2 and done.stderr.strip().count("\n") == 0, done.stderr
    assert done.stderr.startswith("error: cannot read ") and "replace the file with a good copy" in done.stderr
    assert files(ws / "data") == before and not (ws / "never").exists() and not (ws / "never.partial").exists()


def test_sigterm_stops_a_finetune_within_a_batch_and_it_resumes(ws):
    slow = pr.write_params(
        ws / "slow.yaml", data={"max_train_samples": 64, "max_eval_samples": 32}, finetune={"epochs": 40}
    )
    args = [a if a != str(ws / "params.yaml") else str(slow) for a in command(ws, "finetune", "--out", "term")]
    proc = subprocess.Popen(args, cwd=ws, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        first = proc.stdout.readline()
        assert first.startswith("epoch=1"), first
        proc.send_signal(signal.SIGTERM)
        t0 = time.monotonic()
        assert proc.wait(timeout=60) == 143
        assert time.monotonic() - t0 < 20
    finally:
        proc.kill()
    INJECTED["signals"] += 1
    assert proc.stderr.read().strip().splitlines()[-1].startswith("stopped by SIGTERM: nothing is half-written")
    assert not (ws / "term").exists() and (ws / "term.partial" / "checkpoints").is_dir()


def test_two_runs_of_one_output_take_turns(ws):
    """Started together: one trains, the other waits (saying so) and reuses its result; both exit 0."""
    procs = [
        subprocess.Popen(
            command(ws, "finetune", "--out", "twice"),
            cwd=ws,
            env=env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    waited = [o for o in outs if "is being written by another run" in o]
    assert len(waited) == 1 and "with the same inputs: reusing it" in waited[0]
    assert history(ws / "twice") == history(ws / "ref")
    assert not [p for p in leftovers(ws) if "twice" in p]


@pytest.fixture(scope="module")
def flow_ws(tmp_path_factory):
    root = pr.copy_project(tmp_path_factory.mktemp("flowfaults"), "bertcompress", "tasks", "flows", "prefect.toml")
    pr.write_params(
        root / "params.yaml",
        data={"max_train_samples": 64, "max_eval_samples": 32},
        finetune={"epochs": 30},
        variants={"dense": {"from": "pretrained"}},
    )
    return root


def flow(root: Path, fault: str | None = None, log=subprocess.PIPE) -> subprocess.Popen:
    """The flow in its own process group (its temporary Prefect server with it), stores inside root."""
    return subprocess.Popen(
        command(root, "--task", "mrpc", fault=fault, module="flows.compress"),
        cwd=root,
        env=env(PREFECT_HOME=str(root / ".prefect"), MLFLOW_TRACKING_URI=f"sqlite:///{root}/mlflow/mlflow.db"),
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def reap(proc: subprocess.Popen) -> None:
    """Whatever is left of the process group (a killed flow's server lives on)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def runs(root: Path) -> dict[str, list[str]]:
    from tasks import tracking

    with pr.env_vars(MLFLOW_TRACKING_URI=f"sqlite:///{root}/mlflow/mlflow.db"):
        client, experiment = tracking.client()
        found: dict[str, list[str]] = {}
        for r in client.search_runs([experiment], order_by=["attributes.start_time ASC"]):
            found.setdefault(
                r.info.run_name.split("-")[0] if r.info.run_name.startswith("compress") else "variant", []
            ).append(r.info.status)
        return found


def finished_folders(root: Path) -> list[Path]:
    return [
        p
        for p in (root / "outputs" / "flow" / "mrpc").glob("dense-*")
        if p.is_dir() and p.suffix not in (".partial", ".lock")
    ]


def test_the_flow_killed_or_interrupted_in_a_finetune_never_finishes_its_runs(flow_ws):
    """kill -9 after a random step: the step's MLflow run is left RUNNING (nothing can close it), never FINISHED,
    until the next flow finds its process gone and ends it FAILED, tagged killed=true; Ctrl-C: it stops within a
    batch, the step's run and the parent run KILLED; no result folder either time."""
    root, total = flow_ws, 30 * 4
    with open(root / "killed.log", "w") as log:  # a file: the orphaned server would hold a pipe open
        killed = flow(root, fault=f"step:{RNG.randrange(1, total // 2)}", log=log)
    try:
        assert killed.wait(timeout=600) == -signal.SIGKILL, (root / "killed.log").read_text()[-3000:]
    finally:
        reap(killed)  # and its temporary Prefect server
    INJECTED["kills"] += 1
    assert runs(root)["variant"] == ["RUNNING"] and not finished_folders(root)

    interrupted = flow(root)
    try:
        lines = []
        for line in interrupted.stdout:  # the resumed fine-tune's first epoch
            lines.append(line)
            if "epoch=" in line:
                break
        assert "epoch=" in lines[-1], "".join(lines[-50:])
        interrupted.send_signal(signal.SIGINT)
        t0 = time.monotonic()
        out = interrupted.communicate(timeout=120)[0]
        assert interrupted.returncode == 130, out[-3000:]
        assert time.monotonic() - t0 < 30
    finally:
        reap(interrupted)
    INJECTED["signals"] += 1
    assert "stopped by SIGINT" in out and "Traceback" not in out
    statuses = runs(root)
    assert statuses["variant"] == ["FAILED", "KILLED"] and statuses["compress"] == ["FAILED", "KILLED"], statuses
    with pr.env_vars(MLFLOW_TRACKING_URI=f"sqlite:///{root}/mlflow/mlflow.db"):
        from tasks import tracking

        client, experiment = tracking.client()
        assert len(client.search_runs([experiment], "tags.killed = 'true'")) == 2  # the killed flow's two runs
    assert not finished_folders(root)


def test_a_damaged_source_in_the_flow_is_one_line_not_retried(flow_ws, tmp_path, glue_dir):
    """Bad data found inside the flow (download): the CLI's line, no traceback, the download task run once."""
    import shutil

    src = tmp_path / "glue"
    shutil.copytree(glue_dir / "mrpc", src / "mrpc")
    (src / "mrpc" / "validation-00000-of-00001.parquet").write_bytes(b"not parquet")
    INJECTED["corrupted files"] += 1
    root = pr.copy_project(tmp_path / "ws", "bertcompress", "tasks", "flows", "prefect.toml")
    shutil.copy(flow_ws / "params.yaml", root / "params.yaml")
    done = subprocess.run(
        command(root, "--task", "mrpc", module="flows.compress"),
        cwd=root,
        capture_output=True,
        text=True,
        timeout=600,
        env=env(
            GLUE_DIR=str(src), PREFECT_HOME=str(root / ".prefect"), MLFLOW_TRACKING_URI=f"sqlite:///{root}/mlflow.db"
        ),
    )
    said = done.stdout + done.stderr
    assert done.returncode == 2 and "Traceback" not in said, said[-3000:]
    assert "\nerror: cannot read " in "\n" + done.stderr, said[-2000:]  # the CLI's line
    assert said.count("Task run 'download-mrpc' - error: cannot read") == 1  # no retry
