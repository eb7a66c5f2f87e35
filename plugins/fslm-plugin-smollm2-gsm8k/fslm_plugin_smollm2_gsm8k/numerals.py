"""The ``numerals`` tool: a word problem with its quantities written as digits.

"sells three quarters of them" becomes "sells 3/4 of them", "twice as many"
"2 times as many", "twenty-four muffins" "24 muffins". The program stage
copies numbers into code, and about half of GSM8K's questions state a quantity
in words; the idea was that digits are easier to copy. Measured before the
shipped program stage (its adapter trained on the questions as written), it
did not change the score: examples/gsm8k_experiment/notes.md in the
repository. Cardinals and ordinals are read by ``text2num``; fractions and
multiplicatives by the rules below, which stay conservative: a fraction word
becomes a fraction only with a count before it and "of" after it ("a
quarter of", "two thirds of"), so "the third day" and "three quarters" (the
coins) keep their meaning.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from text_to_num import alpha2digit

from fslm_core.api import Tool, ToolResult

_COUNTS = {
    "a": 1,
    "an": 1,
    "one": 1,
    "two": 2,
    "three": 3,
    "four": 4,
    "five": 5,
    "six": 6,
    "seven": 7,
    "eight": 8,
    "nine": 9,
    "ten": 10,
}
_PARTS = {
    "half": 2,
    "halves": 2,
    "third": 3,
    "thirds": 3,
    "quarter": 4,
    "quarters": 4,
    "fourth": 4,
    "fourths": 4,
    "fifth": 5,
    "fifths": 5,
    "sixth": 6,
    "sixths": 6,
    "eighth": 8,
    "eighths": 8,
    "tenth": 10,
    "tenths": 10,
}
_FRACTION_OF = re.compile(
    rf"\b({'|'.join(_COUNTS)}|\d+)[\s-]+({'|'.join(_PARTS)})(?=\s+of\b)",
    re.IGNORECASE,
)
_HALF_OF = re.compile(r"\bhalf(?=\s+(?:of|as|the|a|an)\b)", re.IGNORECASE)
_AND_A_HALF = re.compile(rf"\b({'|'.join(_COUNTS)}|\d+)\s+and\s+a\s+half\b", re.IGNORECASE)
CARDINAL_THRESHOLD = 1.5
"""text2num writes a lone number word as digits only above this: "two eggs" becomes "2 eggs", "one of them" stays."""
_TIMES = {"twice": "2 times", "thrice": "3 times"}
_MULTIPLE = re.compile(rf"\b({'|'.join(_TIMES)})\b", re.IGNORECASE)


def _count(word: str) -> int:
    return int(word) if word.isdigit() else _COUNTS[word.lower()]


def _fraction(match: re.Match[str]) -> str:
    return f"{_count(match.group(1))}/{_PARTS[match.group(2).lower()]}"


def _and_a_half(match: re.Match[str]) -> str:
    return f"{_count(match.group(1))}.5"


def _multiple(match: re.Match[str]) -> str:
    return _TIMES[match.group(1).lower()]


def with_digits(text: str) -> str:
    """``text`` with the quantities it writes in words written as digits (fractions as ``n/d``)."""
    text = _AND_A_HALF.sub(_and_a_half, text)
    text = _FRACTION_OF.sub(_fraction, text)
    text = _HALF_OF.sub("1/2", text)
    text = _MULTIPLE.sub(_multiple, text)
    return alpha2digit(text, "en", threshold=CARDINAL_THRESHOLD)


class NumeralsTool(Tool):
    name = "numerals"
    description = "the input with its quantities as digits: 'three quarters of' -> '3/4 of', 'twice' -> '2 times'"
    concurrency = 1  # microseconds of work: a thread pool would cost more than it saves

    def run(self, text: str, options: Mapping[str, Any]) -> ToolResult:
        return ToolResult(with_digits(text))
