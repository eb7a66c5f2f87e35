"""The bf16 decoding-step attention computes what transformers' SDPA attention computes, within bf16's rounding."""

import types

import pytest
import torch
from transformers import AutoModelForCausalLM
from transformers.integrations.sdpa_attention import sdpa_attention_forward

from fslm_core.runtime.step_attention import NAME, step_attention, use_step_attention


def grouped_attention_module(heads: int, key_heads: int) -> types.SimpleNamespace:
    return types.SimpleNamespace(num_key_value_groups=heads // key_heads, is_causal=True)


@pytest.mark.parametrize("mask_kind", ["bool", "additive", "none"])
def test_one_bf16_query_step_matches_float32_attention_as_closely_as_sdpa_does(mask_kind):
    generator = torch.Generator().manual_seed(0)
    rows, heads, key_heads, positions, dim = 5, 6, 2, 11, 16
    query = (3 * torch.randn(rows, heads, 1, dim, generator=generator)).bfloat16()
    # Views of wider buffers, as the engine's reserved cache hands them over.
    key = (3 * torch.randn(rows, key_heads, positions + 4, dim, generator=generator)).bfloat16()[:, :, :positions]
    value = torch.randn(rows, key_heads, positions + 4, dim, generator=generator).bfloat16()[:, :, :positions]
    allowed = torch.arange(positions)[None, :] >= torch.tensor([0, 3, 0, 7, 1])[:, None]  # left padding
    mask = {
        "bool": allowed[:, None, None, :],
        "additive": torch.zeros(rows, 1, 1, positions).masked_fill(~allowed[:, None, None, :], float("-inf")),
        "none": None,
    }[mask_kind]
    module = grouped_attention_module(heads, key_heads)
    exact, _ = sdpa_attention_forward(
        module,
        query.float(),
        key.float(),
        value.float(),
        mask,
        scaling=dim**-0.5,
    )
    fused, _ = sdpa_attention_forward(
        module,
        query,
        key,
        value,
        mask if mask is None or mask.dtype == torch.bool else mask.bfloat16(),
        scaling=dim**-0.5,
    )
    got, weights = step_attention(module, query, key, value, mask, scaling=dim**-0.5)
    assert weights is None and got.dtype == torch.bfloat16
    assert got.shape == exact.shape == (rows, 1, heads, dim)
    error, fused_error = (got.float() - exact).abs().mean(), (fused.float() - exact).abs().mean()
    assert error <= 2 * fused_error + 1e-3, (error, fused_error)


def test_prefill_and_float32_steps_go_to_sdpa_unchanged():
    generator = torch.Generator().manual_seed(1)
    module = grouped_attention_module(4, 2)
    query, key, value = (torch.randn(2, n, 7, 8, generator=generator) for n in (4, 2, 2))
    for inputs in (
        (query, key, value),
        (query[:, :, -1:], key, value),
        (query.bfloat16(), key.bfloat16(), value.bfloat16()),
    ):
        expected, _ = sdpa_attention_forward(module, *inputs, None, scaling=0.3)
        got, _ = step_attention(module, *inputs, None, scaling=0.3)
        torch.testing.assert_close(got, expected, rtol=0, atol=0)


def test_a_bf16_model_generates_the_same_tokens_with_it(tiny_model_dir):
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.bfloat16).eval()
    ids = torch.tensor([[0, 0, 0, 5, 6, 7, 8], [1, 9, 10, 11, 12, 13, 14]])
    mask = torch.tensor([[0, 0, 0, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1, 1]])
    options = dict(attention_mask=mask, max_new_tokens=10, do_sample=False, output_scores=True)
    with torch.inference_mode():
        before = model.generate(ids, return_dict_in_generate=True, **options)
        assert use_step_attention(model)
        assert model.config._attn_implementation == NAME
        after = model.generate(ids, return_dict_in_generate=True, **options)
    assert torch.equal(after.sequences, before.sequences)
    for new, old in zip(after.scores, before.scores):
        torch.testing.assert_close(new.float(), old.float(), rtol=0.05, atol=0.05)


def test_a_model_on_another_attention_is_left_alone(tiny_model_dir):
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, attn_implementation="eager")
    assert not use_step_attention(model)
    assert model.config._attn_implementation == "eager"
