"""Messages and traces: the readable record of a stack's run.

Each stage writes one :class:`Message` per input; a :class:`Trace` holds the
original prompt, every message in the order the stages ran, and the answer.
Both are pydantic models, so a trace serialises to JSON and back unchanged.
"""

from __future__ import annotations

import textwrap
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class Message(BaseModel):
    """What one stage wrote for one input."""

    model_config = ConfigDict(extra="forbid")

    stage: str
    text: str
    fields: dict[str, Any] | None = Field(
        default=None, description="Parsed fields, where the stage's message format defines them."
    )
    model: str = Field(description="Model id the stage ran on.")
    adapter: str | None = Field(default=None, description="Adapter folder the stage ran with, if any.")
    prompt_tokens: int = Field(ge=0)
    completion_tokens: int = Field(ge=0)
    latency_s: float = Field(ge=0.0, description="Wall time of the batch that produced this message.")
    batch_size: int = Field(ge=1, description="How many inputs that batch held.")
    cached: bool = Field(default=False, description="Read from the stage cache, not generated in this run.")


class Trace(BaseModel):
    """One input's way through the stack."""

    model_config = ConfigDict(extra="forbid")

    stack: str
    prompt: str
    messages: list[Message] = Field(default_factory=list)
    answer: str | None = None

    def message(self, stage: str) -> Message | None:
        """The message a stage wrote, or None if it did not run for this input."""
        for message in self.messages:
            if message.stage == stage:
                return message
        return None

    def to_json(self, indent: int | None = None) -> str:
        return self.model_dump_json(indent=indent)

    def render(self, width: int = 100) -> str:
        """The trace as text a person reads top to bottom."""
        lines = [f"prompt: {self.prompt}"]
        for number, message in enumerate(self.messages, start=1):
            adapter = "adapter" if message.adapter else "base"
            head = f"[{number}] {message.stage}  ({message.model}, {adapter}, {message.completion_tokens} tokens)"
            lines.append(head)
            body = message.text.strip() or "(empty)"
            for paragraph in body.splitlines():
                lines.extend(textwrap.wrap(paragraph, width, initial_indent="    ", subsequent_indent="    ") or [""])
        lines.append(f"answer: {self.answer}")
        return "\n".join(lines)
