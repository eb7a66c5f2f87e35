"""``dtype: int8``: linear layers with int8 weights on fbgemm's kernel, still ``nn.Linear`` for peft.

:func:`quantize_linear_layers` turns the linear layers into
:class:`Int8Linear`: smoothed int8 weights, activations scaled per row; no
longer float32 arithmetic, faster still on CPUs without bf16 at a measured
loss of accuracy (``docs/performance.md``, "int8").
"""

from __future__ import annotations

import contextvars
from contextlib import contextmanager

import torch
import torch.nn.functional as F

from .cpu_tuning import release_freed_memory
from .packed_linear import unpack_linear_layers

SMOOTHING_STRENGTH = 0.5
"""How much of an input channel's range moves into the weights (SmoothQuant's alpha).

Small language models carry a few activation channels ten to thirty times the
others' size; quantised per row, they leave the other channels a handful of
int8 steps. Dividing channel ``j`` of the input by
``s_j = max|x_j| ** a / max|w_j| ** (1 - a)`` and multiplying the weight's
column ``j`` by it leaves the product unchanged and shares the range between
the two. On SmolLM2-135M this cut the layers' error from 3 to 12% to 2 to 4%
(``docs/performance.md``)."""

WEIGHT_LEVELS = 63
"""Largest int8 weight magnitude: 7-bit weights leave the activations all 8 bits.

fbgemm's x86 kernel adds pairs of uint8 x int8 products in 16-bit registers
that saturate: 2 x 255 x 127 overflows them, 2 x 255 x 63 does not. PyTorch's
own dynamic quantisation avoids it by giving the activations 7 bits
(``reduce_range``); on SmolLM2-135M the activations' error is the larger one,
and moving that bit to them cut the layers' error by about a third."""

CALIBRATION_TEXT = (
    "Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n"
    "Instruction: Explain why the sky is blue, then list three facts about the Moon.\n\n"
    "Response: Sunlight is scattered by the molecules of the air, and blue light, with its shorter wavelength, "
    "is scattered far more than red. 1. The Moon orbits the Earth every 27.3 days. 2. Its surface gravity is "
    "about one sixth of Earth's. 3. Twelve people walked on it between 1969 and 1972.\n\n"
    "Question: Which of these is a mammal? (A) shark (B) dolphin (C) trout (D) octopus\nAnswer: (B) dolphin.\n"
    "def mean(values):\n    return sum(values) / len(values)\n"
)
"""Text whose activations set the smoothing: an instruction, an answer, a list, a choice question and code."""


class Int8Linear(torch.nn.Linear):
    """An ``nn.Linear`` whose weight is kept as int8, one scale per output channel.

    It stays an ``nn.Linear`` so peft attaches LoRA adapters to it as to any
    other. Without gradients its product runs on fbgemm's int8 kernel: the
    input's channels are divided by the smoothing factors the weight's columns
    were multiplied by, and each row is scaled to a largest magnitude of 1, so
    the kernel's per-tensor activation scale is in effect per row (a row's
    result does not depend on the other rows of its batch). With gradients
    (training an adapter on an int8 base) the forward pass is the same int8
    product and the input's gradient goes through the de-quantised weight.
    ``weight`` de-quantises on each read unless the layer shares its weight
    with another module (tied embeddings), whose float32 tensor is kept as it
    was.
    """

    _int8_weight: torch.ScriptObject
    _input_divisors: torch.Tensor

    @property
    def weight(self) -> torch.Tensor:  # type: ignore[override]
        shared = self._parameters.get("weight")
        if shared is not None:
            return shared
        last = _LAST_WEIGHT_READ.get()
        if last is not None and last.get("layer") is self:
            return last["weight"]
        weight = torch.ops.quantized.linear_unpack(self._int8_weight)[0].dequantize() / self._input_divisors
        if last is not None:
            last.update(layer=self, weight=weight)
        return weight

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if input.device.type != "cpu" or input.dtype != torch.float32:
            return F.linear(input, self.weight, self.bias)
        if torch.is_grad_enabled():
            shared = self._parameters.get("weight")
            if shared is not None and shared.requires_grad:  # a trained weight needs its own gradient
                return F.linear(input, shared, self.bias)
            output = _Int8Product.apply(input, self)
        else:
            self.__dict__.pop("_float_weight", None)  # training is over: hand back the backward pass's copy
            output = self.int8_product(input)
        return output if self.bias is None else output + self.bias

    def backward_weight(self) -> torch.Tensor:
        """The de-quantised weight, kept while training (unpacking fbgemm's layout at every step costs more)."""
        if "_float_weight" not in self.__dict__:
            self.__dict__["_float_weight"] = self.weight.detach()
        return self.__dict__["_float_weight"]

    def int8_product(self, input: torch.Tensor) -> torch.Tensor:
        flat = input.reshape(-1, self.in_features)
        # fbgemm quantises the activations with the range of the whole tensor: one more row spanning
        # [-1, 1] fixes that range to every row's own, whatever its neighbours.
        rows = torch.empty(len(flat) + 1, self.in_features)
        scaled = torch.div(flat, self._input_divisors, out=rows[:-1])
        scales = scaled.abs().amax(dim=1, keepdim=True).clamp_min_(torch.finfo(torch.float32).tiny)
        scaled.div_(scales)
        rows[-1] = _full_range_row(self.in_features)
        output = torch.ops.quantized.linear_dynamic(rows, self._int8_weight, False)[:-1].mul_(scales)
        return output.reshape(*input.shape[:-1], self.out_features)


