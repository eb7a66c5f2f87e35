"""Ready-made stacks that plugins ship: a trained stack folder under a name users type."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class NamedStack:
    """A stack folder (``stack.yaml`` plus its adapters) a plugin installs, found by ``name``.

    ``fslm run --stack NAME``, ``fslm eval --stack NAME`` and lm-eval's
    ``--model_args stack=NAME`` load it; registration only records where it
    is, so listing plugins stays cheap. With ``default=True`` it is the stack a
    command uses when it names none (the first such registration wins).
    """

    name: str
    folder: Path
    description: str = ""
    default: bool = False
