"""Fine-tune a BERT-family classifier on a tokenized GLUE task with the seed recipe.

    bertcompress finetune --task mrpc [-S finetune.lr=3e-5]

AdamW (no decay on biases and LayerNorm), linear warm-up over warmup_ratio of the steps then linear decay,
dynamic padding, a progress bar showing the loss. After every epoch: training loss and accuracy (from the
training forward passes), validation loss, accuracy and task metric, and a checkpoint (weights as
safetensors, optimizer, scheduler, RNG), written to a temp folder then renamed. The run works in
`<out>.partial/`; rerunning an interrupted run resumes from its last complete checkpoint and ends with the
same metrics. The finished folder `<out>/` (save_pretrained + tokenizer + metrics.json) appears atomically.
Under torchrun each rank trains on its slice of every global batch (DDP, bertcompress/distributed.py); rank 0
evaluates, checkpoints and writes the folder.
"""
from __future__ import annotations

import copy
import json
import math
import os
import random
import shutil
import time
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm
from transformers import get_linear_schedule_with_warmup

from . import distributed, metrics, prune
from .evaluate import predict
from .fast import GraphedTrainStep
from .glue import get_task
from .model import load_model, load_tokenizer
from .params import Params
from .tokenize import Encoded


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def make_optimizer(model, lr: float, weight_decay: float, capturable: bool = False) -> torch.optim.AdamW:
    """AdamW without decay on biases and LayerNorm; fused on GPU; capturable (tensor lr) for CUDA graphs."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if name.endswith("bias") or "LayerNorm" in name else decay).append(p)
    device = next(model.parameters()).device
    extra = {"fused": True} if device.type == "cuda" else {}
    if capturable:
        extra.update(capturable=True, lr=torch.tensor(lr, device=device))
    return torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}], **{"lr": lr, **extra})


def epoch_batches(n: int, batch_size: int, seed: int, epoch: int, lengths: np.ndarray | None = None,
                  group: int = 0) -> list[np.ndarray]:
    """The epoch's shuffled batches, a pure function of (seed, epoch) so a resumed run sees the same order.

    With group > 0 each window of group × batch_size shuffled examples is sorted by length before it is cut
    into batches (like transformers' group_by_length), and the batches are shuffled again: less padding, and
    every example still appears once per epoch.
    """
    g = torch.Generator().manual_seed(seed * 1000 + epoch)
    order = torch.randperm(n, generator=g).numpy()
    if group and lengths is not None:
        window = group * batch_size
        order = np.concatenate([w[np.argsort(-lengths[w], kind="stable")]
                                for w in np.split(order, range(window, n, window))])
        batches = [order[i:i + batch_size] for i in range(0, n, batch_size)]
        return [batches[i] for i in torch.randperm(len(batches), generator=g).tolist()]
    return [order[i:i + batch_size] for i in range(0, n, batch_size)]


def fill(idx: np.ndarray, size: int) -> np.ndarray:
    """A short batch topped up to `size` rows by repeating its first example. The caller labels the repeats
    -100, which cross_entropy ignores: loss and gradients are the short batch's, and a captured step needs one
    shape per width, not one more for each epoch's last batch."""
    return np.concatenate([idx, np.repeat(idx[:1], size - len(idx))]) if len(idx) < size else idx


def _write_checkpoint(work: Path, epoch: int, state: dict) -> None:
    final = work / "checkpoints" / f"epoch-{epoch}"
    tmp = final.with_name(final.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file(state.pop("model"), tmp / "model.safetensors")
    torch.save(state, tmp / "state.pt")
    os.replace(tmp, final)
    for old in (work / "checkpoints").glob("epoch-*"):  # keep only the newest complete checkpoint
        if old != final:
            shutil.rmtree(old, ignore_errors=True)


class Checkpointer:
    """Epoch checkpoints written by a background thread from a host snapshot, so the next epoch trains
    meanwhile (writing ~270 MB per epoch took 0.3 s of a 1.2 s MRPC epoch on an H100). GPU tensors are copied
    into pinned host buffers allocated once and reused (one wait for the device per epoch). One write at a
    time; wait() returns when the last is complete (its folder renamed into place) and re-raises its error."""

    def __init__(self, work: Path):
        self.work, self.pool, self.pending, self.buffers = work, ThreadPoolExecutor(1, "checkpoint"), None, {}

    def _host(self, obj, path: str = ""):
        """obj with every tensor copied to host memory: a snapshot that later optimizer steps cannot change."""
        if isinstance(obj, dict):
            return {k: self._host(v, f"{path}/{k}") for k, v in obj.items()}
        if isinstance(obj, (list, tuple)):
            return type(obj)(self._host(v, f"{path}/{i}") for i, v in enumerate(obj))
        if not isinstance(obj, torch.Tensor):
            return obj
        if obj.device.type != "cuda":
            return obj.detach().clone().contiguous()
        buf = self.buffers.get(path)
        if buf is None or buf.shape != obj.shape or buf.dtype != obj.dtype:
            buf = self.buffers[path] = torch.empty(obj.shape, dtype=obj.dtype, pin_memory=True)
        return buf.copy_(obj.detach(), non_blocking=True)

    def save(self, epoch: int, model, optimizer, scheduler, history: list) -> None:
        self.wait()  # the previous write is done with the buffers
        opt = optimizer.state_dict()
        state = {"model": self._host(model.state_dict(), "model"), "epoch": epoch,
                 # param groups stay where they are: a capturable AdamW's lr is a GPU tensor and loads back there
                 "optimizer": {"state": self._host(opt["state"], "optimizer"),
                               "param_groups": copy.deepcopy(opt["param_groups"])},
                 "scheduler": copy.deepcopy(scheduler.state_dict()), "torch_rng": torch.get_rng_state(),
                 "numpy_rng": np.random.get_state(), "python_rng": random.getstate(), "history": list(history),
                 "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}
        if self.buffers:
            torch.cuda.synchronize()  # the non-blocking copies have landed
        self.pending: Future | None = self.pool.submit(_write_checkpoint, self.work, epoch, state)

    def wait(self) -> None:
        if self.pending is not None:
            pending, self.pending = self.pending, None
            pending.result()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.wait()  # also when training fails: a resumed run finds the last checkpoint complete
        self.pool.shutdown()


@contextmanager
def matmul_precision(precision: str, device: str):
    """tf32: fp32 weights and activations, matrix products on TF32 tensor cores (CUDA only; restored after)."""
    before = torch.get_float32_matmul_precision()
    if precision == "tf32" and device.startswith("cuda"):
        torch.set_float32_matmul_precision("high")
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(before)


def _load_checkpoint(work: Path, model, optimizer, scheduler) -> tuple[int, list]:
    done = sorted((p for p in (work / "checkpoints").glob("epoch-*") if not p.name.endswith(".tmp")),
                  key=lambda p: int(p.name.split("-")[1]))
    if not done:
        return 0, []
    ckpt = done[-1]
    model.load_state_dict(load_file(ckpt / "model.safetensors"))
    state = torch.load(ckpt / "state.pt", weights_only=False)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["torch_rng"])
    np.random.set_state(state["numpy_rng"])
    random.setstate(state["python_rng"])
    if state.get("cuda_rng") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda_rng"])
    return state["epoch"], state["history"]


def write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


def finetune(params: Params, task: str, train_path: str, val_path: str, out_dir: str,
             on_epoch_end: Callable[[int, dict], None] | None = None, device: str | None = None) -> dict:
    """Train, evaluate every epoch, save the model to out_dir; return the metrics written to metrics.json."""
    f, spec = params.finetune, get_task(task)
    device = distributed.setup(f.batch_size, device) or ("cuda" if torch.cuda.is_available() else "cpu")
    main = distributed.is_main()
    if f.threads:
        torch.set_num_threads(f.threads)
    train, val = Encoded.load(train_path).to(device), Encoded.load(val_path).to(device)
    steps_per_epoch = math.ceil(len(train) / f.batch_size)
    total_steps = min(f.epochs * steps_per_epoch, f.max_steps or math.inf)
    pruner = prune.make_pruner(params.prune, total_steps)  # None unless prune.method=gradual
    bf16 = f.precision == "bf16"
    # Pruning masks change between steps and broke capture on an H100 (bench/RESULTS.md): those runs stay eager.
    # DDP's gradient all-reduce is not captured: multi-process runs are eager too.
    graphs = f.cuda_graphs and device.startswith("cuda") and not bf16 and distributed.world_size() == 1
    pad = max(f.pad_to_multiple, 32) if graphs else f.pad_to_multiple  # each width is one graph capture
    seed_everything(f.seed)
    model = load_model(params.model.name, spec.num_labels).to(device)
    if pruner:
        pruner.attach(model)
    optimizer = make_optimizer(model, f.lr, f.weight_decay, capturable=graphs)
    scheduler = get_linear_schedule_with_warmup(optimizer, math.ceil(f.warmup_ratio * total_steps), total_steps)

    out, work = Path(out_dir), Path(str(out_dir) + ".partial")
    start_epoch, history = _load_checkpoint(work, model, optimizer, scheduler)
    checkpoints = Checkpointer(work)
    graphed_step = GraphedTrainStep(model, optimizer) if graphs else None
    trained = distributed.wrap(model, device)  # the model itself in one process
    world = distributed.world_size()
    step = start_epoch * steps_per_epoch
    t0, seen, epoch_seconds = time.perf_counter(), 0, []
    model.train()
    with checkpoints, matmul_precision(f.precision, device):
        for epoch in range(start_epoch, math.ceil(total_steps / steps_per_epoch)):
            loss_sum = correct = count = 0
            t_epoch = time.perf_counter()
            batches = epoch_batches(len(train), f.batch_size, f.seed, epoch, train.lengths, f.group_by_length)
            bar = tqdm(batches[:total_steps - step], desc=f"{task} epoch {epoch + 1}", leave=False,
                       disable=None if main else True)
            for idx in bar:
                local, real = distributed.shard(idx)  # (idx, len(idx)) in one process
                batch = train.batch(fill(local, f.batch_size) if graphed_step else local, pad)
                labels = batch.pop("labels")
                if graphed_step:
                    labels[real:] = -100  # fill's repeats: no loss, no gradient, not counted
                    loss, logits = graphed_step(batch, labels)
                else:
                    with torch.autocast(device.split(":")[0], dtype=torch.bfloat16, enabled=bf16):
                        logits = trained(**batch).logits
                    loss = F.cross_entropy(logits.float(), labels)
                    (loss * (real * world / len(idx))).backward()  # x 1.0 in one process; see distributed.shard
                    optimizer.step()
                    optimizer.zero_grad(set_to_none=True)
                scheduler.step()
                step += 1
                if pruner:
                    pruner.after_step(model, step)
                loss_sum += loss.detach() * real  # stays on the device: no per-step synchronisation
                correct += (logits.detach().argmax(-1) == labels)[:real].sum()
                count += real
                if step % f.log_every == 0:
                    bar.set_postfix(loss=f"{loss.item():.4f}")
            # float() waits for the device, so the epoch's time is complete; under DDP, sums over all ranks
            loss_sum, correct, count = distributed.total(loss_sum, correct, count)
            seen += count
            epoch_seconds.append(time.perf_counter() - t_epoch)
            row = None
            if main:
                with torch.autocast(device.split(":")[0], dtype=torch.bfloat16, enabled=bf16):
                    val_loss, val_preds = predict(model, val, f.eval_batch_size, device)
                row = {"epoch": epoch + 1, "step": step, "train_loss": loss_sum / count,
                       "train_accuracy": correct / count, "val_loss": val_loss,
                       **{f"val_{k}": v for k, v in metrics.compute(task, val.labels, val_preds).items()}}
            history.append(row := distributed.from_main(row))
            if main:
                checkpoints.save(epoch + 1, model, optimizer, scheduler, history)
                print(" ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()),
                      flush=True)
                if on_epoch_end:
                    on_epoch_end(epoch + 1, row)
        train_seconds = time.perf_counter() - t0

    if pruner:
        pruner.finish(model)
    result = {"task": task, **{k: v for k, v in history[-1].items() if k.startswith("val_")},
              "epochs": len(history), "steps": step, "train_seconds": train_seconds,
              "train_samples_per_second": seen / train_seconds if train_seconds else 0.0,
              "epoch_seconds": epoch_seconds,
              "history": history, **({"sparsity": pruner.report(model)} if pruner else {})}
    if main:
        _save_final(model, params, work, result)
        if out.exists():
            shutil.rmtree(out)
        os.replace(work, out)
    return result


def _save_final(model, params: Params, work: Path, result: dict) -> None:
    model.save_pretrained(work, safe_serialization=True)
    load_tokenizer(params.model.name).save_pretrained(work)
    write_json(work / "metrics.json", result)
    write_json(work / "params.json", params.to_dict())
    shutil.rmtree(work / "checkpoints", ignore_errors=True)