_LAST_WEIGHT_READ: contextvars.ContextVar[dict | None] = contextvars.ContextVar("fslm_last_int8_weight", default=None)


@contextmanager
def int8_weights_read_in_a_row():
    """Within this block, reading one :class:`Int8Linear`'s ``weight`` again in a row returns the same tensor.

    peft reads a base layer's ``weight`` about eleven times while it wraps that
    layer in a LoRA layer (its dtype, device and shape), and each read of an
    int8 layer unpacks and de-quantises it: attaching one adapter to
    SmolLM2-135M took 7 s instead of 0.4. One layer's weight is kept, the last
    read, and dropped when the block ends.
    """
    token = _LAST_WEIGHT_READ.set({})
    try:
        yield
    finally:
        _LAST_WEIGHT_READ.reset(token)


class _Int8Product(torch.autograd.Function):
    """The int8 product forward; backward, the input's gradient through the de-quantised weight.

    The base weight is frozen (adapters train beside it), so the input's
    gradient is all that is needed, and the forward pass runs at int8 speed
    with the very arithmetic inference will use.
    """

    @staticmethod
    def forward(ctx, input: torch.Tensor, layer: Int8Linear) -> torch.Tensor:
        ctx.layer = layer
        return layer.int8_product(input)

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        return grad_output @ ctx.layer.backward_weight(), None


_FULL_RANGE_ROWS: dict[int, torch.Tensor] = {}


def _full_range_row(width: int) -> torch.Tensor:
    if width not in _FULL_RANGE_ROWS:
        row = torch.zeros(1, width)
        row[0, 0], row[0, -1] = -1.0, 1.0
        _FULL_RANGE_ROWS[width] = row
    return _FULL_RANGE_ROWS[width]


def int8_available() -> bool:
    return "fbgemm" in torch.backends.quantized.supported_engines


