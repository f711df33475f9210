"""The end of a run: the report printed, the champion registered in MLflow and exported as what ships.

    python -m flows.compress --task mrpc      # its report task ends here (tasks/steps.py), as DVC's report stage does

The champion is the smallest variant within experiment.champion_budget points of the baseline's headline
metric that did not collapse (tasks/report.py `champion`); it is registered as models:/<task>-compressed
@champion and exported to results/export/<task> (and <task>.tar.zst) by `export --format auto`: each format timed
here and checked on validation, the fastest within the same budget of the float model ships.
"""

from __future__ import annotations

from pathlib import Path

from bertcompress import export as core_export
from bertcompress import glue, io, latency, variant
from bertcompress.params import QUANTIZE_MODES, Params, choice_split

from . import tracking
from .report import build as build_report
from .report import champion, summary_text

EXPORTS = Path("results/export")  # the champion's artifact, per task: what ships


def publish(task: str, p: Params, parent: str | None = None, data: dict | None = None) -> str:
    """The report from MLflow, its summary printed, the champion registered and exported to results/export/<task>
    (data: the tokenized splits, {"train": .., "validation": ..}: the export's calibration and check): the flow's
    report task and DVC's report stage both
    end here. Writes results/report/<task>/summary.md, the summary and the champion's lines, as printed."""
    path = build_report(task, p, parent=parent)
    e, metric = p.experiment, glue.get_task(task).metric
    rule = (
        f"within {e.champion_budget:g} point{'s' * (e.champion_budget != 1)} of {e.baseline}'s {metric} "
        f"on {choice_split(p)}"
    )
    blocks = [f"## {task}: compression summary", summary_text(path.parent)]
    if best := champion(task, p, path.parent):
        version = tracking.register_champion(best[1], f"{task}-compressed")
        blocks.append(
            f"champion: {best[0]}: the smallest variant (compressed_mb) {rule}, not collapsed\n"
            f"  registered as models:/{task}-compressed@champion (version {version}), run {best[1]} "
            f"(seed {e.seeds[0]})"
        )
        blocks.append(ship(task, p, best[1], data, parent))
    else:
        blocks.append(f"champion: none — no variant {rule} that did not collapse; nothing registered or exported")
    text = "\n\n".join(blocks)
    with io.atomic_file(path.with_name("summary.md")) as tmp:
        tmp.write_text(text + "\n")
    if parent:
        tracking.log_text(parent, text + "\n", "report/summary.md")
    # one message: Prefect's log prefix goes on its first line only, and every line stays within 120 columns
    print(
        f"{text}\n\nreport: {path}\nMLflow: mlflow ui --backend-store-uri {tracking.tracking_uri()}\n"
        f"  then {tracking.runs_url()}"
    )
    return str(path)


def ship(task: str, p: Params, run_id: str, data: dict | None, parent: str | None = None) -> str:
    """Export the champion to results/export/<task> and results/export/<task>.tar.zst: `--format auto` (every
    format made from its float source timed here and checked on validation; the fastest within
    experiment.champion_budget ships), or a PT2E champion's program. Every candidate's figures are logged to the
    parent run (export_<format>_*), with the archive; what to print."""
    folder = tracking.client()[0].get_run(run_id).data.tags.get("model_dir")
    if not folder or not Path(folder).is_dir():
        return f"exported: nothing — the champion's folder ({folder}) is not on this machine"
    info = variant.read(folder) or {}
    pt2e = info.get("mode") in core_export.PT2E
    fmt = "pt2e_int8" if pt2e or not data else "auto"  # a PT2E champion ships its program
    source = info["base"] if info.get("mode") in QUANTIZE_MODES and not pt2e else folder
    out, e, spec = EXPORTS / task, p.evaluate, glue.get_task(task)
    data = data or {}
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
    chosen = manifest.get("auto", {}).get("chosen", fmt)
    lines = [f"exported: {manifest['archive']} ({chosen} of {source}, {manifest['archive_mb']:.1f} MB archive)"]
    logged = {"export_archive_mb": manifest["archive_mb"]}
    for r in manifest.get("auto", {}).get("candidates", []):
        lines.append(
            f"  {r['format']:<9} {r.get('split', 'validation')} {spec.metric} {r[spec.metric]:.4f} "
            f"({r['delta_points']:+.2f} vs float)  "
            f"batch 1 {r['batch1_ms']:.1f} ms  batch 8 {r['batch8_ms']:.1f} ms  {r['archive_mb']:.1f} MB"
            + ("" if r["within_budget"] else "  (over budget)")
            + ("  <- shipped" if r["format"] == chosen else "")
        )
        logged |= {f"export_{r['format']}_{k}": r[k] for k in (spec.metric, "batch1_ms", "batch8_ms", "archive_mb")}
    if v := manifest.get("validation"):
        line = "  as shipped, on validation " + ", ".join(f"{k} {v[k]:.4f}" for k in spec.metrics if k in v)
        if "batch1_ms" in v:
            line += (
                f"; batch 1 {v['batch1_ms']:.1f} ms, batch 8 {v['batch8_ms']:.1f} ms ({v['threads']} threads, "
                f"length {latency.LENGTH})\n  measured on {v['machine']['cpu'][:100]}"
            )
        lines.append(line)
        logged |= {f"export_{k}": v[k] for k in (*spec.metrics, "batch1_ms", "batch8_ms") if k in v}
    if parent:
        tracking.log_metrics(parent, logged)
        tracking.log_artifact(parent, manifest["archive"], "export")
        tracking.log_artifact(parent, str(out / core_export.CARD), "export")
        # the archive as an MLflow model of the parent run: mlflow.pyfunc.load_model(uri).predict(df) runs it
        tracking.log_model(parent, manifest["archive"], task, p.tokenize.max_length, e.batch_size, name="export")
    texts = " ".join(['"a sentence"', '"its pair"'][: len(spec.keys)])
    return "\n".join(lines) + f"\n\n    bertcompress predict --model {manifest['archive']} {texts}   # README: Ship it"
