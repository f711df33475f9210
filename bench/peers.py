"""Our artifacts against the peers' own pipelines, side by side in one process per round on this CPU: eager fp32
(torch), ONNX Runtime fp32 (Optimum-ONNX's plain export), Optimum-ONNX's export + ORTOptimizer + ORTQuantizer,
Optimum-Intel's OpenVINO export and its OVQuantizer (NNCF static int8), every format of `bertcompress export`
(FORMATS at run time: onnx_int8, onnx, pt2e_int8, and openvino, auto where they exist), each for the dense model
and for params.yaml's `structured` variant made from it. Latency at batch 1, 8 and 32 at length 128, throughput
over the real validation split at its own lengths, and accuracy / F1 on the whole validation split beside every
row; then the issue's goals as measured ratios, met or missed.

    # 1. the models, on a lent GPU (one call; .carry from ../shared/tools/make_gpu_carry.py), or here with
    #    bertcompress finetune / prune into outputs/peers/mrpc/{dense,structured} (slow on 2 cores):
    python3 -m bench.peers gpu --out $OUT          # dense (params.yaml's lr sweep, seed 42), then `structured`
    .venv/bin/python -m bench.peers unpack /work/.device/N     # -> outputs/peers/mrpc/{dense,structured}
    # 2. the peers' artifacts, each by its own documented path, in their own venv (they pin other transformers):
    .venv/bin/python -m bench.peers peers          # makes .venv-peers/{onnx,intel} (VENVS) on first use
    # 3. the bench (builds what is missing of 2. and of our artifacts, then times everything):
    .venv/bin/python -m bench.peers bench --threads 2

Timing is bench/inference.py's: latency.measure (synthetic full-length pairs, 3 warm-ups, median of --runs) in
--rounds interleaved rounds, best round kept, every round saved; 2 threads for torch, ONNX Runtime's intra-op
pool and OpenVINO's INFERENCE_NUM_THREADS. Every artifact is timed in this process with this venv's onnxruntime
and openvino: the peers' venv only builds them. Writes bench/results/peers-<host>.json (lscpu, versions, rows,
rounds) and a section at the top of bench/RESULTS-inference.md.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import tarfile
import time
from pathlib import Path

TASK = "mrpc"
ROOT = Path("outputs/peers")
PEERS_VENV = Path(".venv-peers")
CALIBRATION = 300  # OVQuantizer's calibration examples, from the train split
PART = 15 * 2**20
REFERENCE = ".carry/minilm/model.safetensors"  # the pretrained weights as fp16: the codec's reference, both sides


# ---------------------------------------------------------------- 1. the models, on a lent GPU, and back
def gpu(args) -> None:
    """Dense: params.yaml's recipe at each lr of experiment.lr_candidates (seed: the first of experiment.seeds),
    the best validation metric kept (tasks.plan.best_lr, the flow's rule); structured: params.yaml's variant
    of that model (prune.prune, distilled from it). Both packed into args.out."""
    import torch

    from bertcompress import params as P
    from bertcompress import prune
    from bertcompress.finetune import finetune
    from bertcompress.metrics import headline
    from bertcompress.tokenize import prepared
    from tasks import plan

    p = P.load("params.yaml", [f"model.name={args.model}", f"data.source={args.glue_dir}", *args.set]).for_task(TASK)
    data, root, seed = prepared(TASK, p, "/tmp/pe/glue", "/tmp/pe/tok"), Path("/tmp/pe/models"), p.experiment.seeds[0]
    scores, log, t0 = (
        {},
        {"gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu", "torch": torch.__version__},
        time.perf_counter(),
    )
    for lr in p.experiment.lr_candidates or [p.finetune.lr]:
        m = finetune(
            plan.with_lr(p, lr).variant("dense", seed),
            TASK,
            data["train"],
            data["validation"],
            str(root / f"dense-lr{lr:g}"),
        )
        scores[lr] = headline(TASK, m)
        print(f"dense lr {lr:g}: {m}  ({time.perf_counter() - t0:.0f} s)", flush=True)
    best = plan.best_lr(scores)
    dense, structured = root / f"dense-lr{best:g}", root / "structured"
    q = plan.with_lr(p, best).variant("structured", seed)
    m = prune.prune(str(dense), str(structured), q, TASK, data["train"], teacher=str(dense))
    print(f"structured: {json.dumps({k: v for k, v in m.items() if k != 'structure'})}", flush=True)
    log |= {"lr_scores": scores, "lr": best, "seed": seed, "seconds": time.perf_counter() - t0}
    pack({"dense": dense, "structured": structured}, Path(args.out), Path(args.model) / "model.safetensors", log)


def _refs(reference: Path) -> dict:
    from safetensors.torch import load_file

    return {k.removeprefix("bert."): v.half() for k, v in load_file(reference).items()}


def pack(folders: dict, out: Path, reference: Path, log: dict) -> None:
    """The folders in a gzip'd tar cut into PART-sized files. Weights as fp16 (what comes back from the lent
    machine is limited to 64 MiB), each tensor that has a same-shaped pretrained one stored as the XOR of their
    fp16 bits (zeros kept apart as a bitmask): lossless for the fp16 weights, and small where fine-tuning moved
    a weight little or not at all (most rows of the word embeddings)."""
    import numpy as np
    import torch
    from safetensors.torch import load_file, save

    from bertcompress import variant

    refs, buf = _refs(reference), io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, folder in folders.items():
            weights = folder / (variant.read(folder) or {}).get("weights", "model.safetensors")
            coded, meta = {}, {}
            for k, v in load_file(weights).items():
                ref = refs.get(k.removeprefix("bert."))
                if not v.is_floating_point() or ref is None or ref.shape != v.shape:
                    coded[k] = v.half() if v.is_floating_point() else v
                    continue
                h = v.half()
                zero = h == 0
                coded[k] = torch.where(zero, 0, h.view(torch.int16) ^ ref.view(torch.int16))
                coded[f"{k}::zeros"] = torch.from_numpy(np.packbits(zero.numpy().ravel()))
                meta[k] = "xor"
            blob = save(coded, metadata={"coded": json.dumps(meta), "file": weights.name})
            info = tarfile.TarInfo(f"{name}/weights.coded")
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
            for f in folder.iterdir():
                if f != weights and f.is_file():
                    tar.add(f, arcname=f"{name}/{f.name}")
    blob = buf.getvalue()
    out.mkdir(parents=True, exist_ok=True)
    for i in range(0, len(blob), PART):
        (out / f"models.tgz.{i // PART:02d}").write_bytes(blob[i : i + PART])
    (out / "gpu.json").write_text(json.dumps(log | {"packed_mb": len(blob) / 1e6}, indent=1))
    print(f"packed {len(blob) / 2**20:.1f} MiB in {-(-len(blob) // PART)} parts", flush=True)


def unpack(args) -> None:
    """The carried folders restored under args.into (fp32 from the fp16 weights)."""
    import numpy as np
    import torch
    from safetensors import safe_open
    from safetensors.torch import load, save_file

    refs, into = _refs(Path(REFERENCE)), Path(args.into)
    parts = sorted(Path(args.folder).glob("models.tgz.*"))
    with tarfile.open(fileobj=io.BytesIO(b"".join(q.read_bytes() for q in parts)), mode="r:gz") as tar:
        names = sorted({m.name.split("/")[0] for m in tar.getmembers()})
        tar.extractall(into, filter="data")
    for name in names:
        coded_path = into / name / "weights.coded"
        with safe_open(coded_path, "pt") as f:
            meta = f.metadata()
        coded, out = load(coded_path.read_bytes()), {}
        for k, v in coded.items():
            if k.endswith("::zeros"):
                continue
            if json.loads(meta["coded"]).get(k) == "xor":
                ref = refs[k.removeprefix("bert.")]
                zeros = np.unpackbits(coded[f"{k}::zeros"].numpy())[: v.numel()].reshape(v.shape).astype(bool)
                h = (v ^ ref.view(torch.int16)).view(torch.float16)
                v = torch.where(torch.from_numpy(zeros), 0, h)
            out[k] = v.float() if v.is_floating_point() else v
        save_file(out, into / name / meta["file"], metadata={"format": "pt"})
        coded_path.unlink()
        info = into / name / "variant.json"
        if info.is_file():  # the structured folder names its source: the restored dense folder here
            v = json.loads(info.read_text())
            info.write_text(json.dumps(v | {"base": str(into / "dense")}, indent=1))
        print(f"{into / name}: restored fp32 from the carried fp16 weights", flush=True)
    if (Path(args.folder) / "gpu.json").is_file():
        (into / "gpu.json").write_text((Path(args.folder) / "gpu.json").read_text())


# ---------------------------------------------------------------- 2. the peers' artifacts, in their own venvs
# optimum-onnx 0.1.0 needs optimum 2.1 and transformers 4.57, optimum-intel 2.2.0 optimum 2.3 and transformers 5.5:
# two venvs under .venv-peers/, each with the CPU torch first.
VENVS = {
    "onnx": ["torch==2.13.0", "optimum-onnx==0.1.0", "onnxruntime==1.32.0", "datasets"],
    "intel": ["torch==2.13.0", "optimum-intel==2.2.0", "openvino==2026.4.1", "nncf==3.4.0", "datasets"],
}


def venv(name: str) -> Path:
    """.venv-peers/<name>/bin/python, made on first use (python3.11 -m venv, then pip install VENVS[name])."""
    python = PEERS_VENV / name / "bin" / "python"
    if not python.is_file():
        subprocess.run([sys.executable, "-m", "venv", str(PEERS_VENV / name)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", VENVS[name][0]], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", *VENVS[name]], check=True)
        # PyPI's torchvision (pulled by optimum-intel) is built for the CUDA torch: with the CPU torch its ops fail
        # to register and transformers' AutoProcessor import fails. No text model needs it.
        subprocess.run([str(python), "-m", "pip", "uninstall", "-y", "-q", "torchvision"], check=True)
    return python


def _pairs(train_parquet: str, tokenizer, n: int):
    """n train pairs (shuffled, seed 0) tokenized as the peers' documentation does: padded to max_length 128."""
    from datasets import Dataset

    ds = Dataset.from_parquet(train_parquet).shuffle(seed=0).select(range(n))
    return ds.map(
        lambda x: tokenizer(x["sentence1"], x["sentence2"], padding="max_length", max_length=128, truncation=True),
        batched=True,
        remove_columns=ds.column_names,
    )


