"""Inter-stage message formats.

A format does three things for a stage's output: it tells the model how to lay
the output out (appended to the stage's instruction), parses the text into
fields where it can, and renders the message for the stages that read it.
The text itself always travels, so a person can read every hand-off.

A structured format may also give a :class:`Constraint`: a regular expression
or JSON schema that decoding holds the stage's output to, so the layout is
enforced rather than only asked for (see docs/formats.md).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Literal

ANY_JSON_OBJECT: dict[str, Any] = {"type": "object"}


@dataclass(frozen=True)
class Constraint:
    """A layout decoding can hold an output to: a regular expression, or a JSON schema written as JSON text.

    Backends compile it with their own tokenizer; it holds no library object,
    so formats stay free of torch and of the structured-generation library.
    """

    kind: Literal["regex", "json_schema"]
    value: str

    @property
    def key(self) -> str:
        """Identifies the constraint in cache keys."""
        return f"{self.kind}:{self.value}"


class MessageFormat:
    """Plain text: no layout asked for, no fields parsed. Subclass to add structure."""

    name = "text"
    description = "Free text, passed on as written."
    instructions = ""
    takes_schema = False
    """Whether a stage of this format may declare a ``json_schema`` its output must satisfy."""

    @property
    def structured(self) -> bool:
        """Whether the format defines fields, so that text it cannot parse is a parse error worth recording."""
        return type(self).parse is not MessageFormat.parse

    def parse(self, text: str) -> dict[str, Any] | None:
        """Fields found in ``text``, or None when the format defines none or the text does not fit."""
        return None

    def constraint(self, schema: dict[str, Any] | None = None) -> Constraint | None:
        """What decoding may hold this format's output to; None leaves it free (the layout is only asked for)."""
        return None

    def check(self, fields: dict[str, Any], schema: dict[str, Any] | None = None) -> str | None:
        """Why parsed ``fields`` break the stage's ``schema``, or None when they satisfy it (or there is none)."""
        return None

    def render(self, text: str, fields: dict[str, Any] | None) -> str:
        """How the message appears in a reading stage's input."""
        return text.strip()


class ListFormat(MessageFormat):
    name = "list"
    description = "One item per line; parsed into fields['items']."
    instructions = "Write a short list: one item per line, each line starting with '- '."
    _bullet = re.compile(r"^\s*(?:[-*\u2022]|\d+[.)])\s+(.*\S)\s*$")
    # Bounded so that even a model that never chooses to stop ends a well-formed list.
    _item = r"- \S[^\n]{0,200}"
    # A final newline is allowed: a model that ends its last line before stopping must be free to stop.
    _layout = Constraint("regex", f"{_item}(\\n{_item}){{0,15}}\\n?")

    def constraint(self, schema: dict[str, Any] | None = None) -> Constraint | None:
        return self._layout

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
    _line = r"[A-Za-z][A-Za-z0-9_ -]{0,23}: \S[^\n]{0,200}"
    _layout = Constraint("regex", f"{_line}(\\n{_line}){{0,15}}\\n?")

    def constraint(self, schema: dict[str, Any] | None = None) -> Constraint | None:
        return self._layout

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
    takes_schema = True

    def constraint(self, schema: dict[str, Any] | None = None) -> Constraint | None:
        # Key order is kept: llguidance writes properties in the order the schema declares them.
        return Constraint("json_schema", json.dumps(schema or ANY_JSON_OBJECT))

    def check(self, fields: dict[str, Any], schema: dict[str, Any] | None = None) -> str | None:
        return schema_mismatch(fields, schema, "$") if schema else None

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


_JSON_TYPES: dict[str, tuple[type, ...]] = {
    "object": (dict,),
    "array": (list,),
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "null": (type(None),),
}


def schema_mismatch(value: Any, schema: dict[str, Any], where: str) -> str | None:
    """The first place ``value`` breaks ``schema``'s types, keys, enums and items; None if none.

    The common core of JSON schema, enough to catch an unenforced stage's
    output that parses but is not what its readers expect; enforced output
    satisfies the whole schema by construction.
    """
    declared = schema.get("type")
    types = declared if isinstance(declared, list) else [declared] if declared else []
    if types:
        fits = [t for t in types if isinstance(value, _JSON_TYPES.get(t, object))]
        # bool is an int in Python, not in JSON
        if not fits or (isinstance(value, bool) and not {"boolean"} & set(fits)):
            return f"{where}: expected {' or '.join(types)}, got {type(value).__name__}"
    if "enum" in schema and value not in schema["enum"]:
        return f"{where}: {value!r} is not one of {schema['enum']}"
    if isinstance(value, dict):
        for key in schema.get("required", ()):
            if key not in value:
                return f"{where}: missing required key {key!r}"
        if schema.get("additionalProperties") is False:
            extra = sorted(set(value) - set(schema.get("properties", {})))
            if extra:
                return f"{where}: unexpected key {extra[0]!r}"
        for key, sub_schema in schema.get("properties", {}).items():
            if key in value and isinstance(sub_schema, dict):
                problem = schema_mismatch(value[key], sub_schema, f"{where}.{key}")
                if problem:
                    return problem
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        for index, item in enumerate(value):
            problem = schema_mismatch(item, schema["items"], f"{where}[{index}]")
            if problem:
                return problem
    return None


BUILTIN_FORMATS = (MessageFormat(), ListFormat(), KeyValueFormat(), JsonFormat())
