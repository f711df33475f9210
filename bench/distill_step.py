"""What does distillation cost a training step? Dense vs distilled (teacher inside the step vs its logits cached).

    python -m bench.distill_step --threads 2                      # this CPU, MRPC, batch 32
    python -m bench.distill_step --device cuda --model .carry/minilm --glue-dir .carry/glue

Times loop.train (the one training loop, as fine-tuning and recovery run it) over the same `--steps` batches of
the real MRPC train split (less its dev tenth), for: the plain objective; logits distillation with the teacher's
forward in each step; the same with the teacher's logits cached (bertcompress/distill.py, one inference pass
before the steps, timed apart and also amortised over `--epochs` epochs); and each of those with gradual
first-order pruning to 90 % attached, as params.yaml's `gradual` variant trains. Rounds are interleaved (the
machine is shared); samples/s is the median over rounds. Prints ratios to the plain step; JSON to --json.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import platform
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import torch

from bertcompress import distill, loop, masks
from bertcompress import params as P
from bertcompress.model import load_model
from bertcompress.tokenize import Encoded, prepared


class InStep(distill.Distiller):
    """The teacher's forward inside every step (no cache): the cost before caching."""

    def cached(self, data, device="cpu", visits=None):
        return data


def cpu_name() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        name = next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name"))
        flags = next(line for line in out.splitlines() if line.startswith("Flags"))
        extra = [f for f in ("avx512_vnni", "avx512_bf16", "amx_tile") if f in flags.split()]
        return f"{name} ({', '.join(extra) or 'no avx512_vnni'})"
    except (OSError, StopIteration, subprocess.CalledProcessError):
        return platform.processor() or "unknown CPU"


def run(kind: str, p: P.Params, data, model_name: str, steps: int, device: str) -> tuple[float, float, float]:
    """(seconds of `steps` training steps, seconds of the cache pass, their mean loss) for one objective kind."""
    f = dataclasses.replace(p.finetune, max_steps=steps)
    loop.seed_everything(f.seed)
    model = load_model(model_name, 2).to(device)
    objective, pruner = loop.plain, None
    if kind.startswith("kd"):
        teacher = load_model(model_name, 2).to(device)
        objective = (InStep if "in_step" in kind else distill.Distiller)(teacher, dataclasses.replace(p.distill))
    if kind.endswith("+prune"):
        total = f.epochs * math.ceil(len(data) / f.batch_size)  # the schedule of a full run; we time its first steps
        prune = dataclasses.replace(
            p.prune, method="gradual", criterion="first_order", ranking="global", final_sparsity=0.9, frequency=10
        )
        pruner = masks.gradual(prune, total)
        pruner.attach(model)
    cache_s = 0.0
    if kind == "kd_cached" or kind == "kd_cached+prune":
        t0 = time.perf_counter()
        data = objective.cached(data, device, visits=math.inf)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        cache_s = time.perf_counter() - t0
        objective.cached = lambda d, device="cpu", visits=None: data  # the split as cached: train skips the pass
    opt, sched = loop.optimizer_and_schedule(model, f, steps, loop.use_graphs(f, p.runtime, device))
    t0 = time.perf_counter()
    done = loop.train(
        model,
        data,
        f,
        p.runtime,
        steps,
        opt,
        sched,
        device,
        after_step=pruner.after_step if pruner else None,
        objective=objective,
    )
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - t0, cache_s, float(done["loss"])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=P.defaults().model.name)
    ap.add_argument("--glue-dir", default=None, help="GLUE parquet root (default: GLUE_DIR or ../shared/glue)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=15, help="a full run's epochs, to amortise the cache pass")
    ap.add_argument("--json", default="bench/results/distill-step.json")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    p = P.load(None, [f"model.name={a.model}", "runtime.threads=null", "distill.hidden_weight=0.0"])
    if a.glue_dir:
        os.environ["GLUE_DIR"] = a.glue_dir
    root = Path(tempfile.gettempdir()) / "distill-step-data"
    paths = prepared("mrpc", p, root / "glue", root / "tokenized")
    data = Encoded.load(paths["train"]).to(a.device)
    kinds = ["plain", "kd_in_step", "kd_cached", "plain+prune", "kd_in_step+prune", "kd_cached+prune"]
    seconds = {k: [] for k in kinds}
    cache, losses = [], {}
    run("plain", p, data, a.model, 3, a.device)  # warm-up: allocator, kernels, first-touch
    for r in range(a.rounds):
        for k in kinds:
            s, c, losses[k] = run(k, p, data, a.model, a.steps, a.device)
            seconds[k].append(s)
            if c:
                cache.append(c)
            print(f"round {r + 1} {k:18s} {a.steps * p.finetune.batch_size / s:7.1f} samples/s", flush=True)
    n = a.steps * p.finetune.batch_size
    rate = {k: n / statistics.median(v) for k, v in seconds.items()}
    steps_per_epoch = math.ceil(len(data) / p.finetune.batch_size)
    cache_s = statistics.median(cache)
    amortised = {  # the cache pass spread over a full run of --epochs epochs
        k: n / (statistics.median(seconds[k]) + cache_s * a.steps / (a.epochs * steps_per_epoch))
        for k in ("kd_cached", "kd_cached+prune")
    }
    machine = torch.cuda.get_device_name() if a.device.startswith("cuda") else f"{cpu_name()}, {a.threads} threads"
    result = {
        "machine": machine,
        "torch": torch.__version__,
        "task": "mrpc",
        "train_examples": len(data),
        "batch_size": p.finetune.batch_size,
        "steps": a.steps,
        "rounds": a.rounds,
        "samples_per_s": rate,
        "ratio_to_plain": {k: v / rate["plain"] for k, v in rate.items()},
        "ratio_to_plain_prune": {k: rate[k] / rate["plain+prune"] for k in kinds if k.endswith("+prune")},
        "cache_pass_s": cache_s,
        "amortised_over_epochs": a.epochs,
        "amortised_ratio_to_plain": {k: v / rate["plain"] for k, v in amortised.items()},
        "seconds": seconds,
        "mean_loss": losses,  # the same batches and seeds: cached and in-step distillation agree to float noise
    }
    print(
        f"\n{machine}, MRPC train {len(data)} examples, batch {p.finetune.batch_size}, {a.steps} steps, median of "
        f"{a.rounds} interleaved rounds"
    )
    for k in kinds:
        print(f"  {k:18s} {rate[k]:7.1f} samples/s  {rate[k] / rate['plain']:.2f}x plain")
    print(
        f"  cache pass {cache_s:.1f} s; kd_cached amortised over {a.epochs} epochs: "
        f"{amortised['kd_cached'] / rate['plain']:.2f}x plain, kd_cached+prune "
        f"{amortised['kd_cached+prune'] / rate['plain+prune']:.2f}x plain+prune"
    )
    for suffix in ("", "+prune"):
        c, i = losses[f"kd_cached{suffix}"], losses[f"kd_in_step{suffix}"]
        print(f"  mean loss kd_cached{suffix} {c:.6f} vs kd_in_step{suffix} {i:.6f} (relative {abs(c - i) / i:.1e})")
    Path(a.json).parent.mkdir(parents=True, exist_ok=True)
    Path(a.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