def quantize_linear_layers(model: torch.nn.Module, calibration_ids: torch.Tensor | None = None) -> int:
    """Turn every floating-point ``nn.Linear`` of ``model`` on the CPU into an :class:`Int8Linear`; return how many.

    Weights get one int8 scale per output channel (per-tensor scales visibly
    degraded a 1.5B teacher's writing). With ``calibration_ids`` (token ids,
    shape ``(1, n)``), the model reads them once in float32 and each layer's
    input channels are smoothed by their ranges there
    (:data:`SMOOTHING_STRENGTH`). A weight no other module shares is freed:
    the layer then holds a quarter of the bytes. Layers packed by
    :func:`pack_linear_layers` are unpacked first.

    The model may come in bfloat16 or float16 (as its checkpoint stores it):
    everything but the layers' own weights is made float32 first, and each
    layer's weight becomes float32 only while that layer is calibrated and
    quantised. The float32 copy of the whole model, twice a bfloat16 one's
    size, never exists; the result is the same as from a float32 load, since
    widening to float32 is exact.
    """
    if not int8_available():
        raise RuntimeError("this PyTorch build has no fbgemm int8 kernels")
    unpack_linear_layers(model)
    layers = [
        module
        for module in model.modules()
        if type(module) is torch.nn.Linear and module.weight.device.type == "cpu" and module.weight.is_floating_point()
    ]
    owners: dict[int, int] = {}
    for module in model.modules():
        for parameter in module.parameters(recurse=False):
            owners[id(parameter)] = owners.get(id(parameter), 0) + 1
    own_weights = {id(module.weight) for module in layers if owners[id(module.weight)] == 1}
    # Layers whose float32 weight will be a copy made here (widened from bf16 or fp16), not the loaded tensor.
    widened = {
        id(module) for module in layers if id(module.weight) in own_weights and module.weight.dtype != torch.float32
    }
    _widen_to_float32(model, keep=own_weights)
    ranges: dict[int, torch.Tensor] = {}
    done: set[int] = set()

    def record(module, args):
        seen = args[0].detach().reshape(-1, module.in_features).abs().amax(dim=0).float()
        ranges[id(module)] = torch.maximum(ranges[id(module)], seen) if id(module) in ranges else seen
        if module.weight.dtype != torch.float32:
            module.weight.data = module.weight.data.float()

    def quantize_after_first_use(module, args, output):
        if id(module) not in done:  # a layer called again in the same pass (none in these decoders) reads int8 then
            done.add(id(module))
            _make_int8(module, ranges[id(module)], shared=owners[id(module.weight)] > 1, own_copy=id(module) in widened)

    if calibration_ids is not None:
        handles = [layer.register_forward_pre_hook(record) for layer in layers]
        handles += [layer.register_forward_hook(quantize_after_first_use) for layer in layers]
        try:
            with torch.no_grad():  # not inference_mode: the layers' tensors made here are used in training too
                model(input_ids=calibration_ids)
        finally:
            for handle in handles:
                handle.remove()
    for module in layers:  # layers the calibration text did not reach, or all of them without one
        if id(module) not in done:
            _make_int8(module, None, shared=owners[id(module.weight)] > 1, own_copy=id(module) in widened)
    release_freed_memory()  # the float weights just freed: hand their pages back
    return len(layers)


def _widen_to_float32(model: torch.nn.Module, keep: set[int]) -> None:
    """Make every floating-point parameter and buffer of ``model`` float32, except the parameters in ``keep``."""
    for module in model.modules():
        for parameter in module.parameters(recurse=False):
            if id(parameter) not in keep and parameter.is_floating_point() and parameter.dtype != torch.float32:
                parameter.data = parameter.data.float()
        for name, buffer in module.named_buffers(recurse=False):
            if buffer is not None and buffer.is_floating_point() and buffer.dtype != torch.float32:
                setattr(module, name, buffer.float())


def _make_int8(module: torch.nn.Linear, input_range: torch.Tensor | None, shared: bool, own_copy: bool) -> None:
    """Quantise one layer in place into an :class:`Int8Linear`, freeing its weight unless ``shared``.

    ``own_copy``: the layer's float32 weight is a copy made while quantising
    (widened from bf16), so it is smoothed in place, sparing another copy the
    layer's size (933 MB for a 1.5B model's output layer). A loaded float32
    weight is not written: it may be a memory-mapped file's pages, which a
    write copies one page fault at a time (it made loading SmolLM2 1 s slower).
    """
    import warnings

    weight = module.weight.detach().float()
    if input_range is None:
        divisors = torch.ones(module.in_features)
        smoothed = weight
    else:
        column_range = weight.abs().amax(dim=0)
        divisors = input_range.clamp_min(1e-5).pow(SMOOTHING_STRENGTH) / column_range.clamp_min(1e-5).pow(
            1 - SMOOTHING_STRENGTH
        )
        smoothed = weight.mul_(divisors) if own_copy else weight * divisors
    scales = smoothed.abs().amax(dim=1).clamp_min(torch.finfo(torch.float32).tiny).double() / WEIGHT_LEVELS
    zero_points = torch.zeros(weight.shape[0], dtype=torch.long)
    with warnings.catch_warnings():
        # PyTorch deprecates its quantised tensors in favour of torchao, which has no fast CPU int8 kernels.
        warnings.simplefilter("ignore")
        quantized = torch.quantize_per_channel(smoothed, scales, zero_points, 0, torch.qint8)
        packed = torch.ops.quantized.linear_prepack(quantized, None)
    module.__class__ = Int8Linear
    module._int8_weight = packed
    module._input_divisors = divisors
    if not shared:
        del module._parameters["weight"]
