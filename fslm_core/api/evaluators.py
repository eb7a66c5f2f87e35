"""Evaluators: score a stage on held-out examples against its target messages.

Used to find the weak stage of a stack. An :class:`Evaluator` scores the
texts a stage writes against the targets written for it; a
:class:`StageScorer` scores the stage's model itself (the built-in
``target-loss``: the loss of the targets given the inputs), from the
:class:`StageJob` that holds the stage's loaded model, inputs and targets.
"""

from __future__ import annotations

import re
import string
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Sequence
from typing import ClassVar

from ..declarations import Stage
from .backends import ModelBackend

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = str.maketrans("", "", string.punctuation)


def normalise(text: str) -> str:
    """Lower case, no punctuation or articles, single spaces (SQuAD-style)."""
    return " ".join(_ARTICLES.sub(" ", text.lower().translate(_PUNCTUATION)).split())


class Evaluator:
    """Scores predictions against references; returns metric name -> mean score."""

    name = "evaluator"
    description = ""

    def score(self, predictions: Sequence[str], references: Sequence[str]) -> dict[str, float]:
        raise NotImplementedError


class StageJob(ABC):
    """One stage's held-out examples: its loaded model, the rendered inputs and the targets."""

    stage: Stage
    backend: ModelBackend
    adapter_name: str | None
    prompts: list[str]
    references: list[str]
    batch_size: int
    max_length: int  # tokens of input plus target a scorer reads at once

    @abstractmethod
    def predictions(self) -> list[str]:
        """The stage's own messages for the inputs (generated once, with its adapter)."""


class StageScorer(ABC):
    """Scores a stage's model on its held-out inputs and targets; returns metric name -> score.

    Registered through ``register_evaluators`` like an :class:`Evaluator`, for
    metrics that need the model rather than the texts it wrote.
    """

    name: ClassVar[str]
    description: ClassVar[str] = ""

    @abstractmethod
    def score_stage(self, job: StageJob) -> dict[str, float]:
        """Metric name -> score of the stage in ``job``."""


class ExactMatch(Evaluator):
    name = "exact-match"
    description = "Share of outputs equal to the target after normalisation."

    def score(self, predictions, references):
        hits = [normalise(p) == normalise(r) for p, r in zip(predictions, references, strict=True)]
        return {"exact_match": sum(hits) / len(hits) if hits else 0.0}


class TokenF1(Evaluator):
    name = "token-f1"
    description = "Mean token-overlap F1 between output and target (SQuAD-style)."

    @staticmethod
    def f1(prediction: str, reference: str) -> float:
        predicted, expected = normalise(prediction).split(), normalise(reference).split()
        if not predicted or not expected:
            return float(predicted == expected)
        common = sum((Counter(predicted) & Counter(expected)).values())
        if common == 0:
            return 0.0
        precision, recall = common / len(predicted), common / len(expected)
        return 2 * precision * recall / (precision + recall)

    def score(self, predictions, references):
        scores = [self.f1(p, r) for p, r in zip(predictions, references, strict=True)]
        return {"token_f1": sum(scores) / len(scores) if scores else 0.0}


BUILTIN_EVALUATORS = (ExactMatch(), TokenF1())
