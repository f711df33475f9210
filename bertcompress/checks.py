"""Range checks of params, per section, and of the variant table: everything checkable before any data or model.

Each check raises UserError with one line naming the key, the value and the fix. bertcompress/params.py runs
them whenever it builds a Params object.
"""

from __future__ import annotations

import copy
import difflib
import math
import re
import types
import typing

PRUNE_METHODS = ("none", "gradual", "oneshot", "structured")
CRITERIA = ("magnitude", "movement", "first_order")
QUANTIZE_MODES = ("none", "dynamic", "dynamic_emb", "fp16", "bf16", "static", "qat")
CHOOSE_ON = ("auto", "dev", "validation")  # experiment.choose_on
SHIPPED_FORMATS = ("auto", "onnx", "onnx_int8", "openvino")  # export.format: how the champion ships (a float model)
OBJECTIVES = ("latency", "size")  # experiment.objective: what the champion is best at, within the budget
RESERVED = ("pretrained", "sweep", "flow", "bench", "eval")  # folders beside the variants' under outputs/


class UserError(Exception):
    """Bad input: the message is one line that names the problem and the fix."""


def refused(e: UserError, hint: str = "") -> int:
    """How every entry point ends on bad input: `error: <the one line>` on stderr, exit status 2."""
    import sys

    print(f"error: {e}{hint}", file=sys.stderr)
    return 2


def _finite(where: str, value: float) -> float:
    if not math.isfinite(value):
        raise UserError(f"{where} must be a finite number, got {value!r}; fix the value in params.yaml or the override")
    return value


def check_type(where: str, value, annotation):
    hints = typing.get_args(annotation) if isinstance(annotation, types.UnionType) else (annotation,)
    for t in hints:
        if t is type(None) and value is None:
            return value
        if t is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return _finite(where, float(value))
        if t is float and isinstance(value, str):  # YAML 1.1 reads 3e-5 (no dot) as a string
            try:
                number = float(value)
            except ValueError:
                continue
            return _finite(where, number)
        if t is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if t in (str, bool) and isinstance(value, t):
            return value
        if typing.get_origin(t) is list and isinstance(value, list):
            return [check_type(where, v, typing.get_args(t)[0]) for v in value]
    names = " or ".join("null" if t is type(None) else getattr(t, "__name__", str(t)) for t in hints)
    quote = (
        " (YAML 1.1 reads an unquoted 2:4 as the number 124: quote it)"
        if str in hints and isinstance(value, int)
        else ""
    )
    raise UserError(f"{where}: expected {names}, got {value!r}{quote}; fix the value in params.yaml or the override")


def unknown(what: str, name: str, known) -> UserError:
    near = difflib.get_close_matches(name, list(known), n=1)
    hint = f"did you mean '{near[0]}'? " if near else ""
    return UserError(f"unknown {what} '{name}'; {hint}known: {', '.join(known)}")


def variant_table(table, source: str, hints: dict, make, given: dict | None = None) -> dict:
    """The `variants` table checked, as {name: make(name, source, overrides, modes)}, parents first; hints:
    {section: {key: type}} of the sections an entry may override; given: {dotted key: where it came from} of the
    overrides (-S), so an error in one is blamed on it, not on the file."""
    given = given or {}

    def blamed(path: str) -> str:  # the -S that set path (or a key under it), else the file
        hits = [v for k, v in given.items() if k == path or k.startswith(path + ".")]
        return hits[-1] if hits else source

    if not isinstance(table, dict) or not table:
        raise UserError(
            f"{source}: variants must be a mapping of at least one variant, e.g. "
            "{dense: {from: pretrained, quantize: [dynamic]}}"
        )
    out: dict = {}
    for name, entry in table.items():
        where = f"{source}: variants.{name}"
        if not re.fullmatch(r"[a-z][a-z0-9_]*", str(name)) or name in RESERVED:
            raise UserError(
                f"{where}: a variant name is lower-case letters, digits and _ (it names folders, "
                f"DVC stages and MLflow runs), none of {', '.join(RESERVED)}; rename it"
            )
        if not isinstance(entry, dict) or "from" not in entry:
            raise UserError(f"{where}: give at least `from: pretrained` (fine-tune) or `from: <variant>` (prune it)")
        entry = dict(entry)
        src, modes, per_task = entry.pop("from"), entry.pop("quantize", []) or [], entry.pop("tasks", None) or {}
        if src != "pretrained" and src not in out:
            raise UserError(
                f"{where}: from '{src}' is not a variant listed above it; list '{src}' first, or use from: pretrained"
            )
        if not isinstance(modes, list) or any(m not in QUANTIZE_MODES[1:] for m in modes):
            raise UserError(f"{where}.quantize: expected a list of {', '.join(QUANTIZE_MODES[1:])}, got {modes!r}")
        _overrides(where, entry, hints, blamed, f"variants.{name}")
        if not isinstance(per_task, dict):
            raise UserError(
                f"{where}.tasks: expected a mapping of task: overrides, e.g. "
                "{sst2: {prune: {recovery_steps: 7580}}}"
            )
        per_task = {
            task: dict(o or {}) for task, o in per_task.items()
        }  # `mrpc: {}`: the entry's values are its recipe
        for task, o in per_task.items():
            _overrides(f"{where}.tasks.{task}", o, hints, blamed, f"variants.{name}.tasks.{task}")
        out[name] = make(name, src, copy.deepcopy(entry), tuple(modes), copy.deepcopy(per_task))
    return out


