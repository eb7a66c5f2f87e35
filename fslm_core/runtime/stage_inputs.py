"""What a stage reads: its template filled with the prompt and the messages it reads, laid out by its backend."""

from __future__ import annotations

from collections.abc import Collection

from ..api.formats import MessageFormat
from ..declarations import PROMPT_FIELD, Stage
from ..messages import Trace
from .binding import BoundStack

MISSING_MESSAGE = "(none)"


def default_template(stage: Stage) -> str:
    """The prompt, then each read message under a heading naming its stage.

    A tool stage reads the one message it reads as it is (the prompt if it reads none): a program or an
    expression, with nothing around it.
    """
    if stage.tool is not None and len(stage.reads) <= 1:
        return f"{{{stage.reads[0] if stage.reads else PROMPT_FIELD}}}"
    parts = [f"User request:\n{{{PROMPT_FIELD}}}"]
    parts += [f"From the {read} step:\n{{{read}}}" for read in stage.reads]
    return "\n\n".join(parts)


def stage_input(
    stage: Stage,
    trace: Trace,
    formats: dict[str, MessageFormat],
    prompt: str | None = None,
    empty_when_unparsed: Collection[str] = (),
) -> str:
    """The text a stage reads for one trace: its template filled with the prompt (or ``prompt``) and messages.

    A message that did not parse reads as its raw text, or as nothing when its
    stage is in ``empty_when_unparsed``.
    """
    values = {PROMPT_FIELD: trace.prompt if prompt is None else prompt}
    for read in stage.reads:
        message = trace.message(read)
        if message is None:
            values[read] = MISSING_MESSAGE
        elif message.parse_error is not None and read in empty_when_unparsed:
            values[read] = ""
        else:
            values[read] = formats[read].render(message.text, message.fields)
    return (stage.template or default_template(stage)).format_map(values)


def stage_instruction(stage: Stage, message_format: MessageFormat) -> str:
    """The stage's instruction plus what its message format asks of the layout."""
    if message_format.instructions:
        return f"{stage.instruction} {message_format.instructions}"
    return stage.instruction


def render_stage_prompt(bound: BoundStack, stage: Stage, trace: Trace, prompt: str | None = None) -> str:
    """The full model input of a stage for one trace, laid out by its backend; ``prompt`` replaces the trace's."""
    item = bound.stages[stage.name]
    return item.backend.render_prompt(
        stage_instruction(stage, item.format),
        stage_input(stage, trace, bound.formats, prompt, bound.empty_when_unparsed),
    )
