"""A PT2E int8 artifact (X86InductorQuantizer's program, bertcompress export --format pt2e_int8) compiled by
Inductor with weight freezing, behind the interface the evaluation loop uses (as onnx_model.OnnxModel).

Inductor specialises on input shapes, so inputs are padded up to a few buckets (batch 1, 8, 32, 128; length 32,
64, max length) and each bucket compiles once, on first use (seconds to a minute on a small CPU; the padded
positions carry attention mask 0 and padded rows are dropped, so the logits of the real inputs are unchanged).
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import torch

from .onnx_model import InferenceOnly

PROGRAM = "model.pt2"
BATCHES = (1, 8, 32, 128)


def _bucket(n: int, sizes: tuple[int, ...]) -> int:
    return next((s for s in sizes if s >= n), sizes[-1])


class CompiledModel(InferenceOnly):
    def __init__(self, folder: str | Path, max_length: int, threads: int | None = None):
        import torch._dynamo
        import torchao.quantization.pt2e  # noqa: F401  registers the quantized ops the program calls
        import torchao.quantization.pt2e.inductor_passes.x86  # noqa: F401  Inductor's int8 fusions (oneDNN)
        import transformers.modeling_outputs  # noqa: F401  registers SequenceClassifierOutput with pytree

        self.folder, self.lengths = Path(folder), tuple(sorted({min(32, max_length), min(64, max_length), max_length}))
        torch._dynamo.config.recompile_limit = max(
            torch._dynamo.config.recompile_limit, 2 * len(BATCHES) * len(self.lengths)
        )
        module = torch.export.load(self.folder / PROGRAM).module()
        self.compiled = torch.compile(module, dynamic=False)  # compiled per shape on first use, frozen (__call__)
        self.threads = threads

    def set_threads(self, threads: int | None) -> None:
        self.threads = threads  # torch's own threads: latency.measure and the caller set them

    @torch.no_grad()
    def __call__(self, **batch: torch.Tensor) -> SimpleNamespace:
        n, length = batch["input_ids"].shape
        if n > BATCHES[-1]:
            parts = [
                self(**{k: v[i : i + BATCHES[-1]] for k, v in batch.items()}).logits for i in range(0, n, BATCHES[-1])
            ]
            return SimpleNamespace(logits=torch.cat(parts))
        rows, width = _bucket(n, BATCHES), _bucket(length, self.lengths)
        padded = {}
        for k in ("input_ids", "token_type_ids", "attention_mask"):
            x = torch.zeros((rows, width), dtype=torch.int64)
            x[:n, :length] = batch[k]
            padded[k] = x
        padded["attention_mask"][n:, 0] = 1  # a padded row attends to one token: no all-masked softmax
        from torch._inductor import config

        with config.patch(freezing=True):  # weights folded in as constants: the int8 kernels prepacked once
            out = self.compiled(**padded)
        return SimpleNamespace(logits=(out.logits if hasattr(out, "logits") else out[0])[:n])

    def sizes(self) -> dict:
        """The program file's bytes, the archive that ships (onnx_model.sizes) and its weights' counts."""
        from .onnx_model import sizes

        program = torch.export.load(self.folder / PROGRAM)
        values = [
            (t.int_repr() if t.is_quantized else t.detach().float()).numpy()
            for t in [*program.state_dict.values(), *program.constants.values()]
            if isinstance(t, torch.Tensor)
        ]
        return sizes(self.folder, values)
