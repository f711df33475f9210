"""The command line: --help, and every bad input gives one line naming problem and fix, exit 2, no output."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from bertcompress.cli import main

TINY = ["-S", "data.max_train_samples=16", "-S", "data.max_eval_samples=16", "-S", "tokenize.max_length=16"]


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


def fails_with(capsys, argv, pattern, workdir):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: "), err
    assert re.search(pattern, err), err
    assert not (workdir / "outputs").exists()  # nothing written, no training


@pytest.mark.parametrize(
    "override,pattern",
    [
        ("finetune.lr=0", r"finetune.lr must be > 0, got 0"),
        ("finetune.lr=nan", r"override -S finetune.lr=nan: finetune.lr must be a finite number, got nan"),
        ("finetune.lr=inf", r"finetune.lr must be a finite number, got inf"),
        ("finetune.lr=2", r"finetune.lr must be < 1, got 2.0"),
        ("finetune.weight_decay=-0.1", r"finetune.weight_decay must be in \[0, 1\], got -0.1"),
        ("prune.final_sparsity=nan", r"prune.final_sparsity must be a finite number"),
        ("finetune.batch_size=-4", r"finetune.batch_size must be > 0"),
        ("finetune.epochs=0", r"finetune.epochs must be > 0"),
        ("tokenize.max_length=4", r"tokenize.max_length must be >= 8, got 4"),
        ("tokenize.max_length=1024", r"exceeds the model's 512 positions; set tokenize.max_length <= 512"),
        (
            "finetune.lrr=1",
            r"unknown key 'finetune.lrr'; did you mean 'finetune.lr'\? known: finetune.lr, finetune.batch_size",
        ),
        ("finetune.threads=1", r"unknown key 'finetune.threads'; .*known: finetune.lr"),  # runtime.threads now
        ("finetune.lr=fast", r"finetune.lr: expected float, got 'fast'"),
        ("finetune.precision=fp8", r"finetune.precision 'fp8' is unknown; choose fp32, tf32 or bf16"),
        ("model.name=./no/such/model", r"model path './no/such/model' has no config.json"),
        ("model.name=bert-base-uncased", r"'bert-base-uncased' is not in the local cache and the hub is offline"),
        ("data.source=/no/such/glue", r"GLUE directory '/no/such/glue' does not exist; set GLUE_DIR"),
    ],
)
def test_bad_parameter(capsys, workdir, override, pattern):
    fails_with(capsys, ["finetune", "--task", "mrpc", *TINY, "-S", override], pattern, workdir)


def test_unknown_task(capsys, workdir):
    fails_with(
        capsys, ["finetune", "--task", "mnli2"], r"unknown task 'mnli2'; did you mean 'mnli'\? known: cola", workdir
    )
    fails_with(capsys, ["finetune", "--task", "mrpcc"], r"unknown task 'mrpcc'; did you mean 'mrpc'\?", workdir)


def test_unreadable_params(capsys, workdir):
    (workdir / "bad.yaml").write_text("finetune: {lr: [\n")
    fails_with(capsys, ["finetune", "--task", "mrpc", "--params", "bad.yaml"], r"bad.yaml: not valid YAML", workdir)
    fails_with(capsys, ["finetune", "--task", "mrpc", "--params", "none.yaml"], r"none.yaml: file not found", workdir)
    (workdir / "odd.yaml").write_text("optimizer: {lr: 1}\n")
    fails_with(capsys, ["finetune", "--task", "mrpc", "--params", "odd.yaml"], r"unknown section 'optimizer'", workdir)


def test_bad_data_reaches_the_cli(capsys, workdir, glue_dir, monkeypatch):
    import shutil

    shutil.copytree(glue_dir / "mrpc", workdir / "g" / "mrpc")
    (workdir / "g" / "mrpc" / "train-00000-of-00001.parquet").write_bytes(b"garbage")
    monkeypatch.setenv("GLUE_DIR", str(workdir / "g"))
    fails_with(
        capsys, ["finetune", "--task", "mrpc", *TINY], r"cannot read .*train-00000-of-00001.parquet as parquet", workdir
    )
    assert not (workdir / "data" / "glue" / "mrpc" / "validation.parquet").exists()


def test_an_unwritable_output_is_refused_before_any_work(capsys, workdir):
    (workdir / "taken").write_text("a file")
    fails_with(
        capsys,
        ["finetune", "--task", "mrpc", *TINY, "--out", "taken"],
        r"output .*taken is a file where a folder must go",
        workdir,
    )
    fails_with(
        capsys,
        ["finetune", "--task", "mrpc", *TINY, "--out", "taken/run"],
        r"taken is a file where a folder must go; choose another path",
        workdir,
    )
    fails_with(
        capsys,
        ["finetune", "--task", "mrpc", *TINY, "--out", "/sys/bertcompress-run"],
        r"output /sys/bertcompress-run: cannot write in /sys \(",
        workdir,
    )  # sysfs: read-only, root too
    assert not (workdir / "data").exists()


def test_evaluate_needs_a_saved_model(capsys, workdir):
    fails_with(capsys, ["evaluate", "--task", "mrpc", "--model-dir", "nowhere"], r"holds no saved model", workdir)


@pytest.mark.parametrize(
    "command", [["evaluate"], ["quantize", "-S", "quantize.mode=dynamic"], ["prune", "-S", "prune.method=oneshot"]]
)
def test_a_classifier_on_the_regression_task_is_refused(capsys, workdir, tiny_run, command):
    """STS-B is regression (one output): a 2-class MRPC model given to it is refused before any data is read."""
    out, _ = tiny_run
    fails_with(
        capsys,
        [command[0], "--task", "stsb", "--model-dir", str(out), *command[1:]],
        r"has a 2-class head and the task needs a regression head \(1 output\); check --task",
        workdir,
    )
    assert not (workdir / "data").exists()


@pytest.mark.parametrize("method", ["oneshot", "structured"])
def test_prune_method_override_is_accepted(capsys, workdir, method):
    """The documented `bertcompress prune --model-dir D -S prune.method=oneshot`: the params load, the model
    folder is what is refused."""
    fails_with(
        capsys,
        ["prune", "--task", "mrpc", "--model-dir", "nowhere", "-S", f"prune.method={method}"],
        r"holds no saved model",
        workdir,
    )


def test_real_process_exit_code_and_help(workdir):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "bertcompress.cli", "finetune", "--task", "mrpc", "-S", "finetune.epochs=0"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert (
        done.returncode == 2
        and done.stderr.strip() == "error: finetune.epochs must be > 0, got 0; set a positive value"
    )
    helped = subprocess.run(
        [sys.executable, "-m", "bertcompress.cli", "finetune", "--help"], capture_output=True, text=True, env=env
    )
    assert helped.returncode == 0 and "--task" in helped.stdout and "-S SECTION.KEY=VALUE" in helped.stdout


@pytest.mark.slow  # seconds of subprocesses or servers: make test-fast leaves it to the slow tier
def test_real_commands_print_no_import_or_deprecation_noise(workdir):
    """finetune, quantize (eager int8) and evaluate in real processes: stderr stays empty (no torchao "Failed to
    load", no pytree or quantization deprecation lines)."""
    tiny = [*TINY, "-S", "finetune.epochs=1"]
    for argv in (
        ["finetune", "--out", "m"],
        ["quantize", "--model-dir", "m", "-S", "quantize.mode=dynamic_emb"],
        ["evaluate", "--model-dir", "m-dynamic_emb"],
    ):
        done = subprocess.run(
            [sys.executable, "-m", "bertcompress.cli", argv[0], "--task", "mrpc", *argv[1:], *tiny],
            capture_output=True,
            text=True,
            env={**os.environ, "TQDM_DISABLE": "1"},
        )
        assert done.returncode == 0 and done.stderr == "", (argv, done.stderr[-3000:])


def test_overrides_parse_like_dvc_exp_run():
    from bertcompress import params

    p = params.load(
        None, ["finetune.lr=3e-5", "finetune.max_steps=null", "prune.scope=all_linear", "finetune.epochs=2"]
    )
    assert p.finetune.lr == 3e-5 and p.finetune.max_steps is None and p.prune.scope == "all_linear"
    assert p.flat()["finetune.epochs"] == 2
