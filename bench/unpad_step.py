"""What does padding cost a training step? The padded step vs the unpadded one (finetune.unpad), side by side.

    python -m bench.unpad_step --threads 2                              # this CPU, MRPC and SST-2, batch 32
    python -m bench.unpad_step --device cuda --model .carry/minilm --glue-dir .carry/glue --steps 200

Times loop.train (the one training loop) over the same `--steps` batches of each task's train split (less its
dev tenth) with finetune.unpad off and on, for the default batching (group_by_length 50: windows of 50 batches
sorted by length) and a plain shuffle (group_by_length 0), eager steps (on a GPU also the padded step captured
in CUDA graphs, which an unpadded step cannot be). Rounds are interleaved (the machine is shared); samples/s is
the median over rounds. Also prints the share of computed tokens that are real, and checks the two paths agree:
the largest logit difference on a batch in eval mode, and the mean loss of the timed steps with dropout off.
JSON to --json.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from bench.distill_step import cpu_name
from bertcompress import loop
from bertcompress import params as P
from bertcompress.model import load_model
from bertcompress.tokenize import Encoded, prepared
from bertcompress.unpad import Unpadded


def real_share(data, f) -> float:
    """Real tokens / computed tokens over an epoch's batches (padded to the batch's longest, pad_to_multiple)."""
    real = computed = 0
    for idx in loop.epoch_batches(len(data), f.batch_size, f.seed, 0, data.lengths, f.group_by_length):
        n = data.lengths[idx]
        real += int(n.sum())
        computed += len(idx) * int(-(-n.max() // f.pad_to_multiple) * f.pad_to_multiple)
    return real / computed


def fresh(p: P.Params, model_name: str, steps: int, device: str, **config) -> tuple:
    """(model, finetune params, optimizer, schedule) for `steps` steps of p's recipe, seeded as a run is."""
    f = dataclasses.replace(p.finetune, max_steps=steps)
    loop.seed_everything(f.seed)
    model = load_model(model_name, 2, **config).to(device)
    return (model, f, *loop.optimizer_and_schedule(model, f, steps, loop.use_graphs(f, p.runtime, device)))


