"""The stage decoder gives what transformers' generate gives, token for token.

Greedy decoding makes the comparison exact: shared prefixes, prefill chunks,
the reserved cache and retiring rows must not change a single token.
"""

import pytest
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer

from fslm_core import GenerationSettings
from fslm_core.runtime import decoding
from fslm_core.runtime.decoding import (
    ReservedLayer,
    compaction,
    decode,
    full_attention_only,
    prefill_chunks,
    select_rows,
    shared_prefix,
)
from fslm_core.runtime.reading_progress import decoder_layers, reading_progress
from fslm_core.testing import build_tiny_model, tiny_config

PROMPTS = ["What is the capital of France?", "Hi", "Name three primary colors, please, in order."]
INSTRUCTION = "Restate what the user is asking in one sentence."


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    tokenizer.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    return model, tokenizer


def prefixed_prompts(tokenizer) -> list[list[int]]:
    """Stage-like prompts: one instruction, then each request (a long shared prefix).

    A tiny random model is swayed mostly by the last tokens, so the requests
    come last, where they make the rows' outputs differ.
    """
    return [tokenizer(f"<|im_start|>system\n{INSTRUCTION}<|im_end|>\n{text}")["input_ids"] for text in PROMPTS]


def plain_prompts(tokenizer) -> list[list[int]]:
    return [tokenizer(text)["input_ids"] for text in PROMPTS]


def reference(model, tokenizer, prompts, settings, eos, **extra):
    batch = tokenizer.pad({"input_ids": prompts}, padding=True, return_tensors="pt")
    with torch.inference_mode():
        output = model.generate(
            **batch,
            max_new_tokens=settings.max_new_tokens,
            do_sample=False,
            eos_token_id=eos,
            pad_token_id=tokenizer.pad_token_id,
            repetition_penalty=settings.repetition_penalty,
            **extra,
        )
    rows = []
    for row in output[:, batch["input_ids"].shape[1] :].tolist():
        cut = next((i + 1 for i, token in enumerate(row) if token == eos), len(row))
        rows.append(row[:cut])
    return rows


def ours(model, tokenizer, prompts, settings, eos_ids, **extra):
    with torch.inference_mode():
        return decode(model, prompts, settings, eos_ids, tokenizer.pad_token_id, tokenizer=tokenizer, **extra)


def early_eos(model, tokenizer, prompts):
    """A token that, taken as EOS, ends the rows at different steps (row 0 after a few tokens)."""
    free = reference(model, tokenizer, prompts, GenerationSettings(max_new_tokens=12), eos=-1)
    for step in range(2, 10):
        token = free[0][step]
        ends = {row.index(token) if token in row else None for row in free}
        if len(ends) > 1:
            return token
    raise AssertionError("no token ends the rows at different steps: pick other prompts")


@pytest.mark.parametrize("penalty", [1.0, 1.3])
@pytest.mark.parametrize("layout", [plain_prompts, prefixed_prompts])
def test_greedy_decoding_matches_generate_while_rows_retire(tiny, penalty, layout):
    model, tokenizer = tiny
    prompts = layout(tokenizer)
    eos = early_eos(model, tokenizer, prompts)
    settings = GenerationSettings(max_new_tokens=12, repetition_penalty=penalty)
    got = ours(model, tokenizer, prompts, settings, {eos})
    assert got == reference(model, tokenizer, prompts, settings, eos)
    assert len({len(row) for row in got}) > 1  # rows really ended at different steps


def test_shared_prefix_and_one_row_chunks_match_generate(tiny, monkeypatch):
    model, tokenizer = tiny
    prompts = prefixed_prompts(tokenizer) * 2  # six rows, so some chunks hold the same prompt twice
    assert shared_prefix(prompts) > 10
    settings = GenerationSettings(max_new_tokens=10)
    expected = reference(model, tokenizer, prompts, settings, eos=-1)
    assert ours(model, tokenizer, prompts, settings, {-1}) == expected
    monkeypatch.setattr(decoding, "PREFILL_TOKENS", 1)  # every row its own prefill pass
    assert ours(model, tokenizer, prompts, settings, {-1}) == expected


def test_each_prefill_pass_reports_the_prompt_tokens_it_read(tiny, monkeypatch):
    model, tokenizer = tiny
    prompts = plain_prompts(tokenizer)
    settings = GenerationSettings(max_new_tokens=4)
    monkeypatch.setattr(decoding, "PREFILL_TOKENS", 1)  # every row its own pass
    read: list[int] = []
    assert ours(model, tokenizer, prompts, settings, {-1}, on_prefill=read.append) == reference(
        model, tokenizer, prompts, settings, eos=-1
    )
    assert sorted(read) == sorted(len(prompt) for prompt in prompts)


def test_reading_a_long_prompt_shows_progress_layer_by_layer_then_takes_its_hooks_off(tiny, monkeypatch, capsys):
    model, tokenizer = tiny
    monkeypatch.setenv("FSLM_PROGRESS_SECONDS", "0")  # a line at every update
    prompts = plain_prompts(tokenizer)
    total = sum(len(prompt) for prompt in prompts)
    layers = decoder_layers(model)
    with reading_progress(model, total, "tiny: reading the prompt", show=True) as prompt_read:
        ours(model, tokenizer, prompts, GenerationSettings(max_new_tokens=3), {-1}, on_prefill=prompt_read)
        assert all(not layer._forward_hooks for layer in layers)  # off before the decoding steps ended
    lines = [line for line in capsys.readouterr().err.splitlines() if "reading the prompt" in line]
    counts = [float(line.split("/")[0].split()[-1]) for line in lines]
    assert len(set(counts)) > 3 and counts == sorted(counts) and counts[-1] == total


