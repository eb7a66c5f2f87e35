"""Settings of an experiment: what to distil, train and evaluate, read from one YAML file."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator

from ..declarations import DtypeSetting
from ..errors import InputError
from ..runtime.stack_choice import DEFAULT_DECOMPOSITION, DEFAULT_MODEL
from ..validation import validate_settings

SYSTEMS = ("single", "single-lora", "stack-trained", "stack-untrained")
"""The systems an experiment compares: the student alone, the student with one adapter trained on the same
examples (prompt to reference answer), the trained stack and the untrained stack."""


class DistillStep(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    teacher: str = DEFAULT_MODEL
    teacher_prompt: Literal["auto", "notes", "per-stage"] = "auto"
    limit: int | None = Field(default=None, gt=0, description="The first N usable examples of the data file.")
    batch_size: int = Field(default=32, gt=0)
    shard_size: int = Field(default=64, gt=0)
    max_new_tokens: int | None = Field(default=None, gt=0)


class EvaluationStep(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    tasks: tuple[str, ...] = Field(min_length=1)
    documents: int = Field(
        default=250, gt=0, description="Per task: every document of a smaller slice, else a seeded subset this size."
    )
    generation_documents: int = Field(
        default=100, gt=0, description="The same for generate_until tasks (GSM8K), which cost far more per document."
    )
    batch_size: int = Field(default=16, gt=0)
    max_gen_toks: int | None = Field(
        default=None, gt=0, description="Cap on the final stage's answer in generation tasks (None: the task's own)."
    )
    traces_per_task: int = Field(default=3, ge=0, description="Sample traces of the trained stack per task.")
    max_new_tokens: int | None = Field(
        default=None,
        gt=0,
        description="Cap on every stage's output when the systems are evaluated and checked (None: each stage's own).",
    )


class TeacherVariant(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    teacher: str
    teacher_prompt: str = "per-stage"
    batch_size: int = 16


class TrainVariant(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    filter_targets: bool = True
    train: dict[str, Any] = Field(default_factory=dict, description="TrainConfig settings on top of the base.")


class Ablations(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    teacher_examples: int = Field(default=100, gt=0)
    teachers: dict[str, TeacherVariant] = Field(default_factory=dict)
    train_examples: int = Field(default=320, gt=0, description="The first N distilled examples (whole shards).")
    held_out_examples: int = Field(default=64, gt=0, description="The next shards' examples score every variant.")
    train: dict[str, Any] = Field(default_factory=dict, description="TrainConfig settings every variant shares.")
    variants: dict[str, TrainVariant] = Field(default_factory=dict)

    @field_validator("teachers")
    @classmethod
    def _main_is_taken(cls, teachers: dict[str, TeacherVariant]) -> dict[str, TeacherVariant]:
        if "main" in teachers:
            raise ValueError("'main' names the experiment's own teacher in the results; give this one another name")
        return teachers


class ExperimentConfig(BaseModel):
    """One run of the paper's experiment: distil, filter, train the stack and the baseline, evaluate, report."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1)
    seed: int = 0
    data: Path = Field(description="Alpaca-format instruction data (relative paths: from the config file).")
    output: Path = Field(description="Work folder; rerunning the same config resumes from it.")
    report: Path | None = Field(default=None, description="Where the Markdown report is written.")
    student: str = DEFAULT_MODEL
    decomposition: str = DEFAULT_DECOMPOSITION
    filter_targets: bool = Field(default=True, description="Tidy teacher targets and drop those failing checks.")
    distill: DistillStep = DistillStep()
    train: dict[str, Any] = Field(default_factory=dict, description="TrainConfig settings for the stack's stages.")
    baseline: dict[str, Any] = Field(
        default_factory=dict, description="TrainConfig settings for the same-data single adapter."
    )
    ablations: Ablations | None = Field(
        default=None, description="Small comparable runs (teachers, training variants) before the full training."
    )
    evaluation: EvaluationStep
    dtype: DtypeSetting | None = Field(
        default=None,
        description="What the stage checks and the evaluation compute in (None: each stack's own, usually auto). "
        "Pin float32 for results that reproduce on every CPU: auto takes bfloat16 where it decodes faster.",
    )
    systems: tuple[Literal["single", "single-lora", "stack-trained", "stack-untrained"], ...] = SYSTEMS
    package: Path | None = Field(
        default=None,
        description="A plugin's package folder: the trained stack (float16 adapters) and its targets are copied in.",
    )
    package_stack_name: str | None = Field(default=None, description="The name the packaged stack registers.")
    demo_prompts: tuple[str, ...] = Field(
        default=(), description="Prompts whose traces by the trained stack go into the report."
    )


STEPS = (
    "distill",
    "filter",
    "train-stack",
    "package",
    "train-baseline",
    "stage-checks",
    "evaluate",
    "ablations",
    "report",
)
"""The steps of an experiment, in the order they run (``fslm_core.experiment.pipeline`` runs them)."""

QUICK = {
    "distill": {"limit": 16, "batch_size": 16, "shard_size": 8, "max_new_tokens": 24},
    "train": {"epochs": 1, "max_eval_examples": 4, "eval_fraction": 0.25},
    "baseline": {"epochs": 1, "max_eval_examples": 4, "eval_fraction": 0.25},
    "evaluation": {
        "documents": 3,
        "generation_documents": 2,
        "traces_per_task": 1,
        "max_gen_toks": 32,
        "max_new_tokens": 24,
    },
    "ablations": {"teacher_examples": 8, "train_examples": 8, "held_out_examples": 8, "train": {"epochs": 1}},
}
"""What ``--quick`` changes: tens of examples, one epoch, a few documents per task; every step still runs."""


def _merge(base: dict, changes: dict) -> dict:
    merged = dict(base)
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def load_experiment_config(
    path: str | os.PathLike, *, quick: bool = False, overrides: dict[str, Any] | None = None
) -> ExperimentConfig:
    """The experiment in a YAML file; relative paths in it are read from the file's folder.

    ``quick`` shrinks it to a few minutes' run (:data:`QUICK`) in ``<output>-quick``;
    ``overrides`` (nested dicts) replace what the file says.
    """
    file = Path(path).expanduser()
    if not file.is_file():
        raise InputError(f"config: file not found: {file}")
    try:
        values = yaml.safe_load(file.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise InputError(f"config: {file} is not valid YAML{where}") from None
    if not isinstance(values, dict):
        raise InputError(f"config: {file} must hold a mapping of settings")
    if quick:
        values = _merge(values, {key: value for key, value in QUICK.items() if key != "ablations"})
        if values.get("ablations"):
            values["ablations"] = _merge(values["ablations"], QUICK["ablations"])
        if "output" in values:
            values["output"] = f"{values['output']}-quick"
        values["report"] = None
        values["package"] = None
    values = _merge(values, overrides or {})
    base = file.resolve().parent
    for key in ("data", "output", "report", "package"):
        if values.get(key) is not None:
            # Resolved, without "..": paths written into stack files are made relative by prefix.
            values[key] = (base / Path(str(values[key])).expanduser()).resolve()
    return validate_settings(ExperimentConfig, values, f"config {file.name}")
