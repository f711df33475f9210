"""Prefect tasks, one per step, each a thin wrapper over the core step function that records it in MLflow.

    python -m flows.compress --task mrpc      # runs them as a cached Prefect flow (flows/compress.py)
    dvc repro                                 # runs the same functions stage by stage (tasks/stage.py)

Tasks take and return paths and small dicts, never models. The cache key is what dvc.lock records: the params
sections the step reads, a content hash of every input file or folder, and the source of the step's core
modules and of the task itself (TASK_SOURCE). Results persist as JSON in $PREFECT_HOME/storage (.prefect/ in
the project, see prefect.toml), so a second flow run with the same inputs takes every result from the cache.
After deleting outputs/ or data/, run once with PREFECT_TASKS_REFRESH_CACHE=true.
"""
from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from prefect import task
from prefect.cache_policies import TASK_SOURCE, CachePolicy
from prefect.runtime import task_run

from bertcompress import params as P

from . import tracking

PACKAGE = Path(P.__file__).parent
READS = {  # step: (params sections, core modules) it depends on; dvc.yaml declares the same per stage
    "download": (["data"], ["glue.py", "hub.py"]),
    "tokenize": (["data", "model", "tokenize"], ["tokenize.py", "model.py"]),
    "finetune": (["model", "finetune", "prune"],
                 ["finetune.py", "fast.py", "distributed.py", "prune.py", "evaluate.py", "metrics.py"]),
    "prune": (["finetune", "prune"], ["prune.py", "quantize.py", "sizes.py"]),
    "quantize": (["finetune", "quantize"], ["quantize.py", "sizes.py"]),
    "evaluate": (["finetune", "evaluate"], ["evaluate.py", "metrics.py", "sizes.py", "latency.py", "quantize.py"]),
}
PREDICTIONS = "evaluate/predictions.json"  # per-example labels and predictions: the report's paired bootstrap
FILES = ("data_dir", "train", "validation", "model_dir")  # arguments naming inputs: keyed by their content
NOT_KEYED = ("params", "out", "cache_dir", "parent")  # params enter by section; where outputs go is no input


@functools.cache
def _file_sha256(path: str, size: int, mtime_ns: int) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def content_hash(path: str | Path) -> str:
    """sha256 of a file, or of a folder's relative paths and file hashes; memoised by size and mtime like DVC."""
    root = Path(path)
    if not root.exists():
        raise FileNotFoundError(f"{root} is missing; if a cached task made it, rerun with "
                                "PREFECT_TASKS_REFRESH_CACHE=true")
    files = [root] if root.is_file() else sorted(f for f in root.rglob("*") if f.is_file())
    h = hashlib.sha256()
    for f in files:
        st = f.stat()
        h.update(f"{f.relative_to(root)}\0{_file_sha256(str(f), st.st_size, st.st_mtime_ns)}\n".encode())
    return h.hexdigest()


def step_key(step: str, inputs: dict) -> str:
    sections, modules = READS[step]
    if step == "evaluate" and inputs.get("mode", "none") != "none":
        # a quantized variant's results are those of its quantize params (tracking.identity): evaluated anew
        # when they change, even if the quantized file comes out the same (dynamic int8 ignores calibration)
        sections = [*sections, "quantize"]
    parts = {"step": step, "params": {s: inputs["params"][s] for s in sections},
             "args": {k: v for k, v in inputs.items() if k not in FILES + NOT_KEYED},
             "files": {k: content_hash(v) for k, v in inputs.items() if k in FILES},
             "code": {m: content_hash(PACKAGE / m) for m in modules if (PACKAGE / m).exists()}}
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


@dataclass
class StepInputs(CachePolicy):
    """Params sections + input contents + core source: a task reruns exactly when its DVC stage would."""

    def compute_key(self, task_ctx, inputs, flow_parameters, **kwargs) -> str:
        return step_key(task_ctx.task.name, inputs)


CACHED = {"cache_policy": StepInputs() + TASK_SOURCE, "persist_result": True, "result_serializer": "json"}


def configure(params: dict, model: str, seed: int, mode: str = "none") -> P.Params:
    """The params one variant runs with: its seed, its pruning method (dense = none), its quantization mode."""
    p = P.from_dict(params)
    p.finetune.seed, p.prune.method, p.quantize.mode = seed, ("none" if model == "dense" else model), mode
    P.validate(p)
    return p


def method(model: str, mode: str = "none") -> str:
    return model if mode == "none" else f"{model}+{mode}"


