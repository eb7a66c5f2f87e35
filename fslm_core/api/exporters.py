"""Exporters: a stack turned into what another runtime serves (``fslm export STACK --to NAME DIR``)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:
    from ..declarations import Stack


@dataclass
class ExportResult:
    """What an export wrote: its files, the command that serves them, and a stack file that runs there."""

    files: list[Path] = field(default_factory=list)
    command: str = ""
    stack_file: Path | None = None


class Exporter(ABC):
    """Writes a stack's adapters and settings in the form another runtime serves.

    Registered through the ``register_exporters`` hook under a unique ``name``.
    """

    name: ClassVar[str]
    description: ClassVar[str] = ""
    #: Option name -> what it sets (``fslm export --option NAME=VALUE``); others are refused.
    options: ClassVar[dict[str, str]] = {}

    @abstractmethod
    def export(self, stack: Stack, folder: Path, options: dict[str, str]) -> ExportResult:
        """Write the export of ``stack`` into ``folder`` (created); files already there that are complete
        may be kept, so an interrupted export resumes."""
