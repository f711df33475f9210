"""The plan: params.yaml's experiment as an ordered list of step runs.

    bertcompress status --task mrpc              # each run of the plan: done, or will run and why
    python -m tasks.stage plan                   # writes plan/<variant>.json: what each DVC variant stage reads

`runs(p, task)` walks the variant table once: GLUE, its tokens and the pretrained model, then per seed every
variant (fine-tuned, trained on from or pruned from the variant it names, distilled from its teacher), each of
its quantized modes, and an evaluation of each model, in dependency order. The Prefect flow maps over it
(flows/compress.py), DVC's variant stage filters it (tasks/stage.py), the status command and the benches iterate
it. `sweep(p, task)` is the lr sweep that comes first when experiment.lr_candidates is set. What each run is
keyed on is tasks/keys.py; the table as one task runs it (its recipes, a target's shape), tasks/recipes.py; what
the experiment refuses before work, tasks/refusals.py.
"""

from __future__ import annotations

from dataclasses import dataclass

from bertcompress import glue
from bertcompress.params import PRETRAINED, Params, choice_split


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


def chain(p: Params, name: str) -> list[str]:
    """The variant and the variants it is made from, oldest first."""
    names = [name]
    while p.variants[names[0]].source != PRETRAINED:
        names.insert(0, p.variants[names[0]].source)
    return names


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
