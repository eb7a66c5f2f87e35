"""The ``numerals`` tool: quantities in words become digits, and words that only look like numbers stay."""

from __future__ import annotations

import pytest

from fslm_core import get_registry
from fslm_plugin_smollm2_gsm8k.numerals import with_digits


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("sells three quarters of them", "sells 3/4 of them"),
        ("gave one-third of the remainder", "gave 1/3 of the remainder"),
        ("a quarter of the day", "1/4 of the day"),
        ("half as many clips", "1/2 as many clips"),
        ("Half of the class", "1/2 of the class"),
        ("two and a half hours", "2.5 hours"),
        ("twice as many problems", "2 times as many problems"),
        ("twenty-four muffins and ten more", "24 muffins and 10 more"),
        ("two hundred and five apples", "205 apples"),
        ("on the third and fourth weeks", "on the 3rd and 4th weeks"),
        # Coins, not a fraction (no "of" follows): the count becomes a digit, the quarters stay.
        ("He pays with three quarters and a dime.", "He pays with 3 quarters and a dime."),
    ],
)
def test_quantities_in_words_become_digits(text, expected):
    assert with_digits(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "one of them stayed home",  # "one" as a pronoun
        "She bought 3 apples for $2.50.",
    ],
)
def test_words_that_are_no_quantity_stay(text):
    assert with_digits(text) == text


def test_the_tool_is_registered_and_writes_its_result_as_a_message():
    tool = get_registry().tool("numerals")
    result = tool.run("A baker makes two dozen muffins and sells a third of them.", {})
    assert result.ok and result.text == "A baker makes 2 dozen muffins and sells 1/3 of them."
