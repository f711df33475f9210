"""An exported artifact run by its own runtime (ONNX Runtime, OpenVINO), behind the interface the evaluation
loop uses.

`OnnxModel(folder)(input_ids=..., token_type_ids=..., attention_mask=...).logits` is a torch tensor, so
loop.predict, latency.measure and predict.py run an exported artifact exactly as they run a torch variant, and
its accuracy and latency are those of the file that ships. Threads are the runtime's own (ONNX Runtime intra-op,
OpenVINO INFERENCE_NUM_THREADS), set when the session is made (`set_threads` remakes it).

The files are the runtimes' standard ones, as Optimum names them: model.onnx (weights inside; ONNX's external
data format, model.onnx_data, past 2 GB), openvino_model.xml + openvino_model.bin. Nothing here unpacks them:
`onnxruntime.InferenceSession("model.onnx")` and `openvino.Core().read_model("openvino_model.xml")` read them
as they are.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

from . import archive

MODEL = "model.onnx"
OPENVINO = "openvino_model.xml"  # + openvino_model.bin: the IR's graph and its weights
INPUTS = ("input_ids", "token_type_ids", "attention_mask")


def model_files(folder: str | Path) -> list[Path]:
    """The files that hold an artifact's model (graph and weights), not its tokenizer, config or card."""
    names = ("model.onnx", "model.onnx_data", "openvino_model.xml", "openvino_model.bin", "model.pt2")
    return [Path(folder) / n for n in names if (Path(folder) / n).is_file()]


def sizes(folder: str | Path, values: list[np.ndarray]) -> dict:
    """An artifact's sizes: its model files' bytes (state_dict_mb), and what ships: the tar + zstd archive of the
    whole artifact beside it (compact_mb = compressed_mb; zstd of the model files when there is no archive yet),
    the weights' counts (values: the model's weight arrays)."""
    import zstandard

    files = model_files(folder)
    shipped = archive.size(folder)
    if shipped is None:
        shipped = sum(len(zstandard.ZstdCompressor(level=archive.LEVEL).compress(f.read_bytes())) for f in files)
    values = [v for v in values if v.size > 1]
    return {
        "state_dict_mb": sum(f.stat().st_size for f in files) / 1e6,
        "compact_mb": shipped / 1e6,
        "compressed_mb": shipped / 1e6,
        "parameters": int(sum(v.size for v in values)),
        "nonzero_parameters": int(sum(np.count_nonzero(v != _fill(v)) for v in values)),
    }


def _fill(a: np.ndarray):
    """What a pruned weight's zeros became: 0, or in a byte tensor its most common value (the zero point of
    ONNX Runtime's asymmetric uint8 embeddings, where every pruned entry lands)."""
    if a.dtype.itemsize != 1:
        return a.dtype.type(0)
    return np.array(np.bincount(a.view(np.uint8).ravel(), minlength=256).argmax(), np.uint8).view(a.dtype)[()]


class InferenceOnly:
    """What the evaluation loop asks of a model that only predicts: eval() is itself, train() refuses."""

    training = False

    def eval(self):
        return self

    def train(self, mode: bool = True):
        if mode:
            raise TypeError(f"an exported artifact ({type(self).__name__}) is for inference only")
        return self


class OnnxModel(InferenceOnly):
    def __init__(self, folder: str | Path, threads: int | None = None):
        self.folder = Path(folder)
        self.set_threads(threads)

    def set_threads(self, threads: int | None) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or 0  # 0: ONNX Runtime's default (all cores)
        options.inter_op_num_threads = 1
        self.threads = threads
        self.session = ort.InferenceSession(str(self.folder / MODEL), options, providers=["CPUExecutionProvider"])
        self.names = [i.name for i in self.session.get_inputs()]

    def __call__(self, **batch: torch.Tensor) -> SimpleNamespace:
        feed = {k: batch[k].numpy().astype(np.int64) for k in INPUTS if k in self.names}
        return SimpleNamespace(logits=torch.from_numpy(self.session.run(None, feed)[0]))

    def sizes(self) -> dict:
        import onnx
        from onnx import numpy_helper

        graph = onnx.load(str(self.folder / MODEL))
        values = [numpy_helper.to_array(t, base_dir=str(self.folder)) for t in graph.graph.initializer]
        kinds = (np.float32, np.float16, np.int8, np.uint8)
        return sizes(self.folder, [v for v in values if v.dtype in kinds])


class OpenVinoModel(InferenceOnly):
    """An OpenVINO IR on the CPU plugin, compiled for latency with the runtime's own defaults otherwise (on a CPU
    with avx512_bf16 or AMX it may run the layers NNCF left in float in bf16: accuracy is measured as it runs)."""

    def __init__(self, folder: str | Path, threads: int | None = None):
        import openvino as ov

        self.folder = Path(folder)
        self.core = ov.Core()
        self.model = self.core.read_model(str(self.folder / OPENVINO))
        self.names = [n for i in self.model.inputs for n in i.get_names()]
        self.set_threads(threads)

    def set_threads(self, threads: int | None) -> None:
        config = {"PERFORMANCE_HINT": "LATENCY"}
        if threads:
            config["INFERENCE_NUM_THREADS"] = threads
        self.threads = threads
        self.compiled = self.core.compile_model(self.model, "CPU", config)
        self.request = self.compiled.create_infer_request()

    def __call__(self, **batch: torch.Tensor) -> SimpleNamespace:
        feed = {k: batch[k].numpy().astype(np.int64) for k in INPUTS if k in self.names}
        out = self.request.infer(feed)
        return SimpleNamespace(logits=torch.from_numpy(np.array(out[self.compiled.output(0)])))

    def sizes(self) -> dict:
        values = [
            op.get_data() for op in self.model.get_ops() if op.get_type_name() == "Constant" and op.get_byte_size() > 4
        ]
        return sizes(self.folder, [np.asarray(v) for v in values])
