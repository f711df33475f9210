"""Knowledge distillation from a frozen teacher (the same seed's dense variant) while a student trains.

    python -m flows.compress -S variants.gradual.distill.teacher=dense          # in the experiment: a variant
    bertcompress finetune --task mrpc -S prune.method=gradual -S distill.teacher=outputs/mrpc/finetune-s42

loss = weight * T² * KL(softmax(teacher / T) || softmax(student / T)) + (1 - weight) * label loss
       + hidden_weight * mean over layers of the MSE between student and teacher hidden states (real tokens only)
(Hinton et al. 2015; the hidden-state term as in TinyBERT; a regression head distils by the squared error of
the outputs). A frozen teacher in eval mode gives an example the same logits at every visit, so logits-only
distillation runs it once over the training split before the first step (one inference pass, `Distiller.cached`)
and each step looks its batch's logits up: the step costs what an undistilled one costs. With the hidden-state
term the teacher's forward runs inside the training step: under CUDA graphs it is captured with the student's
forward and backward (bertcompress/cuda_graphs.py). Rows labelled -100 (fill's repeats) count nowhere.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import loop
from .loop import loss_of
from .params import Distill, Params, UserError

READS = ("teacher", "temperature", "weight", "hidden_weight")  # the distill.* keys a distilled step's result reads


def loss(
    student: torch.Tensor,
    teacher: torch.Tensor,
    labels: torch.Tensor,
    d: Distill,
    hidden: tuple[tuple, tuple] | None = None,
    tokens: torch.Tensor | None = None,
) -> torch.Tensor:
    """The distillation loss of one batch. hidden: (student's, teacher's) hidden states of every layer;
    tokens: (batch, length) mask of the real tokens."""
    keep = (labels != -100).float()
    if labels.is_floating_point():
        soft = ((student.float() - teacher.float()).squeeze(-1).square() * keep).sum() / keep.sum().clamp(min=1)
    else:
        t = d.temperature
        kl = F.kl_div(
            F.log_softmax(student.float() / t, -1),
            F.log_softmax(teacher.float() / t, -1),
            reduction="none",
            log_target=True,
        ).sum(-1)
        soft = (kl * keep).sum() / keep.sum().clamp(min=1) * t * t
    total = d.weight * soft + (1 - d.weight) * loss_of(student, labels) if d.weight < 1 else soft
    if d.hidden_weight and hidden is not None:
        where = tokens.float() * keep[:, None]
        mse = [
            ((s.float() - h.float()).square().mean(-1) * where).sum() / where.sum().clamp(min=1)
            for s, h in zip(*hidden)
        ]
        total = total + d.hidden_weight * torch.stack(mse).mean()
    return total


def teacher_of(params: Params, teacher: str | None = None) -> str | None:
    """The teacher's folder: the one given (the flow's: the variant's model), else distill.teacher as a folder."""
    name = params.distill.teacher
    if name is None:
        return None
    teacher = teacher or name
    if not (Path(teacher) / "config.json").is_file():
        raise UserError(
            f"distill.teacher '{name}' is no saved model folder here; give the folder a fine-tune wrote "
            "(in the experiment, name a variant listed above), or set distill.teacher=null"
        )
    return teacher


class TeacherLogits:
    """A training split with the teacher's logits as one more per-example column: batch() adds them under
    'teacher_logits' (on the split's device), beside the padded inputs and the labels."""

    def __init__(self, data, logits: torch.Tensor):
        self.data, self.logits = data, logits
        self.lengths, self.labels = data.lengths, data.labels

    def __len__(self) -> int:
        return len(self.data)

    def batch(self, indices, pad_to_multiple: int = 1, pad_id: int = 0) -> dict[str, torch.Tensor]:
        rows = torch.from_numpy(np.asarray(indices)).to(self.logits.device, non_blocking=True)
        return {**self.data.batch(indices, pad_to_multiple, pad_id), "teacher_logits": self.logits[rows]}


class Distiller:
    """The training objective (loop.train's `objective`) of a student distilled from a frozen teacher."""

    def __init__(self, teacher: nn.Module, d: Distill):
        self.teacher, self.d = teacher.eval().requires_grad_(False), d
        self._cache: tuple[str, torch.Tensor] | None = None  # (the split's fingerprint, the teacher's logits)

    def check(self, student: nn.Module) -> None:
        """Hidden-state distillation needs the teacher's layer count and width."""
        s, t = student.config, self.teacher.config
        if self.d.hidden_weight and (s.num_hidden_layers, s.hidden_size) != (t.num_hidden_layers, t.hidden_size):
            raise UserError(
                f"distill.hidden_weight={self.d.hidden_weight} matches hidden states layer by layer, but "
                f"the student has {s.num_hidden_layers} x {s.hidden_size} and the teacher "
                f"{t.num_hidden_layers} x {t.hidden_size}; set distill.hidden_weight=0"
            )

    def cached(self, data, device: str = "cpu", visits: int | None = None):
        """The training split with the teacher's logits on every example (TeacherLogits), from one inference pass
        of the teacher (fp32, in length order), kept for later calls on the same split (the stages of a structured
        recovery). The split itself where the hidden-state term needs the teacher inside the step, or where the
        steps to come visit no more examples (`visits`) than the pass would run (a short QAT on SST-2)."""
        if self.d.hidden_weight:
            return data
        key = hashlib.sha256(data.lengths.tobytes() + data.labels.tobytes()).hexdigest()
        if self._cache is None or self._cache[0] != key:
            if visits is not None and visits <= len(data):
                return data
            _, z = loop.logits(self.teacher, data, 128, device)
            self._cache = (key, torch.from_numpy(z).to(device))
        return TeacherLogits(data, self._cache[1])

    def __call__(self, model: nn.Module, inputs: dict, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        inputs = dict(inputs)
        cached = inputs.pop("teacher_logits", None)  # TeacherLogits' column: no teacher forward in the step
        hidden = bool(self.d.hidden_weight)
        extra = {"output_hidden_states": True} if hidden else {}  # an exported (QAT) student takes no more
        t = None
        if cached is None or hidden:
            with torch.no_grad():
                t = self.teacher(**inputs, **extra)
        s = model(**inputs, **extra)
        mask = inputs["attention_mask"]
        tokens = mask[:, 0, 0, :] if mask.dim() == 4 else mask  # cuda_graphs.mask_4d's (batch, 1, query, key) form
        pairs = (s.hidden_states[1:], t.hidden_states[1:]) if hidden else None  # each layer's output
        teacher = t.logits if t is not None else cached
        return loss(s.logits, teacher, labels, self.d, pairs, tokens), s.logits
