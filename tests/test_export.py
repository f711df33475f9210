"""Ship it: a variant folder exported as an int8 ONNX artifact (tokenizer, manifest, file hashes), and
`predict` on variant folders and artifacts; on the validation texts predict's labels are evaluate's; every bad
input is one line, exit 2, nothing on stdout."""

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


@pytest.fixture(scope="session")
def artifacts(tmp_path_factory, variants) -> dict[str, Path]:
    from bertcompress.export import export

    root = tmp_path_factory.mktemp("artifacts")
    return {k: Path(export(str(v), str(root / k), "mrpc", max_length=32) and root / k) for k, v in variants.items()}


def _validation_rows(tiny_mrpc) -> list[list[str]]:
    df = pd.read_parquet(Path(tiny_mrpc["validation"]).parents[2] / "glue" / "mrpc" / "validation.parquet")
    return df[["sentence1", "sentence2"]].iloc[:64].values.tolist()


def test_artifact_is_int8_onnx_with_tokenizer_and_manifest(artifacts, variants):
    for kind, folder in artifacts.items():
        manifest = json.loads((folder / "manifest.json").read_text())
        assert manifest["task"] == "mrpc" and manifest["labels"] == ["not_equivalent", "equivalent"]
        assert manifest["format"] == "onnx_int8" and manifest["source"] == str(variants[kind].resolve())
        assert "val_accuracy" in manifest["source_metrics"] or kind != "dense"
        for name, digest in manifest["files"].items():
            assert io.content_hash(folder / name) == digest, name
        assert {"model.onnx", "weights.npz", "tokenizer.json", "config.json"} <= set(manifest["files"])
        mb = ((folder / "model.onnx").stat().st_size + (folder / "weights.npz").stat().st_size) / 1e6
        assert manifest["sizes"]["compact_mb"] == pytest.approx(mb) and mb < 23  # fp32 MiniLM: 91 MB
        assert (folder / "model.onnx").stat().st_size < 1e6  # the graph alone: every weight is in weights.npz
    mb = {k: manifest_of(f)["sizes"]["compact_mb"] for k, f in artifacts.items()}
    assert mb["structured"] < mb["dense"]  # heads and neurons removed: physically smaller
    tensors = {k: manifest_of(f)["storage"]["tensors"] for k, f in artifacts.items()}
    # 6 layers x 6 Linear weights more than dense (whose zero tensors are the per-channel zero points)
    assert tensors["oneshot"]["bitmask"] - tensors["dense"]["bitmask"] >= 36
    assert mb["oneshot"] < 0.85 * mb["dense"]  # half the encoder's weights zero: bitmask + values, not zeros
    # half the word embeddings zero: ONNX Runtime's uint8 table holds its zero point there, stored as the fill
    with np.load(artifacts["structured"] / "weights.npz") as z:
        fills = [k for k in z.files if k.endswith("|fill.npy") or k.endswith("|fill")]
        assert fills and all(z[k].dtype == np.uint8 for k in fills)
    assert mb["structured"] < 0.75 * mb["dense"]  # without the embeddings pruned: 0.87 (16.4 of 18.7 MB)


def manifest_of(folder: Path) -> dict:
    return json.loads((folder / "manifest.json").read_text())


@pytest.mark.parametrize("kind", ["dense", "oneshot", "structured"])
def test_predict_equals_evaluate_on_the_validation_texts(kind, variants, artifacts, tiny_mrpc):
    from bertcompress.evaluate import evaluate
    from bertcompress.predict import predict

    rows = _validation_rows(tiny_mrpc)
    for folder in (variants[kind], artifacts[kind]):  # the torch variant, and the int8 artifact of it
        expected = evaluate(str(folder), "mrpc", tiny_mrpc["validation"], 64, keep_predictions=True)["predictions"]
        got = predict(str(folder), "mrpc", rows, max_length=32)
        assert [r["label"] for r in got] == expected, folder
        assert all(
            abs(sum(r["probabilities"]) - 1) < 1e-5 and r["label_name"] in ("not_equivalent", "equivalent") for r in got
        )


@pytest.mark.parametrize("kind", ["dense", "oneshot", "structured"])
def test_the_artifact_stays_close_to_its_float_model(kind, variants, artifacts, tiny_mrpc):
    """int8 ONNX read back from its stored form (the pruned one from bitmask + values) predicts as its float
    model does: a weight restored to the wrong places would not."""
    from bertcompress.predict import predict

    rows = _validation_rows(tiny_mrpc)
    fp32 = np.array([r["probabilities"] for r in predict(str(variants[kind]), "mrpc", rows, max_length=32)])
    int8 = np.array([r["probabilities"] for r in predict(str(artifacts[kind]), "mrpc", rows, max_length=32)])
    assert np.abs(fp32 - int8).max() < 0.05


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
