"""Settings a stage declares: how it generates, when routers run or end it, how a sampling stage votes."""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from .answer_forms import ANSWER_FORMS

PROMPT_FIELD = "prompt"


def _known_form(form: str) -> str:
    if form not in ANSWER_FORMS:
        raise ValueError(f"expected one of {', '.join(ANSWER_FORMS)}, got {form!r}")
    return form


AnswerForm = Annotated[str, AfterValidator(_known_form)]
"""The form an answer should have (``fslm_core.answer_forms``): a vote or a deferral reads it."""


class GenerationSettings(BaseModel):
    """How a stage generates. Greedy by default, so runs repeat exactly."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_new_tokens: int = Field(default=128, gt=0, le=8192)
    temperature: float = Field(default=0.0, ge=0.0, description="0 means greedy decoding.")
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    repetition_penalty: float = Field(default=1.0, gt=0.0)
    stop: tuple[str, ...] = Field(default=(), description="Generation ends at the first of these strings.")
    max_prompt_tokens: int | None = Field(
        default=None,
        gt=0,
        description="Most tokens the stage reads (its whole prompt: instruction, template, prompt and messages). "
        "A longer user prompt is cut from its start, keeping its end. None: the model's context length "
        "minus max_new_tokens.",
    )

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


class Condition(BaseModel):
    """A test on the user's prompt or on one stage's message; routers run, skip or end a stage on it.

    Every test given must hold (``negate`` turns the result over). Text tests
    ignore case. A condition on a stage that did not run for an input does not hold.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    stage: str = Field(min_length=1, description=f"Whose text is tested: a stage's name, or {PROMPT_FIELD!r}.")
    contains: str | None = Field(default=None, min_length=1, description="The text contains this.")
    matches: str | None = Field(default=None, min_length=1, description="This regular expression is found in the text.")
    min_mean_logprob: float | None = Field(
        default=None,
        le=0.0,
        description="The stage's mean token log-probability is at least this: the model was that sure of it.",
    )
    negate: bool = Field(default=False, description="Hold when the tests do not.")

    @model_validator(mode="after")
    def _has_a_test(self) -> Condition:
        if self.contains is None and self.matches is None and self.min_mean_logprob is None:
            raise ValueError("give at least one test: contains, matches or min_mean_logprob")
        if self.matches is not None:
            try:
                re.compile(self.matches)
            except re.error as error:
                raise ValueError(f"matches: not a regular expression: {error}") from None
        if self.stage == PROMPT_FIELD and self.min_mean_logprob is not None:
            raise ValueError(f"min_mean_logprob: the {PROMPT_FIELD!r} was not generated")
        return self


class Dispatch(BaseModel):
    """A classifier stage picks one route: the stages that run for an input after it.

    The route is the first label found in the classifier's message (ignoring
    case), else ``default``. Stages after the classifier that are in no route
    run on every route (a shared final stage, say).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    classifier: str = Field(min_length=1, description="The stage whose message names the route.")
    routes: dict[str, tuple[str, ...]] = Field(min_length=2, description="Label -> the stages that run for it.")
    default: str | None = Field(default=None, description="The route when no label is found (default: the first).")

    @model_validator(mode="after")
    def _default_is_a_route(self) -> Dispatch:
        if self.default is not None and self.default not in self.routes:
            raise ValueError(f"default: {self.default!r} is not a route (routes: {sorted(self.routes)})")
        for label in self.routes:
            if not label.strip():
                raise ValueError("routes: a label is empty")
        return self

    @property
    def fallback(self) -> str:
        return self.default or next(iter(self.routes))


class Vote(BaseModel):
    """How a stage that samples several outputs keeps one: the most common answer key wins.

    Ties go to the sample the model was surer of (higher mean log-probability).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    by: str = Field(
        default="number",
        min_length=1,
        description="Each sample's answer key: 'number' (its last number), 'text' (its text, trimmed, lower case) "
        "or the name of a tool run on it (its output; a failed run gives no key).",
    )
    tool_options: dict[str, Any] = Field(default_factory=dict, description="Options of the tool named by `by`.")
    answer_form: AnswerForm | None = Field(
        default=None,
        description=f"Only keys of this form count ({', '.join(ANSWER_FORMS)}): a sample whose key is another "
        "(a fraction where a count is asked, an error) gets no key.",
    )


