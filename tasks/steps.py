"""Prefect tasks, one per step, each a thin wrapper over the core step function that records it in MLflow.

    python -m flows.compress --task mrpc      # runs them as a cached Prefect flow (flows/compress.py)
    dvc repro                                 # runs the same functions stage by stage (tasks/stage.py)

Tasks take the one Params object, names, seeds and paths, and return paths or small dicts, never models. Each
call has a step record (tasks/plan.py: the leaf params it reads, its inputs' contents, its code), written beside
its output as <out>.step.json once the output is complete. The task is cached by Prefect on the record's key,
persisted as JSON in $PREFECT_HOME/storage (.prefect/ in the project), so a second flow run with the same inputs
takes every result from the cache and a changed pruning param reruns only what reads it; a cache entry whose
output is gone (outputs/ or data/ deleted) is a miss, and a call whose output already holds its record (made by
an earlier run whose cache entry is gone) returns it without work. Outputs go to
outputs/flow/<task>/<variant>-s<seed>[+<mode>]-<key>: a folder per key, never overwritten by other params.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from prefect import task
from prefect.cache_policies import CachePolicy
from prefect.runtime import task_run

from bertcompress import evaluate as core_evaluate
from bertcompress import finetune as core_finetune
from bertcompress import export as core_export
from bertcompress import glue, io, latency, model, prune as core_prune, quantize as core_quantize, record
from bertcompress import tokenize as core_tokenize, variant
from bertcompress.params import QUANTIZE_MODES, Params, UserError

from . import figures, plan, tracking
from .report import build as build_report
from .report import champion, summary_text

EXPORTS = Path("results/export")  # the champion's artifact, per task: what ships


class OneLine(logging.Filter):
    """A user error (bad data, bad params) is logged by Prefect as one line, like the CLI's, without the traceback
    Prefect adds to a failed task or flow run; other exceptions keep theirs."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], UserError):
            record.msg, record.args, record.exc_info, record.exc_text = f"error: {record.exc_info[1]}", (), None, None
        return True


for _name in ("prefect.task_runs", "prefect.flow_runs"):
    logging.getLogger(_name).addFilter(OneLine())


def _forget(key: str) -> None:
    """Drop Prefect's persisted result of key (the default local result storage): its output is gone."""
    from prefect.results import get_result_store
    from prefect.settings import get_current_settings

    store = get_result_store()
    path = Path(get_current_settings().results.local_storage_path) / key
    for k in (key, str(path), str(path.resolve())):
        store.cache.pop(k, None)
    path.unlink(missing_ok=True)


@dataclass
class StepKey(CachePolicy):
    """The step record's key: a task reruns exactly when what it reads changed, or when its output is gone."""

    def compute_key(self, task_ctx, inputs, flow_parameters, **kwargs) -> str:
        step = task_ctx.task.name
        rec = plan.step_record(step, inputs)
        if not record.done(plan.out_dir(step, inputs, rec["key"]), rec):
            _forget(rec["key"])
        return rec["key"]


CACHED = {"cache_policy": StepKey(), "persist_result": True, "result_serializer": "json"}


def made(step: str, a: dict, make: Callable[[str, dict], object]):
    """The one way a step runs: make(out, record) unless out already holds this call's record; then the record is
    written beside out with the result (a path, the tokenized splits, an evaluation row), which it returns."""
    rec = plan.step_record(step, a)
    out = plan.out_dir(step, a, rec["key"])
    if record.done(out, rec):
        return record.read(out).get("result", out)
    result = make(out, rec)
    record.write(out, rec | {"result": result})
    return result


def _run_name() -> str:
    """Readable task-run names: finetune-mrpc-gradual-s42, evaluate-mrpc-dense+dynamic-s42."""
    a = task_run.parameters
    return f"{task_run.task_name}-{a['task']}-{plan.method(a['name'], a.get('mode', 'none'))}-s{a['seed']}"


