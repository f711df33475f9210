"""Prefect tasks, one per step, each a thin wrapper over the core step function that records it in MLflow.

    python -m flows.compress --task mrpc      # runs them as a cached Prefect flow (flows/compress.py)
    dvc repro                                 # runs the same functions stage by stage (tasks/stage.py)

Tasks take the one Params object, names, seeds and paths, and return paths or small dicts, never models. Each
call has a step record (tasks/plan.py: the leaf params it reads, its inputs' contents, its code), written beside
its output as <out>.step.json once the output is complete. The task is cached by Prefect on the record's key,
persisted as JSON in $PREFECT_HOME/storage (.prefect/ in the project), so a second flow run with the same inputs
takes every result from the cache and a changed pruning param reruns only what reads it; a cache entry whose
output is gone (outputs/ or data/ deleted) is a miss, and a call whose output already holds its record (made by
an earlier run whose cache entry is gone) returns it without work. The MLflow store is an output like any other:
a step whose output is done but whose FINISHED run is missing from the store (moved aside, a fresh store) logs
that run again from its output, without redoing the work. Outputs go to
outputs/flow/<task>/<variant>-s<seed>[+<mode>]-<key>: a folder per key, never overwritten by other params.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from prefect import task
from prefect.cache_policies import CachePolicy
from prefect.runtime import task_run

from bertcompress import evaluate as core_evaluate
from bertcompress import finetune as core_finetune
from bertcompress import glue, io, model, record
from bertcompress import prune as core_prune
from bertcompress import quantize as core_quantize
from bertcompress import tokenize as core_tokenize
from bertcompress.params import Params, UserError

from . import figures, keys, plan, ship, tracking


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
        rec = keys.step_record(step, inputs)
        if not record.done(keys.out_dir(step, inputs, rec["key"]), rec) or not _tracked(step, inputs, rec):
            _forget(rec["key"])  # the task body runs: it makes the output, or logs its lost run again (made)
        return rec["key"]


LOGGED = ("finetune", "prune", "quantize", "evaluate")  # the steps that log an MLflow run
CACHED = {"cache_policy": StepKey(), "persist_result": True, "result_serializer": "json"}


def _tracked(step: str, a: dict, rec: dict) -> bool:
    """Does the MLflow store hold this step call's FINISHED run (steps that log one, under a parent run)?"""
    return step not in LOGGED or not a.get("parent") or tracking.has_step(step, rec["key"])


def made(step: str, a: dict, make: Callable[..., object]):
    """The one way a step runs: make(out, record) unless out already holds this call's record; then the record is
    written beside out with the result (a path, the tokenized splits, an evaluation row), which it returns. An
    output already made whose MLflow run the store lacks is logged again: make(out, record, again=True)."""
    rec = keys.step_record(step, a)
    out = keys.out_dir(step, a, rec["key"])
    if record.done(out, rec):
        if not _tracked(step, a, rec):  # only the LOGGED steps' make takes `again`
            print(
                f"{step} {a['task']} {plan.method(a['name'], a.get('mode', 'none'))} s{a['seed']}: made, but not in "
                f"{tracking.tracking_uri()}: its run logged again from {out}",
                flush=True,
            )
            make(out, rec, again=True)
        return record.read(out).get("result", out)
    result = make(out, rec)
    record.write(out, rec, result)
    return result


def _run_name() -> str:
    """Readable task-run names: finetune-mrpc-gradual-s42, evaluate-mrpc-dense+dynamic-s42."""
    a = task_run.parameters
    return f"{task_run.task_name}-{a['task']}-{plan.method(a['name'], a.get('mode', 'none'))}-s{a['seed']}"


def _tags(rec: dict, **splits: str) -> dict:
    """The step's record key and which tokenized data (content) it read: {'step_key.finetune': .., 'data_hash.train':
    ..}."""
    return {
        f"step_key.{rec['step']}": rec["key"],
        **{f"data_hash.{split}": io.content_hash(path)[:16] for split, path in splits.items()},
    }


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
    return made(
        "tokenize", locals(), lambda out, rec: core_tokenize.prepared(task, p, str(Path(data_dir).parent), cache_dir)
    )


@task(name="pretrained", task_run_name="pretrained", **CACHED)
def pretrained(p: Params, out: str) -> str:
    """The pretrained model (model.name) and its tokenizer as a folder: every fine-tune's base."""
    return made("pretrained", locals(), lambda out, rec: model.pretrained(p.model.name, out))


@task(name="finetune", task_run_name=_run_name, **CACHED)
def finetune(
    task: str,
    name: str,
    seed: int,
    p: Params,
    base: str,
    train: str,
    validation: str,
    parent: str | None = None,
    out: str | None = None,
    teacher: str | None = None,
) -> str:
    """Fine-tune one variant from the base model or from another variant's (prune.method=gradual: under its
    schedule; distill.teacher: distilled from that variant's model, `teacher`); per-epoch metrics go to MLflow
    as they come."""
    q = p.variant(name, seed)

    def make(out: str, rec: dict, again: bool = False) -> str:
        with tracking.variant_run(
            parent, task, p, name, seed, tags=_tags(rec, train=train, validation=validation)
        ) as run:
            tracking.log_datasets(run, task, training=train, validation=validation)
            if again:  # the run lost from the store: its per-epoch rows from the output
                result = io.read_json(Path(out) / "metrics.json")
                for row in result["history"]:
                    tracking.epoch_logger(run)(row["epoch"], row)
            else:
                result = core_finetune.finetune(
                    q, task, train, validation, out, tracking.epoch_logger(run), base=base, teacher=teacher, step=rec
                )
            tracking.log_result(run, "finetune", result)
            tracking.log_figure(run, figures.history(result["history"]), "plots/history.png")
        return out

    return made("finetune", locals(), make)