def build_onnx(args) -> None:
    """Optimum-ONNX, as its documentation shows: export, ORTOptimizer O2, ORTQuantizer avx512_vnni dynamic."""
    import optimum.onnxruntime as ortx
    from optimum.onnxruntime.configuration import AutoOptimizationConfig, AutoQuantizationConfig
    from transformers import AutoTokenizer

    out, log = Path(args.out), {}
    model = ortx.ORTModelForSequenceClassification.from_pretrained(args.model, export=True)
    model.save_pretrained(out / "fp32")
    AutoTokenizer.from_pretrained(args.model).save_pretrained(out / "fp32")
    try:
        ortx.ORTOptimizer.from_pretrained(model).optimize(
            save_dir=out / "o2", optimization_config=AutoOptimizationConfig.O2()
        )
        log["o2"] = "ORTOptimizer O2"
    except Exception as e:  # noqa: BLE001
        log["o2"] = f"failed: {type(e).__name__}: {str(e)[:300]}"
    qconfig = AutoQuantizationConfig.avx512_vnni(is_static=False)
    tried = [("o2", "model_optimized.onnx")] if (out / "o2" / "model_optimized.onnx").is_file() else []
    for src, name in [*tried, ("fp32", "model.onnx")]:  # the documented fallback: quantize the plain export
        try:
            ortx.ORTQuantizer.from_pretrained(out / src, file_name=name).quantize(
                save_dir=out / "int8", quantization_config=qconfig
            )
            log["int8"] = f"ORTQuantizer avx512_vnni dynamic of {src}/{name}"
            break
        except Exception as e:  # noqa: BLE001
            log[f"int8 of {src}"] = f"failed: {type(e).__name__}: {str(e)[:300]}"
    (out / "built.json").write_text(json.dumps(log | {"versions": _versions()}, indent=1))
    print(json.dumps(log, indent=1))


