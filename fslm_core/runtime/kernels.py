"""Inference on a CPU: faster float32 linear layers and an allocator that keeps its memory.

PyTorch runs a float32 ``nn.Linear`` on a CPU through MKL's sgemm. oneDNN,
also inside every PyTorch CPU build, computes the same float32 products about
1.3 to 1.8 times faster for the shapes of small language models once a
weight has been reordered into its blocked layout (measured in
``docs/performance.md``; on AMD CPUs MKL does not use AVX-512). The results
agree to float32 rounding; the arithmetic stays float32 throughout.

:func:`pack_linear_layers` keeps each layer's weight as it is (training,
saving, peft and tied embeddings all use it) and adds the reordered copy,
which the layer uses when no gradient is being recorded. The copy is made
once, so a weight changed in place afterwards (peft's ``merge_adapter``, for
example) must be packed again; fslm never changes base weights: adapters stay
separate.

:func:`keep_freed_memory` stops glibc from handing freed blocks of up to
32 MiB back to the kernel: a forward pass frees and allocates activations of
that size for every layer, and fetching fresh pages each time (page faults
and zeroing) costs a prefill pass about a tenth of its time. The process keeps
its peak memory instead of returning it.

:func:`tune_for_cpu` does both; set ``FSLM_CPU_TUNING=0`` to do neither and
leave models on PyTorch's default kernels.
"""

from __future__ import annotations

import ctypes
import os
import sys
import types

import torch
import torch.nn.functional as F

CPU_TUNING_ENV = "FSLM_CPU_TUNING"
_PACKED = "_fslm_packed_weight"
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt parameters, from glibc's malloc.h
_MMAP_THRESHOLD_MAX = 32 << 20  # the largest glibc accepts on 64-bit systems
_TRIM_THRESHOLD = 1 << 30


def tuning_enabled() -> bool:
    return os.environ.get(CPU_TUNING_ENV, "1").strip().lower() not in {"0", "false", "no", "off"}


def tune_for_cpu(model: torch.nn.Module) -> dict[str, int | bool]:
    """Pack ``model``'s linear layers and keep freed memory, unless ``FSLM_CPU_TUNING=0``; say what was done."""
    if not tuning_enabled():
        return {"packed_linear_layers": 0, "keeps_freed_memory": False}
    return {"packed_linear_layers": pack_linear_layers(model), "keeps_freed_memory": keep_freed_memory()}


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


def packing_available() -> bool:
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_reorder_linear_weight")


def _packed_forward(self: torch.nn.Linear, input: torch.Tensor) -> torch.Tensor:
    packed = getattr(self, _PACKED)
    if (
        torch.is_grad_enabled()
        or input.device.type != "cpu"
        or input.dtype != torch.float32
        or self.weight.device.type != "cpu"
        or packed[1] != self.weight.data_ptr()  # the weight was replaced
    ):
        return F.linear(input, self.weight, self.bias)
    return torch.ops.mkldnn._linear_pointwise(input, packed[0], self.bias, "none", [], "")


def pack_linear_layers(model: torch.nn.Module) -> int:
    """Give every float32 ``nn.Linear`` of ``model`` on the CPU a oneDNN-packed weight; return how many.

    Does nothing (returns 0) when this PyTorch build has no oneDNN.
    """
    if not packing_available():
        return 0
    count = 0
    for module in model.modules():
        if type(module) is not torch.nn.Linear:
            continue
        weight = module.weight
        if weight.device.type != "cpu" or weight.dtype != torch.float32:
            continue
        packed = torch.ops.mkldnn._reorder_linear_weight(weight.detach(), None)
        # A plain attribute, not a buffer: the packed copy stays out of state_dict and saved models.
        setattr(module, _PACKED, (packed, weight.data_ptr()))
        module.forward = types.MethodType(_packed_forward, module)
        count += 1
    return count


def quantize_linear_layers(model: torch.nn.Module) -> int:
    """Replace every ``nn.Linear`` of ``model`` by a dynamically quantised int8 one; return how many.

    Weights get one int8 scale per output channel (per-tensor scales visibly
    degraded a 1.5B teacher's writing); activations are quantised per batch as
    they arrive. Inference only: the quantised layers record no gradient.
    """
    import warnings

    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    unpack_linear_layers(model)
    before = sum(1 for module in model.modules() if type(module) is torch.nn.Linear)
    with warnings.catch_warnings():
        # torch.ao's eager quantisation is deprecated in favour of torchao, which has no fast CPU int8 kernels.
        warnings.simplefilter("ignore")
        quantize_dynamic(model, {torch.nn.Linear: per_channel_dynamic_qconfig}, dtype=torch.qint8, inplace=True)
    release_freed_memory()  # the float32 weights just replaced: a quarter of the memory stays in use
    return before - sum(1 for module in model.modules() if type(module) is torch.nn.Linear)


def unpack_linear_layers(model: torch.nn.Module) -> int:
    """Undo :func:`pack_linear_layers`; return how many layers went back to PyTorch's kernel."""
    count = 0
    for module in model.modules():
        if hasattr(module, _PACKED):
            delattr(module, _PACKED)
            del module.forward
            count += 1
    return count
