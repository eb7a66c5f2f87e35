"""A progress line while a model reads a long prompt.

An 8k-token prompt is read in one forward pass of half a minute on two cores
(one pass is the fastest way: see :mod:`.decoding`), so progress is counted
layer by layer: a hook on each of the model's decoder layers moves the line on
by its share of the pass's tokens (padding included, so the line is an
estimate within a pass). The hooks come off when every prompt token has been
read (``decode``'s ``on_prefill`` counts them), before the decoding steps.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

from ..progress import progress_bar


def decoder_layers(model: torch.nn.Module) -> torch.nn.ModuleList | None:
    """The model's stack of decoder layers: its largest ``ModuleList`` (None if it has none)."""
    lists = [module for module in model.modules() if isinstance(module, torch.nn.ModuleList)]
    return max(lists, key=len, default=None)


@contextmanager
def reading_progress(model: torch.nn.Module, tokens: int, desc: str, show: bool) -> Iterator:
    """Yields ``on_prefill(tokens)`` for ``decode``: a line over the prompt's ``tokens`` (when ``show``)."""
    bar = progress_bar(total=tokens, desc=desc, unit="token", show=show)
    layers = decoder_layers(model) if show else None
    hooks = []
    if layers:
        share = [0.0]  # tokens read so far, in fractions of a pass

        def layer_done(_module, inputs, _output) -> None:
            hidden = inputs[0] if inputs else None
            if isinstance(hidden, torch.Tensor) and hidden.dim() == 3:
                share[0] = min(share[0] + hidden.shape[0] * hidden.shape[1] / len(layers), tokens)
                if int(share[0]) > bar.n:
                    bar.update(int(share[0]) - bar.n)

        hooks = [layer.register_forward_hook(layer_done) for layer in layers]

    read = [0]

    def prompt_read(count: int) -> None:
        read[0] += count
        if read[0] < tokens:
            return  # more chunks to read
        for hook in hooks:
            hook.remove()
        hooks.clear()
        bar.n = tokens
        bar.refresh()

    try:
        with bar:
            yield prompt_read
    finally:
        for hook in hooks:
            hook.remove()