def build_intel(args) -> None:
    """Optimum-Intel, as its documentation shows: OVModelForSequenceClassification export, then OVQuantizer with
    OVQuantizationConfig (static int8: NNCF, calibrated on CALIBRATION train pairs)."""
    from optimum.intel import OVConfig, OVModelForSequenceClassification, OVQuantizationConfig, OVQuantizer
    from transformers import AutoTokenizer

    out = Path(args.out)
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    model = OVModelForSequenceClassification.from_pretrained(args.model, export=True)
    model.save_pretrained(out / "ov-fp32")
    tokenizer.save_pretrained(out / "ov-fp32")
    quantizer = OVQuantizer.from_pretrained(model)
    config = OVQuantizationConfig(num_samples=CALIBRATION)
    quantizer.quantize(
        ov_config=OVConfig(quantization_config=config),
        calibration_dataset=_pairs(args.train_parquet, tokenizer, CALIBRATION),
        save_directory=out / "ov-int8",
    )
    log = {
        "fp32": "OVModelForSequenceClassification.from_pretrained(export=True)",
        "int8": f"OVQuantizer.quantize(OVQuantizationConfig(num_samples={CALIBRATION})), {CALIBRATION} train pairs",
        "quantization_config": config.to_dict() if hasattr(config, "to_dict") else str(config),
        "runtime_ov_config": dict(model.ov_config),
    }
    (out / "built-intel.json").write_text(json.dumps(log | {"versions": _versions()}, indent=1, default=str))
    print(json.dumps(log, indent=1, default=str))


