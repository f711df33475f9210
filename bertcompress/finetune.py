"""Fine-tune a BERT-family classifier on a tokenized GLUE task with the seed recipe (and, with
prune.method=gradual, under the gradual magnitude-pruning schedule).

    bertcompress finetune --task mrpc [-S finetune.lr=3e-5] [-S prune.method=gradual]

After every epoch: training loss and accuracy (from the training forward passes), validation loss, accuracy and
task metric, and a checkpoint (bertcompress/checkpoint.py). The run works in `<out>.partial/`; rerunning an
interrupted run with the same step record (bertcompress/record.py: the params it reads, the data, the base model
and teacher by content, the code) resumes from its last complete checkpoint and ends with the same metrics; a
`.partial` left by another record is set aside as `<out>.stale/` and the run starts over, saying so in one line. Two
runs for one out folder (two flows started
together) take turns under `<out>.lock`: the second waits, saying so, and reuses the first's result if its inputs
were the same. The finished folder
`<out>/` (save_pretrained + tokenizer + metrics.json + params.json) appears atomically. Under torchrun each rank
trains on its slice of every global batch (DDP); rank 0 evaluates, checkpoints and writes the folder.
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path

import torch
from filelock import FileLock, Timeout

from . import checkpoint, distributed, io, loop, masks, metrics, record
from .distill import READS as distill_reads
from .distill import Distiller, teacher_of
from .glue import get_task
from .model import load_model, load_tokenizer
from .params import Params, UserError
from .tokenize import Encoded

RECIPE = (
    "lr",
    "batch_size",
    "epochs",
    "warmup_ratio",
    "weight_decay",
    "seed",
    "max_steps",
    "group_by_length",
    "pad_to_multiple",
    "precision",
    "unpad",
)
GRADUAL = (
    "method",
    "scope",
    "ranking",
    "criterion",
    "pattern",
    "initial_sparsity",
    "final_sparsity",
    "begin_step",
    "end_step",
    "hold_steps",
    "frequency",
    "power",
)


def reads(p: Params) -> list[str]:
    """The params keys a fine-tune's result depends on (besides its inputs: the base model and the data)."""
    pruning = [f"prune.{k}" for k in GRADUAL] if p.prune.method == "gradual" else ["prune.method"]
    pruning += ["prune.momentum"] if p.prune.method == "gradual" and p.prune.criterion == "first_order" else []
    distill = [f"distill.{k}" for k in distill_reads] if p.distill.teacher else ["distill.teacher"]
    return [f"finetune.{k}" for k in RECIPE] + pruning + distill + ["evaluate.batch_size"]  # + per-epoch validation


def identity(
    params: Params,
    task: str,
    train_path: str,
    val_path: str,
    base: str,
    teacher: str | None = None,
    extra: dict | None = None,
) -> dict:
    """The fine-tune's step record: the params it reads, its data, base model and teacher by content, its code."""
    flat = params.flat()
    inputs = {"train": train_path, "validation": val_path, "base": base, **({"teacher": teacher} if teacher else {})}
    if not Path(base).is_dir():  # a hub name: keyed by the name (model.name is read), not by content
        inputs.pop("base")
    return record.make(
        "finetune", {k: flat[k] for k in reads(params)}, inputs, "finetune", {"task": task, **(extra or {})}
    )


def _resumable(work: Path, wanted: dict) -> None:
    """Keep work/ only if it was started with the same step record; else move it aside (one line says so)."""
    if work.is_dir() and not record.same(work, wanted):
        stale = work.with_name(work.name.removesuffix(".partial") + ".stale")
        shutil.rmtree(stale, ignore_errors=True)
        work.rename(stale)
        print(
            f"{work} was started with other inputs ({record.why(record.read(work), wanted)}): set aside as "
            f"{stale}; starting over",
            flush=True,
        )
    work.mkdir(parents=True, exist_ok=True)
    record.write(work, wanted)


@contextmanager
def _exclusive(out: Path) -> Iterator[bool]:
    """Hold <out>.lock while this run works on out (and out.partial); True if another run held it first."""
    lock, waited = FileLock(f"{out}.lock"), False
    try:
        lock.acquire(timeout=0)
    except Timeout:
        print(f"{out} is being written by another run (lock {out}.lock): waiting for it to finish", flush=True)
        lock.acquire()
        waited = True
    try:
        yield waited
    finally:
        lock.release()


