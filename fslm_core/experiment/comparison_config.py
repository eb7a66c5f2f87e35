"""An experiment that compares declared systems on the same documents: stacks, named stacks or models alone.

The paper's experiment (:mod:`.config`) distils and trains before it compares;
a comparison only evaluates what exists already (trained stacks, shipped
stacks, single models) and reports paired tests, so the next experiment is a
YAML file, not new code::

    kind: comparison
    name: gsm8k-program-aided
    output: run
    report: ../../docs/results_gsm8k.md
    dtype: float32
    systems:
      single: {model: smollm2-135m-instruct}
      stack: {stack: smollm2-gsm8k}
    comparisons: [[stack, single]]
    evaluation:
      tasks: [local_gsm8k]
      document_ranges: {local_gsm8k: [6973, 7473]}
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..declarations import DtypeSetting
from ..errors import InputError
from ..validation import validate_settings

COMPARISON_KIND = "comparison"


class SystemDeclaration(BaseModel):
    """One system: a stack (a file, a folder or a registered name), or a model alone (no adapter)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    stack: str | None = Field(default=None, description="A stack file or folder (relative: to the config), or name.")
    model: str | None = Field(default=None, description="A model id, evaluated alone.")
    instruction: str | None = Field(default=None, description="The lone model's instruction (default: fslm's).")
    description: str = ""

    @model_validator(mode="after")
    def _stack_or_model(self) -> SystemDeclaration:
        if (self.stack is None) == (self.model is None):
            raise ValueError("give either stack or model")
        if self.instruction is not None and self.model is None:
            raise ValueError("instruction: only a model alone takes one (a stack names its own)")
        return self


class ComparisonEvaluation(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    tasks: tuple[str, ...] = Field(min_length=1)
    documents: int = Field(default=250, gt=0)
    generation_documents: int = Field(default=100, gt=0)
    document_ranges: dict[str, tuple[int, int]] = Field(
        default_factory=dict, description="Task -> [start, stop) document ids scored (instead of a seeded subset)."
    )
    num_fewshot: int = Field(default=0, ge=0)
    batch_size: int = Field(default=16, gt=0)
    max_gen_toks: int | None = Field(default=None, gt=0)
    traces_per_task: int = Field(default=3, ge=0)

    @model_validator(mode="after")
    def _ranges_name_tasks(self) -> ComparisonEvaluation:
        for task, (start, stop) in self.document_ranges.items():
            if task not in self.tasks:
                raise ValueError(f"document_ranges.{task}: not one of the tasks ({', '.join(self.tasks)})")
            if not 0 <= start < stop:
                raise ValueError(f"document_ranges.{task}: [{start}, {stop}) holds no document ids")
        return self


class ComparisonConfig(BaseModel):
    """Systems compared on the same documents of each task, with paired tests between the named pairs."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["comparison"]
    name: str = Field(min_length=1)
    description: str = ""
    seed: int = 0
    output: Path
    report: Path | None = None
    notes: Path | None = Field(
        default=None, description="A Markdown file written into the report after its systems (what was tried, why)."
    )
    dtype: DtypeSetting | None = Field(default=None, description="Every system computes in this (None: its own).")
    systems: dict[str, SystemDeclaration] = Field(min_length=2)
    comparisons: tuple[tuple[str, str], ...] = Field(
        default=(), description="Pairs (a, b) tested a against b; none given: the first system against each other."
    )
    cascades: dict[str, tuple[str, str]] = Field(
        default_factory=dict,
        description="A cascade system -> [the system it answers with first, the system it defers to], each "
        "evaluated alone: the report draws the cascade's curve on these documents and checks its paths.",
    )
    evaluation: ComparisonEvaluation
    demo_prompts: tuple[str, ...] = Field(default=(), description="Prompts the first system's traces answer.")

    @model_validator(mode="after")
    def _pairs_name_systems(self) -> ComparisonConfig:
        for index, pair in enumerate(self.comparisons):
            for name in pair:
                if name not in self.systems:
                    raise ValueError(f"comparisons.{index}: {name!r} is not a system ({', '.join(self.systems)})")
        for cascade, parts in self.cascades.items():
            for name in (cascade, *parts):
                if name not in self.systems:
                    raise ValueError(f"cascades.{cascade}: {name!r} is not a system ({', '.join(self.systems)})")
            if self.systems[cascade].stack is None:
                # The report reads the cascade's threshold from its stack; a model alone has none.
                raise ValueError(f"cascades.{cascade}: a cascade must be a stack system, not a model alone")
        return self

    @property
    def pairs(self) -> tuple[tuple[str, str], ...]:
        if self.comparisons:
            return self.comparisons
        first, *others = self.systems
        return tuple((first, other) for other in others)


def is_comparison(path: str | os.PathLike) -> bool:
    """Whether the YAML file at ``path`` declares a comparison (``kind: comparison``)."""
    try:
        values = yaml.safe_load(Path(path).expanduser().read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return False
    return isinstance(values, dict) and values.get("kind") == COMPARISON_KIND


def load_comparison_config(path: str | os.PathLike, overrides: dict | None = None) -> ComparisonConfig:
    """The comparison in a YAML file; its relative paths (output, report, stack files) are read from its folder."""
    file = Path(path).expanduser()
    try:
        values = yaml.safe_load(file.read_text(encoding="utf-8")) or {}
    except OSError:
        raise InputError(f"config: file not found: {file}") from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        raise InputError(f"config: {file} is not valid YAML{f' (line {mark.line + 1})' if mark else ''}") from None
    if not isinstance(values, dict):
        raise InputError(f"config: {file} must hold a mapping of settings")
    values = {**values, **(overrides or {})}
    base = file.resolve().parent
    for key in ("output", "report", "notes"):
        if values.get(key) is not None:
            values[key] = (base / Path(str(values[key])).expanduser()).resolve()
    for system in (values.get("systems") or {}).values():
        stack = system.get("stack") if isinstance(system, dict) else None
        if isinstance(stack, str) and (base / stack).exists():
            system["stack"] = str((base / stack).resolve())
    config = validate_settings(ComparisonConfig, values, f"config {file.name}")
    if config.notes is not None and not config.notes.is_file():
        raise InputError(f"config {file.name}: notes: file not found: {config.notes}")
    return config
