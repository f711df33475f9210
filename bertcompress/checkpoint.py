"""Epoch checkpoints of a fine-tune: written in the background, read back to resume an interrupted run.

A checkpoint holds the weights (safetensors), the optimizer and scheduler state, the RNG states and the
per-epoch history; it is written to a temp folder and renamed, and only the newest complete one is kept.
"""

from __future__ import annotations

import copy
import random
import shutil
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from . import io


def _write(work: Path, epoch: int, state: dict) -> None:
    final = work / "checkpoints" / f"epoch-{epoch}"
    with io.atomic_dir(final) as tmp:
        save_file(state.pop("model"), tmp / "model.safetensors")
        torch.save(state, tmp / "state.pt")
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
        state = {
            "model": self._host(model.state_dict(), "model"),
            "epoch": epoch,
            # param groups stay where they are: a capturable AdamW's lr is a GPU tensor and loads back there
            "optimizer": {
                "state": self._host(opt["state"], "optimizer"),
                "param_groups": copy.deepcopy(opt["param_groups"]),
            },
            "scheduler": copy.deepcopy(scheduler.state_dict()),
            "torch_rng": torch.get_rng_state(),
            "numpy_rng": np.random.get_state(),
            "python_rng": random.getstate(),
            "history": list(history),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        }
        if self.buffers:
            torch.cuda.synchronize()  # the non-blocking copies have landed
        self.pending: Future | None = self.pool.submit(_write, self.work, epoch, state)

    def wait(self) -> None:
        if self.pending is not None:
            pending, self.pending = self.pending, None
            pending.result()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.wait()  # also when training fails: a resumed run finds the last checkpoint complete
        self.pool.shutdown()


def load(work: Path, model, optimizer, scheduler) -> tuple[int, list]:
    """(epochs done, history) of the newest complete checkpoint in work/, its states loaded; (0, []) if none."""
    done = sorted(
        (p for p in (work / "checkpoints").glob("epoch-*") if p.name.split("-")[1].isdigit()),
        key=lambda p: int(p.name.split("-")[1]),
    )
    if not done:
        return 0, []
    ckpt = done[-1]
    try:
        weights, state = load_file(ckpt / "model.safetensors"), torch.load(ckpt / "state.pt", weights_only=False)
    except Exception as e:  # a damaged disk or copy: the complete-by-rename folder no longer reads back
        aside = ckpt.with_name(f"{ckpt.name}.unreadable")
        shutil.rmtree(aside, ignore_errors=True)
        ckpt.rename(aside)
        print(f"{ckpt} cannot be read back ({type(e).__name__}): set aside as {aside.name}; starting over", flush=True)
        return 0, []
    model.load_state_dict(weights)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["torch_rng"])
    np.random.set_state(state["numpy_rng"])
    random.setstate(state["python_rng"])
    if state.get("cuda_rng") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda_rng"])
    return state["epoch"], state["history"]
