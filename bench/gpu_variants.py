"""Fine-tune variants of bench/params-compression.yaml on a lent GPU and carry them back to this CPU, where
bench/compression.py evaluates them (accuracy, sizes, latency) like the others.

    # on the GPU machine ($OUT comes back: at most 8 files of 16 MiB, 64 MiB in all); needs only the core package
    python3 -m bench.gpu_variants pack --model .carry/minilm --glue-dir .carry/glue --out $OUT gradual80 gradual90
    python3 -m bench.gpu_variants carry dense=/dev/shm/pruning-study/models/mrpc-s42-dense --out $OUT  # made there
    # here
    python -m bench.gpu_variants unpack /work/.device/N        # -> outputs/bench/mrpc/<variant>/

Why: a full MRPC fine-tune takes ~10 min on this 2-core CPU when it is quiet and ~75 min when it is shared;
on one H100 it takes ~30 s with the same code, params and seed. The weights travel as fp16 (a gzip'd tar
split into 15 MiB parts, since fp32 models exceed what comes back), so `unpack` restores fp32 tensors that
differ from the trained ones by fp16 rounding; metrics.json records both the GPU's validation metrics and
that provenance, and bench/compression.py evaluates the restored fp32 model on this CPU (its table marks
it †). `unpack` writes for each folder the step record of the same fine-tune here (tasks/plan.py), so the
bench takes the carried model instead of training it again.
"""

from __future__ import annotations

import argparse
import io
import json
import tarfile
from pathlib import Path

PART = 15 * 2**20


def pack(args) -> None:
    from bertcompress import params as P
    from bertcompress.finetune import finetune
    from bertcompress.tokenize import prepared

    p = P.load(args.params, [f"model.name={args.model}", f"data.source={args.glue_dir}", *args.set]).for_task(args.task)
    data, root = prepared(args.task, p, "/tmp/gv/glue", "/tmp/gv/tok"), Path("/tmp/gv/models")
    folders = {}
    for name in args.variants:
        if name not in p.variants or not p.variants[name].finetuned:
            raise SystemExit(f"error: {name} is no fine-tuned variant of {args.params}; build pruned ones here")
        out = folders[name] = root / name
        metrics = finetune(
            p.variant(name, p.experiment.seeds[0]), args.task, data["train"], data["validation"], str(out)
        )
        print(f"{name}: val acc {metrics['val_accuracy']:.4f} F1 {metrics.get('val_f1', 0):.4f}", flush=True)
    write(folders, Path(args.out))


def carry(args) -> None:
    """Pack fine-tuned folders made by another bench (e.g. bench/studies/pruning_study.py's dense models) as
    NAME=FOLDER."""
    write({name: Path(folder) for name, folder in (x.split("=", 1) for x in args.folders)}, Path(args.out))


def write(folders: dict, out_dir: Path) -> None:
    """The folders' files, weights as fp16, in a gzip'd tar cut into PART-sized files under out_dir."""
    import torch
    from safetensors.torch import load_file, save_file

    from bertcompress import variant

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, out in folders.items():
            weights = out / (variant.read(out) or {}).get("weights", "model.safetensors")  # structured: weights.*
            tensors = {k: v.half() if v.is_floating_point() else v for k, v in load_file(weights).items()}
            save_file(tensors, weights.with_suffix(".fp16.safetensors"))
            saved = json.loads((out / "metrics.json").read_text())
            saved["provenance"] = {
                "trained_on": torch.cuda.get_device_name(),
                "torch": torch.__version__,
                "carried_as": "fp16",
            }
            (out / "metrics.json").write_text(json.dumps(saved, indent=1))
            for f in out.iterdir():
                if f != weights:
                    tar.add(f, arcname=f"{name}/{f.name}")
    blob = buf.getvalue()
    for i in range(0, len(blob), PART):
        (out_dir / f"variants.tgz.{i // PART:02d}").write_bytes(blob[i : i + PART])
    print(f"{len(blob) / 1e6:.1f} MB in {-(-len(blob) // PART)} parts")


def unpack(args) -> None:
    from safetensors.torch import load_file, save_file

    from bench import compression
    from bertcompress import params as P
    from bertcompress import record
    from tasks import keys, plan

    p = P.load(args.params, args.set)
    bench = compression.Bench(argparse.Namespace(task=args.task, out=args.into), p, parent=None)
    parts = sorted(Path(args.folder).glob("variants.tgz.*"))
    with tarfile.open(fileobj=io.BytesIO(b"".join(q.read_bytes() for q in parts)), mode="r:gz") as tar:
        names = sorted({m.name.split("/")[0] for m in tar.getmembers()})
        tar.extractall(bench.root, filter="data")
    for name in names:
        out = bench.root / name
        for half in out.glob("*.fp16.safetensors"):
            save_file(
                {k: v.float() if v.is_floating_point() else v for k, v in load_file(half).items()},
                out / half.name.replace(".fp16", ""),
                metadata={"format": "pt"},
            )
            half.unlink()
        if name not in p.variants or not p.variants[name].finetuned:
            print(f"{out}: restored fp32 from fp16 (not a fine-tune of {args.params}: no key)")
            continue
        (run,) = [r for r in plan.runs(p, args.task) if r.step == "finetune" and r.name == name]
        made = keys.step_record("finetune", plan.arguments(run, p, bench.outs) | {"out": str(out)})
        record.write(out, made | {"carried": True}, str(out))
        print(f"{out}: restored fp32 from fp16; taken by bench/compression.py as the fine-tune of {name}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("pack")
    p.add_argument("variants", nargs="+")
    p.add_argument("--model", default=".carry/minilm")
    p.add_argument("--glue-dir", default=".carry/glue")
    p.add_argument("--out", required=True)
    c = sub.add_parser("carry")
    c.add_argument("folders", nargs="+", help="NAME=FOLDER of a fine-tuned model")
    c.add_argument("--out", required=True)
    u = sub.add_parser("unpack")
    u.add_argument("folder")
    u.add_argument("--into", default="outputs/bench")
    for cmd in (p, c, u):
        cmd.add_argument("--params", default="bench/params-compression.yaml")
        cmd.add_argument("--task", default="mrpc")
        cmd.add_argument("-S", "--set", dest="set", action="append", default=[])
    args = ap.parse_args()
    {"pack": pack, "carry": carry, "unpack": unpack}[args.cmd](args)


if __name__ == "__main__":
    main()
