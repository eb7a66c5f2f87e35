"""One way to validate settings: a pydantic model's errors become one line naming each field at fault."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from .errors import FslmError, InputError, format_validation_error

Settings = TypeVar("Settings", bound=BaseModel)


def validate_settings(
    kind: type[Settings],
    values: Mapping[str, Any],
    what: str,
    *,
    error: type[FslmError] = InputError,
    context: dict | None = None,
) -> Settings:
    """``kind`` built from ``values``; invalid values raise ``error`` as ``"<what>: <field>: <problem>"``."""
    try:
        return kind.model_validate(dict(values), context=context)
    except ValidationError as invalid:
        raise error(f"{what}: {format_validation_error(invalid)}") from None


def with_overrides(
    kind: type[Settings], settings: Settings | None, overrides: Mapping[str, Any], what: str
) -> Settings:
    """``settings`` (or the defaults of ``kind``) with ``overrides`` applied, validated again."""
    return validate_settings(kind, {**(settings or kind()).model_dump(), **overrides}, what)