def _tags(rec: dict, **splits: str) -> dict:
    """The step's record key and which tokenized data (content) it read: {'step_key.finetune': .., 'data_hash.train': ..}."""
    return {f"step_key.{rec['step']}": rec["key"], **{f"data_hash.{split}": io.content_hash(path)[:16]
                                                      for split, path in splits.items()}}


@task(name="download", task_run_name="download-{task}", **CACHED)
def download(task: str, p: Params, out: str) -> str:
    """GLUE train/validation parquet into out/ (bad data is a UserError: never retried)."""
    def make(out: str, rec: dict) -> str:
        glue.download(task, out, p.data.source)
        return out
    return made("download", locals(), make)


@task(name="tokenize", task_run_name="tokenize-{task}", **CACHED)
def tokenize(task: str, p: Params, data_dir: str, cache_dir: str) -> dict:
    """{'train': npz, 'validation': npz} in cache_dir/<task>/, named by content."""
    return made("tokenize", locals(), lambda out, rec: core_tokenize.prepared(task, p, str(Path(data_dir).parent),
                                                                              cache_dir))


@task(name="pretrained", task_run_name="pretrained", **CACHED)
def pretrained(p: Params, out: str) -> str:
    """The pretrained model (model.name) and its tokenizer as a folder: every fine-tune's base."""
    return made("pretrained", locals(), lambda out, rec: model.pretrained(p.model.name, out))


@task(name="finetune", task_run_name=_run_name, **CACHED)
def finetune(task: str, name: str, seed: int, p: Params, base: str, train: str, validation: str,
             parent: str | None = None, out: str | None = None, teacher: str | None = None) -> str:
    """Fine-tune one variant from the base model or from another variant's (prune.method=gradual: under its
    schedule; distill.teacher: distilled from that variant's model, `teacher`); per-epoch metrics go to MLflow
    as they come."""
    q = p.variant(name, seed)

    def make(out: str, rec: dict) -> str:
        with tracking.variant_run(parent, task, p, name, seed, tags=_tags(rec, train=train, validation=validation)) as run:
            tracking.log_datasets(run, task, training=train, validation=validation)
            result = core_finetune.finetune(q, task, train, validation, out, tracking.epoch_logger(run), base=base,
                                            teacher=teacher, step=rec)
            tracking.log_result(run, "finetune", result)
            tracking.log_figure(run, figures.history(result["history"]), "plots/history.png")
        return out
    return made("finetune", locals(), make)


@task(name="prune", task_run_name=_run_name, **CACHED)
def prune(task: str, name: str, seed: int, p: Params, model_dir: str, train: str, parent: str | None = None,
          out: str | None = None, teacher: str | None = None) -> str:
    """Prune the model of the variant this one is made from (prune.method = oneshot | structured); its recovery
    steps distilled from `teacher` when the variant names one."""
    def make(out: str, rec: dict) -> str:
        with tracking.variant_run(parent, task, p, name, seed, tags=_tags(rec, train=train)) as run:
            tracking.log_datasets(run, task, training=train)  # importance scores and recovery steps read it
            tracking.log_result(run, "prune", core_prune.prune(model_dir, out, p.variant(name, seed), task, train,
                                                               teacher))
        return out
    return made("prune", locals(), make)


@task(name="quantize", task_run_name=_run_name, **CACHED)
def quantize(task: str, name: str, mode: str, seed: int, p: Params, model_dir: str, train: str,
             parent: str | None = None, out: str | None = None) -> str:
    """Quantize one variant's model in one mode; static calibration and QAT read the training split."""
    def make(out: str, rec: dict) -> str:
        with tracking.variant_run(parent, task, p, name, seed, mode, _tags(rec, train=train)) as run:
            if mode in ("static", "qat"):  # calibration / QAT training read the training split
                tracking.log_datasets(run, task, calibration=train)
            tracking.log_result(run, "quantize", core_quantize.quantize(model_dir, out, p.variant(name, seed, mode),
                                                                        task, train))
        return out
    return made("quantize", locals(), make)


