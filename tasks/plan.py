"""The plan: params.yaml's experiment as an ordered list of step runs, and the step record of each.

    bertcompress status --task mrpc              # each run of the plan: done, or will run and why
    python -m tasks.stage plan                   # writes plan/<variant>.json: what each DVC variant stage reads

`runs(p, task)` walks the variant table once: GLUE, its tokens and the pretrained model, then per seed every
variant (fine-tuned, trained on from or pruned from the variant it names, distilled from its teacher), each of
its quantized modes, and an evaluation of each model, in dependency order. The Prefect flow maps over it
(flows/compress.py), DVC's variant stage filters it (tasks/stage.py), the status command and the benches iterate
it. `sweep(p, task)` is the lr sweep that comes first when experiment.lr_candidates is set.

A step's record (bertcompress/record.py) is what dvc.lock records, exactly: the leaf params the step reads (each
core step module says which, in `reads(params)`: a dense fine-tune reads no prune schedule, a one-shot pruning
no fine-tuning epochs; tests/test_reads.py fails when a step reads a key its list lacks), a content hash of every
input file or folder, and the source of the core modules the step's module imports. runtime.* is read by no
step's key. A variant's MLflow runs carry `config`, a digest of every leaf param its chain of steps reads.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from bertcompress import evaluate, finetune, glue, model, prune, quantize, record, shapes, tokenize
from bertcompress.params import PRETRAINED, Params, UserError, choice_split, unknown

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
# What Params.variant sets per run of the experiment, and the value a params file or override must leave them at
# there: each variant's entry (prune.method, distill.teacher), experiment.seeds and the entry's quantize list say it.
PER_RUN = {
    "prune.method": ("none", "variants.<name>.prune.method"),
    "distill.teacher": (None, "variants.<name>.distill.teacher"),
    "quantize.mode": ("none", "variants.<name>.quantize: [modes]"),
    "finetune.seed": (42, "experiment.seeds"),
}


@dataclass(frozen=True)
class Run:
    """One step of the plan. source / teacher: the ids of the runs that made its input model and its teacher."""

    step: str
    task: str
    name: str | None = None
    seed: int | None = None
    mode: str = "none"
    source: str | None = None
    teacher: str | None = None
    lr: float | None = None  # a sweep candidate's lr; None: the experiment's

    @property
    def label(self) -> str:
        """dense-s42, structured+dynamic_emb-s42, dense-s42-lr5e-05 (a sweep run); the task for data steps."""
        if self.name is None:
            return self.task
        return f"{method(self.name, self.mode)}-s{self.seed}" + (f"-lr{self.lr:g}" if self.lr is not None else "")

    @property
    def id(self) -> str:
        return f"{self.step} {self.label}"


def make_step(p: Params, name: str) -> str:
    """finetune for a variant made from the pretrained model or trained on from another variant (gradual pruning),
    prune for one pruned at once (oneshot, structured) from another variant."""
    v = p.variants[name]
    return "finetune" if v.finetuned or v.overrides.get("prune", {}).get("method") == "gradual" else "prune"


def _data(task: str) -> list[Run]:
    return [Run("download", task), Run("tokenize", task, source=f"download {task}"), Run("pretrained", task)]


def sweep(p: Params, task: str) -> list[Run]:
    """The lr sweep: the baseline (first seed) fine-tuned and evaluated at each candidate lr."""
    p = p.for_task(task)
    e, out = p.experiment, []
    for lr in e.lr_candidates:
        made = Run("finetune", task, e.baseline, e.seeds[0], source=f"pretrained {task}", lr=lr)
        out += [made, Run("evaluate", task, e.baseline, e.seeds[0], source=made.id, lr=lr)]
    return _data(task) + out if out else []


def runs(p: Params, task: str) -> list[Run]:
    """Every run of the experiment on one task, each after the runs it needs (p: with the lr the sweep chose)."""
    p = p.for_task(task)
    out = _data(task)
    for seed in p.experiment.seeds:
        made = {}
        for name, v in p.variants.items():  # a variant comes after the one it is made from, and its teacher
            teacher = p.variant(name, seed).distill.teacher
            source = f"pretrained {task}" if v.finetuned else made[v.source].id
            made[name] = Run(
                make_step(p, name), task, name, seed, source=source, teacher=made[teacher].id if teacher else None
            )
            out += [made[name], Run("evaluate", task, name, seed, source=made[name].id)]
            for mode in v.quantize:
                q = Run("quantize", task, name, seed, mode, source=made[name].id)
                out += [q, Run("evaluate", task, name, seed, mode, source=q.id)]
    return out


def params_of(r: Run, p: Params) -> Params:
    """The experiment's params as the run's task receives them (a sweep run's: at its lr)."""
    return with_lr(p, r.lr) if r.lr is not None else p


def arguments(r: Run, p: Params, made: dict) -> dict:
    """The keyword arguments of the run's task (tasks/steps.py); made: {run id: its result} of the runs before."""
    a = {"task": r.task, "p": params_of(r, p)}
    if r.step == "download":
        return a | {"out": f"data/glue/{r.task}"}
    if r.step == "tokenize":
        return a | {"data_dir": made[r.source], "cache_dir": "data/tokenized"}
    if r.step == "pretrained":
        return {"p": p, "out": f"data/pretrained/{p.model.name.replace('/', '--')}"}
    data = made[f"tokenize {r.task}"]
    a |= {"name": r.name, "seed": r.seed} | ({"mode": r.mode} if r.step in ("quantize", "evaluate") else {})
    model_dir = {"base" if r.step == "finetune" else "model_dir": made[r.source]}
    splits = {
        "finetune": ("train", "validation"),
        "prune": ("train",),
        "quantize": ("train",),
        "evaluate": ("validation", "dev"),
    }[r.step]
    teacher = {"teacher": made[r.teacher] if r.teacher else None} if r.step in ("finetune", "prune") else {}
    return a | model_dir | {s: data[s] for s in splits if s in data} | teacher


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


def refuse(p: Params) -> None:
    """What the experiment cannot run, refused before any work (one line naming the fix): per-run keys set
    elsewhere (`refuse_per_run_keys`), a latency objective with no latency measured."""
    refuse_per_run_keys(p)
    for name, v in p.variants.items():
        for task in v.tasks:
            if task not in glue.TASKS:
                raise UserError(f"variants.{name}.tasks: " + str(unknown("task", task, list(glue.TASKS))))
    if p.experiment.objective == "latency" and not p.evaluate.latency_runs:
        raise UserError(
            "experiment.objective=latency ranks variants by the CPU latency evaluate measures, but "
            "evaluate.latency_runs is 0; set evaluate.latency_runs=20, or experiment.objective=size"
        )


def resolve(p: Params, task: str) -> Params:
    """The experiment as the task runs it: each variant's recipe for the task (Params.for_task), and with
    experiment.target_speedup every structured variant cut to the shape picked for it (bertcompress/shapes.py,
    timed once on this CPU and kept in results/shapes)."""
    p = p.for_task(task)
    return p if p.experiment.target_speedup is None else shapes.apply(p, shapes.choose(p))


def recipes(p: Params, task: str) -> str:
    """One line on the per-task recipes the resolved table (Params.for_task) runs for the task: which variants run
    the task's own recipe and which have none studied for it (they run their entry's values); '' when the table
    has no per-task recipes (a preset's)."""
    own = [n for n, v in p.variants.items() if task in v.tasks]
    none = [n for n, v in p.variants.items() if v.tasks and task not in v.tasks]
    said = [f"own: {', '.join(own)}"] if own else []
    if none:
        base = set.intersection(*({t for t, o in p.variants[n].tasks.items() if not o} for n in none))
        whose = f", {'/'.join(sorted(base))}'s recipe" if base else ""
        said.append(f"none studied: {', '.join(none)} (the table's values{whose})")
    return f"recipes ({task}): " + "; ".join(said) if said else ""


def refuse_per_run_keys(p: Params) -> None:
    """The experiment sets prune.method, distill.teacher, quantize.mode and finetune.seed per run: a value given
    for them anywhere else would be accepted and change nothing, so it is refused (one line naming the fix)."""
    flat = p.flat()
    for key, (neutral, instead) in PER_RUN.items():
        if flat[key] != neutral:
            raise UserError(
                f"{key}={flat[key]} is not read by the experiment, which sets it per run; set "
                f"{instead} instead (or use the step's CLI: bertcompress <step> -S {key}=...)"
            )


def chain(p: Params, name: str) -> list[str]:
    """The variant and the variants it is made from, oldest first."""
    names = [name]
    while p.variants[names[0]].source != PRETRAINED:
        names.insert(0, p.variants[names[0]].source)
    return names


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


def method(name: str, mode: str = "none") -> str:
    """The MLflow `method` tag and the report's row label: gradual, gradual+dynamic_emb."""
    return name if mode == "none" else f"{name}+{mode}"


def with_lr(p: Params, lr: float) -> Params:
    return p.replace({"finetune.lr": lr})


def score(task: str, p: Params, row: dict) -> float:
    """What a choice reads of an evaluation (a row, or a run's MLflow metrics): the headline metric on the split
    choices are made on (params.choice_split: dev when data.dev_fraction carves one)."""
    name = glue.get_task(task).metric
    return row[f"dev_{name}" if choice_split(p) == "dev" else name]


def best_lr(scores: dict[float, float]) -> float:
    """The seed's rule: the candidate lr with the best metric of the baseline on the choice split (`score`); ties
    go to the candidate listed first. The flow and DVC apply it to the sweep's results, the report to the same
    runs."""
    return max(scores, key=lambda lr: scores[lr])


def dvc_plan(p: Params) -> dict[str, dict]:
    """{file name: content} of the DVC plan: per variant, the leaf params each of its steps reads, for every
    task (its recipe: Params.for_task) and seed; the sweep's (swept lr shown as 'sweep'). A stage whose plan file
    is unchanged is skipped."""
    e, files = p.experiment, {}
    for name, v in p.variants.items():
        rows = {}
        for task in e.tasks:
            t = resolve(p, task)
            swept = bool(t.experiment.lr_candidates)
            for seed in e.seeds:
                q, step = t.variant(name, seed), make_step(t, name)
                row = {step: reads(step, q)}
                if swept and "finetune.lr" in row[step] and "lr" not in t.variants[name].overrides.get("finetune", {}):
                    row[step]["finetune.lr"] = "sweep"
                row |= {f"quantize.{m}": reads("quantize", t.variant(name, seed, m)) for m in v.quantize}
                row["evaluate"] = reads("evaluate", q)
                rows.setdefault(task, {})[str(seed)] = row
        files[f"{name}.json"] = {"tasks": e.tasks, "from": v.source, "runs": rows}
    files["sweep.json"] = {"tasks": e.tasks, "lr": p.finetune.lr}
    for task in e.tasks:  # what the sweep's fine-tunes and evaluations read; with no candidates it passes the lr on
        t = resolve(p, task)
        base = t.variant(e.baseline, e.seeds[0])
        files["sweep.json"][task] = {"lr_candidates": t.experiment.lr_candidates}
        if t.experiment.lr_candidates:
            files["sweep.json"][task] |= {"finetune": reads("finetune", base), "evaluate": reads("evaluate", base)}
    files |= {f"{step}-{task}.json": reads(step, p) for step in ("download", "tokenize") for task in e.tasks}
    files["pretrained.json"] = reads("pretrained", p)
    files["report.json"] = {
        "tasks": e.tasks,
        "seeds": e.seeds,
        "baseline": e.baseline,
        "bootstrap_samples": e.bootstrap_samples,
        "champion_budget": e.champion_budget,
        "objective": e.objective,
        "variants": list(p.variants),
    }
    return files
