"""Fitting a stage's prompt into what it may read: a prompt too long is cut from its start, its end kept."""

from __future__ import annotations

from dataclasses import dataclass

from ..api.backends import ModelBackend, TokenizedBackend
from ..declarations import Stage
from ..logs import get_logger
from ..messages import Trace
from .binding import BoundStack, BoundStage
from .stage_inputs import render_stage_prompt

log = get_logger(__name__)


def stage_budget(item: BoundStage) -> int | None:
    """Most tokens a stage's rendered prompt may take: its ``max_prompt_tokens``, within its model's context.

    None when neither the stage nor its model says.
    """
    settings = item.stage.generation
    backend = item.backend
    context = backend.spec.context_length
    if context is None and isinstance(backend, TokenizedBackend):
        context = backend.max_sequence_length
    budgets = [settings.max_prompt_tokens, context - settings.max_new_tokens if context else None]
    budgets = [budget for budget in budgets if budget is not None]
    return max(min(budgets), 1) if budgets else None


def prompt_tokens(backend: ModelBackend, text: str) -> int | None:
    """Tokens ``text`` takes as a generation prompt of ``backend``; None if the backend cannot count them."""
    if isinstance(backend, TokenizedBackend):
        return len(backend.encode(text))
    try:
        return backend.count_tokens(text)
    except NotImplementedError:
        return None


@dataclass(frozen=True)
class FittedPrompt:
    """A stage's rendered prompt within its budget, and how much of the user's prompt it kept."""

    text: str
    tokens: int | None
    budget: int | None
    kept_characters: int | None = None  # set when the user's prompt was cut


def fit_stage_prompt(bound: BoundStack, stage: Stage, trace: Trace) -> FittedPrompt:
    """The stage's prompt for ``trace``; a user prompt too long for the stage's budget is cut from its start.

    The end of the prompt is kept (a request usually ends with its question);
    the instruction, template and read messages are kept whole. The share of
    characters kept follows the share of the prompt's tokens that fit, cut
    again if the first cut was not enough.
    """
    item = bound.stages[stage.name]
    text = render_stage_prompt(bound, stage, trace)
    budget = stage_budget(item)
    # A token is at least one byte for the tokenizers fslm meets: short prompts need no count.
    if budget is None or len(text.encode("utf-8")) + 8 <= budget:
        return FittedPrompt(text, None, budget)
    tokens = prompt_tokens(item.backend, text)
    if tokens is None or tokens <= budget:
        return FittedPrompt(text, tokens, budget)
    prompt = trace.prompt
    for _ in range(8):
        own = prompt_tokens(item.backend, prompt) or len(prompt)
        keep = own - (tokens - budget)  # the prompt's tokens that fit
        # Keep that share of its characters, a little less: token lengths vary along a text.
        kept = int(len(prompt) * keep / own * 0.97) if keep > 0 else 0
        prompt = prompt[len(prompt) - kept :] if kept else ""
        space = prompt.find(" ", 0, 16)  # start at a word
        prompt = prompt[space + 1 :] if space >= 0 else prompt
        text = render_stage_prompt(bound, stage, trace, prompt)
        tokens = prompt_tokens(item.backend, text) or 0
        if tokens <= budget or not prompt:
            break
    return FittedPrompt(text, tokens, budget, kept_characters=len(prompt))


def report_cuts(cuts: dict[str, dict[str, FittedPrompt]]) -> None:
    """One warning for all the prompts a run had to cut."""
    fitted = [prompt for by_stage in cuts.values() for prompt in by_stage.values()]
    log.warning(
        "prompt longer than its stages read: cut from its start, its end kept"
        if len(cuts) == 1
        else f"{len(cuts)} prompts longer than their stages read: cut from their start, their ends kept",
        prompt_characters=max(len(prompt) for prompt in cuts),
        kept_characters=min(prompt.kept_characters for prompt in fitted),
        stage_budget_tokens=min(prompt.budget for prompt in fitted),
        stages=sorted({stage for by_stage in cuts.values() for stage in by_stage}),
        hint="a stage's generation.max_prompt_tokens (fslm run --max-prompt-tokens) sets the budget",
    )