def test_mixed_adapter_rows_match_generate(tiny, tiny_adapters):
    model, tokenizer = tiny
    peft_model = PeftModel.from_pretrained(model, str(tiny_adapters[0]), adapter_name="a")
    peft_model.load_adapter(str(tiny_adapters[1]), adapter_name="b")
    try:
        # Two rows per adapter share their prefix; each adapter's prefix has its own keys and values.
        prompts = prefixed_prompts(tokenizer) + prefixed_prompts(tokenizer)[:2]
        names = ["a", "__base__", "b", "b", "a"]
        settings = GenerationSettings(max_new_tokens=10)
        got = ours(peft_model, tokenizer, prompts, settings, {-1}, adapter_names=names)
        assert got == reference(peft_model, tokenizer, prompts, settings, eos=-1, adapter_names=names)
        assert got[0] != got[2]  # the adapters really differ
    finally:
        peft_model.unload()


def test_stop_strings_end_a_row(tiny):
    model, tokenizer = tiny
    prompts = plain_prompts(tokenizer)
    free = ours(model, tokenizer, prompts, GenerationSettings(max_new_tokens=12), {-1})
    # The first clean piece of text after a few tokens of row 1 (random tokens may be partial UTF-8).
    end, stop_text = next(
        (end, text)
        for end in range(4, 12)
        if (text := tokenizer.decode(free[1][end - 2 : end])).strip() and "\ufffd" not in text
    )
    settings = GenerationSettings(max_new_tokens=12, stop=[stop_text])
    stopped = ours(model, tokenizer, prompts, settings, {-1})
    assert len(stopped[1]) <= end
    assert stop_text in tokenizer.decode(stopped[1])


def test_sliding_window_model_keeps_transformers_cache_and_matches_generate(tmp_path, one_torch_thread):
    config = tiny_config("phi3", num_key_value_heads=2, sliding_window=8)
    folder = build_tiny_model(tmp_path / "phi3", config=config)
    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    tokenizer.padding_side = "left"
    assert not full_attention_only(model)
    prompts = prefixed_prompts(tokenizer)  # longer than the window: the window really applies
    settings = GenerationSettings(max_new_tokens=10)
    assert ours(model, tokenizer, prompts, settings, {-1}) == reference(model, tokenizer, prompts, settings, eos=-1)


def test_empty_prompt_is_refused(tiny):
    model, tokenizer = tiny
    with pytest.raises(ValueError, match="at least one token"):
        ours(model, tokenizer, [[5, 6], []], GenerationSettings(max_new_tokens=2), {-1})


def test_shared_prefix_leaves_every_row_a_token():
    assert shared_prefix([[1, 2, 3, 4], [1, 2, 3, 5], [1, 2, 9]]) == 2
    assert shared_prefix([[1, 2, 3], [1, 2, 3]]) == 2
    assert shared_prefix([[7], [7, 8]]) == 0
    assert shared_prefix([[1, 2], [3, 4]]) == 0


def test_prefill_chunks_are_the_cheapest_split_within_the_budget(monkeypatch):
    monkeypatch.setattr(decoding, "PASS_COST", 4)
    monkeypatch.setattr(decoding, "PREFILL_TOKENS", 30)
    lengths = {0: 10, 1: 3, 2: 9, 3: 8, 4: 2, 5: 10, 6: 31}
    chunks = prefill_chunks(lengths, list(lengths))

    def cost(split):
        return sum(4 + len(chunk) * max(lengths[r] for r in chunk) for chunk in split)

    ordered = sorted(lengths, key=lambda r: -lengths[r])
    splits = []  # every split of the longest-first order into runs within the budget
    for mask in range(2 ** (len(ordered) - 1)):
        split, start = [], 0
        for end in range(1, len(ordered) + 1):
            if end == len(ordered) or mask >> (end - 1) & 1:
                split.append(ordered[start:end])
                start = end
        if all(len(c) == 1 or len(c) * lengths[c[0]] <= 30 for c in split):
            splits.append(split)
    assert sorted(r for chunk in chunks for r in chunk) == sorted(lengths)
    assert cost(chunks) == min(map(cost, splits))
    assert chunks[0] == [6]  # longer than the budget: alone
    assert all(len(c) == 1 or len(c) * lengths[c[0]] <= 30 for c in chunks)


def test_compaction_moves_last_live_rows_into_holes():
    finished = torch.tensor([False, True, False, True, False, False])
    keep = compaction(finished)
    assert keep.tolist() == [0, 4, 2, 5]
    buffer = torch.arange(6)[:, None].repeat(1, 3)
    assert select_rows(buffer.clone(), keep)[:, 0].tolist() == [0, 4, 2, 5]
    # Any other selection is a plain gather.
    assert select_rows(buffer.clone(), torch.tensor([3, 0]))[:, 0].tolist() == [3, 0]


def test_a_cropped_reserved_layer_forgets_positions_and_writes_over_them():
    keys, values = torch.zeros(2, 1, 6, 4), torch.zeros(2, 1, 6, 4)
    layer = ReservedLayer(keys, values, length=3)
    layer.update(torch.ones(2, 1, 2, 4), torch.ones(2, 1, 2, 4))
    assert layer.get_seq_length() == 5 and layer.keys.shape[-2] == 5
    layer.crop(-2)  # transformers' Cache.crop passes a negative count
    assert layer.get_seq_length() == 3 and layer.keys.shape[-2] == 3 and layer.values.shape[-2] == 3
    written, _ = layer.update(torch.full((2, 1, 1, 4), 7.0), torch.full((2, 1, 1, 4), 7.0))
    assert written[:, :, 3].eq(7).all() and layer.get_seq_length() == 4
    with pytest.raises(ValueError, match="negative"):
        layer.crop(2)
