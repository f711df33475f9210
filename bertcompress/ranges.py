"""Range checks of params, per section, and of the variant table: everything checkable before any data or model.

Each check raises UserError with one line naming the key, the value and the fix. bertcompress/params.py runs
them whenever it builds a Params object.
"""
from __future__ import annotations

PRUNE_METHODS = ("none", "gradual", "oneshot", "structured")
QUANTIZE_MODES = ("none", "dynamic", "dynamic_emb", "fp16", "bf16", "static", "qat")


class UserError(Exception):
    """Bad input: the message is one line that names the problem and the fix."""


def validate(p, table: bool = True) -> None:
    """Range checks that need no data or model, and (table) the variant table's; UserError on the first."""
    f = p.finetune
    for key in ("lr", "batch_size", "epochs"):
        if getattr(f, key) <= 0:
            raise UserError(f"finetune.{key} must be > 0, got {getattr(f, key)}; set a positive value")
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
    for key in ("log_every", "eval_batch_size"):
        if getattr(r, key) <= 0:
            raise UserError(f"runtime.{key} must be > 0, got {getattr(r, key)}")
    if r.threads is not None and r.threads <= 0:
        raise UserError(f"runtime.threads must be > 0 or null, got {r.threads}")
    if p.tokenize.max_length < 8:
        raise UserError(f"tokenize.max_length must be >= 8, got {p.tokenize.max_length}; 128 is the seed's value")
    for key in ("max_train_samples", "max_eval_samples"):
        v = getattr(p.data, key)
        if v is not None and v <= 0:
            raise UserError(f"data.{key} must be > 0 or null, got {v}")
    if p.evaluate.latency_runs < 0:
        raise UserError(f"evaluate.latency_runs must be >= 0 (0 = no latency), got {p.evaluate.latency_runs}")
    _validate_prune(p.prune)
    _validate_quantize(p.quantize)
    if table:
        _validate_experiment(p)


def _validate_prune(p) -> None:
    for key, known in (("method", PRUNE_METHODS), ("scope", ("classifier", "encoder", "all_linear")),
                       ("ranking", ("layer", "global"))):
        if getattr(p, key) not in known:
            raise UserError(f"prune.{key} '{getattr(p, key)}' is unknown; choose one of: {', '.join(known)}")
    if not 0 <= p.final_sparsity < 1:
        raise UserError(f"prune.final_sparsity must be in [0, 1), got {p.final_sparsity}")
    if not 0 <= p.initial_sparsity <= p.final_sparsity:
        raise UserError(f"prune.initial_sparsity must be in [0, final_sparsity={p.final_sparsity}], "
                        f"got {p.initial_sparsity}")
    if p.frequency <= 0:
        raise UserError(f"prune.frequency must be > 0 steps, got {p.frequency}")
    for key in ("heads_fraction", "ffn_fraction"):
        if not 0 <= getattr(p, key) < 1:
            raise UserError(f"prune.{key} must be in [0, 1), got {getattr(p, key)}")
    if p.recovery_steps < 0:
        raise UserError(f"prune.recovery_steps must be >= 0, got {p.recovery_steps}")
    if p.begin_step < 0:
        raise UserError(f"prune.begin_step must be >= 0, got {p.begin_step}")
    if p.end_step is not None and p.end_step <= p.begin_step:
        raise UserError(f"prune.end_step ({p.end_step}) must be > prune.begin_step ({p.begin_step})")


def _validate_quantize(q) -> None:
    if q.mode not in QUANTIZE_MODES:
        raise UserError(f"quantize.mode '{q.mode}' is unknown; choose one of: {', '.join(QUANTIZE_MODES)}")
    if q.calibration_size <= 0:
        raise UserError(f"quantize.calibration_size must be > 0 examples, got {q.calibration_size}")
    if q.qat_steps <= 0:
        raise UserError(f"quantize.qat_steps must be > 0, got {q.qat_steps}")


def _validate_experiment(p) -> None:
    e = p.experiment
    if not e.tasks or not e.seeds:
        raise UserError("experiment.tasks and experiment.seeds must each list at least one value")
    if len(set(e.seeds)) != len(e.seeds):
        raise UserError(f"experiment.seeds repeats a seed: {e.seeds}; list each seed once")
    if any(lr <= 0 for lr in e.lr_candidates):
        raise UserError(f"experiment.lr_candidates must all be > 0, got {e.lr_candidates}; e.g. [2e-5, 3e-5, 5e-5]")
    if e.bootstrap_samples < 100:
        raise UserError(f"experiment.bootstrap_samples must be >= 100, got {e.bootstrap_samples}; 2000 is usual")
    if e.baseline not in p.variants:
        raise UserError(f"experiment.baseline '{e.baseline}' is not in the variant table; "
                        f"choose one of: {', '.join(p.variants)}")
    for v in p.variants.values():
        method = v.overrides.get("prune", {}).get("method", p.prune.method)
        allowed = ("none", "gradual") if v.finetuned else ("oneshot", "structured")
        if method not in allowed:
            made = "fine-tuned from pretrained" if v.finetuned else f"made from variant '{v.source}'"
            raise UserError(f"variants.{v.name} is {made}, so its prune.method must be {' or '.join(allowed)}, "
                            f"got '{method}'; set variants.{v.name}.prune.method")
    base = p.variants[e.baseline]
    if base.source != "pretrained" or base.overrides.get("prune", {}).get("method", p.prune.method) != "none":
        raise UserError(f"experiment.baseline '{e.baseline}' must be a plain fine-tune (from: pretrained, "
                        "prune.method none): every variant is compared with it")