@task(name="prune", task_run_name=_run_name, **CACHED)
def prune(
    task: str,
    name: str,
    seed: int,
    p: Params,
    model_dir: str,
    train: str,
    parent: str | None = None,
    out: str | None = None,
    teacher: str | None = None,
) -> str:
    """Prune the model of the variant this one is made from (prune.method = oneshot | structured); its recovery
    steps distilled from `teacher` when the variant names one."""

    def make(out: str, rec: dict, again: bool = False) -> str:
        with tracking.variant_run(parent, task, p, name, seed, tags=_tags(rec, train=train)) as run:
            tracking.log_datasets(run, task, training=train)  # importance scores and recovery steps read it
            result = (
                io.read_json(Path(out) / "metrics.json")
                if again
                else core_prune.prune(model_dir, out, p.variant(name, seed), task, train, teacher)
            )
            tracking.log_result(run, "prune", result)
        return out

    return made("prune", locals(), make)


@task(name="quantize", task_run_name=_run_name, **CACHED)
def quantize(
    task: str,
    name: str,
    mode: str,
    seed: int,
    p: Params,
    model_dir: str,
    train: str,
    parent: str | None = None,
    out: str | None = None,
) -> str:
    """Quantize one variant's model in one mode; static calibration and QAT read the training split."""

    def make(out: str, rec: dict, again: bool = False) -> str:
        with tracking.variant_run(parent, task, p, name, seed, mode, _tags(rec, train=train)) as run:
            if mode in ("static", "qat"):  # calibration / QAT training read the training split
                tracking.log_datasets(run, task, calibration=train)
            result = (
                io.read_json(Path(out) / "metrics.json")
                if again
                else core_quantize.quantize(model_dir, out, p.variant(name, seed, mode), task, train)
            )
            tracking.log_result(run, "quantize", result)
        return out

    return made("quantize", locals(), make)


@task(name="evaluate", task_run_name=_run_name, **CACHED)
def evaluate(
    task: str,
    name: str,
    mode: str,
    seed: int,
    p: Params,
    model_dir: str,
    validation: str,
    parent: str | None = None,
    out: str | None = None,
    dev: str | None = None,
) -> dict:
    """Metrics, sizes and CPU latency of one variant (and mode) on the validation split, and its metrics on the
    dev split when the run has one (dev_<metric>: what choices read); the row also in out."""
    q = p.variant(name, seed, mode)
    splits = {"validation": validation} | ({"dev": dev} if dev else {})

    def make(out: str, rec: dict, again: bool = False) -> dict:
        with tracking.variant_run(parent, task, p, name, seed, mode, _tags(rec, **splits)) as run:
            stored = io.read_json(out) if again else {}
            if "per_example" in stored:  # the run lost from the store: the row and its predictions from the output
                result = {k: v for k, v in stored.items() if k not in ROW}
                result |= result.pop("per_example")
            else:
                result = core_evaluate.evaluate(
                    model_dir,
                    task,
                    validation,
                    q.evaluate.batch_size,
                    q.evaluate.latency_runs,
                    keep_predictions=True,
                    threads=q.evaluate.latency_threads,
                    dev=dev,
                )
            tracking.log_datasets(run, task, **splits)
            per_example = {k: result.pop(k) for k in ("labels", "predictions")}
            tracking.log_dict(run, per_example, tracking.PREDICTIONS)
            tracking.log_result(run, "evaluate", result)
            tracking.set_tags(
                run,
                {"collapsed": str(result["collapsed"]).lower(), "verdict": result["verdict"], "model_dir": model_dir},
            )  # the champion is exported from it
            # an MLflow model: mlflow.pyfunc.load_model(...).predict(df), encoded and batched as evaluated here
            tracking.log_model(run, model_dir, task, q.tokenize.max_length, q.evaluate.batch_size)
        row = {"task": task, "variant": name, "mode": mode, "method": plan.method(name, mode), "seed": seed, **result}
        if "per_example" not in stored:
            io.write_json(out, row | {"per_example": per_example})  # what logging the run again reads
        return row

    return made("evaluate", locals(), make)


ROW = ("task", "variant", "mode", "method", "seed")  # what evaluate's row adds to the evaluation


@task(name="report", task_run_name="report-{task}")  # never cached: it reads the MLflow store as it is now
def report(task: str, p: Params, parent: str | None = None, data: dict | None = None) -> str:
    """results/report/<task>/report.md and figures, built from the MLflow runs; logged to the parent run; its
    summary (read back from MLflow) printed and shown in the Prefect UI as the artifact `report-<task>`; the
    champion registered and exported."""
    from prefect.artifacts import create_markdown_artifact

    print(f"report {task}: read from MLflow; then the champion exported (unless done) and registered", flush=True)
    path = ship.publish(task, p, parent, data)
    create_markdown_artifact(
        key=f"report-{task}",
        markdown=Path(path).with_name("summary.md").read_text(),
        description=f"{task}: every variant over seeds, and the champion ({path})",
    )
    return path
