"""Checks that a stage's text does its role, used twice: to drop bad teacher targets before training,
and to score what trained stages write.

A check reads the text, the user prompt and the reference answer, and returns
why the text fails (a short reason) or None. Every teacher-written target is
first tidied to its role's shape (:func:`tidy_target`: a restatement keeps its
first sentence, a list its items, a text cut off at the teacher's token limit
its finished sentences), then checked for being empty, a copy of the prompt,
or repeating itself; a stage's recipe adds its role checks by name
(:data:`ROLE_CHECKS`). An example with any failing target is left out of
training for every stage, since later stages read the earlier targets.
"""

from __future__ import annotations

import dataclasses
import re
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from ..api.decompositions import Decomposition
from .distilled_data import DistilledExample

_WORD = re.compile(r"[a-z0-9]+")
_STOPWORDS = frozenset(
    "a an and are as at be by for from has have in is it its of on or that the their this to was were will with "
    "which who what when where why how your you can should would could not no yes do does did than then there "
    "these those they them he she his her we our i me my so if but also into about over more most such".split()
)
_LIST_ITEM = re.compile(r"^\s*(?:[-*\u2022]|\d+[.)])\s+\S")
_BULLET = re.compile(r"^\s*(?:[-*\u2022]|\d+[.)])\s+")
# A sentence ends at . ! or ? (and any closing quote) before a space or the end.
_SENTENCE_END = re.compile(r"[.!?][\"'\u201d)]*(?=\s|$)")
_ITEM_NUMBER = re.compile(r"(?:^|\n)[ \t]*\d{1,2}$")
MAX_LIST_ITEMS = 5


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def content_words(text: str) -> set[str]:
    return {word for word in words(text) if word not in _STOPWORDS and len(word) > 1}


def _longest_common_run(needle: Sequence[str], haystack: Sequence[str]) -> int:
    """Length of the longest run of words that appears in both, in order."""
    best = 0
    previous = [0] * (len(haystack) + 1)
    for a in needle:
        current = [0] * (len(haystack) + 1)
        for j, b in enumerate(haystack, start=1):
            if a == b:
                current[j] = previous[j - 1] + 1
                best = max(best, current[j])
        previous = current
    return best


def copies_prompt(text: str, prompt: str, reference: str = "") -> str | None:
    """The text is the prompt's words (however short), or most of it is one verbatim run of them adding nothing.

    A sentence that answers a question often echoes it: "Paris is the capital of
    France." shares a five-word run with "What is the capital of France?", but it
    says something the prompt does not (a content word the prompt lacks), so it is
    no copy.
    """
    text_words = words(text)
    if text_words and text_words == words(prompt):
        return "copies the prompt"
    if (
        len(text_words) >= 5
        and _longest_common_run(text_words, words(prompt)) >= 0.8 * len(text_words)
        and content_words(text) <= content_words(prompt)
    ):
        return "copies the prompt"
    return None


def repeats(text: str, prompt: str = "", reference: str = "") -> str | None:
    """A line or sentence of four or more words appears twice."""
    seen = set()
    for piece in re.split(r"[\n.!?]+", text):
        key = " ".join(words(piece))
        if len(key.split()) < 4:
            continue
        if key in seen:
            return "repeats itself"
        seen.add(key)
    return None


_GIVES_AN_ANSWER = re.compile(
    r"\b(the answer (to (this|the) question )?is|the correct (answer|option|choice) is|answer:)", re.IGNORECASE
)


def restates(text: str, prompt: str, reference: str) -> str | None:
    """A restatement: one or two sentences about the request that do not give away the answer.

    The answer's giveaway is the content words of the reference answer that the
    prompt does not contain: a restatement holding half of them answers, as
    does one that says "the answer is". A text sharing no content word with
    the prompt is about something else, and a copy of the prompt restates nothing.
    """
    if re.match(r"^\s*(yes|no)\b", text, re.IGNORECASE) or _GIVES_AN_ANSWER.search(text):
        return "answers instead of restating"
    if copies_prompt(text, prompt):
        return "copies the prompt"
    asked = content_words(prompt)
    if asked and not asked & content_words(text):
        return "is not about the request"
    novel = content_words(reference) - content_words(prompt)
    if novel and len(novel & content_words(text)) >= 0.5 * len(novel):
        return "answers instead of restating"
    if len(words(text)) > 60:
        return "too long to be a restatement"
    return None


_REFUSES = re.compile(
    r"\b(i (cannot|can't|can not|am unable to|don't know|do not know)|as an ai\b|i'm sorry|i am sorry)", re.IGNORECASE
)
_ONLY_RESTATES = re.compile(
    r"^\s*(the (task|user|request|question) (asks|wants|is asking)|you (want|are asking))", re.IGNORECASE
)


def answers(text: str, prompt: str, reference: str = "") -> str | None:
    """An answer: not a copy of the request, not the request restated, not a refusal, not a question back."""
    if copies_prompt(text, prompt):
        return "copies the prompt"
    if _ONLY_RESTATES.match(text):
        return "restates the request instead of answering"
    if _REFUSES.search(text):
        return "refuses instead of answering"
    sentences = [piece for piece in re.split(r"(?<=[.!?])\s+", text.strip()) if piece.strip()]
    if sentences and all(piece.rstrip().endswith("?") for piece in sentences):
        return "asks instead of answering"
    return None


