"""Knowledge distillation from a frozen teacher (the same seed's dense variant) while a student trains.

    python -m flows.compress -S variants.gradual.distill.teacher=dense          # in the experiment: a variant
    bertcompress finetune --task mrpc -S prune.method=gradual -S distill.teacher=outputs/mrpc/finetune-s42

loss = weight * T² * KL(softmax(teacher / T) || softmax(student / T)) + (1 - weight) * label loss
       + hidden_weight * mean over layers of the MSE between student and teacher hidden states (real tokens only)
(Hinton et al. 2015; the hidden-state term as in TinyBERT; a regression head distils by the squared error of
the outputs). The teacher's forward runs inside the training step: under CUDA graphs it is captured with the
student's forward and backward (bertcompress/cuda_graphs.py). Rows labelled -100 (fill's repeats) count nowhere.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

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


class Distiller:
    """The training objective (loop.train's `objective`) of a student distilled from a frozen teacher."""

    def __init__(self, teacher: nn.Module, d: Distill):
        self.teacher, self.d = teacher.eval().requires_grad_(False), d

    def check(self, student: nn.Module) -> None:
        """Hidden-state distillation needs the teacher's layer count and width."""
        s, t = student.config, self.teacher.config
        if self.d.hidden_weight and (s.num_hidden_layers, s.hidden_size) != (t.num_hidden_layers, t.hidden_size):
            raise UserError(
                f"distill.hidden_weight={self.d.hidden_weight} matches hidden states layer by layer, but "
                f"the student has {s.num_hidden_layers} x {s.hidden_size} and the teacher "
                f"{t.num_hidden_layers} x {t.hidden_size}; set distill.hidden_weight=0"
            )

    def __call__(self, model: nn.Module, inputs: dict, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        hidden = bool(self.d.hidden_weight)
        extra = {"output_hidden_states": True} if hidden else {}  # an exported (QAT) student takes no more
        with torch.no_grad():
            t = self.teacher(**inputs, **extra)
        s = model(**inputs, **extra)
        mask = inputs["attention_mask"]
        tokens = mask[:, 0, 0, :] if mask.dim() == 4 else mask  # cuda_graphs.mask_4d's (batch, 1, query, key) form
        pairs = (s.hidden_states[1:], t.hidden_states[1:]) if hidden else None  # each layer's output
        return loss(s.logits, t.logits, labels, self.d, pairs, tokens), s.logits
