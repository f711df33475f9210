"""Parameters: params.yaml as frozen dataclasses, one per section, plus the experiment's variant table.

    bertcompress finetune --task mrpc -S finetune.lr=3e-5          # any key, as `dvc exp run -S` takes it
    python -m flows.compress -S variants.gradual.prune.final_sparsity=0.8

params.yaml beside this package is the only source of defaults: a params file given by the user is laid over
it, key by key (a `variants` table given replaces the default table whole). Every check that needs no data or
model is here, per section; an unknown key, a wrong type or an out-of-range value is one line naming it and
the fix. A Params object is immutable: `replace` and `variant` return new, checked ones.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import typing
from dataclasses import dataclass
from pathlib import Path

from . import io
from .checks import PRUNE_METHODS, QUANTIZE_MODES, UserError, check_type, refused, unknown, validate, variant_table  # noqa: F401

DEFAULTS = Path(__file__).resolve().parent.parent / "params.yaml"
PRETRAINED = "pretrained"  # a variant's `from` when it is fine-tuned from model.name


@dataclass(frozen=True)
class Data:
    source: str
    max_train_samples: int | None
    max_eval_samples: int | None
    dev_fraction: float | None


@dataclass(frozen=True)
class Model:
    name: str


@dataclass(frozen=True)
class Tokenize:
    max_length: int


@dataclass(frozen=True)
class Finetune:
    lr: float
    batch_size: int
    epochs: int
    warmup_ratio: float
    weight_decay: float
    seed: int
    max_steps: int | None
    group_by_length: int
    pad_to_multiple: int
    precision: str
    unpad: bool


@dataclass(frozen=True)
class Prune:
    method: str
    scope: str
    ranking: str
    criterion: str
    momentum: float
    pattern: str
    initial_sparsity: float
    final_sparsity: float
    begin_step: int
    end_step: int | None
    hold_steps: int | None
    frequency: int
    power: int
    recovery_steps: int
    stages: int
    heads_fraction: float
    ffn_fraction: float
    embedding_sparsity: float


@dataclass(frozen=True)
class Distill:
    teacher: str | None
    temperature: float
    weight: float
    hidden_weight: float


@dataclass(frozen=True)
class Quantize:
    mode: str
    calibration_size: int
    qat_steps: int
    qat_lr: float
    qat_observers: str
    qat_distill: bool


@dataclass(frozen=True)
class Evaluate:
    batch_size: int
    latency_runs: int
    latency_threads: int


@dataclass(frozen=True)
class Export:
    format: str


@dataclass(frozen=True)
class Runtime:
    """How a run executes, not what it computes: no cache key reads these."""

    threads: int | None
    log_every: int
    cuda_graphs: bool


@dataclass(frozen=True)
class Experiment:
    tasks: list[str]
    seeds: list[int]
    baseline: str
    lr_candidates: list[float]
    bootstrap_samples: int
    champion_budget: float
    objective: str
    target_speedup: float | None
    choose_on: str


@dataclass(frozen=True)
class Variant:
    """One entry of the variant table: made from `source` (pretrained, or another variant) with the params
    overrides `overrides` ({section: {key: value}}), then quantized in each of `quantize`. `tasks`: per-task
    recipes ({task: overrides}) laid over `overrides` for that task by Params.for_task."""

    name: str
    source: str
    overrides: dict
    quantize: tuple[str, ...]
    tasks: dict = dataclasses.field(default_factory=dict)
    task: str | None = None  # the task Params.for_task resolved `overrides` for (None: not resolved)

    @property
    def finetuned(self) -> bool:
        return self.source == PRETRAINED


RECIPE = ("data", "model", "tokenize", "finetune", "prune", "distill", "quantize", "evaluate", "runtime")
VARIANT_SECTIONS = ("finetune", "prune", "distill")  # what a variant entry may override
SECTIONS = {
    "data": Data,
    "model": Model,
    "tokenize": Tokenize,
    "finetune": Finetune,
    "prune": Prune,
    "distill": Distill,
    "quantize": Quantize,
    "evaluate": Evaluate,
    "export": Export,
    "runtime": Runtime,
    "experiment": Experiment,
}


@dataclass(frozen=True)
class Params:
    data: Data
    model: Model
    tokenize: Tokenize
    finetune: Finetune
    prune: Prune
    distill: Distill
    quantize: Quantize
    evaluate: Evaluate
    export: Export
    runtime: Runtime
    experiment: Experiment
    variants: dict  # name -> Variant, parents listed before the variants made from them

    def flat(self) -> dict:
        """{'finetune.lr': 2e-05, ...} over the recipe sections: the form of MLflow params and `-S` overrides."""
        return {f"{s}.{k}": v for s in RECIPE for k, v in vars(getattr(self, s)).items()}

    def to_dict(self) -> dict:
        out = {s: copy.deepcopy(vars(getattr(self, s))) for s in SECTIONS}
        out["variants"] = {
            v.name: {"from": v.source, **copy.deepcopy(v.overrides), "quantize": list(v.quantize)}
            | ({"tasks": copy.deepcopy(v.tasks)} if v.tasks and v.task is None else {})
            for v in self.variants.values()
        }
        return out

    def for_task(self, task: str) -> Params:
        """The experiment as one task runs it: each variant's recipe for the task (`tasks.<task>` of its entry) laid
        over the entry's own values, key by key; a task the entry has no recipe for runs the entry's values (a table
        resolved for the task is returned as is). A recipe's key wins over the entry's:
        `-S variants.structured.prune.recovery_steps=100` changes the entry,
        `-S variants.structured.tasks.sst2.prune.recovery_steps=100` SST-2's recipe. A baseline whose recipe sets
        its own finetune.lr has no lr sweep (experiment.lr_candidates read as [])."""
        resolved = {v.task for v in self.variants.values()} - {None}
        if resolved == {task}:
            return self
        if resolved:
            raise RuntimeError(f"the variant table is resolved for {resolved.pop()}, not {task}")
        variants = {}
        for name, v in self.variants.items():
            overrides = copy.deepcopy(v.overrides)
            for section, values in v.tasks.get(task, {}).items():
                overrides.setdefault(section, {}).update(values)
            variants[name] = dataclasses.replace(v, overrides=overrides, task=task)
        p = dataclasses.replace(self, variants=variants)
        if "lr" in variants[self.experiment.baseline].overrides.get("finetune", {}):  # its own lr: nothing to sweep
            p = dataclasses.replace(p, experiment=dataclasses.replace(p.experiment, lr_candidates=[]))
        validate(p)
        return p

    def replace(self, changes: dict) -> Params:
        """A checked copy with {'section.key': value} changes (typed and range-checked like params.yaml)."""
        by: dict[str, dict] = {}
        for key, value in changes.items():
            section, name = key.split(".")
            hints = _types(SECTIONS[section])
            if name not in hints:
                raise UserError(str(unknown("key", key, [f"{section}.{k}" for k in hints])))
            by.setdefault(section, {})[name] = check_type(key, value, hints[name])
        p = dataclasses.replace(self, **{s: dataclasses.replace(getattr(self, s), **kv) for s, kv in by.items()})
        validate(p, table=False)
        return p

    def variant(self, name: str, seed: int, mode: str = "none") -> Params:
        """The params one (variant, seed, quantization mode) runs with: the variant's overrides, then the seed
        and the mode. A variant's prune.method and distill.teacher are its entry's (none when it names none), not
        the section's, which are the CLI's."""
        v = self.variants[name]
        if v.tasks and v.task is None:  # the recipe of which task? Params.for_task(task) says
            raise RuntimeError(f"variant {name} has per-task recipes: resolve the table with p.for_task(task) first")
        changes = {"prune.method": "none", "distill.teacher": None}
        changes |= {f"{s}.{k}": val for s, kv in v.overrides.items() for k, val in kv.items()}
        changes |= {"finetune.seed": seed, "quantize.mode": mode}
        return self.replace(changes)


def choice_split(p: Params) -> str:
    """The split every choice of the experiment is made on (the lr sweep, the champion, the shipped format):
    experiment.choose_on, where auto = dev when data.dev_fraction carves one, else validation."""
    on = p.experiment.choose_on
    return ("dev" if p.data.dev_fraction else "validation") if on == "auto" else on


def _types(cls) -> dict:
    return typing.get_type_hints(cls)


def _section(name: str, values: dict, source: str, given: dict | None = None):
    """One section checked; an error names where its key came from (given: {'finetune.lr': '-S finetune.lr=x'})."""
    cls, hints = SECTIONS[name], _types(SECTIONS[name])
    origin = lambda key: (given or {}).get(f"{name}.{key}", source)  # noqa: E731
    if not isinstance(values, dict):
        raise UserError(f"{source}: section '{name}' must be a mapping of keys, got {values!r}")
    for key in values:
        if key not in hints:
            raise UserError(f"{origin(key)}: " + str(unknown("key", f"{name}.{key}", [f"{name}.{k}" for k in hints])))
    missing = [k for k in hints if k not in values]
    if missing:
        raise UserError(f"{source}: {name} lacks {', '.join(missing)}; add them (see {DEFAULTS.name} in the project)")
    return cls(**{k: check_type(f"{origin(k)}: {name}.{k}", values[k], hints[k]) for k in hints})


def _build(raw: dict, source: str, table: bool = True, given: dict | None = None) -> Params:
    for name in raw:
        if name not in SECTIONS and name != "variants":
            raise UserError(
                f"{(given or {}).get(name, source)}: " + str(unknown("section", name, [*SECTIONS, "variants"]))
            )
    p = Params(
        **{s: _section(s, raw.get(s) or {}, source, given) for s in SECTIONS},
        variants=variant_table(
            raw.get("variants"), source, {s: _types(SECTIONS[s]) for s in VARIANT_SECTIONS}, Variant, given
        ),
    )
    validate(p, table)
    return p


def add_arguments(parser) -> None:
    """--params FILE and repeatable -S SECTION.KEY=VALUE: how every command takes params.yaml and overrides."""
    parser.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    parser.add_argument(
        "-S",
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override a parameter, e.g. -S finetune.lr=3e-5 (repeatable)",
    )


def load(path: str | os.PathLike | None = "params.yaml", overrides: list[str] = ()) -> Params:
    """The defaults (the project's params.yaml), the file at path laid over them, then the overrides."""
    raw = io.read_yaml(DEFAULTS)
    source = "params"
    if path is not None and Path(path).resolve() != DEFAULTS:
        raw, source = io.merge(raw, io.read_yaml(Path(path))), str(path)
    elif path is not None:
        source = str(path)
    given = {}
    for item in overrides:
        io.override(raw, item)
        key = item.partition("=")[0]
        given[key] = given[key.split(".")[0]] = f"override -S {item}"
    return _build(raw, source, given=given)


def defaults() -> Params:
    return load(None)
