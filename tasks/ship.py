"""The end of a run: the report printed, the champion exported as what ships and registered in MLflow as that.

    python -m flows.compress --task mrpc      # its report task ends here (tasks/steps.py), as DVC's report stage does

The champion is the variant best at experiment.objective (latency: the fastest on this CPU; size: the smallest)
of those within experiment.champion_budget points of the baseline's GLUE score that did not collapse
(tasks/report.py `choose`). It is exported to results/export/<task> (and <task>.tar.zst) in export.format
(default `auto`: each format timed here and checked on the choice split against the float model on that split;
the fastest within the same budget ships), unless that folder already holds the
export's record (results/export/<task>.step.json: the same model, data, params and code): then it is not
exported or timed again. The archive is an MLflow logged model (found again by that record's key, logged again
when missing), registered as models:/<task>-compressed@champion: serving the champion serves what ships.
"""

from __future__ import annotations

from pathlib import Path

from bertcompress import archive, artifact, glue, io, latency, record, shapes, variant
from bertcompress import export as core_export
from bertcompress.params import QUANTIZE_MODES, Params, choice_split

from . import recipes, tracking
from .report import build as build_report
from .report import champion, rule, summary_text

EXPORTS = Path("results/export")  # the champion's artifact, per task: what ships


def publish(task: str, p: Params, parent: str | None = None, data: dict | None = None) -> str:
    """The report from MLflow, its summary printed, the champion exported to results/export/<task> and registered
    (data: the tokenized splits, {"train": .., "dev": .., "validation": ..}: the export's calibration, choice and
    report): the flow's report task and DVC's report stage both end here. Writes results/report/<task>/summary.md,
    the summary and the champion's lines, as printed."""
    path = build_report(task, p, parent=parent)
    best_at, within = rule(task, p)
    blocks = [f"## {task}: compression summary", summary_text(path.parent)]
    if said := recipes.recipes(p, task):  # which variants run the task's own recipe, which have none studied
        blocks.append(said)
    if p.experiment.target_speedup:
        picked = shapes.choose(p)  # timed before training (cached): what the structured variants were cut to
        c = picked["chosen"]
        blocks.append(
            f"shape: heads {c['heads_fraction']:g} / FFN {c['ffn_fraction']:g} removed, the smallest cut timed at "
            f">= {picked['target']:g}x dense ({c['speedup']:.2f}x, OpenVINO int8, batch 8)\n"
            f"  {len(picked['candidates'])} candidates with random weights: {picked['path']}"
        )
    if best := champion(task, p, path.parent):
        blocks.append(f"champion: {best[0]} ({best_at}\n  of the variants {within} that did not collapse)")
        blocks.append(ship(task, p, best[1], data, parent))
    else:
        blocks.append(f"champion: none — no variant {within} that did not collapse\n  (nothing registered or exported)")
    text = "\n\n".join(blocks)
    with io.atomic_file(path.with_name("summary.md")) as tmp:
        tmp.write_text(text + "\n")
    if parent:
        tracking.log_text(parent, text + "\n", "report/summary.md")
    # one message: Prefect's log prefix goes on its first line only, and every line stays within 120 columns
    print(
        f"{text}\n\nreport: {path}\nMLflow: mlflow ui --workers 1 --backend-store-uri {tracking.tracking_uri()}\n"
        f"  then {tracking.runs_url()}"
    )
    return str(path)


def export_record(task: str, p: Params, source: str, fmt: str, data: dict) -> dict:
    """The export's step record: the model and splits it reads (by content), the params and code it runs."""
    e = p.evaluate
    reads = {
        "export.format": fmt,
        "tokenize.max_length": p.tokenize.max_length,
        "evaluate.latency_threads": e.latency_threads,
        "evaluate.latency_runs": e.latency_runs,
        "experiment.champion_budget": p.experiment.champion_budget,
        "experiment.choose_on": choice_split(p),
    }
    splits = {s: data[s] for s in ("train", "validation", *(["dev"] if choice_split(p) == "dev" else [])) if s in data}
    return record.make("export", reads, {"model": source, **splits}, "export", {"task": task})


