"""Helpers for testing stacks and plugins without downloading anything.

``build_tiny_model`` writes a randomly initialised model of any transformers
architecture and a locally trained byte-level BPE tokenizer to a folder, so a
test can go through the real loading path (``from_pretrained``, peft, the
engine) in seconds. Plugin authors use it to test their model families.
"""

from __future__ import annotations

from pathlib import Path

CHATML_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<pad>")

_CORPUS = [
    "What is the capital of France? The capital of France is Paris.",
    "List the key facts needed to answer the question.",
    "Restate what the user is asking in one sentence.",
    "Work out a short draft answer step by step.",
    "Write the final answer to the user's request.",
    "Red, blue and yellow are the primary colors.",
    "Twelve plus seven is nineteen: 12 + 7 = 19.",
    "The quick brown fox jumps over the lazy dog.",
]


def build_tokenizer(folder: str | Path, vocab_size: int = 320, chat_template: bool = True):
    """Train a byte-level BPE tokenizer on a small built-in corpus and save it to ``folder``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(_CORPUS * 4, trainer=trainer)
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        eos_token="<|im_end|>" if chat_template else "<|endoftext|>",
        bos_token="<|endoftext|>",
        pad_token="<pad>",
        unk_token=None,
    )
    if chat_template:
        wrapped.chat_template = CHATML_TEMPLATE
    wrapped.save_pretrained(folder)
    return wrapped


def build_tiny_model(
    folder: str | Path,
    config=None,
    chat_template: bool = True,
    seed: int = 0,
) -> Path:
    """Save a tiny random causal LM and its tokenizer to ``folder`` and return the folder.

    ``config`` is a transformers config of the architecture to test (its
    vocabulary size and special token ids are set to fit the tokenizer);
    the default is a two-layer Llama.
    """
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    folder = Path(folder)
    tokenizer = build_tokenizer(folder, chat_template=chat_template)
    if config is None:
        config = LlamaConfig(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=512,
        )
    config.vocab_size = len(tokenizer)
    config.pad_token_id = tokenizer.pad_token_id
    config.eos_token_id = tokenizer.eos_token_id
    config.bos_token_id = tokenizer.bos_token_id
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.save_pretrained(folder)
    return folder


def build_random_adapter(base_folder: str | Path, adapter_folder: str | Path, seed: int, target_modules=None, rank: int = 4) -> Path:
    """Save a LoRA adapter with random (non-zero) weights for the model in ``base_folder``.

    peft initialises LoRA's B matrix to zero, which would make an untrained
    adapter a no-op; random weights make each adapter change the output.
    """
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base_folder)
    config = LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=target_modules, init_lora_weights=False)
    get_peft_model(model, config).save_pretrained(adapter_folder)
    return Path(adapter_folder)
