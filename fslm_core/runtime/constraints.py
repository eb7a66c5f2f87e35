"""Constraints as llguidance grammars, and the check that a stage's declared constraint compiles.

Imports no torch (the engine checks stacks with it before loading anything);
the per-step masks are in :mod:`.format_masks`. Why llguidance and not
another structured-generation library is in docs/formats.md.
"""

from __future__ import annotations

from typing import Any

import llguidance

from ..api.formats import Constraint
from ..errors import DeclarationError

JSON_LAYOUT: dict[str, Any] = {"whitespace_flexible": False, "key_separator": ": ", "item_separator": ", "}
"""JSON written on one line with the separators models write anyway: no whitespace for a model to ramble in."""


def grammar_of(constraint: Constraint) -> str:
    """The llguidance grammar of a constraint (not yet checked against a tokenizer)."""
    if constraint.kind == "regex":
        return llguidance.LLMatcher.grammar_from_regex(constraint.value)
    return llguidance.LLMatcher.grammar_from_json_schema(constraint.value, overrides=JSON_LAYOUT)


def constraint_problem(constraint: Constraint) -> str | None:
    """Why a constraint cannot be enforced (an unsupported or broken schema), or None when it can."""
    try:
        grammar = grammar_of(constraint)
    except (ValueError, TypeError) as error:
        return str(error).strip().splitlines()[0]
    problem = llguidance.LLMatcher.validate_grammar(grammar)
    return problem.strip().splitlines()[0] if problem else None


def check_constraint(constraint: Constraint, field: str) -> None:
    """Refuse, naming ``field``, a constraint llguidance cannot compile."""
    problem = constraint_problem(constraint)
    if problem is not None:
        raise DeclarationError(f"{field}: not a schema decoding can enforce: {problem}")