GENERATION_SIGNALS = ("mean_logprob", "min_logprob", "p10_logprob", "agreement")
"""Confidence in a generated answer, from its tokens' log-probabilities: their mean, their minimum, and their
10th percentile (a low quantile is less biased by length than the mean: Gupta et al., ICLR 2024); and, for
a stage that samples k outputs and votes, the share of samples that agree with the kept answer. Where the
answer comes from a tool stage, the signals are those of the model-written message the tool ran."""
SCORING_SIGNALS = ("choice_margin", "choice_margin_raw", "choice_probability")
"""Confidence in a multiple-choice answer, from the log-likelihoods of its choices: the gap between the best
two length-normalised scores (as ``acc_norm`` ranks them), the same gap between summed scores (as ``acc``
ranks them), and the most likely choice's probability after a softmax over the summed scores."""


class Deferral(BaseModel):
    """When an answer goes to the fallback: its confidence ``signal`` is below ``below``, or the answer is not
    of the ``answer_form`` it should have. Give a signal and its threshold, an answer form, or both."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    signal: str | None = Field(
        default=None, min_length=1, description="Which confidence signal is compared with the threshold."
    )
    below: float | None = Field(
        default=None, description="Inputs whose signal is lower than this are answered by the fallback."
    )
    answer_form: AnswerForm | None = Field(
        default=None,
        description=f"Inputs whose answer is not of this form ({', '.join(ANSWER_FORMS)}) are answered by the "
        "fallback, whatever their signal.",
    )

    @model_validator(mode="after")
    def _complete(self) -> Deferral:
        if (self.signal is None) != (self.below is None):
            raise ValueError("give signal and below together (the threshold is on that signal)")
        if self.signal is None and self.answer_form is None:
            raise ValueError("give signal and below, answer_form, or both: when an input is deferred")
        return self


class Fallback(BaseModel):
    """Where an input goes when the stack is unsure of its answer (a cascade), and when it is unsure.

    The fallback is a stack (a file, a folder or a registered name) or a model
    alone. ``generation`` decides for generated answers (``fslm run``, serving,
    ``generate_until`` tasks), ``scoring`` for multiple-choice scoring
    (lm-eval's ``loglikelihood`` tasks); give one or both.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    stack: str | None = Field(default=None, min_length=1, description="A stack file or folder, or a stack's name.")
    model: str | None = Field(default=None, min_length=1, description="A model id answering alone.")
    generation: Deferral | None = Field(default=None, description=f"Signals: {', '.join(GENERATION_SIGNALS)}.")
    scoring: Deferral | None = Field(default=None, description=f"Signals: {', '.join(SCORING_SIGNALS)}.")

    @model_validator(mode="after")
    def _complete(self) -> Fallback:
        if (self.stack is None) == (self.model is None):
            raise ValueError("give either stack or model (what answers the deferred inputs)")
        if self.generation is None and self.scoring is None:
            raise ValueError("give generation, scoring or both: when an input is deferred")
        for field, deferral, known in (
            ("generation", self.generation, GENERATION_SIGNALS),
            ("scoring", self.scoring, SCORING_SIGNALS),
        ):
            if deferral is not None and deferral.signal is not None and deferral.signal not in known:
                raise ValueError(f"{field}.signal: expected one of {', '.join(known)}, got {deferral.signal!r}")
        if self.scoring is not None and self.scoring.answer_form is not None:
            raise ValueError("scoring.answer_form: a scored choice is always one of its choices; use generation")
        return self

    @property
    def label(self) -> str:
        return self.stack or f"model:{self.model}"
