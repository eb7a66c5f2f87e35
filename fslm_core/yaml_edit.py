"""Change one value in a YAML file's text and keep the rest as its author wrote it (comments, order, quoting).

PyYAML's composer knows where each node starts and ends in the text, so the
value's span can be replaced in place; a round trip through ``safe_dump``
would drop every comment. The result is checked: loaded, it must equal the
original with just that value changed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import yaml

from .errors import InputError


def set_yaml_value(text: str, keys: Sequence[str], value: Any) -> str:
    """``text`` with the value at the mapping path ``keys`` set to ``value`` (written in flow style on its key's
    line); a missing last key is added at the end of its mapping. Raises InputError naming the path when a
    mapping on the way is missing or is not a mapping."""
    expected = yaml.safe_load(text)
    parent = expected
    for depth, key in enumerate(keys[:-1]):
        parent = parent.get(key) if isinstance(parent, dict) else None
        if not isinstance(parent, dict):
            raise InputError(f"{'.'.join(keys[: depth + 1])}: expected a mapping to set {'.'.join(keys)} in")
    parent[keys[-1]] = value
    edited = _edit(text, yaml.compose(text), list(keys), value)
    if yaml.safe_load(edited) != expected:  # a guard against a layout not foreseen here
        raise InputError(f"{'.'.join(keys)}: could not set the value in place without changing anything else")
    return edited


def _edit(text: str, root: yaml.Node, keys: list[str], value: Any) -> str:
    mapping = root
    for key in keys[:-1]:
        mapping = next(item for name, item in mapping.value if name.value == key)
    entry = next(((name, item) for name, item in mapping.value if name.value == keys[-1]), None)
    if entry is not None:
        name, item = entry
        return text[: name.end_mark.index] + ": " + _flow(value) + text[_end(item) :]
    if mapping.flow_style or not mapping.value:
        # `{a: 1}` or an empty mapping: write the whole mapping again, in flow style, with the new key.
        whole = yaml.safe_load(text)
        for key in keys[:-1]:
            whole = whole[key]
        return _edit(text, root, keys[:-1], {**whole, keys[-1]: value})
    column = mapping.value[0][0].start_mark.column
    end = _end(mapping.value[-1][1])
    line_end = text.find("\n", end)
    line_end = len(text) if line_end < 0 else line_end
    return f"{text[:line_end]}\n{' ' * column}{keys[-1]}: {_flow(value)}{text[line_end:]}"


def _end(node: yaml.Node) -> int:
    """Where ``node``'s own text ends: its last scalar's end (a block collection's end mark lies past comments)."""
    while isinstance(node, yaml.MappingNode | yaml.SequenceNode) and node.value and not node.flow_style:
        last = node.value[-1]
        node = last[1] if isinstance(node, yaml.MappingNode) else last
    return node.end_mark.index


def _flow(value: Any) -> str:
    written = yaml.safe_dump(value, default_flow_style=True, sort_keys=False, width=math.inf)
    return written.strip().removesuffix("...").strip()  # a scalar is dumped as a document: `0.5\n...`
