"""A decoding step's setting for benchmarks: a model's key/value cache after reading a context, in the engine's
reserved buffers (room for one more position), so one step can be timed again and again (``crop(-1)`` after each)."""

from __future__ import annotations


def context_cache(model, context):
    """The engine's reserved cache of ``model`` after reading ``context`` (token ids, rows x positions)."""
    import torch
    from transformers import DynamicCache
    from transformers.cache_utils import Cache

    from fslm_core.runtime.decoding import cache_keyword
    from fslm_core.runtime.kv_cache import ReservedLayer

    rows, positions = context.shape
    with torch.inference_mode():
        # On transformers' DynamicCache every step would copy every layer's whole cache to grow it.
        grown = DynamicCache()
        model(input_ids=context, use_cache=True, logits_to_keep=1, **{cache_keyword(model): grown})
        layers = []
        for layer in grown.layers:
            keys = layer.keys.new_zeros((rows, layer.keys.shape[1], positions + 1, layer.keys.shape[3]))
            values = torch.zeros_like(keys)
            keys[:, :, :positions], values[:, :, :positions] = layer.keys, layer.values
            layers.append(ReservedLayer(keys, values, positions))
    return Cache(layers=layers)