def _overrides(where: str, entry: dict, hints: dict, blamed=None, path: str = "") -> None:
    """A variant's {section: {key: value}} overrides checked (values typed in place); blamed(dotted path) names
    where a key came from (a -S override, else the file), in place of where's own source."""
    at = lambda key: f"{blamed(f'{path}.{key}')}: {path}" if blamed else where  # noqa: E731
    for section, values in entry.items():
        if section not in hints:
            raise UserError(f"{at(section)}: " + str(unknown("override section", section, [*hints, "tasks"])))
        if not isinstance(values, dict):
            raise UserError(f"{at(section)}.{section}: expected a mapping of {section} keys, got {values!r}")
        known = hints[section]
        for key, value in values.items():
            if key not in known:
                raise UserError(
                    f"{at(f'{section}.{key}')}: "
                    + str(unknown("key", f"{section}.{key}", [f"{section}.{k}" for k in known]))
                )
            values[key] = check_type(f"{at(f'{section}.{key}')}.{section}.{key}", value, known[key])


def validate(p, table: bool = True) -> None:
    """Range checks that need no data or model, and (table) the variant table's; UserError on the first."""
    f = p.finetune
    for key in ("lr", "batch_size", "epochs"):
        if getattr(f, key) <= 0:
            raise UserError(f"finetune.{key} must be > 0, got {getattr(f, key)}; set a positive value")
    if f.lr >= 1:
        raise UserError(f"finetune.lr must be < 1, got {f.lr}; BERT fine-tunes at 1e-5 to 1e-4")
    if not 0 <= f.weight_decay <= 1:
        raise UserError(f"finetune.weight_decay must be in [0, 1], got {f.weight_decay}; the seed uses 0.01")
    if not 0 <= f.warmup_ratio < 1:
        raise UserError(f"finetune.warmup_ratio must be in [0, 1), got {f.warmup_ratio}")
    if f.precision not in ("fp32", "tf32", "bf16"):
        raise UserError(f"finetune.precision '{f.precision}' is unknown; choose fp32, tf32 or bf16")
    if f.pad_to_multiple <= 0:
        raise UserError(f"finetune.pad_to_multiple must be > 0, got {f.pad_to_multiple}")
    if f.group_by_length < 0:
        raise UserError(f"finetune.group_by_length must be >= 0 (0 = off), got {f.group_by_length}")
    if f.max_steps is not None and f.max_steps <= 0:
        raise UserError(f"finetune.max_steps must be > 0 or null, got {f.max_steps}")
    r = p.runtime
    if r.log_every <= 0:
        raise UserError(f"runtime.log_every must be > 0, got {r.log_every}")
    for key in ("batch_size", "latency_threads"):
        if getattr(p.evaluate, key) <= 0:
            raise UserError(f"evaluate.{key} must be > 0, got {getattr(p.evaluate, key)}")
    if r.threads is not None and r.threads <= 0:
        raise UserError(f"runtime.threads must be > 0 or null, got {r.threads}")
    if p.tokenize.max_length < 8:
        raise UserError(f"tokenize.max_length must be >= 8, got {p.tokenize.max_length}; 128 is the seed's value")
    for key in ("max_train_samples", "max_eval_samples"):
        v = getattr(p.data, key)
        if v is not None and v <= 0:
            raise UserError(f"data.{key} must be > 0 or null, got {v}")
    if p.data.dev_fraction is not None and not 0 < p.data.dev_fraction <= 0.5:
        raise UserError(
            f"data.dev_fraction must be in (0, 0.5] or null (no dev split), got {p.data.dev_fraction}; "
            "0.1 carves a tenth of train"
        )
    if p.experiment.choose_on not in CHOOSE_ON:
        raise UserError(
            f"experiment.choose_on '{p.experiment.choose_on}' is unknown; choose one of: {', '.join(CHOOSE_ON)}"
        )
    if p.experiment.choose_on == "dev" and not p.data.dev_fraction:
        raise UserError(
            "experiment.choose_on=dev, but the run has no dev split (data.dev_fraction is null); "
            "set data.dev_fraction=0.1, or experiment.choose_on=validation"
        )
    if p.export.format not in SHIPPED_FORMATS:
        raise UserError(f"export.format '{p.export.format}' is unknown; choose one of: {', '.join(SHIPPED_FORMATS)}")
    if p.evaluate.latency_runs < 0:
        raise UserError(f"evaluate.latency_runs must be >= 0 (0 = no latency), got {p.evaluate.latency_runs}")
    _validate_prune(p.prune)
    _validate_distill(p.distill)
    _validate_quantize(p.quantize)
    if table:
        _validate_experiment(p)


