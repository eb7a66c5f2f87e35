"""Reading saved traces back: ``fslm run --output`` files (JSON Lines) and ``fslm eval``'s ``traces_<task>.json``.

Each trace comes back as a :class:`TraceEntry` that remembers where it was
read, so a report can point a person at the line or document it shows. A file
that is not what fslm wrote is refused with the file and line at fault.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from ..errors import InputError, format_validation_error
from ..messages import Trace

WRITTEN_BY = "one trace per line, as `fslm run --output FILE` writes them, or an `fslm eval` traces_<task>.json"


@dataclass(frozen=True)
class TraceEntry:
    """One trace and where it came from ("traces.jsonl line 3", "local_arc_easy document 12")."""

    trace: Trace
    source: str


def documents_to_entries(task: str, documents: Sequence[dict], field: str = "") -> list[TraceEntry]:
    """The traces of ``fslm eval``'s documents of ``task`` (``[{"doc_id": ..., "traces": [...]}, ...]``)."""
    entries = []
    for position, document in enumerate(documents):
        where = f"{field}documents.{position}"
        if not isinstance(document, dict) or not isinstance(document.get("traces"), list):
            raise InputError(f"{where}: expected an object with a 'traces' list")
        doc_id = document.get("doc_id", position)
        for number, trace in enumerate(document["traces"]):
            try:
                parsed = Trace.model_validate(trace)
            except ValidationError as error:
                raise InputError(f"{where}.traces.{number}: not a trace: {format_validation_error(error)}") from None
            entries.append(TraceEntry(parsed, f"{task} document {doc_id}"))
    return entries


def read_trace_file(path: str | Path) -> list[TraceEntry]:
    """Every trace in ``path``, in file order; an :class:`InputError` naming the file and line for anything else."""
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{path}: is a folder; give a traces file ({WRITTEN_BY})")
    if not path.is_file():
        raise InputError(f"{path}: file not found")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise InputError(f"{path}: not UTF-8 text (byte {error.start}); expected {WRITTEN_BY}") from None
    whole = _whole_file_object(text)
    if isinstance(whole, dict) and "documents" in whole and "messages" not in whole:
        documents = whole["documents"]
        if not isinstance(documents, list):
            raise InputError(f"{path}: 'documents' is not a list; expected {WRITTEN_BY}")
        entries = documents_to_entries(str(whole.get("task", path.stem)), documents, field=f"{path}: ")
    else:
        entries = list(_json_lines(path, text))
    if not entries:
        raise InputError(f"{path}: holds no traces; expected {WRITTEN_BY}")
    return entries


def _whole_file_object(text: str) -> object:
    """The file as one JSON value, or None when it is not one (JSON Lines with several traces)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return None


def _json_lines(path: Path, text: str):
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            content = json.loads(line)
        except json.JSONDecodeError as error:
            raise InputError(
                f"{path} line {number}: not valid JSON ({error.msg}, column {error.colno}); expected {WRITTEN_BY}"
            ) from None
        try:
            trace = Trace.model_validate(content)
        except ValidationError as error:
            raise InputError(f"{path} line {number}: not a trace: {format_validation_error(error)}") from None
        yield TraceEntry(trace, f"{path.name} line {number}")
