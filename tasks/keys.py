"""What a run's output is keyed on: the step record of each run of the plan, and the digest of a variant's chain.

A step's record (bertcompress/record.py) is what dvc.lock records, exactly: the leaf params the step reads (each
core step module says which, in `reads(params)`: a dense fine-tune reads no prune schedule, a one-shot pruning
no fine-tuning epochs; tests/test_reads.py fails when a step reads a key its list lacks), a content hash of every
input file or folder, and the source of the core modules the step's module imports. runtime.* is read by no
step's key. A variant's MLflow runs carry `config`, a digest of every leaf param its chain of steps reads.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from bertcompress import evaluate, finetune, glue, model, prune, quantize, record, tokenize
from bertcompress.params import Params

from .plan import chain, make_step, method

MODULES = {
    "download": glue,
    "tokenize": tokenize,
    "pretrained": model,
    "finetune": finetune,
    "prune": prune,
    "quantize": quantize,
    "evaluate": evaluate,
}
FILES = ("data_dir", "base", "model_dir", "train", "dev", "validation", "teacher")  # task arguments that name inputs
FLOW_OUTPUTS = Path("outputs/flow")


def reads(step: str, q: Params) -> dict:
    """{leaf param: value} that the step's result depends on, for params q (one variant, seed and mode)."""
    keys = ["model.name"] if step == "pretrained" else MODULES[step].reads(q)
    flat = q.flat()
    return {k: flat[k] for k in keys}


def step_params(a: dict) -> Params:
    """The params one task call runs with: the variant's, for its seed and mode, or the experiment's."""
    p = a["p"]
    return p.variant(a["name"], a["seed"], a.get("mode", "none")) if "name" in a else p


def step_record(step: str, a: dict) -> dict:
    """The record of one task call (a: its arguments by name). The variant's name is part of it: each variant's
    steps log their own MLflow runs, even where two variants' recipes coincide."""
    extra = {k: a[k] for k in ("task", "name", "mode") if k in a}
    inputs = {k: a[k] for k in FILES if a.get(k)}
    if step == "download":  # where `auto` points ($GLUE_DIR, the hub, ../shared/glue) and its files' contents
        extra["source"] = where = glue.resolve_source(a["p"].data.source)
        extra["source_files"] = glue.fingerprint(a["task"], where)
    if step in ("pretrained", "tokenize") and Path(local := model.resolve(a["p"].model.name)).is_dir():
        inputs["model"] = local  # a model folder (the packaged one too) is keyed by its files, not its name
    return record.make(step, reads(step, step_params(a)), inputs, MODULES[step].__name__.split(".")[-1], extra)


def out_dir(step: str, a: dict, key: str) -> str:
    """Where the flow writes a step's result: outputs/flow/<task>/<label>-<key> (evaluate: eval/<label>-<key>.json),
    a folder per key, never overwritten by other params; the data steps' own places."""
    if a.get("out"):
        return a["out"]
    if step == "tokenize":
        return str(Path(a["cache_dir"]) / a["task"])
    label = f"{method(a['name'], a.get('mode', 'none'))}-s{a['seed']}"
    if step == "evaluate":
        return str(FLOW_OUTPUTS / a["task"] / "eval" / f"{label}-{key[:12]}.json")
    return str(FLOW_OUTPUTS / a["task"] / f"{label}-{key[:12]}")


def configured(p: Params, name: str, seed: int, mode: str = "none") -> list[tuple[str, dict]]:
    """(step, leaf params) of everything that makes one (variant, seed, mode), data and base model first."""
    steps = [("tokenize", reads("tokenize", p)), ("pretrained", reads("pretrained", p))]
    steps += [(make_step(p, n), reads(make_step(p, n), p.variant(n, seed))) for n in chain(p, name)]
    if mode != "none":
        steps.append(("quantize", reads("quantize", p.variant(name, seed, mode))))
    return steps


def digest(task: str, p: Params, name: str, seed: int, mode: str = "none") -> str:
    """Names one variant's exact configuration: the MLflow tag `config` that the report finds its runs by."""
    config = {"task": task, "seed": seed, "steps": configured(p.for_task(task), name, seed, mode)}
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:16]


def logged(task: str, p: Params, name: str, seed: int, mode: str = "none") -> dict[str, str]:
    """The params a variant's MLflow run shows: the leaf params of its chain (the variant's own value where a
    step it is made from read another), its task, variant and source."""
    p = p.for_task(task)
    flat = {k: v for _, r in configured(p, name, seed, mode) for k, v in r.items()}
    flat |= {"quantize.mode": mode, "prune.method": p.variant(name, seed).prune.method}
    return {"task": task, "variant": name, "from": p.variants[name].source} | {k: str(v) for k, v in flat.items()}
