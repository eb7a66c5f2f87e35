"""How much of a multiple-choice score the most common correct option explains.

Where most documents share one correct option (BoolQ's "yes" is right on
about six in ten), a system that leans towards that option scores well without
reading the documents, and a difference between two systems can be a
difference in lean. The report therefore shows, per multiple-choice task, the
score of always giving the most common correct option; and on two-option tasks,
where a wrong answer is the other option, each system's share of documents it
answered with that option, read off its per-document scores.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

ACCURACY_METRICS = ("acc", "acc_norm")
"""Metrics whose per-document score says whether the chosen option was the correct one."""


@dataclass(frozen=True)
class MostCommonAnswer:
    """The correct options of a task's scored documents."""

    gold: Mapping[int, int]
    """Document id -> index of its correct option."""
    options: Mapping[int, int]
    """Document id -> how many options it has."""
    labels: Sequence[str] | None = None
    """The options' text where every document has the same ones (BoolQ's "no", "yes")."""

    @property
    def option(self) -> int:
        return Counter(self.gold.values()).most_common(1)[0][0]

    @property
    def name(self) -> str:
        """The most common option as the report names it: its index, and its text where it is fixed."""
        return f'option {self.option} ("{self.labels[self.option]}")' if self.labels else f"option {self.option}"

    @property
    def share(self) -> float:
        """The score of always giving the most common correct option."""
        return sum(1 for gold in self.gold.values() if gold == self.option) / len(self.gold)

    @property
    def two_options(self) -> bool:
        return all(count == 2 for count in self.options.values())

    def share_answered(self, scores: Mapping[str, float]) -> float | None:
        """On a two-option task, the share of documents a system answered with the most common option."""
        if not self.two_options:
            return None
        ids = [doc for doc in self.gold if str(doc) in scores]
        if not ids:
            return None
        chose = sum(1 for doc in ids if (scores[str(doc)] == 1.0) == (self.gold[doc] == self.option))
        return chose / len(ids)


def correct_options(task: str, ids: Sequence[int], manager) -> MostCommonAnswer | None:
    """The correct option of each document ``ids`` of a multiple-choice ``task``, as lm-eval scores it."""
    from lm_eval.tasks import get_task_dict

    loaded = get_task_dict([task], manager)[task]
    if loaded.OUTPUT_TYPE != "multiple_choice" or loaded.config.process_results is not None:
        # A task that scores documents its own way (TruthfulQA's mc2 weighs every true option) has no
        # single correct option to count.
        return None
    docs = loaded.eval_docs
    gold: dict[int, int] = {}
    options: dict[int, int] = {}
    texts: set[tuple[str, ...]] = set()
    for doc_id in ids:
        doc = docs[doc_id]
        choices = loaded.doc_to_choice(doc)
        # WinoGrande-style tasks put the options in the context and the answer index in doc_to_text.
        target = loaded.doc_to_text(doc) if loaded.multiple_input else loaded.doc_to_target(doc)
        if isinstance(target, str):
            target = choices.index(target) if target in choices else None
        if not isinstance(target, int):
            return None  # several correct options: no single most common one
        gold[doc_id] = target
        options[doc_id] = len(choices)
        texts.add(tuple(str(choice) for choice in choices))
    if not gold:
        return None
    labels = next(iter(texts)) if len(texts) == 1 and not loaded.multiple_input else None
    return MostCommonAnswer(gold, options, labels)
