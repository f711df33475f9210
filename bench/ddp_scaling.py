"""DDP scaling on one multi-GPU machine: the same fine-tune on 1, 2, (4, 8) GPUs via torchrun; samples/s and
scaling efficiency.

    python -m bench.ddp_scaling --model .carry/minilm --glue-dir .carry/glue --tasks mrpc sst2 --gpus 1 2 \
        --json $OUT/ddp_scaling.json

Each run is `torchrun --standalone --nproc_per_node N -m bertcompress.cli finetune` with the protocol's global
batch (32: each of N ranks takes 32/N of every batch). DDP runs are eager (no CUDA graphs: DDP's all-reduce is
not captured), so the baseline for efficiency is the eager 1-GPU run (`-S runtime.cuda_graphs=false`); the
graphed 1-GPU run, the default, is listed too. "steady" = samples/s of the last epoch (training only, no start-up,
evaluation or checkpoint). efficiency = steady(N) / (N × steady(1 GPU, eager)). Needs only torch, transformers,
pandas, pyarrow, scikit-learn (no Prefect, MLflow or datasets).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def finetune(args, task: str, gpus: int, graphs: bool) -> dict:
    out = Path(args.work) / f"{task}-g{gpus}-{'graphed' if graphs else 'eager'}"
    overrides = [
        f"model.name={Path(args.model).resolve()}",
        f"data.source={Path(args.glue_dir).resolve()}",
        f"finetune.epochs={args.epochs}",
        f"runtime.cuda_graphs={str(graphs).lower()}",
        *args.set,
    ]
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={gpus}"]
    cmd = [
        *launcher,
        "-m",
        "bertcompress.cli",
        "finetune",
        "--task",
        task,
        "--out",
        str(out),
        *[a for o in overrides for a in ("-S", o)],
    ]
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "TQDM_DISABLE": "1",
        "HF_HUB_OFFLINE": "1",
        **({"CUDA_VISIBLE_DEVICES": ""} if args.cpu else {}),
    }
    t0 = time.perf_counter()
    run = subprocess.run(cmd, cwd=args.work, env=env, capture_output=True, text=True)
    if run.returncode:
        print(f"{task} {gpus} GPU(s) failed:\n{run.stderr[-3000:]}", file=sys.stderr)
        return {"task": task, "gpus": gpus, "graphs": graphs, "failed": run.returncode}
    m = json.loads((out / "metrics.json").read_text())
    per_epoch = m["train_samples_per_second"] * m["train_seconds"] / m["epochs"]
    headline = next(m[k] for k in ("val_f1", "val_matthews", "val_accuracy") if k in m)
    return {
        "task": task,
        "gpus": gpus,
        "graphs": graphs,
        "wall_s": time.perf_counter() - t0,
        "samples_per_s": m["train_samples_per_second"],
        "steady_samples_per_s": per_epoch / m["epoch_seconds"][-1],
        "metric": headline,
        "val_accuracy": m["val_accuracy"],
        "history": m["history"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=".carry/minilm")
    ap.add_argument("--glue-dir", default=".carry/glue")
    ap.add_argument("--tasks", nargs="+", default=["mrpc", "sst2"])
    ap.add_argument("--gpus", nargs="+", type=int, default=[1, 2])
    ap.add_argument("--epochs", type=int, default=2, help="the last one is the steady-state epoch (default 2)")
    ap.add_argument("--work", default="/tmp/ddp_scaling")
    ap.add_argument("--json")
    ap.add_argument("-S", "--set", action="append", default=[], help="more overrides, e.g. finetune.batch_size=64")
    ap.add_argument("--cpu", action="store_true", help="smoke-test this script with CPU processes (gloo)")
    args = ap.parse_args()
    import torch

    have = len(os.sched_getaffinity(0)) if args.cpu else torch.cuda.device_count()
    if not have:
        sys.exit("error: no CUDA device; run this on a GPU machine (or pass --cpu for a smoke test)")
    Path(args.work).mkdir(parents=True, exist_ok=True)
    device = f"{have} x {'CPU core' if args.cpu else torch.cuda.get_device_name()}, torch {torch.__version__}"
    print(device, flush=True)
    rows = []
    for task in args.tasks:
        runs = [(1, True)] + [(n, False) for n in args.gpus if n <= have]
        if 1 not in args.gpus:
            runs.insert(1, (1, False))  # the eager baseline of the efficiency
        base = None
        for gpus, graphs in runs:
            row = finetune(args, task, gpus, graphs)
            rows.append(row)
            if "failed" in row:
                continue
            if gpus == 1 and not graphs:
                base = row["steady_samples_per_s"]
            row["efficiency"] = row["steady_samples_per_s"] / (gpus * base) if base and not graphs else None
            eff = f"{row['efficiency']:.2f}" if row["efficiency"] is not None else "-"
            print(
                f"{task:5} {gpus} {'CPU' if args.cpu else 'GPU'} {'graphed' if graphs else 'eager  '} "
                f"{row['samples_per_s']:8.0f} samples/s "
                f"(steady {row['steady_samples_per_s']:8.0f})  efficiency {eff:>4}  metric {row['metric']:.4f}  "
                f"run {row['wall_s']:.0f} s",
                flush=True,
            )
        skipped = [n for n in args.gpus if n > have]
        if skipped:
            print(f"{task}: skipped {skipped} GPUs (this machine has {have})")
    if args.json:
        Path(args.json).write_text(
            json.dumps({"device": device, "epochs": args.epochs, "set": args.set, "rows": rows}, indent=2)
        )


if __name__ == "__main__":
    main()