def _run_name() -> str:
    """Readable task-run names: finetune-mrpc-gradual-s42, evaluate-mrpc-dense+dynamic-s42."""
    a = task_run.parameters
    return f"{task_run.task_name}-{a['task']}-{method(a['model'], a.get('mode', 'none'))}-s{a['seed']}"


def _data_tags(**splits: str) -> dict:
    """{'data_hash.train': ..}: which tokenized data (content) the step read."""
    return {f"data_hash.{split}": content_hash(path)[:16] for split, path in splits.items()}


@task(name="download", task_run_name="download-{task}", retries=2, retry_delay_seconds=10, **CACHED)
def download(task: str, params: dict, out: str) -> str:
    """GLUE train/validation parquet into out/ (retried: the hub can fail for a moment)."""
    from bertcompress import glue

    glue.download(task, out, params["data"]["source"])
    return out


@task(name="tokenize", task_run_name="tokenize-{task}", **CACHED)
def tokenize(task: str, params: dict, data_dir: str, cache_dir: str) -> dict:
    """{'train': npz, 'validation': npz} in cache_dir/<task>/, named by content."""
    from bertcompress.cli import prepared

    return prepared(task, P.from_dict(params), str(Path(data_dir).parent), cache_dir)


@task(name="finetune", task_run_name=_run_name, **CACHED)
def finetune(task: str, model: str, seed: int, params: dict, train: str, validation: str, out: str,
             parent: str | None = None) -> str:
    """Fine-tune (model=gradual: under the pruning schedule); per-epoch metrics go to MLflow as they come."""
    from bertcompress.finetune import finetune as run_finetune

    p = configure(params, model, seed)
    with tracking.variant_run(parent, task, model, p, _data_tags(train=train, validation=validation)) as run:
        result = run_finetune(p, task, train, validation, out, on_epoch_end=tracking.epoch_logger(run))
        tracking.log_result(run, "finetune", result)
        tracking.log_history_plot(run, result["history"])
    return out


@task(name="prune", task_run_name=_run_name, **CACHED)
def prune(task: str, model: str, seed: int, params: dict, model_dir: str, train: str, out: str,
          parent: str | None = None) -> str:
    """Prune a fine-tuned model after training: model = oneshot | structured."""
    from bertcompress import prune as core

    p = configure(params, model, seed)
    with tracking.variant_run(parent, task, model, p, _data_tags(train=train)) as run:
        result = {"oneshot": core.oneshot, "structured": core.structured}[model](
            model_dir, out, p, task, train_path=train)
        tracking.log_result(run, "prune", result)
    return out


@task(name="quantize", task_run_name=_run_name, **CACHED)
def quantize(task: str, model: str, mode: str, seed: int, params: dict, model_dir: str, train: str, out: str,
             parent: str | None = None) -> str:
    """Quantize a model (dense or pruned) in one mode; calibration and QAT read the training split."""
    from bertcompress import quantize as core

    p = configure(params, model, seed, mode)
    with tracking.variant_run(parent, task, method(model, mode), p, _data_tags(train=train)) as run:
        result = core.quantize(model_dir, out, p, task, calib_path=train, train_path=train)
        tracking.log_result(run, "quantize", result)
    return out


@task(name="evaluate", task_run_name=_run_name, **CACHED)
def evaluate(task: str, model: str, mode: str, seed: int, params: dict, model_dir: str, validation: str,
             parent: str | None = None) -> dict:
    """Metrics, sizes and CPU latency of one variant on the validation split; a row of the summary table."""
    from bertcompress.evaluate import evaluate as run_evaluate

    p = configure(params, model, seed, mode)
    with tracking.variant_run(parent, task, method(model, mode), p, _data_tags(validation=validation)) as run:
        result = run_evaluate(model_dir, task, validation, p.finetune.eval_batch_size, p.evaluate.latency_runs,
                              keep_predictions=True)
        tracking.log_dict(run, {k: result.pop(k) for k in ("labels", "predictions")}, PREDICTIONS)
        tracking.log_result(run, "evaluate", result)
        if method(model, mode) != "dense":
            tracking.log_folder(run, model_dir, "model")
    return {"task": task, "method": method(model, mode), "seed": seed, **result}


@task(name="report", task_run_name="report-{task}")  # never cached: it reads the MLflow store as it is now
def report(task: str, params: dict, parent: str | None = None) -> str:
    """results/report/<task>/report.md and figures, built from the MLflow runs; logged to the parent run."""
    from . import report as core

    return str(core.build(task, P.from_dict(params), parent=parent))
