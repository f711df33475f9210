"""GLUE: the task registry, loading from the hub or a local copy in the hub's parquet layout, validation.

    bertcompress download --task mrpc      # writes data/glue/mrpc/{train,validation}.parquet

Sources: `data.source` = hub (datasets.load_dataset("nyu-mll/glue", task)), a directory laid out as
`<dir>/<task>/<split>-00000-of-00001.parquet` (like ../shared/glue), or auto: $GLUE_DIR if set, else the hub,
falling back to ../shared/glue when the hub is offline.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from . import hub, io
from .params import Params, UserError, unknown

HUB_ID = "nyu-mll/glue"
SPLITS = ("train", "validation")
REPO_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Task:
    keys: tuple[str, ...]  # text columns: one sentence or a pair
    num_labels: int  # 1: a regression task (one output, float labels, MSE loss)
    components: tuple[str, ...]  # the GLUE metrics of the task: accuracy | f1 | matthews | pearson | spearman
    score_range: tuple[float, float] | None = None  # a regression task's label range
    names: tuple[str, ...] = ()  # label names, as the hub's ClassLabel has them
    averaged: bool = False  # GLUE scores the task by the mean of its components (MRPC, QQP, STS-B): `score`

    @property
    def metrics(self) -> tuple[str, ...]:
        """Every metric reported, headline first: ('score', 'f1', 'accuracy') for MRPC, ('matthews', 'accuracy')
        for CoLA."""
        return ("score", *self.components) if self.averaged else self.components

    @property
    def metric(self) -> str:
        """The headline metric: the task's GLUE score (MRPC, QQP: mean of F1 and accuracy; STS-B: of Pearson and
        Spearman; CoLA: MCC; the others accuracy), the number every budget, Δ and choice reads."""
        return self.metrics[0]

    @property
    def regression(self) -> bool:
        return self.num_labels == 1


# One entry per GLUE task: adding a task is one line. Accuracy is shown beside F1 and MCC (a model that
# predicts one class scores MRPC F1 0.812); MRPC's headline is GLUE's score, the mean of F1 and accuracy, so a
# model that leans to the positive class (F1 kept, accuracy lost) does not pass for as good.
TASKS = {
    "cola": Task(("sentence",), 2, ("matthews", "accuracy"), names=("unacceptable", "acceptable")),
    "sst2": Task(("sentence",), 2, ("accuracy",), names=("negative", "positive")),
    "mrpc": Task(
        ("sentence1", "sentence2"), 2, ("f1", "accuracy"), names=("not_equivalent", "equivalent"), averaged=True
    ),
    "stsb": Task(("sentence1", "sentence2"), 1, ("pearson", "spearman"), (0.0, 5.0), averaged=True),
    "rte": Task(("sentence1", "sentence2"), 2, ("accuracy",), names=("entailment", "not_entailment")),
    "wnli": Task(("sentence1", "sentence2"), 2, ("accuracy",), names=("not_entailment", "entailment")),
    "qnli": Task(("question", "sentence"), 2, ("accuracy",), names=("entailment", "not_entailment")),
    "qqp": Task(("question1", "question2"), 2, ("f1", "accuracy"), names=("not_duplicate", "duplicate"), averaged=True),
    "mnli": Task(("premise", "hypothesis"), 3, ("accuracy",), names=("entailment", "neutral", "contradiction")),
}


def reads(p: Params) -> list[str]:
    return ["data.source"]


def get_task(name: str) -> Task:
    if name not in TASKS:
        raise unknown("task", name, list(TASKS))
    return TASKS[name]


def resolve_source(source: str) -> str:
    """'hub' or a directory. auto = $GLUE_DIR, else the hub, else ../shared/glue when the hub is unreachable."""
    if source == "auto":
        if os.environ.get("GLUE_DIR"):
            source = os.environ["GLUE_DIR"]
        elif not (reason := hub.unreachable_reason()):
            return "hub"
        elif (REPO_ROOT.parent / "shared" / "glue").is_dir():
            return str(REPO_ROOT.parent / "shared" / "glue")
        else:
            raise UserError(
                f"{reason} and no local GLUE was found; set GLUE_DIR to a directory holding "
                "<task>/<split>-00000-of-00001.parquet, or data.source=<dir>"
            )
    if source == "hub":
        return source
    if not Path(source).is_dir():
        raise UserError(
            f"GLUE directory '{source}' does not exist; set GLUE_DIR or data.source to a directory "
            "holding <task>/<split>-00000-of-00001.parquet"
        )
    return str(Path(source).resolve())


def _read_local(directory: str, task: str, split: str) -> pd.DataFrame:
    path = Path(directory) / task / f"{split}-00000-of-00001.parquet"
    if not path.is_file():
        raise UserError(f"missing GLUE file {path}; the directory must hold <task>/<split>-00000-of-00001.parquet")
    try:
        return pq.read_table(path).to_pandas()
    except Exception as e:  # pyarrow raises several types for a damaged file
        raise UserError(
            f"cannot read {path} as parquet ({type(e).__name__}); replace the file with a good copy"
        ) from None


def _read_hub(task: str, split: str) -> pd.DataFrame:
    if reason := hub.unreachable_reason():
        raise UserError(
            f"{reason} and {HUB_ID}/{task} is needed; set GLUE_DIR or data.source to a local GLUE directory"
        )
    import datasets  # heavy import, only on this path

    try:
        return datasets.load_dataset(HUB_ID, task, split=split).to_pandas()
    except Exception as e:
        raise UserError(
            f"cannot load {HUB_ID}/{task} from the hub ({type(e).__name__}: {str(e)[:120]}); "
            "check the network or set GLUE_DIR to a local copy"
        ) from None


def validate(df: pd.DataFrame, task: str, split: str, where: str) -> None:
    spec = get_task(task)
    missing = [c for c in (*spec.keys, "label", "idx") if c not in df.columns]
    if missing:
        raise UserError(
            f"{where}: {task}/{split} lacks column(s) {', '.join(missing)} "
            f"(has {', '.join(map(str, df.columns))}); it is not GLUE {task} in the hub's layout"
        )
    low, high = spec.score_range or (0, spec.num_labels - 1)
    bad = df[~df["label"].between(low, high)]  # NaN too
    if len(bad):
        raise UserError(
            f"{where}: {task}/{split} has {len(bad)} label(s) outside {low:g}..{high:g} "
            f"(first: {bad['label'].iloc[0]} at idx {bad['idx'].iloc[0]}); use a labelled split"
        )
    for key in spec.keys:
        if df[key].isna().any():
            raise UserError(f"{where}: {task}/{split} column '{key}' has empty values; fix the data file")


def content_hash(df: pd.DataFrame, task: str) -> str:
    """sha256 over 'idx\\tlabel\\ttext1[\\ttext2]\\n' per row (a regression label as %.3f): the fingerprint
    shared/glue/README.md publishes."""
    h = hashlib.sha256()
    spec = get_task(task)
    label = df["label"].map("{:.3f}".format) if spec.regression else df["label"].astype(int).astype(str)
    cols = [df["idx"].astype(str), label] + [df[k] for k in spec.keys]
    for row in zip(*cols):
        h.update(("\t".join(row) + "\n").encode())
    return h.hexdigest()


def dev_rows(df: pd.DataFrame, task: str, fraction: float) -> np.ndarray:
    """Which rows of a train split form the dev split (a boolean mask): per class (STS-B: per whole score), the
    rows whose text hashes lowest, max(1, round(fraction x the class's rows)) of them. Keyed by content: a row's
    side depends on its text, not its position, so a reordered file gives the same split and identical sentences
    land on the same side. Every class present must keep rows on both sides (UserError naming the fix)."""
    spec = get_task(task)
    texts = df[list(spec.keys)].astype(str).agg("\t".join, axis=1)
    keys = np.array([hashlib.sha256(t.encode()).hexdigest() for t in texts])
    strata = np.rint(df["label"].to_numpy()).astype(int) if spec.regression else df["label"].to_numpy().astype(int)
    dev = np.zeros(len(df), dtype=bool)
    for c in np.unique(strata):
        rows = np.flatnonzero(strata == c)
        if len(rows) < 2:
            what = f"score {c}" if spec.regression else f"class '{spec.names[c] if spec.names else c}'"
            raise UserError(
                f"data.dev_fraction={fraction:g} leaves {what} of {task} train empty on one side ({len(rows)} "
                "row); raise data.max_train_samples or set data.dev_fraction=null"
            )
        order = rows[np.lexsort((df["idx"].to_numpy()[rows], keys[rows]))]
        dev[order[: min(len(rows) - 1, max(1, round(fraction * len(rows))))]] = True
    return dev


def load_split(task: str, split: str, source: str = "auto") -> pd.DataFrame:
    """One validated split as a DataFrame with the task's text columns, label and idx."""
    get_task(task)
    where = resolve_source(source)
    df = _read_hub(task, split) if where == "hub" else _read_local(where, task, split)
    validate(df, task, split, "hub" if where == "hub" else where)
    return df[[*get_task(task).keys, "label", "idx"]]


def fingerprint(task: str, where: str) -> dict | None:
    """The source files' content hashes ({split: sha256}) of a local GLUE directory; None for the hub (its
    dataset revision is the datasets cache's business)."""
    if where == "hub":
        return None
    return {
        s: io.content_hash(Path(where) / task / f"{s}-00000-of-00001.parquet")
        for s in SPLITS
        if (Path(where) / task / f"{s}-00000-of-00001.parquet").is_file()
    }


def download(task: str, out_dir: str | os.PathLike, source: str = "auto") -> dict:
    """Write validated train/validation parquet files and source.json to out_dir; return source.json's dict."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    where = resolve_source(source)
    frames = {split: load_split(task, split, where) for split in SPLITS}  # all checked before any write
    for split, df in frames.items():
        with io.atomic_file(out / f"{split}.parquet") as tmp:
            df.to_parquet(tmp, index=False)
    info = {
        "task": task,
        "source": where,
        "source_files": fingerprint(task, where),
        "files": {s: io.content_hash(out / f"{s}.parquet") for s in SPLITS},  # the copy, as written
        "rows": {s: len(df) for s, df in frames.items()},
        "content_sha256": {s: content_hash(df, task) for s, df in frames.items()},
    }
    io.write_json(out / "source.json", info)
    return info


def downloaded_from(out_dir: str | os.PathLike) -> str | None:
    """The resolved source a prepared folder was written from, or None if it is incomplete."""
    out = Path(out_dir)
    if not all((out / f"{s}.parquet").is_file() for s in SPLITS) or not (out / "source.json").is_file():
        return None
    return json.loads((out / "source.json").read_text())["source"]


def is_current(out_dir: str | os.PathLike, task: str, source: str = "auto") -> bool:
    """Was out_dir written from this source as its files are now (same path, same file contents), and is the copy
    still as written (not truncated or edited since)?"""
    where = resolve_source(source)
    if downloaded_from(out_dir) != where:
        return False
    info = json.loads((Path(out_dir) / "source.json").read_text())
    return info.get("source_files") == fingerprint(task, where) and info.get("files") == {
        s: io.content_hash(Path(out_dir) / f"{s}.parquet") for s in SPLITS
    }


def read_prepared(data_dir: str | os.PathLike, split: str) -> pd.DataFrame:
    path = Path(data_dir) / f"{split}.parquet"
    if not path.is_file():
        raise UserError(f"missing {path}; run `bertcompress download` first (or `dvc repro download`)")
    return pd.read_parquet(path)