@task(name="evaluate", task_run_name=_run_name, **CACHED)
def evaluate(task: str, name: str, mode: str, seed: int, p: Params, model_dir: str, validation: str,
             parent: str | None = None, out: str | None = None) -> dict:
    """Metrics, sizes and CPU latency of one variant (and mode) on the validation split; the row also in out."""
    q = p.variant(name, seed, mode)

    def make(out: str, rec: dict) -> dict:
        with tracking.variant_run(parent, task, p, name, seed, mode, _tags(rec, validation=validation)) as run:
            result = core_evaluate.evaluate(model_dir, task, validation, q.evaluate.batch_size,
                                            q.evaluate.latency_runs, keep_predictions=True,
                                            threads=q.evaluate.latency_threads)
            tracking.log_datasets(run, task, validation=validation)
            tracking.log_dict(run, {k: result.pop(k) for k in ("labels", "predictions")}, tracking.PREDICTIONS)
            tracking.log_result(run, "evaluate", result)
            tracking.set_tags(run, {"collapsed": str(result["collapsed"]).lower(), "verdict": result["verdict"],
                                    "model_dir": model_dir})  # the champion is exported from it
            # an MLflow model: mlflow.pyfunc.load_model(...).predict(df), encoded and batched as evaluated here
            tracking.log_model(run, model_dir, task, q.tokenize.max_length, q.evaluate.batch_size)
        row = {"task": task, "variant": name, "mode": mode, "method": plan.method(name, mode), "seed": seed, **result}
        io.write_json(out, row)
        return row
    return made("evaluate", locals(), make)


@task(name="report", task_run_name="report-{task}")  # never cached: it reads the MLflow store as it is now
def report(task: str, p: Params, parent: str | None = None, validation: str | None = None) -> str:
    """results/report/<task>/report.md and figures, built from the MLflow runs; logged to the parent run; its
    summary (read back from MLflow) printed and shown in the Prefect UI as the artifact `report-<task>`; the
    champion registered and exported."""
    from prefect.artifacts import create_markdown_artifact

    path = publish(task, p, parent, validation)
    create_markdown_artifact(key=f"report-{task}", markdown=Path(path).with_name("summary.md").read_text(),
                             description=f"{task}: every variant over seeds, and the champion ({path})")
    return path


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
        blocks.append(f"champion: {best[0]}: the smallest variant (compressed_mb) {rule}, not collapsed\n"
                      f"  registered as models:/{task}-compressed@champion (version {version}), run {best[1]} "
                      f"(seed {e.seeds[0]})")
        blocks.append(ship(task, p, best[1], validation, parent))
    else:
        blocks.append(f"champion: none — no variant {rule} that did not collapse; nothing registered or exported")
    text = "\n\n".join(blocks)
    with io.atomic_file(path.with_name("summary.md")) as tmp:
        tmp.write_text(text + "\n")
    if parent:
        tracking.log_text(parent, text + "\n", "report/summary.md")
    # one message: Prefect's log prefix goes on its first line only, and every line stays within 120 columns
    print(f"{text}\n\nreport: {path}\nMLflow: mlflow ui --backend-store-uri {tracking.tracking_uri()}\n"
          f"  then {tracking.runs_url()}")
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
            line += (f"; latency batch 1 {m['latency_batch1_ms']:.1f} ms, batch 8 {m['latency_batch8_ms']:.1f} ms "
                     f"({m['threads']} threads, length {latency.LENGTH})")
        if parent:
            tracking.log_metrics(parent, {f"export_{k}": m[k] for k in (*glue.get_task(task).metrics, "compact_mb",
                                          "latency_batch1_ms", "latency_batch8_ms") if k in m})
    texts = " ".join(['"a sentence"', '"its pair"'][:len(glue.get_task(task).keys)])
    return line + f"\n\n    bertcompress predict --model {out} {texts}   # README: Ship it"
