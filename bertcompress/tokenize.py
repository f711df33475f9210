"""Tokenize a prepared GLUE split with the model's tokenizer, cached on disk.

    bertcompress tokenize --task mrpc

Single sentences and pairs ([CLS] A [SEP] B [SEP] with token types), truncated to max_length, no padding
(batches are padded dynamically). The cache file is named by a key over the data's content hash, the
tokenizer's full definition and max_length, so a second run, or another run on the same data, reads it back
instead of tokenizing again. The format is plain numpy (ragged arrays + offsets): it loads without `datasets`.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from . import glue, io
from .model import check_max_length, load_tokenizer
from .params import Params


def tokenizer_fingerprint(tokenizer) -> str:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    definition = backend.to_str() if backend is not None else repr(sorted(tokenizer.get_vocab().items()))
    return hashlib.sha256(f"{type(tokenizer).__name__}\n{definition}".encode()).hexdigest()


def reads(p: Params) -> list[str]:
    return [
        "data.source",
        "data.max_train_samples",
        "data.max_eval_samples",
        "data.dev_fraction",
        "model.name",
        "tokenize.max_length",
    ]


def tokenize(
    data_dir: str | os.PathLike,
    task: str,
    split: str,
    model_name: str,
    max_length: int,
    cache_dir: str | os.PathLike = "data/tokenized",
    limit: int | None = None,
    dev_fraction: float | None = None,
) -> tuple[Path, bool]:
    """Return (path of the tokenized split, True if it came from the cache); limit keeps the first rows. With
    dev_fraction, split "dev" is that share of those train rows (glue.dev_rows) and "train" the rest."""
    spec = glue.get_task(task)
    check_max_length(model_name, max_length)
    df = glue.read_prepared(data_dir, "train" if split == "dev" else split).iloc[:limit]
    if dev_fraction and split in ("train", "dev"):
        dev = glue.dev_rows(df, task, dev_fraction)
        df = df[dev if split == "dev" else ~dev]
    tokenizer = load_tokenizer(model_name)
    key = hashlib.sha256(
        "|".join([glue.content_hash(df, task), tokenizer_fingerprint(tokenizer), str(max_length)]).encode()
    ).hexdigest()[:20]
    path = Path(cache_dir) / task / f"{split}-{key}.npz"
    if path.is_file():
        return path, True
    enc = encode(
        tokenizer,
        [df[k].tolist() for k in spec.keys],
        max_length,
        df["label"].to_numpy(np.float32 if spec.regression else np.int64),
    )
    with io.atomic_file(path, ".npz") as tmp:
        np.savez(
            tmp, input_ids=enc.input_ids, token_type_ids=enc.token_type_ids, offsets=enc.offsets, labels=enc.labels
        )
    return path, False


def encode(tokenizer, columns: list[list[str]], max_length: int, labels: np.ndarray) -> Encoded:
    """Sentences (one column) or pairs (two) as an Encoded split: what is cached, and what predict runs."""
    enc = tokenizer(*columns, truncation=True, max_length=max_length, return_token_type_ids=True)
    lengths = np.fromiter((len(x) for x in enc["input_ids"]), dtype=np.int64, count=len(labels))
    return Encoded(
        np.concatenate(enc["input_ids"]).astype(np.int32),
        np.concatenate(enc["token_type_ids"]).astype(np.int8),
        np.concatenate([[0], np.cumsum(lengths)]),
        labels,
    )


def check_dev(task: str, p: Params) -> None:
    """Before any work: does data.dev_fraction leave every class of the train rows the run reads on both sides?
    (Read from a local GLUE directory; from the hub the tokenize step checks it, still before any training.)"""
    if not p.data.dev_fraction or (where := glue.resolve_source(p.data.source)) == "hub":
        return
    glue.dev_rows(glue.load_split(task, "train", where).iloc[: p.data.max_train_samples], task, p.data.dev_fraction)


def splits(p: Params) -> tuple[str, ...]:
    """The tokenized splits a run has: train and validation, and dev when data.dev_fraction carves one."""
    return ("train", "dev", "validation") if p.data.dev_fraction else glue.SPLITS


def prepared(task: str, p: Params, data_root: str = "data/glue", cache_dir: str = "data/tokenized") -> dict:
    """Download the task if it is not there yet, tokenize its splits (cached); return their paths."""
    data_dir = Path(data_root) / task
    if not glue.is_current(data_dir, task, p.data.source):  # another source, or its files changed since
        glue.download(task, data_dir, p.data.source)
    d = p.data
    limits = {"train": d.max_train_samples, "dev": d.max_train_samples, "validation": d.max_eval_samples}
    return {
        s: str(
            tokenize(data_dir, task, s, p.model.name, p.tokenize.max_length, cache_dir, limits[s], d.dev_fraction)[0]
        )
        for s in splits(p)
    }


@dataclass
class Encoded:
    """A tokenized split in memory: ragged token ids, with per-example slices and dynamic-padding batches."""

    input_ids: np.ndarray
    token_type_ids: np.ndarray
    offsets: np.ndarray
    labels: np.ndarray

    @classmethod
    def load(cls, path: str | os.PathLike) -> Encoded:
        with np.load(path) as z:
            return cls(**{k: z[k] for k in ("input_ids", "token_type_ids", "offsets", "labels")})

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def to(self, device: str) -> Encoded | OnDevice:
        return self if device == "cpu" else OnDevice(self, device)

    def batch(self, indices, pad_to_multiple: int = 1, pad_id: int = 0) -> dict[str, torch.Tensor]:
        """Pad the selected examples to the longest of them (rounded up to a multiple)."""
        lens = self.lengths[indices]
        width = int(-(-lens.max() // pad_to_multiple) * pad_to_multiple)
        ids = np.full((len(indices), width), pad_id, dtype=np.int64)
        types = np.zeros((len(indices), width), dtype=np.int64)
        mask = np.zeros((len(indices), width), dtype=np.int64)
        for row, (i, n) in enumerate(zip(indices, lens)):
            start = self.offsets[i]
            ids[row, :n] = self.input_ids[start : start + n]
            types[row, :n] = self.token_type_ids[start : start + n]
            mask[row, :n] = 1
        return {
            "input_ids": torch.from_numpy(ids),
            "token_type_ids": torch.from_numpy(types),
            "attention_mask": torch.from_numpy(mask),
            "labels": torch.from_numpy(self.labels[indices]),
        }


class OnDevice:
    """A split padded once and kept on the GPU: a batch is an index_select and a slice, with no host copy
    of token ids and no synchronisation (the width comes from lengths held on the host)."""

    def __init__(self, data: Encoded, device: str):
        full = data.batch(np.arange(len(data)))
        self.lengths, self.labels, self.device = data.lengths, data.labels, device
        self.tensors = {k: v.to(device) for k, v in full.items()}

    def __len__(self) -> int:
        return len(self.labels)

    def batch(self, indices, pad_to_multiple: int = 1, pad_id: int = 0) -> dict[str, torch.Tensor]:
        width = int(-(-self.lengths[indices].max() // pad_to_multiple) * pad_to_multiple)
        rows = torch.from_numpy(np.asarray(indices)).pin_memory().to(self.device, non_blocking=True)
        return {k: (v[rows] if k == "labels" else v[rows, :width]) for k, v in self.tensors.items()}
