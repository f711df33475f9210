"""What the experiment refuses before any work, one line naming the fix: keys it sets per run given elsewhere, a
recipe naming no GLUE task, a latency objective with no latency measured."""

from __future__ import annotations

from bertcompress import glue
from bertcompress.params import Params, UserError, unknown

# What Params.variant sets per run of the experiment, and the value a params file or override must leave them at
# there: each variant's entry (prune.method, distill.teacher), experiment.seeds and the entry's quantize list say it.
PER_RUN = {
    "prune.method": ("none", "variants.<name>.prune.method"),
    "distill.teacher": (None, "variants.<name>.distill.teacher"),
    "quantize.mode": ("none", "variants.<name>.quantize: [modes]"),
    "finetune.seed": (42, "experiment.seeds"),
}


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
