"""Messages and traces: the readable record of a stack's run.

Each stage writes one :class:`Message` per input; a :class:`Trace` holds the
original prompt, every message in the order the stages ran, the answer, and
the routing decisions taken on the way (:class:`RoutingDecision`). All are
pydantic models, so a trace serialises to JSON and back unchanged; fields added
later have defaults, so traces written by an older fslm still load.
"""

from __future__ import annotations

import textwrap
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class SampleVote(BaseModel):
    """One of the outputs a sampling stage wrote for an input, the answer key its vote read, and whether it won."""

    model_config = ConfigDict(extra="forbid")

    text: str
    key: str | None = Field(description="The answer the vote counted for it; None when it had none.")
    mean_logprob: float | None = None
    chosen: bool = False


class Message(BaseModel):
    """What one stage wrote for one input."""

    model_config = ConfigDict(extra="forbid")

    stage: str
    text: str
    fields: dict[str, Any] | None = Field(
        default=None, description="Parsed fields, where the stage's message format defines them."
    )
    model: str = Field(description="Model id the stage ran on, or tool:<name> for a tool stage.")
    adapter: str | None = Field(
        default=None,
        description="Adapter the stage ran with, if any: its folder, or its name on the server that applied it.",
    )
    prompt_tokens: int = Field(ge=0)
    completion_tokens: int = Field(ge=0)
    latency_s: float = Field(ge=0.0, description="Wall time of the batch that produced this message.")
    batch_size: int = Field(ge=1, description="How many inputs that batch held.")
    cached: bool = Field(default=False, description="Read from the stage cache, not generated in this run.")
    mean_logprob: float | None = Field(
        default=None,
        le=0.0,
        description="Mean log-probability of the generated tokens under the model: how sure it was (None if "
        "the backend does not report it).",
    )
    min_logprob: float | None = Field(default=None, le=0.0, description="The least probable token's log-probability.")
    p10_logprob: float | None = Field(
        default=None, le=0.0, description="The 10th percentile of the tokens' log-probabilities."
    )
    parse_error: str | None = Field(
        default=None,
        description="Why the stage's message format could not parse the text (the raw text stays in `text`).",
    )
    votes: list[SampleVote] | None = Field(
        default=None, description="A sampling stage's samples and the vote that kept this message's text."
    )

    @property
    def is_tool(self) -> bool:
        return self.model.startswith("tool:")

    def render(self, number: int, width: int = 100) -> str:
        """The message as the ``number``-th step of a rendered trace: a header line, then its text, indented."""
        if self.is_tool:
            lines = [f"[{number}] {self.stage}  ({self.model})"]
        else:
            adapter = "adapter" if self.adapter else "base"
            lines = [f"[{number}] {self.stage}  ({self.model}, {adapter}, {self.completion_tokens} tokens)"]
        for paragraph in (self.text.strip() or "(empty)").splitlines():
            lines.extend(textwrap.wrap(paragraph, width, initial_indent="    ", subsequent_indent="    ") or [""])
        if self.parse_error:
            lines.append(f"    (not parsed: {self.parse_error})")
        if self.votes:
            lines.append(f"    ({self.vote_summary()})")
        return "\n".join(lines)

    @property
    def agreement(self) -> float | None:
        """A sampling stage's share of samples whose answer is the kept one's (None for a stage that did not
        sample; 0 when no sample had an answer)."""
        chosen = next((vote for vote in self.votes or () if vote.chosen), None)
        if chosen is None:
            return None
        if chosen.key is None:
            return 0.0
        return sum(vote.key == chosen.key for vote in self.votes) / len(self.votes)

    def vote_summary(self) -> str:
        """``vote: 3 of 5 samples say 16`` for a sampling stage's message."""
        chosen = next((vote for vote in self.votes or () if vote.chosen), None)
        if chosen is None:
            return ""
        if chosen.key is None:
            return f"vote: no sample of {len(self.votes)} had an answer; kept the most probable"
        agree = sum(vote.key == chosen.key for vote in self.votes)
        return f"vote: {agree} of {len(self.votes)} samples say {chosen.key}"


class RoutingDecision(BaseModel):
    """What a router decided about one stage for one input, and why."""

    model_config = ConfigDict(extra="forbid")

    stage: str = Field(min_length=1, description="The stage the decision is about.")
    decision: str = Field(
        min_length=1, description='What the router did with the stage, e.g. "ran", "skipped", "exit", "dispatch".'
    )
    router: str = Field(min_length=1, description="Name of the router that decided.")
    reason: str = Field(default="", description="A short reason a person can read.")

    def render(self) -> str:
        reason = f": {self.reason}" if self.reason else ""
        return f"{self.stage} {self.decision} ({self.router}){reason}"


class Trace(BaseModel):
    """One input's way through the stack."""

    model_config = ConfigDict(extra="forbid")

    stack: str
    prompt: str
    messages: list[Message] = Field(default_factory=list)
    answer: str | None = None
    routing: list[RoutingDecision] = Field(
        default_factory=list, description="Routing decisions in the order they were taken (none for a plain run)."
    )

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
        lines += [message.render(number, width) for number, message in enumerate(self.messages, start=1)]
        lines.append(self.render_ending())
        return "\n".join(lines)

    def render_ending(self) -> str:
        """The routing decisions and the answer: what :meth:`render` prints after the messages."""
        return "\n".join([*(f"route: {decision.render()}" for decision in self.routing), f"answer: {self.answer}"])
