"""The training loop and the evaluation loop: one of each, for fine-tuning, recovery after pruning and QAT.

    bertcompress finetune --task mrpc        # fine-tuning drives `train` epoch by epoch (bertcompress/finetune.py)

AdamW without decay on biases and LayerNorm, linear warm-up then linear decay, shuffled batches that are a pure
function of (seed, epoch) so a resumed run sees the same order, dynamic padding. Device, precision (bf16
autocast, TF32 matmuls), whole-step CUDA graphs (bertcompress/cuda_graphs.py) and DDP (bertcompress/distributed.py)
are handled here and nowhere else. `predict` is the one evaluation loop.
"""

from __future__ import annotations

import dataclasses
import math
import random
import time
from collections.abc import Callable
from contextlib import contextmanager

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm
from transformers import get_linear_schedule_with_warmup

from . import distributed, stop, unpad
from .cuda_graphs import GraphedTrainStep
from .params import Finetune, Runtime
from .tokenize import Encoded


def loss_of(logits: torch.Tensor, labels: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Cross-entropy over the classes or, for float labels (a regression head: one output), squared error;
    label -100 is ignored by both (fill's repeats). On the device, no synchronisation: CUDA graphs capture it."""
    if labels.is_floating_point():
        keep = labels != -100
        err = torch.where(keep, logits.float().squeeze(-1) - labels, 0.0).square().sum()
        return err if reduction == "sum" else err / keep.sum().clamp(min=1)
    return F.cross_entropy(logits.float(), labels, reduction=reduction)


def plain(model, inputs: dict, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The training objective without a teacher: (label loss, logits)."""
    logits = model(**inputs).logits
    return loss_of(logits, labels), logits


def outputs(logits: torch.Tensor) -> torch.Tensor:
    """Predictions: the class with the highest logit, or a regression head's one output."""
    return logits.float().squeeze(-1) if logits.shape[-1] == 1 else logits.argmax(-1)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def use_graphs(f: Finetune, r: Runtime, device: str) -> bool:
    """CUDA graphs on one GPU in fp32/tf32; bf16 autocast and DDP's all-reduce stay eager."""
    return r.cuda_graphs and device.startswith("cuda") and f.precision != "bf16" and distributed.world_size() == 1


def optimizer_and_schedule(model, f: Finetune, total_steps: int, capturable: bool = False):
    """AdamW without decay on biases and LayerNorm (fused on GPU; capturable, with a tensor lr, for CUDA graphs)
    and the linear schedule with warm-up over warmup_ratio of total_steps."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if name.endswith("bias") or "LayerNorm" in name else decay).append(p)
    device = next(model.parameters()).device
    extra = {"fused": True} if device.type == "cuda" else {}
    if capturable:
        extra.update(capturable=True, lr=torch.tensor(f.lr, device=device))
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": f.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        **{"lr": f.lr, **extra},
    )
    return optimizer, get_linear_schedule_with_warmup(optimizer, math.ceil(f.warmup_ratio * total_steps), total_steps)


def epoch_batches(
    n: int, batch_size: int, seed: int, epoch: int, lengths: np.ndarray | None = None, group: int = 0
) -> list[np.ndarray]:
    """The epoch's shuffled batches, a pure function of (seed, epoch).

    With group > 0 each window of group × batch_size shuffled examples is sorted by length before it is cut
    into batches (like transformers' group_by_length), and the batches are shuffled again: less padding, and
    every example still appears once per epoch.
    """
    g = torch.Generator().manual_seed(seed * 1000 + epoch)
    order = torch.randperm(n, generator=g).numpy()
    if group and lengths is not None:
        window = group * batch_size
        order = np.concatenate(
            [w[np.argsort(-lengths[w], kind="stable")] for w in np.split(order, range(window, n, window))]
        )
        batches = [order[i : i + batch_size] for i in range(0, n, batch_size)]
        return [batches[i] for i in torch.randperm(len(batches), generator=g).tolist()]
    return [order[i : i + batch_size] for i in range(0, n, batch_size)]


def fill(idx: np.ndarray, size: int) -> np.ndarray:
    """A short batch topped up to `size` rows by repeating its first example. The caller labels the repeats
    -100, which loss_of ignores: loss and gradients are the short batch's, and a captured step needs one
    shape per width, not one more for each epoch's last batch."""
    return np.concatenate([idx, np.repeat(idx[:1], size - len(idx))]) if len(idx) < size else idx


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


def train(
    model,
    data,
    f: Finetune,
    r: Runtime,
    total_steps: int,
    optimizer,
    scheduler,
    device: str = "cpu",
    start_epoch: int = 0,
    after_step: Callable[[int], None] | None = None,
    end_of_epoch: Callable[[int, int, dict], None] | None = None,
    desc: str = "train",
    objective: Callable = plain,
) -> dict:
    """Train from start_epoch until total_steps on objective(model, inputs, labels) -> (loss, logits) (plain, or
    distillation; an objective with `cached(data, device, visits)` gets to add per-example columns to the split
    first: distill.Distiller's teacher logits). after_step(step) runs after every optimizer step, the step's
    gradients still in .grad (pruning masks and scores); end_of_epoch(epoch, step, stats) after every epoch, stats =
    training loss and accuracy over it (summed over DDP ranks). Returns {'steps', 'loss', 'seen', 'seconds',
    'epoch_seconds'}."""
    graphed = GraphedTrainStep(model, optimizer, objective) if use_graphs(f, r, device) else None
    pad = max(f.pad_to_multiple, 32) if graphed else f.pad_to_multiple  # each width is one graph capture
    bf16, kind = f.precision == "bf16", device.split(":")[0]
    unpadded = f.unpad and not graphed and unpad.supports(model)  # a captured step replays fixed shapes: padded
    trained, world = distributed.wrap(unpad.Unpadded(model) if unpadded else model, device), distributed.world_size()
    steps_per_epoch = math.ceil(len(data) / f.batch_size)
    step, loss_all, seen, epoch_seconds, t0 = start_epoch * steps_per_epoch, 0.0, 0, [], time.perf_counter()
    if hasattr(objective, "cached"):  # a Distiller: the teacher's logits on the split, computed once
        data = objective.cached(data, device, visits=(total_steps - step) * f.batch_size)
    model.train()
    with matmul_precision(f.precision, device):
        for epoch in range(start_epoch, math.ceil(total_steps / steps_per_epoch)):
            loss_sum = correct = count = 0
            t_epoch = time.perf_counter()
            batches = epoch_batches(len(data), f.batch_size, f.seed, epoch, data.lengths, f.group_by_length)
            bar = tqdm(
                batches[: total_steps - step],
                desc=f"{desc} epoch {epoch + 1}",
                leave=False,
                disable=None if distributed.is_main() else True,
            )
            for idx in bar:
                stop.check()  # Ctrl-C / SIGTERM, also when this runs in a worker thread
                local, real = distributed.shard(idx)  # (idx, len(idx)) in one process
                batch = data.batch(fill(local, f.batch_size) if graphed else local, pad)
                labels = batch.pop("labels")
                if graphed:
                    labels[real:] = -100  # fill's repeats: no loss, no gradient, not counted
                    loss, logits = graphed(batch, labels)
                else:
                    optimizer.zero_grad(set_to_none=True)
                    with torch.autocast(kind, dtype=torch.bfloat16, enabled=bf16):
                        loss, logits = objective(trained, batch, labels)
                    (loss * (real * world / len(idx))).backward()  # x 1.0 in one process; see distributed.shard
                    optimizer.step()
                scheduler.step()
                step += 1
                if after_step:
                    after_step(step)
                loss_sum += loss.detach() * real  # stays on the device: no per-step synchronisation
                correct += (outputs(logits.detach()) == labels)[:real].sum()  # regression: unused
                count += real
                if step % r.log_every == 0:
                    bar.set_postfix(loss=f"{loss.item():.4f}")
            # float() waits for the device, so the epoch's time is complete; under DDP, sums over all ranks
            loss_sum, correct, count = distributed.total(loss_sum, correct, count)
            loss_all, seen = loss_all + loss_sum, seen + count
            epoch_seconds.append(time.perf_counter() - t_epoch)
            if end_of_epoch:
                stats = {"train_loss": loss_sum / count}
                if data.labels.dtype.kind != "f":  # classification: accuracy of the training forward passes
                    stats["train_accuracy"] = correct / count
                end_of_epoch(epoch + 1, step, stats)
    model.eval()
    return {
        "steps": step,
        "loss": loss_all / max(seen, 1),
        "seen": seen,
        "seconds": time.perf_counter() - t0,
        "epoch_seconds": epoch_seconds,
    }


STEPS_READ = (
    "lr",
    "batch_size",
    "warmup_ratio",
    "weight_decay",
    "seed",
    "group_by_length",
    "pad_to_multiple",
    "precision",
    "unpad",
)


def steps(
    model,
    train_path: str,
    f: Finetune,
    r: Runtime,
    n: int,
    after_step=None,
    desc: str = "recover",
    objective: Callable = plain,
    device: str = "cpu",
) -> float:
    """n steps of the seed recipe on a model already in memory (and on `device`: in finetune.precision on a GPU,
    fp32 on the CPU) for recovery after pruning and QAT; the mean training loss. Reads finetune.<STEPS_READ>."""
    precision = f.precision  # keyed on every machine: it decides the result wherever a GPU runs the steps
    f = dataclasses.replace(f, precision=precision if device.startswith("cuda") else "fp32")
    seed_everything(f.seed)
    optimizer, scheduler = optimizer_and_schedule(model, f, n, use_graphs(f, r, device))
    return train(
        model,
        Encoded.load(train_path).to(device),
        f,
        r,
        n,
        optimizer,
        scheduler,
        device,
        after_step=after_step,
        desc=desc,
        objective=objective,
    )["loss"]


@torch.inference_mode()
def logits(model, data, batch_size: int = 128, device: str = "cpu") -> tuple[float, np.ndarray]:
    """(mean loss, logits (n, outputs) in split order); batches go in length order to minimise padding."""
    was_training = model.training
    model.eval()
    order = np.argsort(data.lengths, kind="stable")
    out, loss_sum = None, 0.0
    for start in range(0, len(order), batch_size):
        stop.check()
        idx = order[start : start + batch_size]
        batch = {k: v.to(device, non_blocking=True) for k, v in data.batch(idx, 8).items()}
        labels = batch.pop("labels")
        z = model(**batch).logits.float()
        loss_sum += float(loss_of(z, labels, reduction="sum"))
        out = np.empty((len(data), z.shape[-1]), dtype=np.float32) if out is None else out
        out[idx] = z.cpu().numpy()
    model.train(was_training)
    return loss_sum / len(data), out


def predict(model, data, batch_size: int = 128, device: str = "cpu") -> tuple[float, np.ndarray]:
    """(mean loss, predictions): cross-entropy and labels, or squared error and scores for a regression head."""
    loss, z = logits(model, data, batch_size, device)
    preds = outputs(torch.from_numpy(z)).numpy()
    return loss, preds.astype(np.float64 if data.labels.dtype.kind == "f" else np.int64)
