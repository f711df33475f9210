"""An exported artifact's ONNX model run by ONNX Runtime, behind the interface the evaluation loop uses.

`OnnxModel(folder)(input_ids=..., token_type_ids=..., attention_mask=...).logits` is a torch tensor, so
loop.predict, latency.measure and predict.py run an exported artifact exactly as they run a torch variant, and
its accuracy and latency are those of the file that ships. Threads are ONNX Runtime's own (intra-op), set
when the session is made (`set_threads` remakes it).

The artifact stores the graph (model.onnx) apart from its weights (weights.npz, deflated): a weight that is
mostly zeros (a pruned int8 matrix) is kept as a bitmask of its nonzeros and their values, so a pruned model's
file really is smaller; `pack` writes that form and the loader puts the weights back before ONNX Runtime
builds its session.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

MODEL = "model.onnx"
WEIGHTS = "weights.npz"
INPUTS = ("input_ids", "token_type_ids", "attention_mask")
SPARSE_AT = 0.25  # a weight with at least this share of zeros (or of one byte value: _fill) is stored as bitmask +
#                  the other values (1/8 byte per weight + the rest: below 1 byte per weight from 1/8 zeros on; a
#                  quarter leaves a margin)
_TYPED = ("float_data", "int32_data", "int64_data", "double_data", "uint64_data", "string_data")


def pack(folder: str | Path) -> dict:
    """Move model.onnx's weights (tensors over 1 KiB) into weights.npz; {'dense': n, 'bitmask': n} tensors."""
    import onnx
    from onnx import numpy_helper

    path = Path(folder) / MODEL
    graph = onnx.load(str(path))
    arrays, counts = {}, {"dense": 0, "bitmask": 0}
    for t in graph.graph.initializer:
        a = numpy_helper.to_array(t)
        if a.nbytes < 1024:
            continue
        fill = _fill(a)
        if np.count_nonzero(a != fill) <= (1 - SPARSE_AT) * a.size:
            kept = (a != fill).ravel()
            arrays[f"{t.name}|bits"], arrays[f"{t.name}|values"] = np.packbits(kept), a.ravel()[kept]
            if fill != 0:
                arrays[f"{t.name}|fill"] = np.array([fill], a.dtype)
            counts["bitmask"] += 1
        else:
            arrays[f"{t.name}|dense"] = a.ravel()
            counts["dense"] += 1
        t.ClearField("raw_data")
        for field in _TYPED:
            t.ClearField(field)
    _savez(Path(folder) / WEIGHTS, arrays)
    onnx.save(graph, str(path))
    return counts


def _fill(a: np.ndarray):
    """What a pruned weight's zeros became: 0, or in a byte tensor its most common value (the zero point of ONNX
    Runtime's asymmetric uint8 embeddings, where every pruned entry lands)."""
    if a.dtype.itemsize != 1:
        return a.dtype.type(0)
    return np.array(np.bincount(a.view(np.uint8).ravel(), minlength=256).argmax(), np.uint8).view(a.dtype)[()]


def _savez(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """np.savez_compressed with fixed entry times: the same weights give the same bytes (and file hash)."""
    import zipfile

    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, allowZip64=True) as z:
        for name, a in arrays.items():
            entry = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            entry.compress_type = zipfile.ZIP_DEFLATED
            with z.open(entry, "w", force_zip64=True) as out:
                np.lib.format.write_array(out, np.asanyarray(a), allow_pickle=False)


def unpacked(folder: str | Path):
    """The ONNX model of an artifact with its weights in place (from weights.npz when the artifact has one)."""
    import onnx

    graph = onnx.load(str(Path(folder) / MODEL))
    if not (Path(folder) / WEIGHTS).is_file():
        return graph
    with np.load(Path(folder) / WEIGHTS) as z:
        for t in graph.graph.initializer:
            if f"{t.name}|dense" in z:
                t.raw_data = z[f"{t.name}|dense"].tobytes()
            elif f"{t.name}|bits" in z:
                values = z[f"{t.name}|values"]
                fill = z[f"{t.name}|fill"][0] if f"{t.name}|fill" in z else 0
                dense = np.full(int(np.prod(t.dims)), fill, values.dtype)
                dense[np.unpackbits(z[f"{t.name}|bits"], count=dense.size).astype(bool)] = values
                t.raw_data = dense.tobytes()
    return graph


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
        self.graph = unpacked(folder).SerializeToString()
        self.set_threads(threads)

    def set_threads(self, threads: int | None) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or 0  # 0: ONNX Runtime's default (all cores)
        options.inter_op_num_threads = 1
        self.threads = threads
        self.session = ort.InferenceSession(self.graph, options, providers=["CPUExecutionProvider"])
        self.names = [i.name for i in self.session.get_inputs()]

    def __call__(self, **batch: torch.Tensor) -> SimpleNamespace:
        feed = {k: batch[k].numpy().astype(np.int64) for k in INPUTS if k in self.names}
        return SimpleNamespace(logits=torch.from_numpy(self.session.run(None, feed)[0]))

    def sizes(self) -> dict:
        """The files' bytes (what ships: graph + weights, a pruned model's zeros as a bitmask), the same
        zstd-compressed, and the weights' counts."""
        import onnx
        import zstandard
        from onnx import numpy_helper

        files = [f for f in (self.folder / MODEL, self.folder / WEIGHTS) if f.is_file()]
        on_disk = sum(f.stat().st_size for f in files)
        squeezed = sum(len(zstandard.ZstdCompressor(level=9).compress(f.read_bytes())) for f in files)
        weights = [numpy_helper.to_array(t) for t in onnx.load_from_string(self.graph).graph.initializer]
        values = [w for w in weights if w.dtype in (np.float32, np.float16, np.int8, np.uint8) and w.size > 1]
        return {
            "state_dict_mb": on_disk / 1e6,
            "compact_mb": on_disk / 1e6,
            "compressed_mb": squeezed / 1e6,
            "parameters": int(sum(w.size for w in values)),
            "nonzero_parameters": int(sum(np.count_nonzero(w != _fill(w)) for w in values)),
        }
