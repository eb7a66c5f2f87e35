"""Settings of a distillation run and what it reports."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from ..runtime.stack_choice import DEFAULT_DECOMPOSITION, DEFAULT_MODEL


class DistillConfig(BaseModel):
    """How targets are distilled. Fields that change the targets must match when a run resumes."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    decomposition: str = Field(
        default=DEFAULT_DECOMPOSITION, description="Registered decomposition whose stages get targets."
    )
    teacher: str = Field(
        default=DEFAULT_MODEL, description="Model id that writes the targets (any registered id or hf:<path>)."
    )
    teacher_model_path: Path | None = Field(default=None, description="Local folder with the teacher's weights.")
    teacher_prompt: Literal["auto", "notes", "per-stage"] = Field(
        default="auto",
        description="`notes`: one answer-aware call per example writes every intermediate target (the "
        "decomposition's teacher_notes); `per-stage`: one call per stage, without the reference answer; "
        "`auto`: notes when the decomposition has them.",
    )
    max_new_tokens: int | None = Field(
        default=None, gt=0, description="Cap on tokens per teacher target; None uses each stage's own limit."
    )
    seed: int = Field(default=0, description="Seeds sampling teachers (greedy decoding does not depend on it).")
    batch_size: int = Field(default=16, gt=0, description="Teacher prompts per generate call.")
    shard_size: int = Field(default=64, gt=0, description="Examples per written shard: the most an interruption loses.")
    limit: int | None = Field(default=None, gt=0, description="Distil only the first N usable examples.")


class DistillSummary(BaseModel):
    """What a distillation run did; ``skipped`` counts unusable rows by reason."""

    output: Path
    rows_read: int
    usable_examples: int
    skipped: dict[str, int]
    examples_before: int = Field(description="Examples the folder held when the run started.")
    examples_distilled: int = Field(description="Examples this run added.")
    examples_total: int = Field(description="Examples the folder holds now.")
    empty_targets: int = Field(description="Teacher targets that came out empty (kept; training leaves them out).")
    shards: int
    seconds: float

    def render(self) -> str:
        skipped = ", ".join(f"{count} {reason}" for reason, count in sorted(self.skipped.items())) or "none"
        return (
            f"distilled {self.examples_distilled} examples this run ({self.examples_total} in {self.output}, "
            f"{self.shards} shards) in {self.seconds:.1f}s; rows read {self.rows_read}, usable {self.usable_examples}, "
            f"skipped {sum(self.skipped.values())} ({skipped}); empty teacher targets {self.empty_targets}"
        )


@dataclass(frozen=True)
class ShardWritten:
    """Passed to ``on_shard`` after each shard is safely on disk."""

    path: Path
    index: int
    examples: int
    examples_total: int
