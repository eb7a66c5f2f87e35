"""Tools: stages that are not models. A tool reads its stage's input text and writes the stage's message.

A tool stage names ``tool:`` instead of ``model:`` in a stack file. It reads
the earlier messages like any stage (its template, or the one message it
reads) and its result is a :class:`~fslm_core.messages.Message` like any
other, so traces, the report, the stage cache, routing and serving need
nothing special. Plugins add tools through the ``register_tools`` hook.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar


@dataclass(frozen=True)
class ToolResult:
    """What a tool wrote for one input: the message text, and whether it worked.

    A tool that fails (a program that raised, an expression that does not
    parse) returns ``ok=False`` with a one-line ``text`` saying why: the run
    goes on, and the stages after it read the error as they would any message.
    """

    text: str
    ok: bool = True
    fields: dict[str, Any] | None = None


class Tool(ABC):
    """A named piece of code a stage runs on its input text instead of a model.

    Tools run for many inputs at once from a pool of threads (at most
    ``concurrency`` of a stage's rows at a time), so ``run`` must be safe to
    call from several threads.
    """

    name: ClassVar[str]
    description: ClassVar[str] = ""
    concurrency: ClassVar[int] = 4
    options: ClassVar[Mapping[str, str]] = {}
    """The options a stage may give (``tool_options``), each with what it means: others are refused."""

    def check_options(self, options: Mapping[str, Any]) -> None:
        """Raise ``ValueError`` naming an option that is unknown or has a value this tool cannot take."""
        unknown = sorted(set(options) - set(self.options))
        if unknown:
            known = ", ".join(sorted(self.options)) or "none"
            raise ValueError(f"unknown option {unknown[0]!r} for tool {self.name!r} (options: {known})")

    def identity(self, options: Mapping[str, Any]) -> str:
        """What the stage cache keys this tool's outputs by: its name, version and options."""
        import json

        return f"tool:{self.name}:{getattr(self, 'version', 1)}:{json.dumps(dict(options), sort_keys=True)}"

    @abstractmethod
    def run(self, text: str, options: Mapping[str, Any]) -> ToolResult:
        """The tool's result for one input text."""
