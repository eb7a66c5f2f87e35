"""Answer forms: which answers are a number, or a whole number, as a cascade or a vote checks them."""

from __future__ import annotations

import pytest

from fslm_core.answer_forms import ANSWER_FORMS, as_number, canonical_number, has_answer_form


@pytest.mark.parametrize(
    ("answer", "number", "whole"),
    [
        ("16", True, True),
        ("16.0", True, True),
        ("$1,200.", True, True),
        (" 0 ", True, True),
        ("34.75", True, False),
        ("2.9999999999999996", True, False),  # the value, not a rounding of it
        ("1e3", False, False),
        ("+5", False, False),
        ("1_000", False, False),
        ("16..", False, False),
        ("-3", True, False),
        ("1,20", False, False),
        ("error: not an arithmetic expression: ''", False, False),
        ("The answer is 16.", False, False),
        ("nan", False, False),
        ("inf", False, False),
        ("", False, False),
        (None, False, False),
    ],
)
def test_an_answer_is_a_number_only_when_it_is_nothing_else(answer, number, whole):
    assert has_answer_form(answer, "number") is number
    assert has_answer_form(answer, "whole_number") is whole


def test_numbers_have_one_spelling():
    assert [canonical_number(text) for text in ("72.0", "0.50", "-3", "1e3", "x")] == ["72", "0.5", "-3", "1000", None]
    assert as_number("$1,200.") == 1200.0 and as_number("twelve") is None
    assert set(ANSWER_FORMS) == {"number", "whole_number"}
