"""The row-retiring decoder gives what transformers' generate gives, token for token."""

import pytest
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer

from fslm_core import GenerationSettings
from fslm_core.decoding import decode

PROMPTS = ["What is the capital of France?", "Hi", "Name three primary colors, please, in order."]


@pytest.fixture(scope="module")
def model_and_batch(tiny_model_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    tokenizer.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    batch = tokenizer(PROMPTS, return_tensors="pt", padding=True)
    return model, tokenizer, batch


def reference(model, tokenizer, batch, settings, eos, **extra):
    with torch.inference_mode():
        output = model.generate(
            **batch, max_new_tokens=settings.max_new_tokens, do_sample=False, eos_token_id=eos,
            pad_token_id=tokenizer.pad_token_id, repetition_penalty=settings.repetition_penalty, **extra,
        )
    rows = []
    for row in output[:, batch["input_ids"].shape[1]:].tolist():
        cut = next((i + 1 for i, token in enumerate(row) if token == eos), len(row))
        rows.append(row[:cut])
    return rows


def early_eos(model, tokenizer, batch):
    """A token that the first row generates at step 3: as EOS it ends that row early, not the others."""
    free = reference(model, tokenizer, batch, GenerationSettings(max_new_tokens=12), eos=-1)
    token = free[0][3]
    assert any(token not in row for row in free[1:]), "pick another step: every row makes this token"
    return token


@pytest.mark.parametrize("penalty", [1.0, 1.3])
def test_greedy_decoding_matches_generate_while_rows_retire(model_and_batch, penalty):
    model, tokenizer, batch = model_and_batch
    eos = early_eos(model, tokenizer, batch)
    settings = GenerationSettings(max_new_tokens=12, repetition_penalty=penalty)
    with torch.inference_mode():
        ours = decode(model, batch["input_ids"], batch["attention_mask"], settings, {eos})
    assert ours == reference(model, tokenizer, batch, settings, eos)
    assert len({len(row) for row in ours}) > 1  # rows really ended at different steps


def test_mixed_adapter_rows_match_generate(model_and_batch, tiny_adapters):
    model, tokenizer, batch = model_and_batch
    peft_model = PeftModel.from_pretrained(model, str(tiny_adapters[0]), adapter_name="a")
    peft_model.load_adapter(str(tiny_adapters[1]), adapter_name="b")
    names = ["a", "__base__", "b"]
    settings = GenerationSettings(max_new_tokens=10)
    with torch.inference_mode():
        ours = decode(peft_model, batch["input_ids"], batch["attention_mask"], settings, {-1}, adapter_names=names)
    assert ours == reference(peft_model, tokenizer, batch, settings, eos=-1, adapter_names=names)
    peft_model.unload()


def test_stop_strings_end_a_row(model_and_batch):
    model, tokenizer, batch = model_and_batch
    free = decode(model, batch["input_ids"], batch["attention_mask"], GenerationSettings(max_new_tokens=12), {-1})
    # The first clean piece of text after a few tokens of row 1 (random tokens may be partial UTF-8).
    end, stop_text = next(
        (end, text) for end in range(4, 12)
        if (text := tokenizer.decode(free[1][end - 2 : end])).strip() and "\ufffd" not in text
    )
    settings = GenerationSettings(max_new_tokens=12, stop=[stop_text])
    stopped = decode(model, batch["input_ids"], batch["attention_mask"], settings, {-1}, tokenizer=tokenizer)
    assert len(stopped[1]) <= end
    assert stop_text in tokenizer.decode(stopped[1])
