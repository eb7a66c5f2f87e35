"""Answer forms: what an answer must look like to be worth keeping (a number, a whole number).

A program-aided stack's answer is whatever its program printed; when that is a
fraction, a negative count or an error, the answer is wrong whatever the
model's confidence. A cascade can defer such answers (``Deferral.answer_form``)
and a vote can leave such samples out (``Vote.answer_form``).
"""

from __future__ import annotations

import re

_PLAIN_NUMBER = re.compile(r"\$?-?(?:[0-9]{1,3}(?:,[0-9]{3})+|[0-9]+)(?:\.[0-9]+)?\.?")
"""A number as a program prints it or a person writes it: digits, thousands separators, a decimal part, a
leading ``$`` and a closing full stop; not ``1e3``, ``+5``, ``1_000`` or other digits than 0-9."""


def canonical_number(text: str) -> str | None:
    """``text`` as a number in one spelling (``72.0`` -> ``72``, ``0.50`` -> ``0.5``), or None if it is not one."""
    try:
        value = float(text)
    except ValueError:
        return None
    if value != value or value in (float("inf"), float("-inf")):
        return None
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return f"{value:.6f}".rstrip("0").rstrip(".")


def as_number(answer: str | None) -> float | None:
    """The answer's value when the answer is a number and nothing else (thousands separators, a leading ``$``
    and a closing full stop allowed), else None."""
    text = answer.strip() if answer is not None else ""
    if not _PLAIN_NUMBER.fullmatch(text):
        return None
    return float(text.removeprefix("$").rstrip(".").replace(",", ""))


def _is_number(answer: str | None) -> bool:
    return as_number(answer) is not None


def _is_whole_number(answer: str | None) -> bool:
    value = as_number(answer)
    return value is not None and value >= 0 and value == int(value)


ANSWER_FORMS = {"number": _is_number, "whole_number": _is_whole_number}
"""``number``: the answer is a number and nothing else; ``whole_number``: a number that is a whole number, 0 or
more (a count of things, as every GSM8K answer is)."""


def has_answer_form(answer: str | None, form: str) -> bool:
    """Whether ``answer`` has the named form (one of :data:`ANSWER_FORMS`)."""
    return ANSWER_FORMS[form](answer)
