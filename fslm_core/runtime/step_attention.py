"""Attention for one bf16 decoding step on a CPU: two batched products instead of PyTorch's flash kernel.

At a decoding step each row has one query per head against its whole cache.
PyTorch's fused CPU kernel handles these tiny per-head products badly in
bf16: on SmolLM2-135M at 64 rows and a 257-position cache it took 8.4 ms per
layer, three quarters of the whole step, where ``softmax(q k^T) v`` as two
batched products takes 1.7 ms (``docs/performance.md``, "bfloat16"). Query
heads that share a key head are grouped, so the cache is never repeated.

The scores are computed from float32 copies of the query and keys and the
softmax in float32: bf16 scores (8 bits of mantissa) put six times SDPA's
error into the weights. The weighted sum of the values runs in bf16.

In float32 the fused kernel is as fast as this (measured, 2.2 against 2.0 ms),
so float32 steps, prefill, training and other devices go to transformers'
SDPA function unchanged. :func:`use_step_attention` switches a loaded model
over; transformers looks the function up by the config's name at every pass.
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
        or query.dtype != torch.bfloat16
        or query.device.type != "cpu"
        or dropout
        or kwargs.get("position_bias") is not None
        or kwargs.get("softcap") is not None
        or kwargs.get("sinks") is not None
    ):
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, is_causal=is_causal, **kwargs
        )
    rows, heads, _, dim = query.shape
    key_heads = key.shape[1]
    grouped = query.reshape(rows, key_heads, heads // key_heads, dim).float()  # query heads sharing a key head
    scores = torch.matmul(grouped, key.float().transpose(-1, -2)).mul_(dim**-0.5 if scaling is None else scaling)
    if attention_mask is not None:  # [rows, 1, 1, positions]: True (or 0.0) where a row may look
        if attention_mask.dtype == torch.bool:
            scores.masked_fill_(~attention_mask, float("-inf"))
        else:
            scores.add_(attention_mask.float())
    output = torch.matmul(scores.softmax(-1).to(value.dtype), value)
    return output.reshape(rows, heads, 1, dim).transpose(1, 2).contiguous(), None


AttentionInterface.register(NAME, step_attention)
AttentionMaskInterface.register(NAME, sdpa_mask)  # the same masks as SDPA: this function reads them


def use_step_attention(model) -> bool:
    """Route a model that uses SDPA through :func:`step_attention`; False (and nothing changed) otherwise."""
    configs = {id(config): config for config in (model.config, model.config.get_text_config(decoder=True))}
    if any(getattr(config, "_attn_implementation", None) not in ("sdpa", NAME) for config in configs.values()):
        return False
    for config in configs.values():
        config._attn_implementation = NAME
    return True
