"""Instruction data: the rows of an Alpaca-style file (``instruction``, ``input``, ``output``) a teacher distils."""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from ..errors import InputError


def alpaca_prompt(instruction: str, input_text: str = "") -> str:
    """The user prompt a stack sees for an Alpaca example: the instruction, then its input if any."""
    instruction, input_text = instruction.strip(), input_text.strip()
    return f"{instruction}\n\n{input_text}" if input_text else instruction


class InstructionExample(BaseModel):
    """One usable row of instruction data; ``example_id`` is its position in the file."""

    model_config = ConfigDict(frozen=True)

    example_id: int
    instruction: str
    input: str = ""
    output: str

    @property
    def prompt(self) -> str:
        return alpaca_prompt(self.instruction, self.input)


@dataclass
class InstructionData:
    """The usable rows of a data file and why the others were skipped."""

    path: Path
    sha256: str
    rows: int
    examples: list[InstructionExample]
    skipped: Counter

    @property
    def skipped_total(self) -> int:
        return sum(self.skipped.values())


def _row_problem(row: Any) -> str | None:
    """Why a row cannot be used, or None. ``input`` may be absent (many Alpaca-style sets drop it)."""
    if not isinstance(row, dict):
        return "row is not an object"
    for name in ("instruction", "output"):
        if name not in row or row[name] is None:
            return f"missing {name}"
        if not isinstance(row[name], str):
            return f"{name} is not text"
        if not row[name].strip():
            return f"empty {name}"
    if row.get("input") is not None and not isinstance(row["input"], str):
        return "input is not text"
    return None


def read_instruction_data(path: str | os.PathLike) -> InstructionData:
    """Read an Alpaca-format file: a JSON array of rows, or JSON lines (``.jsonl``).

    Rows that lack a field or hold the wrong type are counted by reason and left
    out; a file that cannot be read at all raises :class:`InputError`.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise InputError(f"data: file not found: {path}")
    raw = path.read_bytes()
    text = raw.decode("utf-8", errors="replace")
    skipped: Counter = Counter()
    if path.suffix == ".jsonl":
        rows: list[Any] = []
        for line in text.splitlines():
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                rows.append(None)
                skipped["line is not JSON"] += 1
    else:
        try:
            rows = json.loads(text)
        except json.JSONDecodeError as error:
            raise InputError(
                f"data: {path} is not valid JSON (line {error.lineno}); expected an array of "
                "{instruction, input, output} objects or a .jsonl file"
            ) from None
        if not isinstance(rows, list):
            raise InputError(f"data: {path} holds a JSON {type(rows).__name__}, expected an array of rows")
    examples = []
    for index, row in enumerate(rows):
        if row is None and path.suffix == ".jsonl":
            continue  # already counted as not JSON
        problem = _row_problem(row)
        if problem:
            skipped[problem] += 1
            continue
        examples.append(
            InstructionExample(
                example_id=index, instruction=row["instruction"], input=row.get("input") or "", output=row["output"]
            )
        )
    return InstructionData(path.resolve(), hashlib.sha256(raw).hexdigest(), len(rows), examples, skipped)
