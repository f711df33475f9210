"""Classify new inputs with any variant folder or exported artifact: one JSON line per input.

    bertcompress predict --model artifacts/mrpc "The cat sat." "A cat was sitting."     # pair task: 2 per input
    bertcompress predict --model outputs/sst2/finetune-s42 --task sst2 --input reviews.tsv
    cat pairs.jsonl | bertcompress predict --model artifacts/mrpc --input - --format jsonl

Inputs: texts as arguments (a pair task takes them two by two), or a file (or - for stdin) of TSV lines
(one column per text) or JSON lines ({"sentence1": .., "sentence2": ..} by the task's column names, or a
list). Each output line: {"label", "label_name", "probabilities"} (STS-B: {"score"}). The texts are encoded
and run exactly as `evaluate` runs the validation split (tokenize.encode, loop.logits), so on the same texts
the labels are evaluate's. Bad input is one line naming the line and the fix, before any model work.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch

from . import archive, loop
from .artifact import read_manifest
from .glue import TASKS, get_task
from .model import load_tokenizer
from .params import UserError, unknown
from .tokenize import encode
from .variant import load_variant

FORMATS = ("tsv", "jsonl")


def task_of(model: str, task: str | None) -> str:
    """The task: --task, else the artifact's manifest or the variant's metrics.json."""
    model = archive.folder(model)
    if not (Path(model).is_dir() and ((Path(model) / "config.json").is_file() or read_manifest(model))):
        raise UserError(
            f"--model {model} is no model folder (no config.json or manifest.json); pass a variant "
            "folder, an exported artifact or its .tar.zst archive"
        )
    recorded = (read_manifest(model) or {}).get("task")
    if recorded is None and (Path(model) / "metrics.json").is_file():
        recorded = json.loads((Path(model) / "metrics.json").read_text()).get("task")
    if task and recorded and task != recorded:
        raise UserError(f"--task {task}, but {model} was made for {recorded}; drop --task or pass the right model")
    if not (task or recorded):
        raise UserError(f"{model} does not record its task; pass --task (one of {', '.join(TASKS)})")
    get_task(task or recorded)
    return task or recorded


def _decode(raw: bytes, where: str) -> list[str]:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise UserError(f"{where} is not UTF-8 text (byte {e.start}); save it as UTF-8") from None
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        raise UserError(f"{where} is empty; give one input per line")
    return lines


def read_inputs(task: str, texts: list[str], source: str | None, fmt: str, stdin=None) -> list[list[str]]:
    """Rows of texts, one list per input, each as many texts as the task's columns."""
    keys = get_task(task).keys
    if fmt not in FORMATS:
        raise unknown("input format", fmt, FORMATS)
    if texts and source:
        raise UserError("give texts as arguments or --input, not both")
    if texts:
        for n, t in enumerate(texts, 1):
            try:
                t.encode("utf-8")
            except UnicodeEncodeError:
                raise UserError(
                    f"argument {n} is not UTF-8 text; pass UTF-8 or the texts in a file (--input)"
                ) from None
        if len(texts) % len(keys):
            raise UserError(
                f"{task} takes {len(keys)} texts per input ({', '.join(keys)}), got {len(texts)} "
                "arguments; give them in pairs"
            )
        return [texts[i : i + len(keys)] for i in range(0, len(texts), len(keys))]
    if not source:
        raise UserError("nothing to predict; give texts as arguments, or --input FILE (- for stdin)")
    where = "stdin" if source == "-" else source
    if source != "-" and not Path(source).is_file():
        raise UserError(f"--input {source} does not exist; give a TSV or JSONL file, or - for stdin")
    raw = (stdin or sys.stdin.buffer).read() if source == "-" else Path(source).read_bytes()
    rows = []
    for n, line in enumerate(_decode(raw, where), 1):
        if fmt == "jsonl":
            try:
                obj = json.loads(line)
            except json.JSONDecodeError:
                raise UserError(f"{where} line {n} is not JSON; one object or list per line, or --format tsv") from None
            row = [obj.get(k) for k in keys] if isinstance(obj, dict) else obj
        else:
            row = line.split("\t")
        if not isinstance(row, list) or len(row) != len(keys) or not all(isinstance(t, str) for t in row):
            raise UserError(
                f"{where} line {n} has {len(row) if isinstance(row, list) else 'no'} text(s); {task} "
                f"needs {len(keys)} ({', '.join(keys)}){' tab-separated' if fmt == 'tsv' else ''}"
            )
        rows.append(row)
    return rows


def has_head(model_dir: str) -> bool:
    """Does a model folder's weights file hold a classifier head (a pretrained encoder's does not: transformers
    would initialise one at random)?"""
    from safetensors import safe_open

    files = sorted(Path(model_dir).glob("*.safetensors"))
    if not files:
        return True  # not ours to judge (a program or another format): load_variant says what it is
    for f in files:
        with safe_open(str(f), "pt") as weights:
            if any(k.startswith("classifier.") or ".classifier." in k for k in weights.keys()):
                return True
    return False


def predict(
    model_dir: str, task: str, rows: list[list[str]], max_length: int = 128, batch_size: int = 128
) -> list[dict]:
    """One dict per row: the label, its name and the class probabilities (regression: the score)."""
    spec = get_task(task)
    model_dir = archive.folder(model_dir)
    manifest = read_manifest(model_dir)
    max_length = manifest["max_length"] if manifest else max_length
    if not manifest and not has_head(model_dir):
        print(
            f"warning: {model_dir} holds no fine-tuned classifier head (no classifier.* weights): its labels are "
            f"random; fine-tune it first (bertcompress finetune --task {task})",
            file=sys.stderr,
        )
    model = load_variant(model_dir, spec.num_labels)
    dummy = np.zeros(len(rows), dtype=np.float32 if spec.regression else np.int64)
    data = encode(load_tokenizer(model_dir), [list(c) for c in zip(*rows)], max_length, dummy)
    _, z = loop.logits(model, data, batch_size)
    if spec.regression:
        return [{"score": float(s)} for s in z[:, 0]]
    labels, probs = loop.outputs(torch.from_numpy(z)).numpy(), torch.softmax(torch.from_numpy(z), -1).numpy()
    names = spec.names or tuple(map(str, range(spec.num_labels)))
    return [
        {"label": int(y), "label_name": names[int(y)], "probabilities": [round(float(x), 6) for x in p]}
        for y, p in zip(labels, probs)
    ]
