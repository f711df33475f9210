"""An exported artifact's ONNX model run by ONNX Runtime, behind the interface the evaluation loop uses.

`OnnxModel(folder)(input_ids=..., token_type_ids=..., attention_mask=...).logits` is a torch tensor, so
loop.predict, latency.measure and predict.py run an exported artifact exactly as they run a torch variant, and
its accuracy and latency are those of the file that ships. Threads are ONNX Runtime's own (intra-op), set
when the session is made (`set_threads` remakes it).
"""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

MODEL = "model.onnx"
INPUTS = ("input_ids", "token_type_ids", "attention_mask")


class OnnxModel:
    training = False

    def __init__(self, folder: str | Path, threads: int | None = None):
        self.path = Path(folder) / MODEL
        self.set_threads(threads)

    def set_threads(self, threads: int | None) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or 0  # 0: ONNX Runtime's default (all cores)
        options.inter_op_num_threads = 1
        self.threads = threads
        self.session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        self.names = [i.name for i in self.session.get_inputs()]

    def __call__(self, **batch: torch.Tensor) -> SimpleNamespace:
        feed = {k: batch[k].numpy().astype(np.int64) for k in INPUTS if k in self.names}
        return SimpleNamespace(logits=torch.from_numpy(self.session.run(None, feed)[0]))

    def eval(self) -> "OnnxModel":
        return self

    def train(self, mode: bool = True) -> "OnnxModel":
        if mode:
            raise TypeError("an exported ONNX model is for inference only")
        return self

    def sizes(self) -> dict:
        """The file's bytes (what ships; a pruned model's zeros compress), and its weights' counts."""
        import onnx
        import zstandard
        from onnx import numpy_helper

        blob = self.path.read_bytes()
        weights = [numpy_helper.to_array(t) for t in onnx.load(str(self.path)).graph.initializer]
        values = [w for w in weights if w.dtype in (np.float32, np.float16, np.int8, np.uint8) and w.size > 1]
        return {"state_dict_mb": len(blob) / 1e6, "compact_mb": len(blob) / 1e6,
                "compressed_mb": len(zstandard.ZstdCompressor(level=9).compress(blob)) / 1e6,
                "parameters": int(sum(w.size for w in values)),
                "nonzero_parameters": int(sum(np.count_nonzero(w) for w in values))}
