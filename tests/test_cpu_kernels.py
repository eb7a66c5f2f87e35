"""oneDNN-packed linear layers compute what PyTorch's own kernel computes, and only when it is safe; int8 layers."""

import pytest
import torch
from transformers import AutoModelForCausalLM

from fslm_core.runtime.cpu_tuning import CPU_TUNING_ENV, contiguous_head_input, tune_for_cpu
from fslm_core.runtime.int8_linear import Int8Linear, int8_available, quantize_linear_layers
from fslm_core.runtime.packed_linear import pack_linear_layers, packing_available, unpack_linear_layers

# Every x86 CPU build of PyTorch has oneDNN and fbgemm (the project's own machines and CI do); a build without
# one (some ARM builds lack fbgemm) has nothing for that test to check, and fslm falls back there.
packed_only = pytest.mark.skipif(not packing_available(), reason="this PyTorch build has no oneDNN")


@pytest.fixture
def model(tiny_model_dir):
    return AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()


def linear_count(model) -> int:
    return sum(type(module) is torch.nn.Linear for module in model.modules())


def logits(model, ids) -> torch.Tensor:
    with torch.inference_mode():
        return model(input_ids=ids).logits


@packed_only
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


@packed_only
def test_training_uses_the_weights_themselves(model):
    pack_linear_layers(model)
    layer = model.lm_head
    inputs = torch.randn(3, layer.in_features, requires_grad=True)
    output = layer(inputs)
    torch.testing.assert_close(output, torch.nn.functional.linear(inputs, layer.weight), rtol=0, atol=0)
    output.sum().backward()
    assert inputs.grad is not None and layer.weight.grad is not None


@packed_only
def test_a_replaced_weight_is_used_not_the_stale_copy(model):
    pack_linear_layers(model)
    layer = model.lm_head
    inputs = torch.randn(2, layer.in_features)
    layer.weight = torch.nn.Parameter(torch.randn_like(layer.weight))
    with torch.inference_mode():
        torch.testing.assert_close(layer(inputs), torch.nn.functional.linear(inputs, layer.weight), rtol=0, atol=0)


@packed_only
def test_the_switch_leaves_models_alone(model, monkeypatch):
    monkeypatch.setenv(CPU_TUNING_ENV, "0")
    assert tune_for_cpu(model) == {"packed_linear_layers": 0, "keeps_freed_memory": False, "step_attention": False}
    assert all("forward" not in module.__dict__ for module in model.modules())
    monkeypatch.setenv(CPU_TUNING_ENV, "1")
    expected = {"packed_linear_layers": linear_count(model), "keeps_freed_memory": True, "step_attention": True}
    assert tune_for_cpu(model) == expected


# int8 linear layers -------------------------------------------------------------------------------------------

int8_only = pytest.mark.skipif(not int8_available(), reason="this PyTorch build has no fbgemm int8 kernels")
CALIBRATION_IDS = torch.tensor([list(range(3, 60))])


def base_linear_bytes(model) -> int:
    return sum(p.numel() * p.element_size() for n, p in model.named_parameters() if "embed" not in n)


@int8_only
def test_int8_layers_stay_close_to_float32_and_free_their_float_weights(model):
    ids = torch.tensor([[1, 40, 41, 42, 43, 44, 45, 46], [1, 50, 51, 52, 53, 54, 55, 56]])
    before = logits(model, ids)
    float_bytes = base_linear_bytes(model)
    assert quantize_linear_layers(model, CALIBRATION_IDS) == 2 * 7 + 1  # per layer q, k, v, o, gate, up, down
    assert all(isinstance(module, Int8Linear) for module in model.modules() if isinstance(module, torch.nn.Linear))
    after = logits(model, ids)
    assert ((after - before).norm() / before.norm()).item() < 0.05
    assert not any(key.endswith("proj.weight") for key in model.state_dict())  # the float32 weights are gone
    assert base_linear_bytes(model) < float_bytes / 10  # what is left: the norms' weights


@int8_only
def test_int8_weights_read_back_as_the_float_weights_they_were_made_from(model):
    original = model.model.layers[0].mlp.down_proj.weight.detach().clone()
    quantize_linear_layers(model, CALIBRATION_IDS)
    read_back = model.model.layers[0].mlp.down_proj.weight
    assert read_back.shape == original.shape and read_back.dtype == torch.float32
    # Each column was smoothed before rounding, so each entry is within one step of its (smoothed) row.
    assert (read_back - original).abs().max() < original.abs().max() / 20


@int8_only
def test_an_int8_row_gives_the_same_result_in_any_batch(model):
    quantize_linear_layers(model, CALIBRATION_IDS)
    layer = model.model.layers[1].mlp.up_proj
    torch.manual_seed(0)
    rows = torch.randn(6, layer.in_features)
    rows[2] *= 40  # one row with a much larger range than its neighbours
    with torch.inference_mode():
        together = layer(rows)
        alone = torch.cat([layer(rows[i : i + 1]) for i in range(len(rows))])
    torch.testing.assert_close(together, alone, rtol=0, atol=0)


