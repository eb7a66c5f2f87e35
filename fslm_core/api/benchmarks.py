"""Benchmark adapters: lm-evaluation-harness task configs contributed by plugins."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Benchmark:
    """One lm-eval task that a plugin provides.

    ``build_config`` returns the task config dict lm-eval's ``TaskManager``
    accepts (the same keys as a task YAML). It is a function so data paths can
    be found when the task is used, not when the plugin is imported.

    ``yaml_file`` is the task's lm-eval YAML file, if it has one: its folder is
    what lm-eval's own command line takes as ``--include_path`` (``fslm
    tasks-dir`` prints it), so the task also runs without fslm's commands.
    """

    name: str
    build_config: Callable[[], dict[str, Any]]
    description: str = ""
    output_type: str = ""
    tags: tuple[str, ...] = field(default=())
    yaml_file: Path | None = None


def yaml_folders(benchmarks: Iterable[Benchmark]) -> list[Path]:
    """Folders of the benchmarks' lm-eval YAML files: what lm-eval's ``--include_path`` takes."""
    return sorted({benchmark.yaml_file.parent for benchmark in benchmarks if benchmark.yaml_file is not None})
