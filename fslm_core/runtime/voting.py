"""Sampling with a vote: a stage's samples for one input reduced to one, by the most common answer key."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence

from ..answer_forms import canonical_number, has_answer_form
from ..api.backends import Generation
from ..api.tools import Tool
from ..declarations import Vote
from ..messages import SampleVote
from .tool_runs import run_each

_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?|-?\.\d+")


def last_number(text: str) -> str | None:
    """The last number in ``text`` in a canonical form (``1,200.0`` -> ``1200``), or None if it has none."""
    found = _NUMBER.findall(text)
    if not found:
        return None
    return canonical_number(found[-1].replace(",", ""))


def answer_keys(texts: Sequence[str], vote: Vote, tool: Tool | None) -> list[str | None]:
    """Each sample's answer key under ``vote``: its last number, its text, or its tool's output (None: no key,
    as for a key that is not of the vote's ``answer_form``)."""
    keys = _keys(texts, vote, tool)
    if vote.answer_form is None:
        return keys
    return [key if key is not None and has_answer_form(key, vote.answer_form) else None for key in keys]


def _keys(texts: Sequence[str], vote: Vote, tool: Tool | None) -> list[str | None]:
    if vote.by == "number":
        return [last_number(text) for text in texts]
    if vote.by == "text":
        return [text.strip().lower() or None for text in texts]
    assert tool is not None, f"vote by {vote.by!r} needs its tool"
    results = run_each(tool, texts, vote.tool_options)
    keys = []
    for result in results:
        output = result.text.strip()
        keys.append((canonical_number(output) or output) if result.ok and output else None)
    return keys


def vote_on(samples: Sequence[Generation], keys: Sequence[str | None]) -> Generation:
    """One input's samples reduced to the winner, carrying every sample's key and all their costs.

    The most common key wins; a tie goes to the sample with the higher mean
    log-probability; with no key at all, the most probable sample wins.
    """
    counts = Counter(key for key in keys if key is not None)

    def rank(index: int) -> tuple:
        logprob = samples[index].mean_logprob
        return (counts.get(keys[index], 0) if keys[index] is not None else -1, logprob if logprob is not None else -1e9)

    winner = max(range(len(samples)), key=rank)
    chosen = samples[winner]
    votes = [
        SampleVote(text=sample.text, key=key, mean_logprob=sample.mean_logprob, chosen=index == winner)
        for index, (sample, key) in enumerate(zip(samples, keys, strict=True))
    ]
    return Generation(
        text=chosen.text,
        prompt_tokens=sum(sample.prompt_tokens for sample in samples),
        completion_tokens=sum(sample.completion_tokens for sample in samples),
        latency_s=chosen.latency_s,
        batch_size=chosen.batch_size,
        mean_logprob=chosen.mean_logprob,
        min_logprob=chosen.min_logprob,
        p10_logprob=chosen.p10_logprob,
        votes=votes,
    )
