"""Errors a user can act on.

Every error raised for bad input derives from :class:`FslmError`; its message
is one line that names the field, file or plugin at fault and, where there is
one, what to do. The CLI prints that line and exits non-zero without a
traceback; anything else escaping is a bug in fslm.
"""

from __future__ import annotations

from collections.abc import Iterable


class FslmError(Exception):
    """Base class for errors caused by input, configuration or environment."""

    exit_code = 1


class DeclarationError(FslmError, ValueError):
    """A stack or stage declaration is invalid (the message names the field)."""


class StackFileError(DeclarationError):
    """A stack file or folder cannot be read or does not validate."""


class UnknownNameError(FslmError, KeyError):
    """A model id, decomposition, format, router, evaluator or benchmark is not registered."""

    def __init__(self, kind: str, name: str, known: Iterable[str], hint: str = "", field: str = ""):
        self.kind, self.name, self.field = kind, name, field
        self.known = sorted(known)
        listing = ", ".join(self.known) if self.known else "none registered"
        message = f"unknown {kind} {name!r}; known: {listing}"
        if field:
            message = f"{field}: {message}"
        if hint:
            message += f". {hint}"
        super().__init__(message)

    def __str__(self) -> str:  # KeyError would quote the message
        return self.args[0]


class ModelLoadError(FslmError):
    """A base model's weights or tokenizer cannot be loaded."""


class AdapterError(FslmError):
    """A LoRA adapter is missing or does not fit its base model."""


class PluginError(FslmError):
    """A plugin failed to import or to register what it provides."""


class StageOutputError(FslmError):
    """A stage wrote text its format cannot parse, and the stage declares ``on_parse_error: fail``."""


class InputError(FslmError, ValueError):
    """Prompts or data given to a run are unusable (empty list, empty prompt...)."""


class StackChoiceError(InputError):
    """The arguments that choose a stack contradict each other or name none (a usage error)."""


def format_validation_error(error, prefix: str = "", unknown_field=None) -> str:
    """One line for a pydantic ``ValidationError``: ``field.path: message``.

    ``unknown_field(location)`` says what to write of a field the model does not have (a "did you mean").
    """
    parts = []
    items = error.errors()
    # A list whose items failed also reports itself too short; the item errors say more.
    if any(item.get("type") != "too_short" for item in items):
        items = [item for item in items if item.get("type") != "too_short"]
    for item in items:
        location = ".".join(str(p) for p in item.get("loc", ()))
        if prefix:
            location = f"{prefix}.{location}" if location else prefix
        message = item.get("msg", "invalid value").removeprefix("Value error, ")
        if item.get("type") == "extra_forbidden":
            message = unknown_field(tuple(item.get("loc", ()))) if unknown_field else "unknown field"
        parts.append(f"{location}: {message}" if location else message)
    return "; ".join(parts)