def finetune(
    params: Params,
    task: str,
    train_path: str,
    val_path: str,
    out_dir: str,
    on_epoch_end: Callable[[int, dict], None] | None = None,
    device: str | None = None,
    base: str | None = None,
    teacher: str | None = None,
    step: dict | None = None,
) -> dict:
    """Train `base` (default model.name; or another variant's folder), distilled from `teacher` when
    distill.teacher is set, evaluate every epoch, save to out_dir; the metrics in metrics.json, the step record
    (`step`, the caller's, else `identity`) beside it. One run at a time per out_dir: a second waits, then reuses
    what the first wrote if its record is the same."""
    base, teacher = base or params.model.name, teacher_of(params, teacher)
    device = distributed.setup(params.finetune.batch_size, device) or ("cuda" if torch.cuda.is_available() else "cpu")
    out, wanted = Path(out_dir), step or identity(params, task, train_path, val_path, base, teacher)
    with _exclusive(out) if distributed.is_main() else nullcontext(False) as waited:
        if distributed.from_main(waited and record.done(out, wanted)):
            print(f"{out} was written meanwhile by that run, with the same inputs: reusing it", flush=True)
            return io.read_json(out / "metrics.json")
        return _train(params, task, train_path, val_path, out, wanted, on_epoch_end, device, base, teacher)


def _train(
    params: Params,
    task: str,
    train_path: str,
    val_path: str,
    out: Path,
    wanted: dict,
    on_epoch_end: Callable[[int, dict], None] | None,
    device: str,
    base: str,
    teacher: str | None,
) -> dict:
    f, r, spec = params.finetune, params.runtime, get_task(task)
    main = distributed.is_main()
    if r.threads:
        torch.set_num_threads(r.threads)
    train, val = Encoded.load(train_path).to(device), Encoded.load(val_path).to(device)
    steps_per_epoch = math.ceil(len(train) / f.batch_size)
    total_steps = min(f.epochs * steps_per_epoch, f.max_steps or math.inf)
    pruner = masks.gradual(params.prune, total_steps)
    loop.seed_everything(f.seed)
    model = load_model(base, spec.num_labels).to(device)
    objective = loop.plain
    if teacher:
        objective = Distiller(load_model(teacher, spec.num_labels).to(device), params.distill)
        objective.check(model)
    if pruner:
        pruner.attach(model)
    optimizer, scheduler = loop.optimizer_and_schedule(model, f, total_steps, loop.use_graphs(f, r, device))
    work = Path(f"{out}.partial")
    if main:
        _resumable(work, wanted)
    distributed.from_main(None)  # the other ranks read work/ after rank 0 checked it
    start_epoch, history = checkpoint.load(work, model, optimizer, scheduler)
    bf16 = f.precision == "bf16"

    def end_of_epoch(epoch: int, step: int, stats: dict) -> None:
        row = None
        if main:
            with torch.autocast(device.split(":")[0], dtype=torch.bfloat16, enabled=bf16):
                val_loss, preds = loop.predict(model, val, params.evaluate.batch_size, device)
            row = {
                "epoch": epoch,
                "step": step,
                **stats,
                "val_loss": val_loss,
                **{f"val_{k}": v for k, v in metrics.compute(task, val.labels, preds).items()},
            }
        history.append(row := distributed.from_main(row))
        if not all(math.isfinite(row[k]) for k in ("train_loss", "val_loss")):
            raise UserError(
                f"training diverged: epoch {epoch} has train loss {row['train_loss']:.4g}, validation "
                f"loss {row['val_loss']:.4g}; lower finetune.lr (now {f.lr:g}) or use precision fp32"
            )
        if main:
            saver.save(epoch, model, optimizer, scheduler, history)
            print(" ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()), flush=True)
            if on_epoch_end:
                on_epoch_end(epoch, row)

    with checkpoint.Checkpointer(work) as saver:
        run = loop.train(
            model,
            train,
            f,
            r,
            total_steps,
            optimizer,
            scheduler,
            device,
            start_epoch,
            pruner.after_step if pruner else None,
            end_of_epoch,
            desc=task,
            objective=objective,
        )
    sparsity = pruner.finish(model) if pruner else None
    result = {
        "task": task,
        **{k: v for k, v in history[-1].items() if k.startswith("val_")},
        "epochs": len(history),
        "steps": run["steps"],
        "train_seconds": run["seconds"],
        "train_samples_per_second": run["seen"] / run["seconds"] if run["seconds"] else 0.0,
        "epoch_seconds": run["epoch_seconds"],
        "history": history,
        **({"sparsity": sparsity} if sparsity else {}),
        **({"teacher": teacher} if teacher else {}),
    }
    if main:
        model.save_pretrained(work, safe_serialization=True)
        load_tokenizer(base).save_pretrained(work)
        io.write_json(work / "metrics.json", result)
        io.write_json(work / "params.json", params.to_dict())
        shutil.rmtree(work / "checkpoints", ignore_errors=True)
        io.replace_dir(work, out)
        record.write(out, wanted)  # what out was made from
        record.path(work).unlink(missing_ok=True)
    return result
