"""The variant table as one task runs it: each variant's recipe for the task (params.yaml's
`variants.<name>.tasks.<task>`, Params.for_task) and, with experiment.target_speedup, the structured variants cut
to the shape picked for it on this CPU (bertcompress/shapes.py)."""

from __future__ import annotations

from bertcompress import shapes
from bertcompress.params import Params


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