def _validate_prune(p) -> None:
    for key, known in (
        ("method", PRUNE_METHODS),
        ("scope", ("classifier", "encoder", "all_linear")),
        ("ranking", ("layer", "global")),
        ("criterion", CRITERIA),
    ):
        if getattr(p, key) not in known:
            raise UserError(f"prune.{key} '{getattr(p, key)}' is unknown; choose one of: {', '.join(known)}")
    n_m = pattern(p.pattern)
    if (
        n_m
        and n_m[0] == "n:m"
        and p.method in ("gradual", "oneshot")
        and not math.isclose(p.final_sparsity, 1 - n_m[1] / n_m[2])
    ):
        raise UserError(
            f"prune.pattern {p.pattern} keeps {n_m[1]} of every {n_m[2]} weights, so prune.final_sparsity "
            f"must be {1 - n_m[1] / n_m[2]:g}, got {p.final_sparsity}; set it or choose another pattern"
        )
    if not 0 <= p.momentum < 1:
        raise UserError(f"prune.momentum must be in [0, 1), got {p.momentum}; snip-momentum uses 0.9")
    if p.hold_steps is not None and p.hold_steps < 0:
        raise UserError(f"prune.hold_steps must be >= 0 or null, got {p.hold_steps}")
    if p.hold_steps is not None and p.end_step is not None:
        raise UserError(
            f"prune.end_step ({p.end_step}) and prune.hold_steps ({p.hold_steps}) both place the "
            "schedule's end; set one of them to null"
        )
    if not 0 <= p.final_sparsity < 1:
        raise UserError(f"prune.final_sparsity must be in [0, 1), got {p.final_sparsity}")
    if not 0 <= p.initial_sparsity <= p.final_sparsity:
        raise UserError(
            f"prune.initial_sparsity must be in [0, final_sparsity={p.final_sparsity}], got {p.initial_sparsity}"
        )
    if p.frequency <= 0:
        raise UserError(f"prune.frequency must be > 0 steps, got {p.frequency}")
    for key in ("heads_fraction", "ffn_fraction", "embedding_sparsity"):
        if not 0 <= getattr(p, key) < 1:
            raise UserError(f"prune.{key} must be in [0, 1), got {getattr(p, key)}")
    for key in ("recovery_steps", "begin_step"):
        if getattr(p, key) < 0:
            raise UserError(f"prune.{key} must be >= 0, got {getattr(p, key)}")
    if not 1 <= p.stages <= max(1, p.recovery_steps):
        raise UserError(
            f"prune.stages must be in [1, prune.recovery_steps={p.recovery_steps}] (each stage removes "
            f"more heads and neurons, then recovers), got {p.stages}"
        )
    if p.end_step is not None and p.end_step <= p.begin_step:
        raise UserError(f"prune.end_step ({p.end_step}) must be > prune.begin_step ({p.begin_step})")


def pattern(name: str) -> tuple | None:
    """None (unstructured), ('block', rows, cols) for 'RxC', ('n:m', n, m) for 'N:M'; UserError otherwise."""
    if name == "unstructured":
        return None
    if m := re.fullmatch(r"([1-9]\d*)(x|:)([1-9]\d*)", name):
        if m[2] == "x" or int(m[1]) < int(m[3]):
            return "block" if m[2] == "x" else "n:m", int(m[1]), int(m[3])
    raise UserError(
        f"prune.pattern '{name}' is unknown; choose unstructured, blocks RxC (e.g. 4x1) or N:M with N < M (e.g. 2:4)"
    )


def _validate_distill(d) -> None:  # which teacher: _validate_experiment (a variant) or finetune (a folder)
    if d.temperature <= 0:
        raise UserError(f"distill.temperature must be > 0, got {d.temperature}; 2.0 is usual")
    if not 0 <= d.weight <= 1:
        raise UserError(
            f"distill.weight must be in [0, 1] (loss = weight * KL + (1 - weight) * label loss), got {d.weight}"
        )
    if d.hidden_weight < 0:
        raise UserError(f"distill.hidden_weight must be >= 0, got {d.hidden_weight}")


