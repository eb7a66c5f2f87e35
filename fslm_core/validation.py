"""One way to validate settings: a pydantic model's errors become one line naming each field at fault."""

from __future__ import annotations

import difflib
import typing
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
        raise error(
            f"{what}: {format_validation_error(invalid, unknown_field=lambda loc: _unknown(kind, loc))}"
        ) from None


def _unknown(kind: type[BaseModel], location: tuple) -> str:
    """What to say of the unknown field at ``location``: the known field it is closest to, or the known ones."""
    model = _model_at(kind, location[:-1])
    if model is None:
        return "unknown field"
    known = sorted(model.model_fields)
    close = difflib.get_close_matches(str(location[-1]), known, n=1, cutoff=0.6)
    return f"unknown field; did you mean {close[0]!r}?" if close else f"unknown field (known: {', '.join(known)})"


def _model_at(kind: Any, location: tuple) -> type[BaseModel] | None:
    """The pydantic model a location inside ``kind`` points into (list indices and mapping keys stepped over)."""
    for step in location:
        if isinstance(kind, type) and issubclass(kind, BaseModel):
            if isinstance(step, str) and step in kind.model_fields:
                kind = kind.model_fields[step].annotation
                continue
            return None
        kind = _inner(kind)
        if kind is None:
            return None
    kind = _inner(kind) if not (isinstance(kind, type) and issubclass(kind, BaseModel)) else kind
    return kind if isinstance(kind, type) and issubclass(kind, BaseModel) else None


def _inner(annotation: Any) -> Any:
    """The model inside ``X | None``, ``tuple[X, ...]``, ``list[X]`` or ``dict[str, X]``, if there is one."""
    for arg in typing.get_args(annotation) or ():
        if arg is type(None) or arg is Ellipsis:
            continue
        if isinstance(arg, type) and issubclass(arg, BaseModel):
            return arg
        inner = _inner(arg)
        if inner is not None:
            return inner
    return None


def with_overrides(
    kind: type[Settings], settings: Settings | None, overrides: Mapping[str, Any], what: str
) -> Settings:
    """``settings`` (or the defaults of ``kind``) with ``overrides`` applied, validated again."""
    return validate_settings(kind, {**(settings or kind()).model_dump(), **overrides}, what)
