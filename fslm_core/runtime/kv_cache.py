"""The key/value cache of a decoding run: buffers reserved up front and written in place, rows dropped as they end."""

from __future__ import annotations

import torch
from transformers.cache_utils import DynamicLayer


class ReservedLayer(DynamicLayer):
    """One full-attention layer's keys and values in buffers allocated once for the whole call.

    ``update`` writes the step's keys and values in place and returns views of
    the filled columns; the buffers start as zeros, so masked columns hold
    finite values (a NaN there would leak through the attention weights' zeros).
    """

    def __init__(self, keys: torch.Tensor, values: torch.Tensor, length: int):
        super().__init__()
        self.dtype, self.device = keys.dtype, keys.device
        self.key_buffer, self.value_buffer = keys, values
        self.length = length
        self.is_initialized = True
        self._expose()

    def _expose(self) -> None:
        self.keys = self.key_buffer[:, :, : self.length]
        self.values = self.value_buffer[:, :, : self.length]

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        end = self.length + key_states.shape[-2]
        if end > self.key_buffer.shape[-2]:
            raise RuntimeError(f"key/value cache reserved for {self.key_buffer.shape[-2]} positions, asked for {end}")
        self.key_buffer[:, :, self.length : end] = key_states
        self.value_buffer[:, :, self.length : end] = value_states
        self.length = end
        self._expose()
        return self.keys, self.values

    def get_seq_length(self) -> int:
        return self.length

    def crop(self, tokens_to_remove: int) -> None:
        """Forget the last ``-tokens_to_remove`` positions (transformers' convention: a negative count).

        The buffers keep their size; the next ``update`` writes over the forgotten columns.
        """
        if tokens_to_remove > 0:
            raise ValueError(f"crop takes a negative number of positions to remove, not {tokens_to_remove}")
        self.length = max(self.length + tokens_to_remove, 0)
        self._expose()

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        self.key_buffer = select_rows(self.key_buffer, indices)
        self.value_buffer = select_rows(self.value_buffer, indices)
        self._expose()


def select_rows(buffer: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """``buffer[indices]``, copying only the rows that move when ``indices`` comes from :func:`compaction`."""
    kept = indices.shape[0]
    moved = (indices != torch.arange(kept, device=indices.device)).nonzero().squeeze(1)
    if moved.numel() and int(indices[moved].min()) < kept:
        return buffer[indices]  # not a compaction: sources may be overwritten before they are read
    if moved.numel():
        buffer[moved] = buffer[indices[moved]]
    return buffer[:kept]


def compaction(finished: torch.Tensor) -> torch.Tensor:
    """Rows to keep, as indices: live rows stay where they are and the last live rows fill the holes."""
    live = (~finished).nonzero().squeeze(1)
    kept = live.shape[0]
    order = torch.arange(kept, device=finished.device)
    holes = finished[:kept].nonzero().squeeze(1)
    if holes.numel():
        order[holes] = live[live >= kept]
    return order