def _validate_quantize(q) -> None:
    if q.mode not in QUANTIZE_MODES:
        raise UserError(f"quantize.mode '{q.mode}' is unknown; choose one of: {', '.join(QUANTIZE_MODES)}")
    if q.calibration_size <= 0:
        raise UserError(f"quantize.calibration_size must be > 0 examples, got {q.calibration_size}")
    if q.qat_steps <= 0 or not 0 < q.qat_lr < 1 or q.qat_observers not in ("calibrate", "train"):
        raise UserError(
            f"quantize.qat_steps must be > 0, qat_lr in (0, 1), qat_observers calibrate or train; got "
            f"{q.qat_steps}, {q.qat_lr}, {q.qat_observers!r}"
        )


def _validate_experiment(p) -> None:
    e = p.experiment
    if not e.tasks or not e.seeds:
        raise UserError("experiment.tasks and experiment.seeds must each list at least one value")
    if len(set(e.seeds)) != len(e.seeds):
        raise UserError(f"experiment.seeds repeats a seed: {e.seeds}; list each seed once")
    if any(not 0 < lr < 1 for lr in e.lr_candidates):
        raise UserError(
            f"experiment.lr_candidates must all be in (0, 1), got {e.lr_candidates}; e.g. [2e-5, 3e-5, 5e-5]"
        )
    if not 0 <= e.champion_budget <= 100:
        raise UserError(f"experiment.champion_budget must be in [0, 100] metric points, got {e.champion_budget}")
    if e.objective not in OBJECTIVES:
        raise UserError(f"experiment.objective '{e.objective}' is unknown; choose one of: {', '.join(OBJECTIVES)}")
    if e.target_speedup is not None and not 1 < e.target_speedup <= 100:
        raise UserError(f"experiment.target_speedup must be > 1 (e.g. 3 for 3x dense) or null, got {e.target_speedup}")
    if e.bootstrap_samples < 100:
        raise UserError(f"experiment.bootstrap_samples must be >= 100, got {e.bootstrap_samples}; 2000 is usual")
    if e.baseline not in p.variants:
        raise UserError(
            f"experiment.baseline '{e.baseline}' is not in the variant table; choose one of: {', '.join(p.variants)}"
        )
    if any(
        v.tasks and v.task is None for v in p.variants.values()
    ):  # every task's recipe checked now, and the entries' own values
        for task in sorted({t for v in p.variants.values() for t in v.tasks}) + [""]:
            try:
                p.for_task(task)  # checks the resolved table (this function again, on a table without recipes)
            except UserError as err:
                raise UserError(f"{f'the {task} recipe' if task else 'the variant table'}: {err}") from None
        return
    for v in p.variants.values():
        if "seed" in v.overrides.get("finetune", {}):
            raise UserError(f"variants.{v.name} sets finetune.seed, which experiment.seeds decides; remove it")
        for mode in ("none", *v.quantize):  # the entry's overrides checked now, not when its turn comes
            try:
                method = p.variant(v.name, e.seeds[0], mode).prune.method
            except UserError as err:
                raise UserError(f"variants.{v.name}: {err}") from None
        allowed = ("none", "gradual") if v.finetuned else ("gradual", "oneshot", "structured")
        if method not in allowed:
            made = "fine-tuned from pretrained" if v.finetuned else f"made from variant '{v.source}'"
            raise UserError(
                f"variants.{v.name} is {made}, so its prune.method must be {' or '.join(allowed)}, "
                f"got '{method}'; set variants.{v.name}.prune.method"
            )
        above, q = list(p.variants)[: list(p.variants).index(v.name)], p.variant(v.name, e.seeds[0])
        if (teacher := q.distill.teacher) is not None and teacher not in above:
            raise UserError(
                f"variants.{v.name}: distill.teacher '{teacher}' is not a variant listed above it; "
                f"name one of: {', '.join(above) or 'none (list the teacher first)'}"
            )
        if teacher is not None and method in ("oneshot", "structured") and not q.prune.recovery_steps:
            raise UserError(
                f"variants.{v.name}: distillation trains the model, and a {method} pruning trains only "
                "in its recovery steps; set prune.recovery_steps > 0 or remove distill.teacher"
            )
    base = p.variants[e.baseline]
    if e.lr_candidates and "lr" in base.overrides.get("finetune", {}):
        raise UserError(
            f"variants.{e.baseline} sets finetune.lr, but the lr sweep (experiment.lr_candidates) "
            "chooses the baseline's lr; remove one of them"
        )
    if base.source != "pretrained" or p.variant(e.baseline, e.seeds[0]).prune.method != "none":
        raise UserError(
            f"experiment.baseline '{e.baseline}' must be a plain fine-tune (from: pretrained, "
            "prune.method none): every variant is compared with it"
        )
