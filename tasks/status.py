"""Will this rerun? For each run of the plan: done, or will run and why (which read, input or code changed).

    bertcompress status --task mrpc [--params presets/quick.yaml] [-S variants.structured.finetune.precision=bf16]

It reads the step records (bertcompress/record.py) beside the flow's outputs (outputs/flow/<task>/, data/): a
run is done when its output holds the record it would make now; a run after one that will run will run too.
With an lr sweep, the variants wait for it unless every sweep run is done (then the lr it chose is used).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bertcompress import params as P
from bertcompress import record
from bertcompress.metrics import headline

from . import keys, plan, recipes, refusals

DONE, WILL = "done", "will run"


def _earlier(r: plan.Run, out: str, new: dict) -> dict | None:
    """The record of the same run made with inputs nearest to new's (the flow keeps one folder per key)."""
    if r.step in ("download", "tokenize", "pretrained"):
        return record.read(out) if record.path(out).is_file() else None
    found = [
        record.read(str(f).removesuffix(".step.json"))
        for f in Path(out).parent.glob(f"{r.label.split('-lr')[0]}-*.step.json")
    ]
    found = [f for f in found if f]  # its own (an output changed since) first, then the fewest differences
    return min(found, key=lambda old: (old["key"] != new["key"], len(record.why(old, new).split("; "))), default=None)


def _needs(r: plan.Run) -> list[str]:
    """The runs whose results this one reads: its model, its teacher, its data."""
    data = (
        []
        if r.step in ("download", "pretrained")
        else [f"download {r.task}"]
        if r.step == "tokenize"
        else [f"tokenize {r.task}"]
    )
    return [d for d in (r.source, r.teacher) if d] + data


def states(p: P.Params, task: str) -> list[tuple[plan.Run, str, str]]:
    """[(run, done | will run, why)] in the plan's order, the sweep's runs first."""
    made, state, rows = {}, {}, []

    def look(r: plan.Run, p: P.Params) -> None:
        waiting = [d for d in _needs(r) if state.get(d) != DONE]
        if waiting:
            state[r.id], why = WILL, f"after {waiting[0]}"
        else:
            args = plan.arguments(r, p, made)
            rec = keys.step_record(r.step, args)
            out = keys.out_dir(r.step, args, rec["key"])
            if record.done(out, rec):
                state[r.id], why, made[r.id] = DONE, "", record.read(out).get("result", out)
            else:
                state[r.id], why = WILL, record.why(_earlier(r, out, rec), rec)
        rows.append((r, state[r.id], why))

    for r in plan.sweep(p, task):
        look(r, p)
    scores = {r.lr: made[r.id] for r in plan.sweep(p, task) if r.step == "evaluate" and r.id in made}
    swept = len(scores) == len(p.experiment.lr_candidates)
    if scores and swept:
        p = plan.with_lr(p, plan.best_lr({lr: headline(task, row) for lr, row in scores.items()}))
    for r in plan.runs(p, task):
        if r.id in state:
            continue
        if not swept and r.step not in ("download", "tokenize", "pretrained"):
            state[r.id] = WILL
            rows.append((r, WILL, "after the lr sweep"))
            continue
        look(r, p)
    return rows


def table(rows: list[tuple[plan.Run, str, str]]) -> str:
    width = max(len(r.id) for r, _, _ in rows)
    lines = [f"{r.id:<{width}}  {s:<8}  {why}".rstrip() for r, s, why in rows]
    done = sum(s == DONE for _, s, _ in rows)
    return "\n".join(lines + [f"{done} of {len(rows)} steps done, {len(rows) - done} will run"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bertcompress status", description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", default="mrpc", help="GLUE task (default: mrpc)")
    P.add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        p = P.load(args.params, args.overrides)
        refusals.refuse(p)
        from bertcompress.glue import get_task

        get_task(args.task)
        print(table(states(recipes.resolve(p, args.task), args.task)))
    except P.UserError as e:
        return P.refused(e)
    return 0


if __name__ == "__main__":
    sys.exit(main())
