"""Float32 linear layers on oneDNN's packed kernel, used when no gradient is recorded.

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
"""

from __future__ import annotations

import types

import torch
import torch.nn.functional as F

_PACKED = "_fslm_packed_weight"


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


def unpack_linear_layers(model: torch.nn.Module) -> int:
    """Undo :func:`pack_linear_layers`; return how many layers went back to PyTorch's kernel."""
    count = 0
    for module in model.modules():
        if hasattr(module, _PACKED):
            delattr(module, _PACKED)
            del module.forward
            count += 1
    return count
