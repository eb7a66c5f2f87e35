"""Evaluators: score a stage's outputs against target messages.

Used to find the weak stage of a stack: each stage's messages on held-out
examples are scored against the targets written for it.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Sequence

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
