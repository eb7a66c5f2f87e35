"""How a transformers tokenizer's model reads a stage's prompt: laid out by its chat template where it has one
(and its spec allows it), else by the spec's plain template; encoded as generation reads it. Shared by the
transformers backend and by backends that keep only the tokenizer locally (fslm-plugin-remote)."""

from __future__ import annotations

from ..api.backends import ModelSpec


def uses_chat_template(spec: ModelSpec, tokenizer) -> bool:
    return bool(spec.chat_template and getattr(tokenizer, "chat_template", None))


def render_prompt(spec: ModelSpec, tokenizer, chat: bool, instruction: str, user_text: str) -> str:
    if chat:
        messages = [{"role": "system", "content": instruction}, {"role": "user", "content": user_text}]
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return spec.prompt_template.format(instruction=instruction, input=user_text)


def encode_prompt(tokenizer, chat: bool, text: str) -> list[int]:
    # A chat template already holds its special tokens; plain prompts get the tokenizer's own.
    return tokenizer(text, add_special_tokens=not chat)["input_ids"]
