"""Data-parallel fine-tuning over several processes, started by torchrun or accelerate launch (DDP).

    torchrun --nproc_per_node 2 -m bertcompress.cli finetune --task mrpc      # 2 GPUs (nccl) or 2 CPU processes (gloo)
    accelerate launch --multi_gpu --num_processes 2 -m bertcompress.cli finetune --task mrpc

Every rank walks the same global batches (`epoch_batches` is a pure function of seed and epoch) and takes a
contiguous slice of each, so the global batch, the number of steps and the lr schedule stay the protocol's.
Without a launcher's environment (WORLD_SIZE unset or 1) every function here is a no-op.
"""

from __future__ import annotations

import inspect
import os
from contextlib import contextmanager

import numpy as np

from .params import UserError

# torch is imported inside the functions that need it: `bertcompress --help` and one-process runs don't pay it here


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", 1))


def rank() -> int:
    return int(os.environ.get("RANK", 0))


def is_main() -> bool:
    return rank() == 0


def check(batch_size: int, device: str | None = None) -> str | None:
    """This rank's device; UserError (before any work) when the batch does not split or the node lacks devices."""
    world = world_size()
    if world == 1:
        return device
    import torch

    if batch_size % world:
        raise UserError(
            f"finetune.batch_size={batch_size} does not split evenly over {world} processes; "
            f"launch a number of processes that divides it, or set finetune.batch_size to a "
            f"multiple of {world}"
        )
    kind = (device or ("cuda" if torch.cuda.is_available() else "cpu")).split(":")[0]
    per_node = int(os.environ.get("LOCAL_WORLD_SIZE", world))
    have, what = (
        (torch.cuda.device_count(), "CUDA devices") if kind == "cuda" else (len(os.sched_getaffinity(0)), "CPU cores")
    )
    if per_node > have:
        raise UserError(
            f"{per_node} processes per node but this machine has {have} {what}; "
            f"launch with --nproc_per_node {have} (or --num_processes {have}) or fewer"
        )
    return f"cuda:{os.environ.get('LOCAL_RANK', 0)}" if kind == "cuda" else "cpu"


def setup(batch_size: int, device: str | None = None) -> str | None:
    """Check, then join the process group (nccl on CUDA, gloo on CPU) once; return this rank's device."""
    device = check(batch_size, device)
    if world_size() > 1 and not joined():
        import torch
        import torch.distributed as dist

        if device.startswith("cuda"):
            torch.cuda.set_device(device)
            dist.init_process_group("nccl", device_id=torch.device(device))  # bound to this rank's GPU
        else:
            dist.init_process_group("gloo")
    return device


def joined() -> bool:
    if world_size() == 1:
        return False
    import torch.distributed as dist

    return dist.is_initialized()


def teardown() -> None:
    if joined():
        import torch.distributed as dist

        dist.destroy_process_group()


@contextmanager
def main_first():
    """Rank 0 runs the block (download, tokenize: they write shared files) before the others read its results."""
    if not joined():
        yield
        return
    import torch.distributed as dist

    if not is_main():
        dist.barrier()
    yield
    if is_main():
        dist.barrier()


def wrap(model, device: str):
    """The model in DistributedDataParallel (gradients averaged over ranks in backward); itself in one process.
    Buffers (pruning masks, position ids) are computed identically on every rank, so none are broadcast."""
    if world_size() == 1:
        return model
    from torch.nn.parallel import DistributedDataParallel

    known = inspect.signature(DistributedDataParallel).parameters
    no_sync = "forward_sync_buffers" if "forward_sync_buffers" in known else "broadcast_buffers"  # torch 2.13 name
    return DistributedDataParallel(
        model, device_ids=[device] if device.startswith("cuda") else None, **{no_sync: False}
    )


def shard(idx: np.ndarray) -> tuple[np.ndarray, int]:
    """(this rank's slice of a global batch, how many of its examples are real).

    DDP averages gradients over ranks, so a rank scales its mean loss by real × world / len(idx) to make the
    result the global batch's mean. A rank left empty by a short last batch runs one example with weight 0:
    every rank must join each gradient all-reduce.
    """
    part = np.array_split(idx, world_size())[rank()]
    return (part, len(part)) if len(part) else (idx[:1], 0)


def total(*values) -> list[float]:
    """Each value summed over ranks (the epoch's training loss, correct and count): floats on every rank."""
    values = [float(v) for v in values]  # one wait for the device, at the epoch's end
    if world_size() == 1:
        return values
    import torch
    import torch.distributed as dist

    t = torch.tensor(values, dtype=torch.float64, device="cuda" if dist.get_backend() == "nccl" else "cpu")
    dist.all_reduce(t)
    return t.tolist()


def from_main(obj):
    """Rank 0's object (the epoch's validation row) on every rank: one evaluation, identical metrics everywhere."""
    if world_size() == 1:
        return obj
    import torch.distributed as dist

    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]