def run(p: P.Params, data, model_name: str, steps: int, device: str, dropout: bool = True) -> tuple[float, float]:
    """(seconds of `steps` training steps, their mean loss)."""
    extra = {} if dropout else {"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}
    model, f, opt, sched = fresh(p, model_name, steps, device, **extra)
    t0 = time.perf_counter()
    done = loop.train(model, data, f, p.runtime, steps, opt, sched, device)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - t0, float(done["loss"])


def busy_share(p: P.Params, data, model_name: str, steps: int, device: str) -> dict:
    """The profiler's view of `steps` steps on a GPU: wall ms per step, and the share of it the device spent in
    kernels and copies (torch.profiler's device time summed over events). A low share: the step waits on the host
    (kernel launches, Python), which CUDA graphs remove and unpadding does not."""
    from torch.profiler import ProfilerActivity, profile

    model, f, opt, sched = fresh(p, model_name, steps, device)
    loop.train(model, data, dataclasses.replace(f, max_steps=3), p.runtime, 3, opt, sched, device)  # capture, warm
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        t0 = time.perf_counter()
        loop.train(model, data, f, p.runtime, steps, opt, sched, device)
        torch.cuda.synchronize()
        wall = time.perf_counter() - t0
    device_s = sum(e.self_device_time_total for e in prof.key_averages()) / 1e6
    return {"ms_per_step": 1000 * wall / steps, "device_busy_share": device_s / wall}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=P.defaults().model.name)
    ap.add_argument("--glue-dir", default=None, help="GLUE parquet root (default: GLUE_DIR or ../shared/glue)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--tasks", default="mrpc,sst2")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--profile", action="store_true", help="GPU: also the profiler's device-busy share per step")
    ap.add_argument("--json", default="bench/results/unpad-step.json")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    if a.glue_dir:
        os.environ["GLUE_DIR"] = a.glue_dir
    gpu = a.device.startswith("cuda")
    base = P.load(None, [f"model.name={a.model}", "runtime.threads=null", "runtime.cuda_graphs=false"])
    machine = torch.cuda.get_device_name() if gpu else f"{cpu_name()}, {a.threads} threads"
    result = {"machine": machine, "torch": torch.__version__, "steps": a.steps, "rounds": a.rounds, "tasks": {}}
    root = Path(tempfile.gettempdir()) / "unpad-step-data"
    for task in a.tasks.split(","):
        paths = prepared(task, base, root / "glue", root / "tokenized")
        data = Encoded.load(paths["train"]).to(a.device)
        kinds = {}
        for group in (50, 0):
            for unpad in (False, True):
                kinds[f"group{group}_{'unpadded' if unpad else 'padded'}"] = base.replace(
                    {"finetune.group_by_length": group, "finetune.unpad": unpad}
                )
        if gpu:
            kinds["group50_padded_cuda_graphs"] = base.replace({"runtime.cuda_graphs": True, "finetune.unpad": False})
        seconds = {k: [] for k in kinds}
        run(base, data, a.model, 3, a.device)  # warm-up: allocator, kernels, first-touch
        for r in range(a.rounds):
            for k, p in kinds.items():
                s, _ = run(p, data, a.model, a.steps, a.device)
                seconds[k].append(s)
                print(f"{task} round {r + 1} {k:28s} {a.steps * p.finetune.batch_size / s:8.1f} samples/s", flush=True)
        n = a.steps * base.finetune.batch_size
        rate = {k: n / statistics.median(v) for k, v in seconds.items()}
        # the two paths compute the same function: eval logits on one batch, and training loss with dropout off
        model = load_model(a.model, 2).to(a.device).eval()
        batch = data.batch(np.arange(min(64, len(data))), 8)
        batch.pop("labels")
        with torch.no_grad():
            diff = (model(**batch).logits - Unpadded(model)(**batch).logits).abs().max().item()
        loss = {}
        for unpad in (False, True):
            _, loss[unpad] = run(base.replace({"finetune.unpad": unpad}), data, a.model, a.steps, a.device, False)
        share = {g: real_share(data, base.replace({"finetune.group_by_length": g}).finetune) for g in (50, 0)}
        profiled = {}
        if gpu and a.profile:
            for k in ("group50_padded", "group50_unpadded", "group50_padded_cuda_graphs"):
                profiled[k] = busy_share(kinds[k], data, a.model, 20, a.device)
                print(
                    f"  profiled {k:28s} {profiled[k]['ms_per_step']:6.2f} ms/step, device busy "
                    f"{profiled[k]['device_busy_share']:.0%} of it",
                    flush=True,
                )
        result["tasks"][task] = {
            "profiled": profiled,
            "train_examples": len(data),
            "mean_length": float(data.lengths.mean()),
            "real_token_share": {f"group{g}": s for g, s in share.items()},
            "samples_per_s": rate,
            "unpadded_over_padded": {
                f"group{g}": rate[f"group{g}_unpadded"] / rate[f"group{g}_padded"] for g in (50, 0)
            },
            "max_logit_difference_eval": diff,
            "mean_loss_no_dropout": {"padded": loss[False], "unpadded": loss[True]},
            "seconds": seconds,
        }
        print(
            f"\n{machine}, {task} train {len(data)} examples (mean length {data.lengths.mean():.1f}), batch "
            f"{base.finetune.batch_size}, {a.steps} steps, median of {a.rounds} interleaved rounds"
        )
        for k in kinds:
            print(f"  {k:28s} {rate[k]:8.1f} samples/s")
        for g in (50, 0):
            print(
                f"  group_by_length {g}: real tokens {share[g]:.1%} of computed; unpadded "
                f"{rate[f'group{g}_unpadded'] / rate[f'group{g}_padded']:.2f}x padded"
            )
        print(
            f"  agreement: max |logit difference| {diff:.1e} (eval); mean loss without dropout padded "
            f"{loss[False]:.6f} unpadded {loss[True]:.6f}"
        )
    Path(a.json).parent.mkdir(parents=True, exist_ok=True)
    Path(a.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