@int8_only
def test_a_tied_output_layer_keeps_the_embeddings_it_shares():
    from fslm_core.testing import tiny_config

    torch.manual_seed(0)
    tied = AutoModelForCausalLM.from_config(tiny_config("llama", tie_word_embeddings=True)).eval()
    embeddings = tied.get_input_embeddings().weight
    ids = torch.tensor([[1, 5, 9, 13]])
    before = logits(tied, ids)
    quantize_linear_layers(tied)
    assert tied.lm_head.weight is embeddings and tied.get_input_embeddings().weight is embeddings
    assert ((logits(tied, ids) - before).norm() / before.norm()).item() < 0.05


@int8_only
@pytest.mark.parametrize("model_type", ["llama", "gpt_neox", "phi", "phi3"])  # the default's, Pythia's and Phi's
def test_a_bfloat16_model_quantises_as_its_float32_load_does_one_layer_at_a_time(model_type, tmp_path, monkeypatch):
    from fslm_core.runtime import int8_linear
    from fslm_core.testing import build_tiny_model, tiny_config

    built = build_tiny_model(tmp_path / "built", tiny_config(model_type))
    AutoModelForCausalLM.from_pretrained(built, dtype=torch.bfloat16).save_pretrained(tmp_path / "stored")
    wide = AutoModelForCausalLM.from_pretrained(tmp_path / "stored", dtype=torch.float32).eval()
    narrow = AutoModelForCausalLM.from_pretrained(tmp_path / "stored", dtype=torch.bfloat16).eval()
    layers = linear_count(narrow)
    float_layers_seen = []
    make_int8 = int8_linear._make_int8

    def counting(module, input_range, shared, own_copy):
        float_layers_seen.append(
            sum(type(m) is torch.nn.Linear and m.weight.dtype == torch.float32 for m in narrow.modules())
        )
        make_int8(module, input_range, shared, own_copy)

    quantize_linear_layers(wide, CALIBRATION_IDS)
    monkeypatch.setattr(int8_linear, "_make_int8", counting)
    assert quantize_linear_layers(narrow, CALIBRATION_IDS) == layers
    assert len(float_layers_seen) == layers and max(float_layers_seen) == 1  # never more than the layer at hand
    assert all(p.dtype == torch.float32 for p in narrow.parameters())
    ids = torch.tensor([[1, 40, 41, 42, 43, 44, 45, 46]])
    assert torch.equal(logits(narrow, ids), logits(wide, ids))


@int8_only
def test_an_int8_weight_read_again_in_a_row_is_de_quantised_once(model):
    from fslm_core.runtime.int8_linear import int8_weights_read_in_a_row

    quantize_linear_layers(model, CALIBRATION_IDS)
    attention = model.model.layers[0].self_attn
    assert attention.q_proj.weight is not attention.q_proj.weight  # each read de-quantises anew
    with int8_weights_read_in_a_row():  # as peft reads a layer's weight while it wraps the layer
        first = attention.q_proj.weight
        assert attention.q_proj.weight is first
        assert attention.k_proj.weight.shape == (attention.k_proj.out_features, attention.k_proj.in_features)
        again = attention.q_proj.weight  # only the last layer read is kept
        assert again is not first
        torch.testing.assert_close(again, first, rtol=0, atol=0)
    assert attention.q_proj.weight is not attention.q_proj.weight


@int8_only
def test_peft_attaches_lora_to_int8_layers_and_trains_it(model):
    from peft import LoraConfig, get_peft_model

    quantize_linear_layers(model, CALIBRATION_IDS)
    adapted = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    ids = torch.tensor([[1, 40, 41, 42, 43, 44]])
    loss = adapted(input_ids=ids, labels=ids).loss
    loss.backward()
    trained = [p for p in adapted.parameters() if p.requires_grad]
    assert trained and all(p.grad is not None and p.grad.abs().sum() > 0 for p in trained)
    # Training reads the same int8 product inference does; the input's gradient goes through the float weight.
    layer = adapted.base_model.model.model.layers[0].self_attn.q_proj
    base = layer.get_base_layer()
    inputs = torch.randn(3, layer.in_features, requires_grad=True)
    with torch.inference_mode():
        inferred = base(inputs.detach())
    trained = base(inputs)
    torch.testing.assert_close(trained.detach(), inferred, rtol=0, atol=0)
    upstream = torch.randn_like(trained)
    trained.backward(upstream)
    torch.testing.assert_close(inputs.grad, upstream @ base.weight.detach())


def test_the_head_reads_a_contiguous_input_and_gives_the_same_logits(model):
    """transformers hands the head a strided slice while reading a prompt; bf16's product then copied its weight."""
    model = model.to(torch.bfloat16)
    ids = torch.randint(10, 200, (4, 12))
    with torch.inference_mode():
        before = model(input_ids=ids, logits_to_keep=1).logits
    assert contiguous_head_input(model) and contiguous_head_input(model)  # a second call adds no second hook
    seen = []
    model.lm_head.register_forward_pre_hook(lambda module, args: seen.append(args[0].is_contiguous()))
    with torch.inference_mode():
        after = model(input_ids=ids, logits_to_keep=1).logits
    assert seen == [True] and len(model.lm_head._forward_pre_hooks) == 2
    torch.testing.assert_close(after, before, rtol=0, atol=0)