def _versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    names = ["torch", "transformers", "optimum", "optimum-onnx", "optimum-intel", "onnx", "onnxruntime"]
    names += ["openvino", "nncf", "numpy", "huggingface_hub"]
    out = {}
    for n in names:
        try:
            out[n] = version(n)
        except PackageNotFoundError:
            pass
    return out


def peers(args) -> None:
    """Both peers' artifacts under <root>/<task>/peers from <root>/<task>/dense (each in its venv)."""
    out, model = Path(args.root) / TASK / "peers", Path(args.root) / TASK / "dense"
    train = next(Path("data/glue", TASK).glob("train*.parquet"))
    me = str(Path(__file__).resolve())
    env = os.environ | {"PYTHONPATH": ""}
    if not (out / "built.json").is_file():
        subprocess.run(
            [str(venv("onnx")), me, "build-onnx", "--model", str(model), "--out", str(out)], check=True, env=env
        )
    if not (out / "built-intel.json").is_file():
        cmd = [str(venv("intel")), me, "build-intel", "--model", str(model), "--out", str(out)]
        subprocess.run([*cmd, "--train-parquet", str(train)], check=True, env=env)


# ---------------------------------------------------------------- 3. the bench
class _Runtime:
    """A peer's graph on this process's runtime, run exactly as ours are (bertcompress/onnx_model.py): ONNX
    Runtime with intra-op threads = the bench's and one inter-op thread; OpenVINO compiled with the config the
    peer's own model class uses (its ov_config) plus INFERENCE_NUM_THREADS."""

    training = False

    def __init__(self, path: Path, config: dict | None = None):
        self.path, self.config = path, config
        self.set_threads(None)

    def eval(self):
        return self

    def train(self, mode: bool = True):
        return self

    def set_threads(self, threads: int | None) -> None:
        if self.path.suffix == ".onnx":
            import onnxruntime as ort

            options = ort.SessionOptions()
            options.intra_op_num_threads, options.inter_op_num_threads = threads or 0, 1
            self.session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
            self.names = [i.name for i in self.session.get_inputs()]
        else:
            import openvino as ov

            config = {"PERFORMANCE_HINT": "LATENCY", **(self.config or {})}
            config |= {"INFERENCE_NUM_THREADS": threads} if threads else {}
            self.compiled = ov.Core().compile_model(str(self.path), "CPU", config)
            self.request = self.compiled.create_infer_request()
            self.names = [n for i in self.compiled.inputs for n in i.get_names()]

    def precision(self) -> str | None:
        return None if self.path.suffix == ".onnx" else str(self.compiled.get_property("INFERENCE_PRECISION_HINT"))

    def __call__(self, **batch):
        import numpy as np
        import torch

        feed = {k: v.numpy().astype(np.int64) for k, v in batch.items() if k in self.names}
        if self.path.suffix == ".onnx":
            z = self.session.run(None, feed)[0]
        else:
            z = np.array(self.request.infer(feed)[self.compiled.output(0)])
        return _Out(torch.from_numpy(z))

    def size_mb(self) -> float:
        files = [self.path, *self.path.parent.glob(self.path.stem + "*.bin"), *self.path.parent.glob("*.onnx_data")]
        return sum(f.stat().st_size for f in set(files) if f.is_file()) / 1e6


class _Out:
    def __init__(self, logits):
        self.logits = logits


def _export_kwargs(export, fmt: str, train: str, validation: str, threads: int) -> dict:
    """What this export takes of train (calibration) and, for auto (which times and checks its candidates),
    validation and threads; the bench evaluates every artifact itself."""
    import inspect

    accepted = inspect.signature(export).parameters
    given = {"train": train} | ({"validation": validation, "threads": threads} if fmt == "auto" else {})
    return {k: v for k, v in given.items() if k in accepted}


