"""The step record: what one step's output was made from, beside the output as `<out>.step.json`.

    bertcompress status --task mrpc          # for each step of the plan: done, or will run and why

A record holds the step, the leaf params it read with their values, the content hash of every input file or
folder, the hash of the code it runs (its module and every package module that module imports, followed
through the package, function-local imports too) and the extra arguments that pick its output (task, variant,
mode); its key is the sha256 of all of that. It is the one answer to "will this rerun?": the Prefect cache
policy, the DVC stages, an interrupted fine-tune's resume check and the MLflow tags all read it, and an output
counts as done only when its record is there with the same key.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import json
from pathlib import Path

from . import io

PACKAGE = Path(__file__).resolve().parent


def _imports(path: Path) -> set[str]:
    """Package modules that one module imports, anywhere in it (relative or absolute imports)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and (node.level == 1 or (node.module or "").startswith(PACKAGE.name)):
            base = (node.module or "").removeprefix(PACKAGE.name).lstrip(".")
            found |= {base} if base else {a.name for a in node.names}
        elif isinstance(node, ast.Import):
            found |= {a.name.split(".")[1] for a in node.names if a.name.startswith(f"{PACKAGE.name}.")}
    return {m.split(".")[0] for m in found if (PACKAGE / f"{m.split('.')[0]}.py").is_file()}


@functools.cache
def code_files(module: str) -> tuple[str, ...]:
    """The package's source files that module (e.g. 'finetune') runs: itself and what it imports, transitively."""
    todo, seen = [module], set()
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo += sorted(_imports(PACKAGE / f"{name}.py") - seen)
    return tuple(sorted(f"{PACKAGE.name}/{m}.py" for m in seen))


def _hash(value) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


def make(step: str, reads: dict, inputs: dict[str, str], module: str, extra: dict | None = None) -> dict:
    """The record of one step call: reads {leaf param: value}, inputs {role: path}, the step's module."""
    record = {
        "step": step,
        "reads": dict(sorted(reads.items())),
        "extra": extra or {},
        "inputs": {role: io.content_hash(path) for role, path in sorted(inputs.items())},
        "code": {f: io.content_hash(PACKAGE.parent / f) for f in code_files(module)},
    }
    return {"key": _hash(record), **record}


def path(out: str | Path) -> Path:
    return Path(f"{str(out).rstrip('/')}.step.json")


def write(out: str | Path, record: dict, result=None) -> None:
    """The record beside out, with the step's result (a path, {split: path}, a row) and the content hash of the
    files it names (else of out), so an output edited or cut short since is not taken as done."""
    named = list(result.values()) if isinstance(result, dict) else [result]  # {split: path}, a path, or a row
    files = named if all(isinstance(f, str) and Path(f).exists() for f in named) else [str(out)]
    outputs = {f: io.content_hash(f) for f in files}
    io.write_json(path(out), record | ({"result": result} if result is not None else {}) | {"outputs": outputs})


def read(out: str | Path) -> dict | None:
    """The record beside out, if both are there."""
    p = path(out)
    return io.read_json(p) if p.is_file() and Path(out).exists() else None


def same(out: str | Path, record: dict) -> bool:
    """out was started (or made) under this record: its key, whatever out holds now (a run's work folder)."""
    return (read(out) or {}).get("key") == record["key"]


def done(out: str | Path, record: dict) -> bool:
    """out holds the result of exactly this step call, as it was written."""
    found = read(out) or {}
    return found.get("key") == record["key"] and all(
        Path(f).exists() and io.content_hash(f) == h for f, h in found.get("outputs", {}).items()
    )


def why(old: dict | None, new: dict) -> str:
    """What differs between the record an output was made with and the one a run would make, in words."""
    if old is None:
        return "never made"
    if old["key"] == new["key"]:
        return "its output changed since it was made"
    changes = []
    for k in sorted(old["reads"].keys() | new["reads"].keys()):
        a, b = old["reads"].get(k, "(not read)"), new["reads"].get(k, "(not read)")
        if a != b:
            changes.append(f"{k} {a} -> {b}")
    changes += [f"input {k} changed" for k in sorted(new["inputs"]) if old["inputs"].get(k) != new["inputs"][k]]
    changes += [
        f"{k} {old['extra'].get(k)} -> {v}" for k, v in sorted(new["extra"].items()) if old["extra"].get(k) != v
    ]
    changes += [f"code {f} changed" for f in sorted(new["code"]) if old["code"].get(f) != new["code"][f]]
    return "; ".join(changes) or "the record differs"
