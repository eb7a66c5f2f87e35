"""oneDNN-packed linear layers compute what PyTorch's own kernel computes, and only when it is safe."""

import pytest
import torch
from transformers import AutoModelForCausalLM

from fslm_core.runtime.kernels import (
    CPU_TUNING_ENV,
    pack_linear_layers,
    packing_available,
    tune_for_cpu,
    unpack_linear_layers,
)

pytestmark = pytest.mark.skipif(not packing_available(), reason="this PyTorch build has no oneDNN")


@pytest.fixture
def model(tiny_model_dir):
    return AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()


def linear_count(model) -> int:
    return sum(type(module) is torch.nn.Linear for module in model.modules())


def logits(model, ids) -> torch.Tensor:
    with torch.inference_mode():
        return model(input_ids=ids).logits


def test_packed_layers_give_the_same_logits_and_tokens(model):
    ids = torch.tensor([[1, 40, 41, 42, 43, 44, 45, 46], [1, 50, 51, 52, 53, 54, 55, 56]])
    before = logits(model, ids)
    keys = set(model.state_dict())
    assert pack_linear_layers(model) == linear_count(model) > 0
    after = logits(model, ids)
    torch.testing.assert_close(after, before, rtol=1e-4, atol=1e-5)
    assert torch.equal(after.argmax(-1), before.argmax(-1))
    assert set(model.state_dict()) == keys  # the packed copies are not saved with the model
    assert unpack_linear_layers(model) == linear_count(model)
    torch.testing.assert_close(logits(model, ids), before, rtol=0, atol=0)


def test_training_uses_the_weights_themselves(model):
    pack_linear_layers(model)
    layer = model.lm_head
    inputs = torch.randn(3, layer.in_features, requires_grad=True)
    output = layer(inputs)
    torch.testing.assert_close(output, torch.nn.functional.linear(inputs, layer.weight), rtol=0, atol=0)
    output.sum().backward()
    assert inputs.grad is not None and layer.weight.grad is not None


def test_a_replaced_weight_is_used_not_the_stale_copy(model):
    pack_linear_layers(model)
    layer = model.lm_head
    inputs = torch.randn(2, layer.in_features)
    layer.weight = torch.nn.Parameter(torch.randn_like(layer.weight))
    with torch.inference_mode():
        torch.testing.assert_close(layer(inputs), torch.nn.functional.linear(inputs, layer.weight), rtol=0, atol=0)


def test_the_switch_leaves_models_alone(model, monkeypatch):
    monkeypatch.setenv(CPU_TUNING_ENV, "0")
    assert tune_for_cpu(model) == {"packed_linear_layers": 0, "keeps_freed_memory": False}
    assert all("forward" not in module.__dict__ for module in model.modules())
    monkeypatch.setenv(CPU_TUNING_ENV, "1")
    assert tune_for_cpu(model) == {"packed_linear_layers": linear_count(model), "keeps_freed_memory": True}