def ours(source: Path, out: Path, fmt: str, p, train: str, validation: str, threads: int) -> dict:
    """Our artifact of `source` in format fmt (made once); its manifest. pt2e_int8 takes a static variant:
    made first (bertcompress quantize -S quantize.mode=static) where export does not make it itself."""
    from bertcompress import quantize
    from bertcompress.export import export
    from bertcompress.params import UserError

    if (out / "manifest.json").is_file():
        return json.loads((out / "manifest.json").read_text())
    kwargs = _export_kwargs(export, fmt, train, validation, threads)
    try:
        return export(str(source), str(out), TASK, fmt, max_length=128, **kwargs)
    except UserError:
        if fmt != "pt2e_int8":
            raise
    static = source.with_name(source.name + "-static")
    if not (static / "metrics.json").is_file():
        quantize.quantize(str(source), str(static), p.replace({"quantize.mode": "static"}), TASK, train)
    return export(str(static), str(out), TASK, fmt, max_length=128, **kwargs)


def lscpu() -> dict:
    out = {}
    for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines():
        key, _, value = line.partition(":")
        out[key.strip()] = value.strip()
    return out


def host_name(cpu: dict) -> str:
    """A short name for the CPU: epyc-zen4 (AMD family 25 with AVX-512), epyc-zen3, epyc-zen5, xeon-..."""
    name, family, flags = cpu.get("Model name", ""), cpu.get("CPU family", ""), cpu.get("Flags", "").split()
    if "EPYC" in name:
        zen = {"23": "zen2", "25": "zen4" if "avx512f" in flags else "zen3", "26": "zen5"}.get(family, f"f{family}")
        return f"epyc-{zen}"
    return "-".join(name.lower().replace("(r)", "").replace("(tm)", "").split()[:3]) or "cpu"


BATCHES = (1, 8, 32)


def export_ours(args) -> None:
    """Our artifacts of the named models (what `bench` would make first), e.g. while another model still trains."""
    from bertcompress import params as P
    from bertcompress.export import FORMATS
    from bertcompress.tokenize import prepared

    p = P.load("params.yaml")
    data, root = prepared(TASK, p, "data/glue", "data/tokenized"), Path(args.root) / TASK
    for which in args.which:
        for fmt in args.formats or FORMATS:
            t = time.perf_counter()
            m = ours(root / which, root / f"ours-{which}-{fmt}", fmt, p, data["train"], data["validation"], 2)
            print(f"{which} {fmt}: {m.get('format')} ({time.perf_counter() - t:.0f} s)", flush=True)


