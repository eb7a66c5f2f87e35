"""How far int8 linear layers move a model from float32: per layer kind, and at the logits, beside bf16.

For SmolLM2-135M-Instruct (the embedded default), each linear layer's input is
recorded while the model reads a few test sentences (not the calibration
text). Each layer's product is then computed from those inputs in several int8
schemes and compared with float32 (relative error, ||y - y32|| / ||y32||):

weights only:      int8 weights per output channel, float32 activations (the weights' share of the error);
per tensor, 7-bit: PyTorch's dynamic quantisation as ``quantize_dynamic`` does it (one activation scale
                   per batch, 7-bit activations);
per row, 7-bit:    one activation scale per row;
fslm:              what ``dtype: int8`` runs (``fslm_core.runtime.int8_linear.Int8Linear``): channels smoothed by
                   the calibration text's ranges, 7-bit weights, 8-bit activations per row.

Then the whole model: the next-token distribution after each test sentence in
``dtype: int8`` and in bfloat16, against float32 (KL divergence, share of
identical top tokens).

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/int8_error.py
"""

from __future__ import annotations

import os
import time
import warnings
from collections import defaultdict

import torch
from machine_info import describe, machine

os.environ["FSLM_CPU_TUNING"] = "0"  # float32 on PyTorch's own kernel: the models are deep-copied, packed ones not

from fslm_core import get_registry  # noqa: E402
from fslm_core.runtime.int8_linear import CALIBRATION_TEXT, Int8Linear, quantize_linear_layers# noqa: E402

MODEL = "smollm2-135m-instruct"
TEST_TEXTS = (
    "The capital of France is",
    "Photosynthesis is the process by which plants",
    "def add(a, b):\n    return",
    "Question: What do bees make?\nAnswer:",
    "List three colours of the rainbow:\n1.",
    "Translate to French: good morning ->",
    "The first person to walk on the Moon was",
    "Water boils at a temperature of",
)


def load(dtype=torch.float32):
    from fslm_core.default_plugins.transformers_backend import TransformersBackend

    spec = get_registry().model(MODEL).model_copy(update={"dtype": str(dtype).removeprefix("torch.")})
    return TransformersBackend.load(spec)


def per_channel(weight: torch.Tensor, levels: int):
    scales = weight.abs().amax(dim=1).clamp_min(1e-12).double() / levels
    quantized = torch.quantize_per_channel(weight, scales, torch.zeros(len(weight), dtype=torch.long), 0, torch.qint8)
    return quantized, torch.ops.quantized.linear_prepack(quantized, None)


def layer_errors(model, tokenizer) -> dict[str, dict[str, float]]:
    inputs: dict[str, list[torch.Tensor]] = defaultdict(list)
    linear = {name: module for name, module in model.named_modules() if type(module) is torch.nn.Linear}
    hooks = [
        module.register_forward_pre_hook(lambda m, args, name=name: inputs[name].append(args[0].reshape(-1, m.in_features)))
        for name, module in linear.items()
    ]
    with torch.inference_mode():
        for text in TEST_TEXTS:
            model(**tokenizer([text], return_tensors="pt"))
    for hook in hooks:
        hook.remove()
    errors: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    fslm_layers = dict(quantized_copy(model, tokenizer).named_modules())
    for name, module in linear.items():
        x = torch.cat(inputs[name])
        weight = module.weight.detach()
        expected = x @ weight.T

        def error(y):
            return ((y - expected).norm() / expected.norm()).item()

        quantized, packed = per_channel(weight, 127)
        row_scales = x.abs().amax(dim=1, keepdim=True)
        kind = name.rsplit(".", 1)[-1]
        errors[kind]["weights only"].append(error(x @ quantized.dequantize().T))
        errors[kind]["per tensor, 7-bit"].append(error(torch.ops.quantized.linear_dynamic(x, packed, True)))
        errors[kind]["per row, 7-bit"].append(
            error(torch.ops.quantized.linear_dynamic(x / row_scales, packed, True) * row_scales)
        )
        with torch.inference_mode():
            errors[kind]["fslm"].append(error(fslm_layers[name].int8_product(x)))
    return {kind: {scheme: sum(v) / len(v) for scheme, v in schemes.items()} for kind, schemes in errors.items()}


def quantized_copy(model, tokenizer):
    import copy

    copied = copy.deepcopy(model)
    quantize_linear_layers(copied, tokenizer(CALIBRATION_TEXT, return_tensors="pt").input_ids)
    assert any(isinstance(module, Int8Linear) for module in copied.modules())
    return copied


def next_token_agreement(reference, other, tokenizer) -> dict[str, float]:
    divergences, same = [], 0
    with torch.inference_mode():
        for text in TEST_TEXTS:
            ids = tokenizer([text], return_tensors="pt")
            expected = torch.log_softmax(reference(**ids).logits[0, -1].float(), -1)
            got = torch.log_softmax(other(**ids).logits[0, -1].float(), -1)
            divergences.append(torch.sum(expected.exp() * (expected - got)).item())
            same += int(expected.argmax() == got.argmax())
    return {"kl": sum(divergences) / len(divergences), "same_top": same, "of": len(TEST_TEXTS)}


def main() -> None:
    warnings.simplefilter("ignore")  # PyTorch's quantised tensors are deprecated; these are what it runs
    print(describe(machine()))
    started = time.perf_counter()
    base = load()
    model, tokenizer = base.model, base.tokenizer
    errors = layer_errors(model, tokenizer)
    schemes = list(next(iter(errors.values())))
    print("\nrelative error of each layer kind's products (mean over layers), against float32")
    print(f"{'layer':10} " + " ".join(f"{scheme:>18}" for scheme in schemes))
    for kind, row in errors.items():
        print(f"{kind:10} " + " ".join(f"{row[scheme]:>18.4f}" for scheme in schemes))
    print("\nnext-token distribution after each test sentence, against float32")
    for name, other in (("int8 (fslm)", quantized_copy(model, tokenizer)), ("bfloat16", load(torch.bfloat16).model)):
        figures = next_token_agreement(model, other, tokenizer)
        print(f"{name:12} KL {figures['kl']:.4f}, same top token {figures['same_top']}/{figures['of']}")
    print(f"\n{time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