def is_list(text: str, prompt: str = "", reference: str = "") -> str | None:
    """List items, one per line, and nothing else (a simple task may need a single fact)."""
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines or not all(_LIST_ITEM.match(line) for line in lines):
        return "not a list"
    return None


def no_repeats(text: str, prompt: str = "", reference: str = "") -> str | None:
    return repeats(text)


def sentence_ends(text: str) -> list[int]:
    """Where each sentence of ``text`` ends; the "1." that numbers a list item ends none."""
    return [m.end() for m in _SENTENCE_END.finditer(text) if not _ITEM_NUMBER.search(text, 0, m.start())]


def first_sentence(text: str) -> str:
    ends = sentence_ends(text)
    return text[: ends[0]] if ends else text


def finished_part(text: str) -> str:
    """``text`` up to the end of its last finished sentence ("" if none finished)."""
    ends = sentence_ends(text)
    return text[: ends[-1]] if ends else ""


def list_items(text: str) -> list[str]:
    return [_BULLET.sub("", line).strip() for line in text.splitlines() if _LIST_ITEM.match(line)]


def tidy_target(text: str, checks: Iterable[str], cut_off: bool = False) -> str:
    """A teacher's section in its role's shape; what a token limit cut off is dropped.

    Teachers write more than a 135M student should learn to: a second sentence
    of a restatement often gives the answer away, and a list runs on past its
    useful items.
    """
    checks = set(checks)
    text = text.strip()
    if "is-list" in checks:
        items = list_items(text)
        if not items:
            return text  # left as written, so the check can say it is not a list
        if cut_off:
            items = items[:-1]  # the last item may stop mid-way
        unique: dict[str, str] = {}
        for item in items:
            unique.setdefault(" ".join(words(item)), item)
        return "\n".join(f"- {item}" for item in list(unique.values())[:MAX_LIST_ITEMS])
    if cut_off:
        text = finished_part(text)
    if "restates" in checks:
        text = first_sentence(text)
    return text.strip()


Check = Callable[[str, str, str], "str | None"]

ROLE_CHECKS: dict[str, Check] = {
    "restates": restates,
    "is-list": is_list,
    "no-repeats": no_repeats,
    "answers": answers,
}
"""Role checks a :class:`~fslm_core.api.StageRecipe` names in ``checks``."""


def target_problem(
    text: str, prompt: str, reference: str, checks: Iterable[str], hit_token_limit: bool = False
) -> str | None:
    """Why a (tidied) teacher-written target should not be trained on, or None."""
    if not text.strip():
        return "cut off at the teacher's token limit" if hit_token_limit else "empty"
    for check in (copies_prompt, repeats, *(ROLE_CHECKS[name] for name in checks)):
        problem = check(text, prompt, reference)
        if problem:
            return problem
    return None


def role_problem(text: str, prompt: str, reference: str, checks: Iterable[str]) -> str | None:
    """Why a stage's output fails its role checks (empty counts), or None."""
    if not text.strip():
        return "empty"
    for check in (copies_prompt, *(ROLE_CHECKS[name] for name in checks)):
        problem = check(text, prompt, reference)
        if problem:
            return problem
    return None


@dataclass
class FilterReport:
    """What target filtering kept and dropped, with each stage's reasons."""

    kept: list[DistilledExample]
    dropped: list[DistilledExample]
    reasons: dict[str, Counter] = field(default_factory=dict)
    """Stage -> reason -> examples whose target for that stage failed for that reason (first reason only)."""

    def as_dict(self) -> dict:
        return {
            "kept": len(self.kept),
            "dropped": len(self.dropped),
            "reasons": {stage: dict(counter.most_common()) for stage, counter in self.reasons.items() if counter},
        }

    def render(self) -> str:
        lines = [f"targets: kept {len(self.kept)} examples, dropped {len(self.dropped)}"]
        for stage, counter in self.reasons.items():
            for reason, count in counter.most_common():
                lines.append(f"  {stage}: {count} {reason}")
        return "\n".join(lines)


def filter_examples(examples: Sequence[DistilledExample], decomposition: Decomposition) -> FilterReport:
    """Tidy every teacher-written target; keep the examples whose targets all pass their checks.

    The reference stage (the final one) is never dropped for its own text, since
    it is the data set's answer, not the teacher's. Kept examples carry the
    tidied targets.
    """
    report = FilterReport(kept=[], dropped=[], reasons={recipe.name: Counter() for recipe in decomposition.stages})
    reference_stage = decomposition.stages[-1].name
    checked = [recipe for recipe in decomposition.stages if recipe.name != reference_stage]
    for example in examples:
        reference = example.targets.get(reference_stage, "")
        targets = dict(example.targets)
        failed = False
        for recipe in checked:
            if recipe.name not in targets:
                continue
            cut_off = example.hit_token_limit.get(recipe.name, False)
            targets[recipe.name] = tidy_target(targets[recipe.name], recipe.checks, cut_off)
            problem = target_problem(targets[recipe.name], example.prompt, reference, recipe.checks, cut_off)
            if problem:
                report.reasons[recipe.name][problem] += 1
                failed = True
        if failed:
            report.dropped.append(example)
        else:
            report.kept.append(dataclasses.replace(example, targets=targets))
    return report