def bench(args) -> None:
    import importlib.metadata as md

    import torch

    from bertcompress import evaluate as ev
    from bertcompress import latency
    from bertcompress import params as P
    from bertcompress.compiled import CompiledModel
    from bertcompress.export import FORMATS
    from bertcompress.glue import get_task
    from bertcompress.tokenize import Encoded, prepared
    from bertcompress.variant import load_variant

    torch.set_num_threads(args.threads)
    t0, p, load_at_start = time.perf_counter(), P.load("params.yaml"), os.getloadavg()
    data, root = prepared(TASK, p, "data/glue", "data/tokenized"), Path(args.root) / TASK
    spec, val = get_task(TASK), Encoded.load(prepared(TASK, p, "data/glue", "data/tokenized")["validation"])
    for name in ("dense", "structured"):
        if not (root / name / "config.json").is_file():
            raise SystemExit(f"error: {root / name} is missing; make it first (this file's docstring, step 1)")
    peers(args)
    pk = root / "peers"
    intel = json.loads((pk / "built-intel.json").read_text())
    onnx_log = json.loads((pk / "built.json").read_text())
    ov_config = {k: v for k, v in intel.get("runtime_ov_config", {}).items() if k != "CACHE_DIR"}
    rows = [  # (row, kind, how, loader)
        ("eager fp32", "baseline", "the fine-tuned model in torch", lambda: load_variant(str(root / "dense"), 2)),
        (
            "ONNX Runtime fp32 (Optimum export)",
            "peer",
            "ORTModelForSequenceClassification export=True",
            lambda: _Runtime(pk / "fp32" / "model.onnx"),
        ),
    ]
    if (pk / "o2" / "model_optimized.onnx").is_file():
        rows.append(
            (
                "Optimum-ONNX O2, fp32",
                "peer",
                "ORTOptimizer AutoOptimizationConfig.O2()",
                lambda: _Runtime(pk / "o2" / "model_optimized.onnx"),
            )
        )
    quantized = next(pk.glob("int8/*.onnx"), None)
    if quantized:
        rows.append(("Optimum-ONNX int8", "peer int8", onnx_log.get("int8", ""), lambda: _Runtime(quantized)))
    rows += [
        (
            "Optimum-Intel OpenVINO fp32",
            "peer",
            "OVModelForSequenceClassification export=True",
            lambda: _Runtime(pk / "ov-fp32" / "openvino_model.xml", ov_config),
        ),
        (
            "Optimum-Intel OpenVINO + NNCF int8",
            "peer int8",
            intel["int8"],
            lambda: _Runtime(pk / "ov-int8" / "openvino_model.xml", ov_config),
        ),
        (
            "structured, eager fp32",
            "ours structured",
            "params.yaml's structured variant in torch",
            lambda: load_variant(str(root / "structured"), 2),
        ),
    ]
    manifests = {}
    for which in ("dense", "structured"):
        for fmt in args.formats or FORMATS:
            out = root / f"ours-{which}-{fmt}"
            manifests[(which, fmt)] = m = ours(
                root / which, out, fmt, p, data["train"], data["validation"], args.threads
            )
            label = fmt + (f" → {m['format']}" if fmt == "auto" else "")
            rows.append(
                (
                    f"ours {which}: {label}" if which == "dense" else f"structured: {label}",
                    f"ours {which}",
                    f"bertcompress export --format {fmt}",
                    lambda out=out: load_variant(str(out), 2),
                )
            )
    models, results = {}, []
    for name, kind, how, load in rows:
        model = models[name] = load()
        if hasattr(model, "set_threads"):
            model.set_threads(args.threads)
        if isinstance(model, CompiledModel):  # Inductor compiles each shape bucket on first use: not timed
            ev.evaluate_model(model, val, TASK, 32)
        start = time.perf_counter()
        m = ev.evaluate_model(model, val, TASK, 32)
        seconds = time.perf_counter() - start
        size = (
            model.size_mb()
            if isinstance(model, _Runtime)
            else (model.sizes()["compact_mb"] if hasattr(model, "sizes") else m["size_mb"])
        )
        results.append(
            {
                "model": name,
                "kind": kind,
                "how": how,
                **{k: m[k] for k in spec.metrics},
                "size_mb": size,
                "validation_samples_per_s": {0: len(val) / seconds},
                "rounds": {},
                **({"openvino_precision": model.precision()} if isinstance(model, _Runtime) else {}),
            }
        )
        print(f"{name:50} acc {m['accuracy']:.4f} f1 {m['f1']:.4f} {len(val) / seconds:7.1f} val samples/s", flush=True)
    for r in range(args.rounds):  # interleaved: every model once per round
        for row in results:
            model = models[row["model"]]
            timed = latency.measure(model, BATCHES, 128, warmup=3, runs=args.runs, threads=args.threads)
            row["rounds"][r] = {b: timed[f"batch{b}_ms"] for b in BATCHES}
            if r:  # the validation pass too, every round after the first (which ran above)
                start = time.perf_counter()
                ev.evaluate_model(model, val, TASK, 32)
                row["validation_samples_per_s"][r] = len(val) / (time.perf_counter() - start)
            print(
                f"round {r} {row['model']:50} "
                + " ".join(f"b{b} {timed[f'batch{b}_ms']:7.1f}" for b in BATCHES)
                + f" ms  load {os.getloadavg()[0]:.2f}",
                flush=True,
            )
    for row in results:
        row |= {f"batch{b}_ms": min(x[b] for x in row["rounds"].values()) for b in BATCHES}
        row |= {
            f"batch{b}_spread": max(x[b] for x in row["rounds"].values()) / row[f"batch{b}_ms"] - 1 for b in BATCHES
        }
        row["validation_samples_per_s_best"] = max(row["validation_samples_per_s"].values())
    cpu = lscpu()
    versions = {}
    for n in ("torch", "transformers", "onnx", "onnxruntime", "openvino", "nncf", "torchao", "numpy"):
        try:
            versions[n] = md.version(n)
        except md.PackageNotFoundError:
            pass
    out = {
        "cpu": cpu.get("Model name"),
        "host": host_name(cpu),
        "lscpu": cpu,
        "flags": cpu.get("Flags", "").split(),
        "threads": args.threads,
        "length": 128,
        "runs": args.runs,
        "warmup": 3,
        "rounds": args.rounds,
        "load_at_end": os.getloadavg(),
        "formats": list(FORMATS),
        "versions": {
            "this venv (timing, ours)": versions,
            "optimum-onnx venv (build)": onnx_log.get("versions"),
            "optimum-intel venv (build)": intel.get("versions"),
        },
        "peer_logs": {"optimum-onnx": onnx_log, "optimum-intel": intel},
        "models": {
            "dense": json.loads((root / "dense" / "metrics.json").read_text()),
            "structured": {
                k: v
                for k, v in json.loads((root / "structured" / "metrics.json").read_text()).items()
                if k != "structure"
            },
        },
        "manifests": {
            f"{w}/{f}": {k: v for k, v in m.items() if k not in ("files", "source")} for (w, f), m in manifests.items()
        },
        "note": args.note,
        "load_at_start": load_at_start,
        "wall_s": time.perf_counter() - t0,
        "rows": results,
    }
    out["goals"] = goals(results)
    path = Path(args.json or f"bench/results/peers-{out['host']}.json")
    path.write_text(json.dumps(out, indent=1, default=str))
    text = markdown(out)
    print(text)
    if args.markdown:
        md_path = Path("bench/RESULTS-inference.md")
        old = md_path.read_text()
        marker = "<!-- peers.py -->"
        if marker in old:  # replace our section
            head, _, rest = old.partition(marker)
            rest = rest.partition(marker)[2]
            old = head + rest.lstrip("\n")
        title, _, body = old.partition("\n")
        md_path.write_text(f"{title}\n\n{marker}\n{text}\n{marker}\n{body}")


