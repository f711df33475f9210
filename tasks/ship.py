"""The end of a run: the report printed, the champion registered in MLflow and exported as what ships.

    python -m flows.compress --task mrpc      # its report task ends here (tasks/steps.py), as DVC's report stage does

The champion is the smallest variant within experiment.champion_budget points of the baseline's headline
metric that did not collapse (tasks/report.py `champion`); it is registered as models:/<task>-compressed
@champion and exported to results/export/<task>, where it is evaluated with its latency on what ships.
"""

from __future__ import annotations

from pathlib import Path

from bertcompress import evaluate as core_evaluate
from bertcompress import export as core_export
from bertcompress import glue, io, latency, variant
from bertcompress.params import QUANTIZE_MODES, Params

from . import tracking
from .report import build as build_report
from .report import champion, summary_text

EXPORTS = Path("results/export")  # the champion's artifact, per task: what ships


def publish(task: str, p: Params, parent: str | None = None, validation: str | None = None) -> str:
    """The report from MLflow, its summary printed, the champion registered and exported to results/export/<task>
    (evaluated there when the validation split is given): the flow's report task and DVC's report stage both
    end here. Writes results/report/<task>/summary.md, the summary and the champion's lines, as printed."""
    path = build_report(task, p, parent=parent)
    e, metric = p.experiment, glue.get_task(task).metric
    rule = f"within {e.champion_budget:g} point{'s' * (e.champion_budget != 1)} of {e.baseline}'s {metric}"
    blocks = [f"## {task}: compression summary", summary_text(path.parent)]
    if best := champion(task, p, path.parent):
        version = tracking.register_champion(best[1], f"{task}-compressed")
        blocks.append(
            f"champion: {best[0]}: the smallest variant (compressed_mb) {rule}, not collapsed\n"
            f"  registered as models:/{task}-compressed@champion (version {version}), run {best[1]} "
            f"(seed {e.seeds[0]})"
        )
        blocks.append(ship(task, p, best[1], validation, parent))
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


def ship(task: str, p: Params, run_id: str, validation: str | None, parent: str | None = None) -> str:
    """Export the champion to results/export/<task> (int8 ONNX of its float source — made from the float model
    when it was quantized in eager PyTorch — or a PT2E champion's program); evaluate it there, latency measured on
    what ships (the ONNX Runtime session or the compiled program), logged to the parent run as export_*; what to
    print."""
    folder = tracking.client()[0].get_run(run_id).data.tags.get("model_dir")
    if not folder or not Path(folder).is_dir():
        return f"exported: nothing — the champion's folder ({folder}) is not on this machine"
    info = variant.read(folder) or {}
    fmt = "pt2e_int8" if info.get("mode") in core_export.PT2E else "onnx_int8"  # a PT2E champion ships its program
    source = info["base"] if info.get("mode") in QUANTIZE_MODES and fmt == "onnx_int8" else folder
    out = EXPORTS / task
    manifest = core_export.export(source, str(out), task, fmt, p.tokenize.max_length)
    line = f"exported: {out} ({fmt} of {source}, {manifest['sizes']['compact_mb']:.1f} MB)"
    if validation:
        e = p.evaluate
        m = core_evaluate.evaluate(str(out), task, validation, e.batch_size, e.latency_runs, threads=e.latency_threads)
        line += "\n  on validation " + ", ".join(f"{k} {m[k]:.4f}" for k in glue.get_task(task).metrics)
        if e.latency_runs:
            line += (
                f"; latency batch 1 {m['latency_batch1_ms']:.1f} ms, batch 8 {m['latency_batch8_ms']:.1f} ms "
                f"({m['threads']} threads, length {latency.LENGTH})"
            )
        if parent:
            tracking.log_metrics(
                parent,
                {
                    f"export_{k}": m[k]
                    for k in (*glue.get_task(task).metrics, "compact_mb", "latency_batch1_ms", "latency_batch8_ms")
                    if k in m
                },
            )
    texts = " ".join(['"a sentence"', '"its pair"'][: len(glue.get_task(task).keys)])
    return line + f"\n\n    bertcompress predict --model {out} {texts}   # README: Ship it"
