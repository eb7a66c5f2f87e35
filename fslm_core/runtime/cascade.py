"""Cascades: the inputs a stack is unsure of are answered by its fallback, a larger stack or model.

A stack's ``fallback`` names what answers deferred inputs and when an input is
deferred: its confidence signal (:data:`~fslm_core.stage_settings.GENERATION_SIGNALS`
for a generated answer, :data:`~fslm_core.stage_settings.SCORING_SIGNALS` for a
multiple-choice one) is below a threshold (``fslm calibrate`` picks it). Every
input records which path answered and why, as a routing decision of the
``fallback`` router: a person reads it in the trace, a report counts it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from ..answer_forms import has_answer_form
from ..declarations import Stack
from ..messages import Message, RoutingDecision, Trace
from ..plugins.registry import Registry
from ..stage_settings import Deferral
from .stack_choice import resolve_stack, single_model_stack

FALLBACK_ROUTER = "fallback"
FALLBACK_STAGE_PREFIX = "fallback."
"""The fallback's messages join the trace after the stack's own, their stage names prefixed with this."""
DEFERRED, KEPT = "defer", "keep"


def fallback_stack(stack: Stack, registry: Registry | None = None) -> Stack:
    """The stack that answers ``stack``'s deferred inputs (with its own dtype: a quantised model keeps its own)."""
    fallback = stack.fallback
    if fallback is None:
        raise ValueError(f"stack {stack.name!r} has no fallback")
    if fallback.model is not None:
        return single_model_stack(fallback.model)
    return resolve_stack(fallback.stack, registry=registry)


def without_fallback(stack: Stack) -> Stack:
    """``stack`` answering everything itself (what a cascade runs first, and what calibration measures)."""
    return stack if stack.fallback is None else stack.model_copy(update={"fallback": None})


def defers(value: float | None, deferral: Deferral, answer: str | None = None) -> bool:
    """Whether an input goes to the fallback: its answer is not of the deferral's form, or its signal is below
    the threshold (an unknown signal, as without log-probabilities, is)."""
    return wrong_form(answer, deferral) or below_threshold(value, deferral)


def wrong_form(answer: str | None, deferral: Deferral) -> bool:
    """Whether the answer is not of the form the deferral asks for (False when it asks for none)."""
    return deferral.answer_form is not None and not has_answer_form(answer, deferral.answer_form)


def below_threshold(value: float | None, deferral: Deferral) -> bool:
    """Whether the signal alone defers: it is below the threshold, or unknown (False without a threshold)."""
    if deferral.signal is None:
        return False
    return value is None or math.isnan(value) or value < deferral.below


def decision(
    stage: str, value: float | None, deferral: Deferral, fallback: str, answer: str | None = None
) -> RoutingDecision:
    """The routing decision for one input, with the signal, threshold and answer form a person can check."""
    if wrong_form(answer, deferral):
        reason = f"answer {_shorten(answer)} is not a {deferral.answer_form}: answered by {fallback}"
        return RoutingDecision(stage=stage, decision=DEFERRED, router=FALLBACK_ROUTER, reason=reason)
    kept_form = f"answer is a {deferral.answer_form}" if deferral.answer_form is not None else ""
    if deferral.signal is None:
        return RoutingDecision(stage=stage, decision=KEPT, router=FALLBACK_ROUTER, reason=f"{kept_form}: kept")
    shown = "unknown" if value is None else f"{value:.3f}"
    if below_threshold(value, deferral):
        reason = f"{deferral.signal} {shown} < {deferral.below:g}: answered by {fallback}"
        return RoutingDecision(stage=stage, decision=DEFERRED, router=FALLBACK_ROUTER, reason=reason)
    kept = f"{deferral.signal} {shown} >= {deferral.below:g}" + (f", {kept_form}" if kept_form else "")
    return RoutingDecision(stage=stage, decision=KEPT, router=FALLBACK_ROUTER, reason=f"{kept}: kept")


def _shorten(answer: str | None, limit: int = 40) -> str:
    if answer is None:
        return "(none)"
    text = " ".join(answer.split())
    return repr(text if len(text) <= limit else text[: limit - 1] + "…")


def answering_message(trace: Trace) -> Message | None:
    """The message the trace's answer came from: where the input left the stack, else the last one."""
    for routed in trace.routing:
        if routed.decision == "exit":
            return trace.message(routed.stage)
    return trace.messages[-1] if trace.messages else None


def generation_signal(trace: Trace, signal: str) -> float | None:
    """How sure the stack was of its answer: the signal of the message it came from, or, when a tool wrote
    that message (a program's output, a calculation), of the nearest model-written message before it."""
    message = answering_message(trace)
    if message is None:
        return None
    position = next(index for index, candidate in enumerate(trace.messages) if candidate is message)
    for candidate in reversed(trace.messages[: position + 1]):
        if not candidate.is_tool:
            return getattr(candidate, signal)
    return None


def defer_uncertain(
    stack: Stack,
    traces: Sequence[Trace],
    run: Callable[..., list[Trace]],
    registry: Registry | None = None,
    **options,
) -> list[int]:
    """Send the traces whose signal is below the threshold, or whose answer is not of the deferral's form, to
    the fallback (``run`` runs a stack); in place.

    A deferred trace keeps the stack's messages, gains the fallback's (stage
    names prefixed with :data:`FALLBACK_STAGE_PREFIX`) and takes the
    fallback's answer. Returns the positions of the deferred traces.
    """
    fallback = stack.fallback
    if fallback is None or fallback.generation is None:
        return []
    deferred = []
    for index, trace in enumerate(traces):
        message = answering_message(trace)
        signal = fallback.generation.signal
        value = generation_signal(trace, signal) if signal is not None else None
        stage = message.stage if message else stack.final_stage.name
        trace.routing.append(decision(stage, value, fallback.generation, fallback.label, trace.answer))
        if defers(value, fallback.generation, trace.answer):
            deferred.append(index)
    if deferred:
        prompts = [traces[index].prompt for index in deferred]
        answers = run(fallback_stack(stack, registry), prompts, registry=registry, **options)
        for index, answer in zip(deferred, answers, strict=True):
            trace = traces[index]
            trace.messages.extend(as_fallback_messages(answer.messages))
            trace.routing.extend(
                routed.model_copy(update={"stage": FALLBACK_STAGE_PREFIX + routed.stage}) for routed in answer.routing
            )
            trace.answer = answer.answer
    return deferred


def as_fallback_messages(messages: Sequence[Message]) -> list[Message]:
    """The fallback's messages as they join a deferred input's trace: stage names prefixed."""
    return [message.model_copy(update={"stage": FALLBACK_STAGE_PREFIX + message.stage}) for message in messages]


def choice_signals(choices: Sequence[tuple[str, float]]) -> dict[str, float | None]:
    """A multiple-choice answer's confidence signals from its choices' (continuation, summed log-probability).

    Normalised scores divide by the continuation's length in characters (without
    the space before it), as lm-eval's ``acc_norm`` ranks choices. With fewer
    than two choices there is nothing to be unsure between: every signal is None.
    """
    if len(choices) < 2:
        return {name: None for name in ("choice_margin", "choice_margin_raw", "choice_probability")}
    raw = sorted((logprob for _, logprob in choices), reverse=True)
    normalised = sorted((logprob / max(len(text.lstrip(" ")), 1) for text, logprob in choices), reverse=True)
    top = raw[0]
    total = sum(math.exp(value - top) for value in raw)
    return {
        "choice_margin": normalised[0] - normalised[1],
        "choice_margin_raw": raw[0] - raw[1],
        "choice_probability": 1.0 / total,
    }
