"""The OpenAI-compatible request and response shapes ``fslm serve`` speaks.

Requests are pydantic models that ignore fields they do not know, as other
OpenAI-compatible servers do (``n``, ``logit_bias``, penalties, tools...: see
docs/serving.md); fields they know are checked, and a wrong one is answered
with OpenAI's error body naming it.
"""

from __future__ import annotations

import time
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, field_validator

from ..declarations import GenerationSettings
from ..messages import Message, Trace


class ApiError(Exception):
    """An error answered with OpenAI's error body: ``{"error": {"message", "type", "param", "code"}}``."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code

    def body(self) -> dict:
        kind = "invalid_request_error" if self.status < 500 else "server_error"
        return {"error": {"message": self.message, "type": kind, "param": self.param, "code": self.code}}


class TextPart(BaseModel):
    model_config = ConfigDict(extra="ignore")

    type: str
    text: str | None = None


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart] | None = None

    def text(self) -> str:
        if isinstance(self.content, list):
            return "\n".join(part.text for part in self.content if part.type == "text" and part.text)
        return self.content or ""


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")

    include_usage: StrictBool = False


class SamplingRequest(BaseModel):
    """What both endpoints share: the stack, the final stage's sampling, streaming and fslm's own fields."""

    model_config = ConfigDict(extra="ignore")

    # Strict types: "stream": "yes", "max_tokens": true or "seed": "7" are mistakes to name, not to coerce.
    model: str = Field(min_length=1)
    temperature: StrictFloat | None = Field(default=None, ge=0.0, le=2.0)
    top_p: StrictFloat | None = Field(default=None, gt=0.0, le=1.0)
    max_tokens: StrictInt | None = Field(default=None, ge=1, le=8192)
    stop: str | list[str] | None = None
    seed: StrictInt | None = None
    stream: StrictBool = False
    stream_options: StreamOptions | None = None
    fslm_trace: StrictBool = Field(default=True, description="fslm's extension: attach every stage's messages.")

    @field_validator("stop")
    @classmethod
    def at_most_four_stops(cls, value):
        stops = [value] if isinstance(value, str) else value
        if stops is not None and len(stops) > 4:
            raise ValueError("at most 4 stop sequences")
        return value

    def stops(self) -> tuple[str, ...]:
        if self.stop is None:
            return ()
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)

    def final_settings(self, declared: GenerationSettings) -> GenerationSettings:
        """The final stage's settings: the stack's own, with what the request sets replacing them."""
        update: dict[str, Any] = {}
        if self.temperature is not None:
            update["temperature"] = self.temperature
        if self.top_p is not None:
            update["top_p"] = self.top_p
        if self.max_tokens is not None:
            update["max_new_tokens"] = self.max_tokens
        if self.stop is not None:
            update["stop"] = self.stops()
        return declared.model_copy(update=update) if update else declared

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


class ChatRequest(SamplingRequest):
    messages: list[ChatMessage]
    max_completion_tokens: StrictInt | None = Field(default=None, ge=1, le=8192)

    def prompt(self) -> str:
        """The stack's prompt: the last user message, after the conversation before it when there is one."""
        if not self.messages:
            raise ApiError(400, "messages must hold at least one message", param="messages")
        last = self.messages[-1]
        if last.role != "user" or not last.text().strip():
            raise ApiError(400, "the last message must be a non-empty user message", param="messages")
        earlier = [f"{message.role}: {message.text()}" for message in self.messages[:-1] if message.text().strip()]
        return "\n".join([*earlier, f"user: {last.text()}"]) if earlier else last.text()

    def final_settings(self, declared: GenerationSettings) -> GenerationSettings:
        settings = super().final_settings(declared)
        if self.max_completion_tokens is not None and self.max_tokens is None:
            settings = settings.model_copy(update={"max_new_tokens": self.max_completion_tokens})
        return settings


class CompletionRequest(SamplingRequest):
    prompt: str | list[str]

    def prompts(self) -> list[str]:
        prompts = [self.prompt] if isinstance(self.prompt, str) else list(self.prompt)
        if not prompts:
            raise ApiError(400, "prompt must hold at least one prompt", param="prompt")
        for index, prompt in enumerate(prompts):
            if not prompt.strip():
                raise ApiError(400, f"prompt {index} is empty", param="prompt")
        return prompts


# Responses ------------------------------------------------------------------


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def usage(traces: list[Trace]) -> dict:
    """Every stage's tokens: what the request cost, not only what the final stage wrote."""
    prompt = sum(message.prompt_tokens for trace in traces for message in trace.messages)
    completion = sum(message.completion_tokens for trace in traces for message in trace.messages)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def finish_reason(trace: Trace, settings: GenerationSettings) -> str:
    final = trace.messages[-1] if trace.messages else None
    return "length" if final is not None and final.completion_tokens >= settings.max_new_tokens else "stop"


def trace_body(trace: Trace) -> dict:
    return trace.model_dump(mode="json")


def stage_event(message: Message) -> dict:
    """fslm's extension chunk: one stage's message, sent as soon as the stage has written it."""
    return message.model_dump(mode="json")


def chunk(kind: str, request_id: str, model: str, created: int, choices: list, **extra) -> dict:
    body = {"id": request_id, "object": kind, "created": created, "model": model, "choices": choices}
    body.update(extra)
    return body


def now() -> int:
    return int(time.time())