def goals(rows: list) -> list:
    """The issue's goals as measured ratios (best round's latency; accuracy in points on validation)."""
    by = {r["model"]: r for r in rows}
    eager = by["eager fp32"]
    peer = [r for r in rows if r["kind"].startswith("peer")]
    peer_int8 = [r for r in rows if r["kind"] == "peer int8"]

    def shipped(which: str) -> dict:  # what `export` ships: auto where it exists, else the default onnx_int8
        prefix = "ours dense: " if which == "dense" else "structured: "
        return next((r for r in rows if r["model"].startswith(prefix + "auto")), by[prefix + "onnx_int8"])

    dense, structured = shipped("dense"), shipped("structured")
    loss = lambda r, k="accuracy": max(0.0, 100 * (eager[k] - r[k]))  # noqa: E731  points lost (a gain: 0)
    out = []

    def goal(text, ratio, target, extra="", ok=True):
        out.append(
            {"goal": text, "ratio": ratio, "target": target, "met": bool(ratio >= target and ok), "detail": extra}
        )

    for b in (1, 8):
        fast = min(peer, key=lambda r: r[f"batch{b}_ms"])
        ok = loss(dense) <= loss(fast)
        goal(
            f"{dense['model']} vs the fastest peer at b{b} ({fast['model']}), no larger accuracy loss",
            fast[f"batch{b}_ms"] / dense[f"batch{b}_ms"],
            1.0,
            f"points lost vs eager fp32 (accuracy): ours {loss(dense):.2f}, peer {loss(fast):.2f} "
            f"(F1: {loss(dense, 'f1'):.2f} / {loss(fast, 'f1'):.2f})",
            ok,
        )
    for b, target in ((1, 5.0), (8, 4.0)):
        goal(
            f"dense int8 ({dense['model']}) vs eager fp32 at b{b}",
            eager[f"batch{b}_ms"] / dense[f"batch{b}_ms"],
            target,
        )
    fast8 = min(peer_int8, key=lambda r: r["batch8_ms"])
    within = (100 * (eager["f1"] - structured["f1"]), 100 * (eager["accuracy"] - structured["accuracy"]))
    ok = max(within) <= 1.0
    detail = f"vs dense fp32: F1 {-within[0]:+.2f} pt, accuracy {-within[1]:+.2f} pt (within 1.0: {ok})"
    goal(
        f"{structured['model']} vs the fastest peer dense int8 at b8 ({fast8['model']}), within 1.0 pt of dense",
        fast8["batch8_ms"] / structured["batch8_ms"],
        2.0,
        detail,
        ok,
    )
    for b in (8, 1):
        goal(
            f"{structured['model']} vs eager fp32 at b{b}, within 1.0 pt of dense",
            eager[f"batch{b}_ms"] / structured[f"batch{b}_ms"],
            10.0,
            detail,
            ok,
        )
    for g in out:
        print(
            f"{'MET   ' if g['met'] else 'MISSED'} {g['ratio']:5.2f}× (goal ≥ {g['target']:.1f}×)  {g['goal']}"
            + (f"; {g['detail']}" if g["detail"] else "")
        )
    return out


