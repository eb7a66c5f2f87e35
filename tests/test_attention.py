"""The decoding-step attention computes what transformers' SDPA attention computes."""

import types

import pytest
import torch
from transformers import AutoModelForCausalLM
from transformers.integrations.sdpa_attention import sdpa_attention_forward

from fslm_core.runtime.attention import NAME, step_attention, use_step_attention


def grouped_attention_module(heads: int, key_heads: int) -> types.SimpleNamespace:
    return types.SimpleNamespace(num_key_value_groups=heads // key_heads, is_causal=True)


@pytest.mark.parametrize("mask_kind", ["bool", "additive", "none"])
def test_one_query_step_matches_sdpa_on_a_padded_grouped_cache(mask_kind):
    generator = torch.Generator().manual_seed(0)
    rows, heads, key_heads, positions, dim = 5, 6, 2, 11, 16
    query = torch.randn(rows, heads, 1, dim, generator=generator)
    # Views of wider buffers, as the engine's reserved cache hands them over.
    key = torch.randn(rows, key_heads, positions + 4, dim, generator=generator)[:, :, :positions]
    value = torch.randn(rows, key_heads, positions + 4, dim, generator=generator)[:, :, :positions]
    allowed = torch.arange(positions)[None, :] >= torch.tensor([0, 3, 0, 7, 1])[:, None]  # left padding
    mask = {
        "bool": allowed[:, None, None, :],
        "additive": torch.zeros(rows, 1, 1, positions).masked_fill(~allowed[:, None, None, :], float("-inf")),
        "none": None,
    }[mask_kind]
    module = grouped_attention_module(heads, key_heads)
    expected, _ = sdpa_attention_forward(module, query, key, value, mask, scaling=dim**-0.5)
    got, weights = step_attention(module, query, key, value, mask, scaling=dim**-0.5)
    assert weights is None
    assert got.shape == expected.shape == (rows, 1, heads, dim)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


def test_prefill_and_other_dtypes_go_to_sdpa_unchanged():
    generator = torch.Generator().manual_seed(1)
    module = grouped_attention_module(4, 2)
    query, key, value = (torch.randn(2, n, 7, 8, generator=generator) for n in (4, 2, 2))
    expected, _ = sdpa_attention_forward(module, query, key, value, None, scaling=0.3)
    got, _ = step_attention(module, query, key, value, None, scaling=0.3)
    torch.testing.assert_close(got, expected, rtol=0, atol=0)
    bf16_step = (query[:, :, -1:].bfloat16(), key.bfloat16(), value.bfloat16())
    expected, _ = sdpa_attention_forward(module, *bf16_step, None, scaling=0.3)
    got, _ = step_attention(module, *bf16_step, None, scaling=0.3)
    torch.testing.assert_close(got, expected, rtol=0, atol=0)


def test_a_model_generates_the_same_tokens_with_it(tiny_model_dir):
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
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
        torch.testing.assert_close(new, old, rtol=1e-5, atol=1e-5)


def test_a_model_on_another_attention_is_left_alone(tiny_model_dir):
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, attn_implementation="eager")
    assert not use_step_attention(model)
    assert model.config._attn_implementation == "eager"
