"""Benchmark adapters: lm-evaluation-harness task configs contributed by plugins."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Benchmark:
    """One lm-eval task that a plugin provides.

    ``build_config`` returns the task config dict lm-eval's ``TaskManager``
    accepts (the same keys as a task YAML). It is a function so data paths can
    be found when the task is used, not when the plugin is imported.
    """

    name: str
    build_config: Callable[[], dict[str, Any]]
    description: str = ""
    output_type: str = ""
    tags: tuple[str, ...] = field(default=())
