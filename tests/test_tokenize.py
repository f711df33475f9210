"""Tokenization: pair layout with token types, truncation, and the on-disk cache."""

from __future__ import annotations

import numpy as np

from bertcompress import glue
from bertcompress.model import load_tokenizer
from bertcompress.tokenize import Encoded, tokenize


def test_pairs_are_cls_a_sep_b_sep_with_token_types(tiny_mrpc, tiny_params, glue_dir):
    enc = Encoded.load(tiny_mrpc["validation"])
    tok = load_tokenizer(tiny_params.model.name)
    batch = enc.batch(np.array([0]))
    ids, types, mask = (batch[k][0].numpy() for k in ("input_ids", "token_type_ids", "attention_mask"))
    n = int(mask.sum())
    seps = np.flatnonzero(ids[:n] == tok.sep_token_id)
    assert ids[0] == tok.cls_token_id and len(seps) == 2 and seps[-1] == n - 1
    assert (types[: seps[0] + 1] == 0).all() and (types[seps[0] + 1 : n] == 1).all()
    first = glue.load_split("mrpc", "validation", str(glue_dir)).iloc[0]
    assert tok.decode(ids[1 : seps[0]]).split()[:3] == first["sentence1"].lower().split()[:3]
    assert batch["labels"][0] == first["label"]


def test_truncates_to_max_length(tiny_mrpc):
    enc = Encoded.load(tiny_mrpc["train"])
    assert enc.lengths.max() == 32 and len(enc) == 64


def test_single_sentence_task_has_no_second_segment(tmp_path, tiny_params):
    glue.download("sst2", tmp_path / "sst2", "auto")
    path, _ = tokenize(tmp_path / "sst2", "sst2", "validation", tiny_params.model.name, 16, tmp_path / "tok", 8)
    enc = Encoded.load(path)
    assert (enc.token_type_ids == 0).all() and enc.lengths.max() <= 16 and len(enc) == 8


def test_second_run_reads_the_cache(tmp_path, tiny_params):
    glue.download("mrpc", tmp_path / "mrpc", "auto")
    args = (tmp_path / "mrpc", "mrpc", "validation", tiny_params.model.name)
    path, hit = tokenize(*args, 32, tmp_path / "tok", 20)
    mtime = path.stat().st_mtime_ns
    again, hit2 = tokenize(*args, 32, tmp_path / "tok", 20)
    assert (hit, hit2) == (False, True) and again == path and path.stat().st_mtime_ns == mtime
    other, hit3 = tokenize(*args, 48, tmp_path / "tok", 20)  # another max length is another key
    assert not hit3 and other != path
    assert not list((tmp_path / "tok").rglob("*.tmp*"))


def test_a_changed_source_file_is_read_again_not_reused(tmp_path, tiny_params, glue_dir):
    """Relabel the GLUE copy under the same path: the next run re-reads it (CLI and flow: prepared() decides,
    and the flow's download key holds the source files' hashes), never trains on the old copy."""
    import shutil

    import pandas as pd

    from bertcompress.tokenize import prepared
    from tasks.plan import step_record

    src = tmp_path / "glue"
    shutil.copytree(glue_dir / "mrpc", src / "mrpc")
    p = tiny_params.replace({"data.source": str(src)})
    first = Encoded.load(prepared("mrpc", p, tmp_path / "data", tmp_path / "tok")["train"]).labels
    key = step_record("download", {"task": "mrpc", "p": p, "out": "data/glue/mrpc"})["key"]
    train = src / "mrpc" / "train-00000-of-00001.parquet"
    df = pd.read_parquet(train)
    df["label"] = 1 - df["label"]
    df.to_parquet(train, index=False)
    second = Encoded.load(prepared("mrpc", p, tmp_path / "data", tmp_path / "tok")["train"]).labels
    assert (second == 1 - first).all()
    assert pd.read_parquet(tmp_path / "data" / "mrpc" / "train.parquet")["label"].tolist()[:64] == second.tolist()
    assert step_record("download", {"task": "mrpc", "p": p, "out": "data/glue/mrpc"})["key"] != key
