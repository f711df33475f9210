"""A BERT sequence classifier run on its real tokens only: no computation on padding (finetune.unpad).

    trained = Unpadded(model)            # same call and outputs as the model; train/eval as usual
    logits = trained(input_ids=..., token_type_ids=..., attention_mask=...).logits

The padded batch is flattened to its real tokens once (MosaicBERT's and ModernBERT's "unpadding"): embeddings,
the Q/K/V and output projections, the feed-forward blocks and every LayerNorm run on a (tokens, hidden) matrix,
so their cost is the batch's real tokens, not batch × width. Only the attention product itself needs the
sequences apart: Q, K and V are scattered back to (batch, heads, width, head) and go through PyTorch's
scaled_dot_product_attention with the key padding mask (its fused kernels on CPU and GPU, attention dropout
included), and the result is gathered back to the real tokens. The wrapped model's own modules do the work, so
pruning masks (torch.nn.utils.prune hooks), physically removed heads and neurons, and DDP (wrapping this module)
all apply unchanged; the parameters are the model's. Same function as the padded model: logits agree to float
rounding (tests/test_unpad.py); dropout draws different masks, as it would for another batch shape.

Only the eager step uses it: a CUDA-graph step replays fixed shapes, which a varying token count would break.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers.modeling_outputs import SequenceClassifierOutput


def supports(model: nn.Module) -> bool:
    """A BERT-family sequence classifier built from transformers' modules (not an exported program, QAT's)."""
    base = getattr(model, "base_model", None)
    return (
        hasattr(model, "classifier")
        and getattr(base, "pooler", None) is not None
        and hasattr(getattr(base, "embeddings", None), "word_embeddings")
        and hasattr(getattr(base, "encoder", None), "layer")
    )


class Unpadded(nn.Module):
    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.config = model.config

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
        output_hidden_states: bool = False,
    ) -> SequenceClassifierOutput:
        m, bert = self.model, self.model.base_model
        batch, width = input_ids.shape
        keep = attention_mask.bool()
        rows = keep.flatten().nonzero().squeeze(1)  # the real tokens' places in the (batch × width) grid
        lengths = keep.sum(1)
        first = F.pad(lengths.cumsum(0)[:-1], (1, 0))  # each sequence's [CLS] among the real tokens

        def grid(x: torch.Tensor) -> torch.Tensor:  # (tokens, n) -> (batch × width, n), zeros at padding
            return x.new_zeros(batch * width, x.shape[-1]).index_copy(0, rows, x)

        e = bert.embeddings
        positions = torch.arange(width, device=input_ids.device).expand(batch, width)
        types = token_type_ids if token_type_ids is not None else torch.zeros_like(input_ids)
        h = e.word_embeddings(input_ids[keep]) + e.token_type_embeddings(types[keep])
        h = e.dropout(e.LayerNorm(h + e.position_embeddings(positions[keep])))

        key_mask = keep[:, None, None, :]
        states = [h]
        for layer in bert.encoder.layer:
            att = layer.attention.self
            heads, d = att.num_attention_heads, att.attention_head_size  # heads: fewer after structured pruning

            def spread(x: torch.Tensor) -> torch.Tensor:  # (tokens, heads·d) -> (batch, heads, width, d)
                return grid(x).view(batch, width, heads, d).transpose(1, 2)

            ctx = F.scaled_dot_product_attention(
                spread(att.query(h)),
                spread(att.key(h)),
                spread(att.value(h)),
                attn_mask=key_mask,
                dropout_p=att.dropout.p if att.training else 0.0,
                scale=att.scaling,
            )
            ctx = ctx.transpose(1, 2).reshape(batch * width, heads * d).index_select(0, rows)
            a = layer.attention.output(ctx, h)
            h = layer.output(layer.intermediate(a), a)
            states.append(h)

        pooled = bert.pooler(h.index_select(0, first)[:, None, :])
        logits = m.classifier(m.dropout(pooled))
        hidden = None
        if output_hidden_states:  # padded again, zeros at padding (the distillation loss masks padding out)
            hidden = tuple(grid(s).view(batch, width, -1) for s in states)
        return SequenceClassifierOutput(logits=logits, hidden_states=hidden)