def ship(task: str, p: Params, run_id: str, data: dict | None, parent: str | None = None) -> str:
    """Export the champion (run_id: its first seed's run) to results/export/<task> and <task>.tar.zst, unless its
    record says that is done: in export.format (auto: the fastest format within budget), or a PT2E champion's
    program. Every candidate's figures are logged
    to the parent run (export_<format>_*); the archive is registered as the champion. What to print."""
    folder = tracking.client()[0].get_run(run_id).data.tags.get("model_dir")
    if not folder or not Path(folder).is_dir():
        return f"exported: nothing — the champion's folder ({folder}) is not on this machine; nothing registered"
    info = variant.read(folder) or {}
    pt2e = info.get("mode") in core_export.PT2E
    fmt = "pt2e_int8" if pt2e or not data else p.export.format  # a PT2E champion ships its program
    source = info["base"] if info.get("mode") in QUANTIZE_MODES and not pt2e else folder
    out, e, spec, data = EXPORTS / task, p.evaluate, glue.get_task(task), data or {}
    rec = export_record(task, p, source, fmt, data)
    if record.done(out, rec):
        shipped = archive.path_of(out)
        manifest = artifact.read_manifest(out) | {"archive": str(shipped), "archive_mb": shipped.stat().st_size / 1e6}
        done = f"\n  up to date (record {record.path(out)}, key {rec['key'][:12]}): not exported again"
    else:
        manifest = core_export.export(
            source,
            str(out),
            task,
            fmt,
            p.tokenize.max_length,
            data.get("train"),
            data.get("validation"),
            e.latency_threads,
            e.latency_runs,
            p.experiment.champion_budget,
            data.get("dev") if choice_split(p) == "dev" else None,  # auto chooses on dev, reports on validation
        )
        record.write(out, rec, {"folder": str(out), "archive": manifest["archive"]})
        done = ""
    chosen = manifest.get("auto", {}).get("chosen", fmt)
    lines = [f"exported: {manifest['archive']} ({chosen} of {source}, {manifest['archive_mb']:.1f} MB archive){done}"]
    logged = {"export_archive_mb": manifest["archive_mb"]}
    for r in manifest.get("auto", {}).get("candidates", []):
        beside = f"; val {r['validation_delta_points']:+.2f}" if "validation_delta_points" in r else ""
        lines.append(
            f"  {r['format']:<9} {r.get('split', 'validation')} {spec.metric} {r[spec.metric]:.4f} "
            f"({r['delta_points']:+.2f} vs float{beside})  "
            f"batch 1 {r['batch1_ms']:.1f} ms  batch 8 {r['batch8_ms']:.1f} ms  {r['archive_mb']:.1f} MB"
            + ("" if r["within_budget"] else "  (over budget)")
            + ("  <- shipped" if r["format"] == chosen else "")
        )
        logged |= {f"export_{r['format']}_{k}": r[k] for k in (spec.metric, "batch1_ms", "batch8_ms", "archive_mb")}
    shipped = {"archive_mb": manifest["archive_mb"]}
    if v := manifest.get("validation"):
        line = "  as shipped, on validation " + ", ".join(f"{k} {v[k]:.4f}" for k in spec.metrics if k in v)
        if "batch1_ms" in v:
            line += (
                f"\n  batch 1 {v['batch1_ms']:.1f} ms, batch 8 {v['batch8_ms']:.1f} ms ({v['threads']} threads, "
                f"length {latency.LENGTH}), measured on {v['machine']['cpu'][:60]}"
            )
        lines.append(line)
        shipped |= {k: v[k] for k in (*spec.metrics, "batch1_ms", "batch8_ms") if k in v}
        logged |= {f"export_{k}": val for k, val in shipped.items() if k != "archive_mb"}
    if parent:
        tracking.log_metrics(parent, logged)
        tracking.log_artifact(parent, str(out / core_export.CARD), "export")
    # the archive as an MLflow model: mlflow.pyfunc.load_model(uri).predict(df) and `mlflow models serve` run it
    model_id = tracking.shipped_model(
        parent or run_id, manifest["archive"], rec["key"], task, p.tokenize.max_length, e.batch_size, shipped
    )
    version = tracking.register_champion(
        model_id,
        f"{task}-compressed",
        description=(out / core_export.CARD).read_text(),
        tags={"format": chosen, "source_run": run_id, "archive": manifest["archive"], **shipped},
    )
    lines.append(
        f"  registered as models:/{task}-compressed@champion (version {version}): this archive ({chosen})\n"
        f"  made from run {run_id} (seed {p.experiment.seeds[0]})"
    )
    texts = " ".join(['"a sentence"', '"its pair"'][: len(spec.keys)])
    return "\n".join(lines) + f"\n\n    bertcompress predict --model {manifest['archive']} {texts}   # README: Ship it"
