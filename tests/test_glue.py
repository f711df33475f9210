"""GLUE loading: the registry, the published content fingerprints, and every bad-data message."""

from __future__ import annotations

import shutil

import pandas as pd
import pytest

from bertcompress import glue
from bertcompress.params import UserError

# From ../shared/glue/README.md: sha256 over "idx\tlabel\ttext1[\ttext2]\n" per row, as the hub has them.
PUBLISHED = {
    ("mrpc", "validation"): "41003f486f8aa6e89e3cd136bd24cf98cb9513977959e18e80b985ceb9d93ce9",
    ("cola", "validation"): "633645342c5e582dc9b055b6f8e8eec8d5b41a03bb6de89585248da03f3e04d0",
    ("sst2", "validation"): "392ebc7dee695358efd98b5521cb974462016da189b744b6a51e74ca76e3e0da",
    ("stsb", "validation"): "7a093e513d29cd7f24e4dd7b0f5f00ff0dae4c0515aa91b7b1f530c570b28771",
}
ROWS = {"mrpc": 408, "cola": 1043, "sst2": 872, "stsb": 1500}


@pytest.mark.parametrize("task,split", list(PUBLISHED))
def test_split_matches_published_fingerprint(task, split, glue_dir):
    df = glue.load_split(task, split, str(glue_dir))
    assert len(df) == ROWS[task]
    assert list(df.columns) == [*glue.TASKS[task].keys, "label", "idx"]
    assert glue.content_hash(df, task) == PUBLISHED[(task, split)]


def test_mrpc_idx_is_not_contiguous(glue_dir):
    idx = glue.load_split("mrpc", "validation", str(glue_dir))["idx"]
    assert idx.iloc[0] == 9 and not (idx.diff().dropna() == 1).all()


def test_download_writes_validated_copy_and_source(tmp_path, glue_dir):
    info = glue.download("cola", tmp_path / "cola", "auto")  # auto -> $GLUE_DIR
    assert info["source"] == str(glue_dir.resolve())
    assert info["rows"] == {"train": 8551, "validation": 1043}
    assert info["content_sha256"]["validation"] == PUBLISHED[("cola", "validation")]
    assert glue.downloaded_from(tmp_path / "cola") == info["source"]
    assert not list(tmp_path.glob("cola/.*tmp"))


def _copy_task(glue_dir, tmp_path, task="mrpc"):
    shutil.copytree(glue_dir / task, tmp_path / task)
    return tmp_path


def test_unknown_task():
    with pytest.raises(UserError, match="unknown task 'mrcp'; did you mean 'mrpc'\\? known: cola, sst2, mrpc"):
        glue.get_task("mrcp")


def test_missing_glue_dir(tmp_path):
    with pytest.raises(UserError, match="does not exist; set GLUE_DIR"):
        glue.load_split("mrpc", "train", str(tmp_path / "nowhere"))


def test_missing_split_file(tmp_path, glue_dir):
    root = _copy_task(glue_dir, tmp_path)
    (root / "mrpc" / "validation-00000-of-00001.parquet").unlink()
    with pytest.raises(UserError, match="missing GLUE file .*validation-00000-of-00001.parquet"):
        glue.download("mrpc", tmp_path / "out", str(root))
    assert not (tmp_path / "out" / "train.parquet").exists()  # nothing half-written


def test_corrupt_parquet(tmp_path, glue_dir):
    root = _copy_task(glue_dir, tmp_path)
    (root / "mrpc" / "train-00000-of-00001.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(UserError, match="cannot read .* as parquet"):
        glue.load_split("mrpc", "train", str(root))


def test_wrong_columns(tmp_path, glue_dir):
    root = _copy_task(glue_dir, tmp_path)
    shutil.copy(glue_dir / "cola" / "train-00000-of-00001.parquet", root / "mrpc" / "train-00000-of-00001.parquet")
    with pytest.raises(UserError, match="lacks column\\(s\\) sentence1, sentence2"):
        glue.load_split("mrpc", "train", str(root))


def test_labels_out_of_range(tmp_path, glue_dir):
    root = _copy_task(glue_dir, tmp_path)
    df = pd.read_parquet(root / "mrpc" / "train-00000-of-00001.parquet")
    df.loc[3, "label"] = 7
    df.to_parquet(root / "mrpc" / "train-00000-of-00001.parquet")
    with pytest.raises(UserError, match="1 label\\(s\\) outside 0..1 \\(first: 7"):
        glue.load_split("mrpc", "train", str(root))


def test_hidden_test_labels_are_rejected(glue_dir):
    with pytest.raises(UserError, match="outside 0..1 \\(first: -1.*use a labelled split"):
        glue.load_split("mrpc", "test", str(glue_dir))


def test_hub_offline_fails_fast(monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(UserError, match="hub is offline .* set GLUE_DIR"):
        glue.load_split("mrpc", "train", "hub")


def test_auto_falls_back_to_shared_glue_when_hub_is_offline(monkeypatch):
    monkeypatch.delenv("GLUE_DIR", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert glue.resolve_source("auto") == str(glue.REPO_ROOT.parent / "shared" / "glue")
