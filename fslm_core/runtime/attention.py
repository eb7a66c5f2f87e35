"""Attention for one decoding step on a CPU: two batched matrix products instead of PyTorch's flash kernel.

At a decoding step each row has one query per head against its whole cache.
PyTorch's fused CPU kernel handles those tiny per-head products poorly: on
SmolLM2-135M at 64 rows and a 257-position cache it took 2.2 ms per layer
where ``softmax(q k^T) v`` as two batched matrix products took 1.7 ms
(``docs/performance.md``), with grouped-query heads read once per key/value
head, never repeated. Everything else (prefill, training, other dtypes and
devices) goes to transformers' own SDPA function unchanged.

:func:`use_step_attention` switches a loaded model over; transformers looks
the function up by the name in the model's config at every forward pass.
"""

from __future__ import annotations

import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

NAME = "fslm_sdpa"


def step_attention(module, query, key, value, attention_mask, dropout=0.0, scaling=None, is_causal=None, **kwargs):
    """transformers' attention-function signature: ``(output [batch, 1, heads, dim], None)`` for one query."""
    if (
        query.shape[2] != 1
        or query.dtype != torch.float32
        or query.device.type != "cpu"
        or dropout
        or kwargs.get("position_bias") is not None
        or kwargs.get("softcap") is not None
    ):
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, is_causal=is_causal, **kwargs
        )
    rows, heads, _, dim = query.shape
    key_heads = key.shape[1]
    grouped = query.reshape(rows, key_heads, heads // key_heads, dim)  # the query heads that share a key head
    scores = torch.matmul(grouped, key.transpose(-1, -2)).mul_(dim**-0.5 if scaling is None else scaling)
    if attention_mask is not None:  # [rows, 1, 1, positions]: True (or 0.0) where a row may look
        if attention_mask.dtype == torch.bool:
            scores.masked_fill_(~attention_mask, float("-inf"))
        else:
            scores.add_(attention_mask)
    output = torch.matmul(scores.softmax(-1), value)
    return output.reshape(rows, heads, 1, dim).transpose(1, 2).contiguous(), None


AttentionInterface.register(NAME, step_attention)
AttentionMaskInterface.register(NAME, sdpa_mask)  # the same masks as SDPA: this function reads them


def use_step_attention(model) -> bool:
    """Route a model that uses SDPA through :func:`step_attention`; False (and nothing changed) otherwise."""
    configs = {id(config): config for config in (model.config, model.config.get_text_config(decoder=True))}
    if any(getattr(config, "_attn_implementation", None) != "sdpa" for config in configs.values()):
        return False
    for config in configs.values():
        config._attn_implementation = NAME
    return True
