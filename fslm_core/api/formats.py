"""Inter-stage message formats.

A format does three things for a stage's output: it tells the model how to lay
the output out (appended to the stage's instruction), parses the text into
fields where it can, and renders the message for the stages that read it.
The text itself always travels, so a person can read every hand-off.
"""

from __future__ import annotations

import json
import re
from typing import Any


class MessageFormat:
    """Plain text: no layout asked for, no fields parsed. Subclass to add structure."""

    name = "text"
    description = "Free text, passed on as written."
    instructions = ""

    def parse(self, text: str) -> dict[str, Any] | None:
        """Fields found in ``text``, or None when the format defines none or the text does not fit."""
        return None

    def render(self, text: str, fields: dict[str, Any] | None) -> str:
        """How the message appears in a reading stage's input."""
        return text.strip()


class ListFormat(MessageFormat):
    name = "list"
    description = "One item per line; parsed into fields['items']."
    instructions = "Write a short list: one item per line, each line starting with '- '."
    _bullet = re.compile(r"^\s*(?:[-*\u2022]|\d+[.)])\s+(.*\S)\s*$")

    def parse(self, text: str) -> dict[str, Any] | None:
        items = [m.group(1) for line in text.splitlines() if (m := self._bullet.match(line))]
        return {"items": items} if items else None

    def render(self, text: str, fields: dict[str, Any] | None) -> str:
        if fields and fields.get("items"):
            return "\n".join(f"- {item}" for item in fields["items"])
        return text.strip()


class KeyValueFormat(MessageFormat):
    name = "key-value"
    description = "'Key: value' lines; parsed into a field per key."
    instructions = "Write one 'Key: value' pair per line."
    _pair = re.compile(r"^\s*([A-Za-z][\w -]{0,40}?)\s*:\s*(.+?)\s*$")

    def parse(self, text: str) -> dict[str, Any] | None:
        pairs = {
            m.group(1).strip().lower().replace(" ", "_"): m.group(2)
            for line in text.splitlines()
            if (m := self._pair.match(line))
        }
        return pairs or None


class JsonFormat(MessageFormat):
    name = "json"
    description = "A JSON object; parsed into its keys."
    instructions = "Answer with one JSON object and nothing else."

    def parse(self, text: str) -> dict[str, Any] | None:
        start, end = text.find("{"), text.rfind("}")
        if start < 0 or end <= start:
            return None
        try:
            value = json.loads(text[start : end + 1])
        except json.JSONDecodeError:
            return None
        return value if isinstance(value, dict) else None

    def render(self, text: str, fields: dict[str, Any] | None) -> str:
        return json.dumps(fields, ensure_ascii=False) if fields is not None else text.strip()


BUILTIN_FORMATS = (MessageFormat(), ListFormat(), KeyValueFormat(), JsonFormat())
