"""What training reports: per-stage losses and speed, held-out scores, the weakest stage."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, Field


class StageTraining(BaseModel):
    """How one stage's adapter was trained."""

    stage: str
    adapter: Path
    examples: int = Field(description="Training examples with a non-empty target.")
    epochs: int
    steps: int = Field(description="Batches per process over all epochs.")
    losses: list[float] = Field(description="Training loss of each batch (mean over processes).")
    tokens: int = Field(description="Tokens read (prompt + target, no padding), all processes.")
    target_tokens: int
    seconds: float = Field(description="Wall time of the training loop.")
    resumed_from_step: int | None = Field(default=None, description="Batch the last run resumed from, if it resumed.")
    already_trained: bool = Field(default=False, description="The adapter existed; this run did not train it.")

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds if self.seconds else 0.0

    def _window(self) -> int:
        return max(1, min(10, len(self.losses) // 4))

    @property
    def first_loss(self) -> float | None:
        return sum(self.losses[: self._window()]) / self._window() if self.losses else None

    @property
    def final_loss(self) -> float | None:
        return sum(self.losses[-self._window() :]) / self._window() if self.losses else None


class TrainResult(BaseModel):
    """A trained stack: where it is saved, how each stage trained and how each scores on held-out examples."""

    output: Path
    stack_file: Path
    stages: dict[str, StageTraining]
    held_out_examples: int
    evaluation: dict[str, dict[str, float]] = Field(default_factory=dict, description="Stage -> metric -> score.")

    def render(self) -> str:
        metrics = sorted({name for scores in self.evaluation.values() for name in scores})
        header = ["stage", "examples", "first loss", "final loss", "tokens/s", *metrics]
        rows = []
        for name, stage in self.stages.items():
            first, final = stage.first_loss, stage.final_loss
            row = [
                name,
                str(stage.examples),
                f"{first:.3f}" if first is not None else "-",
                f"{final:.3f}" if final is not None else "-",
                f"{stage.tokens_per_second:.0f}" if not stage.already_trained else "(earlier run)",
            ]
            scores = self.evaluation.get(name, {})
            row += [f"{scores[m]:.3f}" if m in scores else "-" for m in metrics]
            rows.append(row)
        widths = [max([len(header[i]), *(len(r[i]) for r in rows)]) for i in range(len(header))]  # rows may be none
        lines = ["  ".join(cell.ljust(width) for cell, width in zip(line, widths)) for line in [header, *rows]]
        lines.insert(1, "  ".join("-" * width for width in widths))
        weakest = weakest_stage(self.evaluation)
        if weakest:
            lines.append(f"weakest stage on {self.held_out_examples} held-out examples: {weakest}")
        lines.append(f"trained stack: {self.stack_file}")
        return "\n".join(lines)


def weakest_stage(evaluation: dict[str, dict[str, float]]) -> str | None:
    """The stage with the lowest text overlap with its targets (else the highest target loss)."""
    for metric, worst in (("token_f1", min), ("target_loss", max)):
        scored = {stage: scores[metric] for stage, scores in evaluation.items() if metric in scores}
        if scored:
            stage = worst(scored, key=scored.get)
            return f"{stage} ({metric} {scored[stage]:.3f})"
    return None


@dataclass(frozen=True)
class TrainStep:
    """Passed to ``on_step`` after every batch, on every process."""

    stage: str
    epoch: int
    step: int  # batch index within the epoch
    global_step: int  # batches of this stage so far
    optimizer_step: int
    loss: float
