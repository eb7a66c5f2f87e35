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

TINY_INSTRUCTIONS = [
    {"instruction": "Name the capital of France.", "input": "", "output": "Paris."},
    {"instruction": "Add the numbers.", "input": "12 and 7", "output": "19"},
    {"instruction": "Name a primary color.", "input": "", "output": "Red."},
    {"instruction": "Give the opposite word.", "input": "hot", "output": "cold"},
]
"""Alpaca-format rows for a few distillation and training steps on a tiny model."""

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


TINY_SIZES = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "max_position_embeddings": 512,
}
"""Sizes that make a model of any common architecture load, run and train in well under a second."""


def tiny_config(model_type: str, **overrides):
    """A transformers config of ``model_type`` ("llama", "gpt_neox", "phi3", ...) at :data:`TINY_SIZES`.

    ``overrides`` set what the architecture under test needs (grouped-query
    heads, partial rotary embeddings, a sliding window).
    """
    from transformers import AutoConfig

    return AutoConfig.for_model(model_type, **{**TINY_SIZES, **overrides})


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
    from transformers import AutoModelForCausalLM

    folder = Path(folder)
    tokenizer = build_tokenizer(folder, chat_template=chat_template)
    if config is None:
        config = tiny_config("llama", num_key_value_heads=2)
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


def build_random_adapter(base, adapter_folder: str | Path, seed: int, target_modules=None, rank: int = 4) -> Path:
    """Save a LoRA adapter with random (non-zero) weights for ``base`` and return its folder.

    ``base`` is a model folder or an already loaded model (nothing is changed
    on it: only its module shapes are read). peft initialises LoRA's B matrix
    to zero, which would make an untrained adapter a no-op; random weights
    make each adapter change the output.
    """
    import torch
    from peft import LoraConfig
    from safetensors.torch import save_file

    if isinstance(base, (str, Path)):
        from transformers import AutoModelForCausalLM

        base = AutoModelForCausalLM.from_pretrained(base)
    targets = set(target_modules or _default_targets(base))
    generator = torch.Generator().manual_seed(seed)
    tensors = {}
    for name, module in base.named_modules():
        if name.rsplit(".", 1)[-1] not in targets:
            continue
        weight = getattr(module, "weight", None)
        if weight is None or weight.dim() != 2:
            continue
        out_features, in_features = _linear_shape(module)
        prefix = f"base_model.model.{name}"
        tensors[f"{prefix}.lora_A.weight"] = torch.randn(rank, in_features, generator=generator) / in_features**0.5
        tensors[f"{prefix}.lora_B.weight"] = torch.randn(out_features, rank, generator=generator) / rank**0.5
    if not tensors:
        raise ValueError(f"no module named {sorted(targets)} in {type(base).__name__}")
    folder = Path(adapter_folder)
    folder.mkdir(parents=True, exist_ok=True)
    LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=sorted(targets)).save_pretrained(folder)
    save_file(tensors, folder / "adapter_model.safetensors")
    return folder


def _linear_shape(module) -> tuple[int, int]:
    """(out, in) of a linear layer; GPT-2's Conv1D stores its weight transposed."""
    rows, columns = module.weight.shape
    return (columns, rows) if type(module).__name__ == "Conv1D" else (rows, columns)


def _default_targets(model) -> list[str]:
    from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING

    targets = TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING.get(model.config.model_type)
    if not targets:
        raise ValueError(f"give target_modules: peft has no default for {model.config.model_type!r}")
    return list(targets)


def safetensors_dtypes(path: str | Path) -> set[str]:
    """The dtypes of the tensors in a safetensors file, read from its header alone (``{"F16"}``...)."""
    import json
    import struct

    with open(path, "rb") as handle:
        (length,) = struct.unpack("<Q", handle.read(8))
        header = json.loads(handle.read(length))
    return {info["dtype"] for name, info in header.items() if name != "__metadata__"}
