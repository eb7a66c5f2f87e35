"""Inference on a CPU: the CPU tuning switch, an allocator that keeps its memory, and the head's input.

:func:`keep_freed_memory` stops glibc from handing freed blocks of up to
32 MiB back to the kernel: a forward pass frees and allocates activations of
that size for every layer, and fetching fresh pages each time (page faults
and zeroing) costs a prefill pass about a tenth of its time. The process keeps
its peak memory instead of returning it.

:func:`tune_for_cpu` does that, packs float32 linear layers
(:mod:`.packed_linear`) and routes bf16 decoding steps' attention through
:mod:`.step_attention`; set ``FSLM_CPU_TUNING=0`` to do none of it and leave
models on PyTorch's default kernels. :func:`contiguous_head_input` applies
always: it changes no number.
"""

from __future__ import annotations

import ctypes
import os
import sys

import torch

from .packed_linear import pack_linear_layers

CPU_TUNING_ENV = "FSLM_CPU_TUNING"
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt parameters, from glibc's malloc.h
_MMAP_THRESHOLD_MAX = 32 << 20  # the largest glibc accepts on 64-bit systems
_TRIM_THRESHOLD = 1 << 30


def tuning_enabled() -> bool:
    return os.environ.get(CPU_TUNING_ENV, "1").strip().lower() not in {"0", "false", "no", "off"}


def tune_for_cpu(model: torch.nn.Module) -> dict[str, int | bool]:
    """Pack ``model``'s linear layers, keep freed memory and take the bf16 decoding-step attention
    (:mod:`fslm_core.runtime.step_attention`), unless ``FSLM_CPU_TUNING=0``; say what was done."""
    contiguous_head_input(model)
    if not tuning_enabled():
        return {"packed_linear_layers": 0, "keeps_freed_memory": False, "step_attention": False}
    from .step_attention import use_step_attention

    return {
        "packed_linear_layers": pack_linear_layers(model),
        "keeps_freed_memory": keep_freed_memory(),
        "step_attention": use_step_attention(model),
    }


def _contiguous_input(module: torch.nn.Module, args: tuple) -> tuple:
    return (args[0].contiguous(), *args[1:])


def contiguous_head_input(model: torch.nn.Module) -> bool:
    """Give the output head a contiguous input; False if the model has no head to give it to.

    transformers reads only each row's last position into the head while
    reading a prompt (``logits_to_keep``), a strided slice of the hidden
    states. A 3-d strided input sends ``F.linear`` through a batched product
    that first copies the head's weight once per row: for a bf16 head of
    SmolLM2's 49,152 x 576 and 16 rows, 0.9 GB copied and a prefill pass 25
    times slower (``docs/performance.md``, "bfloat16"). Copying the slice
    instead costs a few kilobytes. Numbers are unchanged.
    """
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if not isinstance(head, torch.nn.Module):
        return False
    if not getattr(head, "_fslm_contiguous_input", False):
        head.register_forward_pre_hook(_contiguous_input)
        head._fslm_contiguous_input = True
    return True


def keep_freed_memory() -> bool:
    """Make glibc's malloc reuse freed blocks of up to 32 MiB instead of unmapping them; False without glibc."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_MAX)) and bool(mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD))


def release_freed_memory() -> bool:
    """Hand memory that glibc's malloc holds free back to the system (after a model's weights were replaced)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        return bool(ctypes.CDLL("libc.so.6").malloc_trim(0))
    except (OSError, AttributeError):
        return False
