"""Tokenization: pair layout with token types, truncation, the on-disk cache, and the dev split carved from train."""

from __future__ import annotations

import numpy as np

from bertcompress import glue
from bertcompress.model import load_tokenizer
from bertcompress.tokenize import Encoded, prepared, tokenize


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
    train, dev = Encoded.load(tiny_mrpc["train"]), Encoded.load(tiny_mrpc["dev"])
    assert max(train.lengths.max(), dev.lengths.max()) == 32 and len(train) + len(dev) == 64  # the 64 train rows


def _ids(enc: Encoded) -> set[tuple]:
    return {tuple(enc.input_ids[a:b]) for a, b in zip(enc.offsets[:-1], enc.offsets[1:])}


def test_dev_split_is_stratified_deterministic_and_disjoint_from_train(tmp_path, tiny_params, glue_dir):
    """data.dev_fraction carves dev from the train rows the run reads: each class in its share, the rest trains;
    the same rows every time, whatever the order of the file (keyed by content)."""
    import pandas as pd

    glue.download("mrpc", tmp_path / "mrpc", "auto")
    df = glue.read_prepared(tmp_path / "mrpc", "train").iloc[:400]
    dev = glue.dev_rows(df, "mrpc", 0.2)
    assert (dev == glue.dev_rows(df, "mrpc", 0.2)).all()
    for _, rows in df.groupby("label"):  # stratified: a fifth of each class
        assert dev[rows.index].sum() == round(0.2 * len(rows))
    shuffled = df.sample(frac=1.0, random_state=0)
    again = shuffled[glue.dev_rows(shuffled.reset_index(drop=True), "mrpc", 0.2)]
    assert sorted(again["idx"]) == sorted(df[dev]["idx"])  # the same rows, not the same positions
    assert sorted(df[dev]["idx"]) != list(range(80))  # not simply the first rows

    p = tiny_params.replace({"data.dev_fraction": 0.2})
    got = prepared("mrpc", p, tmp_path / "data", tmp_path / "tok")
    train, dev_split = Encoded.load(got["train"]), Encoded.load(got["dev"])
    assert len(train) + len(dev_split) == 64 and not _ids(train) & _ids(dev_split)
    off = p.replace({"data.dev_fraction": None})
    whole = Encoded.load(prepared("mrpc", off, tmp_path / "d2", tmp_path / "t2")["train"])
    assert _ids(train) | _ids(dev_split) == _ids(whole)  # dev is carved from the train rows the run reads
    counts = pd.Series(whole.labels).value_counts().sort_index()
    assert list(pd.Series(dev_split.labels).value_counts().sort_index()) == [round(0.2 * n) for n in counts]


def test_a_dev_fraction_that_empties_a_class_or_is_out_of_range_is_one_line(tmp_path, tiny_params):
    import pandas as pd
    import pytest

    from bertcompress.params import UserError

    df = glue.load_split("mrpc", "train", "auto").iloc[:40]
    df = pd.concat([df[df["label"] == 1].iloc[:20], df[df["label"] == 0].iloc[:1]])
    with pytest.raises(UserError, match="leaves class 'not_equivalent' of mrpc train empty on one side"):
        glue.dev_rows(df.reset_index(drop=True), "mrpc", 0.1)
    for bad in (0, 0.6, -0.1):
        with pytest.raises(UserError, match=r"data.dev_fraction must be in \(0, 0.5\] or null"):
            tiny_params.replace({"data.dev_fraction": bad})
    with pytest.raises(UserError, match="experiment.choose_on=dev, but the run has no dev split"):
        tiny_params.replace({"data.dev_fraction": None, "experiment.choose_on": "dev"})


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

    from tasks.keys import step_record

    src = tmp_path / "glue"
    shutil.copytree(glue_dir / "mrpc", src / "mrpc")
    p = tiny_params.replace({"data.source": str(src), "data.dev_fraction": None})  # every train row, in order
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
