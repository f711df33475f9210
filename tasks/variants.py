"""The variant table as work: which step makes each variant, the leaf params every step reads, and the keys.

    python -m tasks.stage plan          # writes plan/<variant>.json: what each of DVC's variant stages reads

A step's cache key is what dvc.lock records, exactly: the leaf params the step reads (each core step module
says which, in `reads(params)`: a dense fine-tune reads no prune.* key, a one-shot pruning no prune schedule),
a content hash of every input file or folder, and the source of the core modules the step's module imports,
followed through the package (function-local imports too). The Prefect tasks (tasks/steps.py) are cached on
it, and DVC's stages skip by it (tasks/stage.py); runtime.* is read by no step, so it keys nothing.
A variant's MLflow runs carry `config`, a digest of every leaf param its chain of steps reads.
"""
from __future__ import annotations

import ast
import functools
import hashlib
import json
from pathlib import Path

from bertcompress import evaluate, finetune, glue, io, model, prune, quantize, tokenize
from bertcompress.params import PRETRAINED, Params

PACKAGE = Path(finetune.__file__).parent
MODULES = {"download": glue, "tokenize": tokenize, "pretrained": model, "finetune": finetune, "prune": prune,
           "quantize": quantize, "evaluate": evaluate}
FILES = ("data_dir", "base", "model_dir", "train", "validation", "teacher")  # task arguments that name inputs


def reads(step: str, q: Params) -> dict:
    """{leaf param: value} that the step's result depends on, for params q (one variant, seed and mode)."""
    keys = ["model.name"] if step == "pretrained" else MODULES[step].reads(q)
    flat = q.flat()
    return {k: flat[k] for k in keys}


def make_step(p: Params, name: str) -> str:
    """finetune for a variant made from the pretrained model or trained on from another variant (gradual pruning),
    prune for one pruned at once (oneshot, structured) from another variant."""
    v = p.variants[name]
    return "finetune" if v.finetuned or v.overrides.get("prune", {}).get("method") == "gradual" else "prune"


def teacher(p: Params, name: str, seed: int) -> str | None:
    """The variant this one is distilled from (distill.teacher), if any."""
    return p.variant(name, seed).distill.teacher


def chain(p: Params, name: str) -> list[str]:
    """The variant and the variants it is made from, oldest first."""
    names = [name]
    while p.variants[names[0]].source != PRETRAINED:
        names.insert(0, p.variants[names[0]].source)
    return names


def _imports(path: Path) -> set[str]:
    """bertcompress modules that one module imports, anywhere in it (relative or absolute imports)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and (node.level == 1 or (node.module or "").startswith("bertcompress")):
            base = (node.module or "").removeprefix("bertcompress").lstrip(".")
            found |= {base} if base else {a.name for a in node.names}
        elif isinstance(node, ast.Import):
            found |= {a.name.split(".")[1] for a in node.names if a.name.startswith("bertcompress.")}
    return {m.split(".")[0] for m in found if (PACKAGE / f"{m.split('.')[0]}.py").is_file()}


@functools.cache
def code(step: str) -> tuple[str, ...]:
    """The core source files a step runs: its module and everything it imports within the package."""
    todo, seen = [Path(MODULES[step].__file__).stem], set()
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo += sorted(_imports(PACKAGE / f"{name}.py") - seen)
    return tuple(sorted(f"bertcompress/{m}.py" for m in seen))


def key(step: str, q: Params, inputs: dict, extra: dict | None = None) -> str:
    """The step's cache key: its leaf params, its inputs' contents, its code (the core modules it imports and the
    task wrapper, which picks the arguments) and any extra arguments."""
    parts = {"step": step, "reads": reads(step, q), "extra": extra or {},
             "inputs": {k: io.content_hash(v) for k, v in sorted(inputs.items())},
             "code": {f: io.content_hash(PACKAGE.parent / f) for f in (*code(step), "tasks/steps.py")}}
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def configured(p: Params, name: str, seed: int, mode: str = "none") -> list[tuple[str, dict]]:
    """(step, leaf params) of everything that makes one (variant, seed, mode), data and base model first."""
    steps = [("tokenize", reads("tokenize", p)), ("pretrained", reads("pretrained", p))]
    steps += [(make_step(p, n), reads(make_step(p, n), p.variant(n, seed))) for n in chain(p, name)]
    if mode != "none":
        steps.append(("quantize", reads("quantize", p.variant(name, seed, mode))))
    return steps


def digest(task: str, p: Params, name: str, seed: int, mode: str = "none") -> str:
    """Names one variant's exact configuration: the MLflow tag `config` that the report finds its runs by."""
    config = {"task": task, "seed": seed, "steps": configured(p, name, seed, mode)}
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:16]


def logged(task: str, p: Params, name: str, seed: int, mode: str = "none") -> dict[str, str]:
    """The params a variant's MLflow run shows: the leaf params of its chain (the variant's own value where a
    step it is made from read another), its task, variant and source."""
    flat = {k: v for _, r in configured(p, name, seed, mode) for k, v in r.items()}
    flat |= {"quantize.mode": mode, "prune.method": p.variant(name, seed).prune.method}
    return {"task": task, "variant": name, "from": p.variants[name].source} | {k: str(v) for k, v in flat.items()}


def method(name: str, mode: str = "none") -> str:
    """The MLflow `method` tag and the report's row label: gradual, gradual+dynamic_emb."""
    return name if mode == "none" else f"{name}+{mode}"


def with_lr(p: Params, lr: float) -> Params:
    return p.replace({"finetune.lr": lr})


def best_lr(scores: dict[float, float]) -> float:
    """The seed's rule: the candidate lr with the best validation metric of the baseline; ties go to the
    candidate listed first. The flow and DVC apply it to the sweep's results, the report to the same runs."""
    return max(scores, key=lambda lr: scores[lr])


def plan(p: Params) -> dict[str, dict]:
    """{file name: content} of the DVC plan: per variant, the leaf params each of its steps reads, for every
    task and seed; the sweep's (swept lr shown as 'sweep'). A stage whose plan file is unchanged is skipped."""
    e, files = p.experiment, {}
    swept = bool(e.lr_candidates)
    for name, v in p.variants.items():
        rows = {}
        for seed in e.seeds:
            q = p.variant(name, seed)
            row = {make_step(p, name): reads(make_step(p, name), q)}
            if swept and "finetune.lr" in row[make_step(p, name)] and "lr" not in v.overrides.get("finetune", {}):
                row[make_step(p, name)]["finetune.lr"] = "sweep"
            row |= {f"quantize.{m}": reads("quantize", p.variant(name, seed, m)) for m in v.quantize}
            row["evaluate"] = reads("evaluate", q)
            rows[str(seed)] = row
        files[f"{name}.json"] = {"tasks": e.tasks, "from": v.source, "seeds": rows}
    base = p.variant(e.baseline, e.seeds[0])
    files["sweep.json"] = {"tasks": e.tasks, "lr_candidates": e.lr_candidates, "lr": p.finetune.lr}
    if swept:  # what the sweep's fine-tunes and evaluations read; with no candidates it only passes finetune.lr on
        files["sweep.json"] |= {"finetune": reads("finetune", base), "evaluate": reads("evaluate", base)}
    files |= {f"{step}-{task}.json": reads(step, p) for step in ("download", "tokenize") for task in e.tasks}
    files["pretrained.json"] = reads("pretrained", p)
    files["report.json"] = {"tasks": e.tasks, "seeds": e.seeds, "baseline": e.baseline,
                            "bootstrap_samples": e.bootstrap_samples, "champion_budget": e.champion_budget,
                            "variants": list(p.variants)}
    return files