def markdown(out: dict) -> str:
    import pandas as pd

    rows, eager = out["rows"], out["rows"][0]
    table = pd.DataFrame(
        [
            {
                "model": r["model"],
                "accuracy": f"{r['accuracy']:.4f}",
                "F1": f"{r['f1']:.4f}",
                "MB": f"{r['size_mb']:.1f}",
                **{f"b{b} ms": f"{r[f'batch{b}_ms']:.1f}" for b in BATCHES},
                "b8 samples/s": f"{8e3 / r['batch8_ms']:.0f}",
                "validation samples/s": f"{r['validation_samples_per_s_best']:.0f}",
                **{f"b{b} ×": f"{eager[f'batch{b}_ms'] / r[f'batch{b}_ms']:.1f}×" for b in BATCHES},
                "round spread b1/b8": f"{100 * r['batch1_spread']:.0f} / {100 * r['batch8_spread']:.0f} %",
            }
            for r in rows
        ]
    )
    goals = "\n".join(
        f"- {'met' if g['met'] else '**missed**'}: {g['ratio']:.2f}× (goal ≥ {g['target']:.1f}×) — {g['goal']}"
        + (f"; {g['detail']}" if g["detail"] else "")
        for g in out["goals"]
    )
    flags = [f for f in ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_int8") if f in out["flags"]]
    return (
        f"## Ours vs the peers' own pipelines (bench/peers.py, {out['cpu']} = {out['host']})\n\n"
        f"MRPC validation (408 pairs), {out['threads']} threads, length 128; latency: median of {out['runs']} after "
        f"{out['warmup']} warm-ups, best of {out['rounds']} interleaved rounds (spread: worst round over best); "
        f"validation samples/s over the real split at its own lengths, batch 32; × = speed-up vs eager fp32. "
        f"CPU flags: {', '.join(flags)}. Raw rows, rounds, lscpu and versions: "
        f"`bench/results/peers-{out['host']}.json`.\n\n"
        + (f"{out['note']}\n\n" if out.get("note") else "")
        + table.to_markdown(index=False)
        + "\n\nGoals (issue 26):\n\n"
        + goals
        + "\n"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("gpu", help="on a lent GPU: fine-tune dense, prune structured, pack both into --out")
    g.add_argument("--model", default=".carry/minilm")
    g.add_argument("--glue-dir", default=".carry/glue")
    g.add_argument("--out", required=True)
    g.add_argument("-S", "--set", action="append", default=[], help="params overrides (smoke runs)")
    u = sub.add_parser("unpack", help="here: restore what gpu packed")
    u.add_argument("folder")
    u.add_argument("--into", default=str(ROOT / TASK))
    for name in ("build-onnx", "build-intel"):  # run by `peers` in the peers' venvs
        s = sub.add_parser(name)
        s.add_argument("--model", required=True)
        s.add_argument("--out", required=True)
        s.add_argument("--train-parquet")
    pe = sub.add_parser("peers", help="build the peers' artifacts (their venvs made on first use)")
    ex = sub.add_parser("export", help="make our artifacts of --which models (bench makes what is missing)")
    ex.add_argument("--which", nargs="+", default=["dense", "structured"])
    ex.add_argument("--formats", nargs="+")
    b = sub.add_parser("bench", help="time everything side by side; write the JSON and the markdown")
    for s in (pe, b, ex):
        s.add_argument("--root", default=str(ROOT))
    b.add_argument("--threads", type=int, default=2)
    b.add_argument("--runs", type=int, default=15)
    b.add_argument("--rounds", type=int, default=3)
    b.add_argument("--json", help="default: bench/results/peers-<host>.json")
    b.add_argument("--no-markdown", dest="markdown", action="store_false")
    b.add_argument("--note", help="a paragraph for the markdown and the JSON: how the models were made")
    b.add_argument("--formats", nargs="+", help="of bertcompress.export.FORMATS (default: every one there is)")
    args = ap.parse_args()
    commands = {"gpu": gpu, "unpack": unpack, "build-onnx": build_onnx, "build-intel": build_intel}
    {**commands, "peers": peers, "export": export_ours, "bench": bench}[args.cmd](args)


if __name__ == "__main__":
    main()
