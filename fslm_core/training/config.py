"""Settings of per-stage LoRA training, from arguments or a YAML/JSON file."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from ..declarations import DtypeSetting
from ..errors import InputError
from ..validation import validate_settings


class TrainConfig(BaseModel):
    """Hyperparameters of per-stage LoRA training. The defaults suit 100M-1B models on a few thousand examples."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    rank: int = Field(default=8, gt=0, description="LoRA rank: capacity of each adapter.")
    alpha: float = Field(default=16, gt=0, description="LoRA scaling numerator (alpha / rank scales the update).")
    dropout: float = Field(
        default=0.0,
        ge=0.0,
        lt=1.0,
        description="Dropout on the LoRA path. 0 (the default) lets every adapted layer reuse its input for the "
        "adapter instead of keeping a dropped-out copy: less memory and time per step.",
    )
    target_modules: tuple[str, ...] | None = Field(
        default=None,
        description="Modules to adapt; None uses the model spec's lora_target_modules, else peft's default.",
    )
    learning_rate: float = Field(default=2e-4, gt=0.0)
    epochs: int = Field(default=2, gt=0)
    batch_size: int = Field(default=8, gt=0, description="Examples per batch and process.")
    gradient_accumulation_steps: int = Field(default=1, gt=0)
    max_batch_tokens: int = Field(
        default=512,
        ge=8,
        description="Most tokens (rows x longest row) one forward pass reads; a batch with more runs as several "
        "micro-batches whose gradients add up to the batch's. Bounds training memory; the update is the same. "
        "512 kept SmolLM2-135M's peak RSS at 2.5 GB (3.9 GB at 1024) at the same speed.",
    )
    max_length: int = Field(
        default=512, ge=8, description="Tokens of prompt plus target; prompts are cut from the left."
    )
    upstream_inputs: Literal["targets", "generated", "mixed"] = Field(
        default="targets",
        description="What a stage that reads earlier stages trains on: their distilled targets (teacher forcing), "
        "what the already-trained earlier stages write for its prompts, or a seeded half of each.",
    )
    warmup_ratio: float = Field(default=0.03, ge=0.0, lt=1.0)
    weight_decay: float = Field(default=0.0, ge=0.0)
    max_grad_norm: float | None = Field(default=1.0, gt=0.0)
    seed: int = 0
    mixed_precision: Literal["no", "fp16", "bf16"] | None = Field(
        default=None, description="Autocast on GPUs; None takes accelerate's setting (launcher or config), else none."
    )
    dtype: DtypeSetting | None = Field(
        default=None,
        description="What the base models load and compute in: float32, bfloat16 (on a CPU: CPU autocast to "
        "bf16, LoRA weights and optimizer state in float32), int8 (adapters trained on the int8 base: its int8 "
        "forward pass, gradients through its de-quantised weights), or auto; None takes the stack's own dtype.",
    )
    stages: tuple[str, ...] | None = Field(default=None, description="Train only these stages; None trains all.")
    eval_fraction: float = Field(
        default=0.05,
        ge=0.0,
        lt=1.0,
        description="Share of distilled examples held out of training to score each stage.",
    )
    max_eval_examples: int = Field(default=64, ge=0)
    evaluators: tuple[str, ...] = Field(
        default=("target-loss", "token-f1"), description="Registered evaluators run per stage."
    )
    eval_batch_size: int = Field(default=8, gt=0)
    start_from: Path | None = Field(
        default=None,
        description="A trained stack's folder: each stage trained starts from its adapter there instead of a "
        "fresh LoRA (a further epoch, or more data); rank, alpha and target modules must match it.",
    )
    checkpoint_every: int = Field(default=100, gt=0, description="Optimizer steps between checkpoints.")
    log_every: int = Field(default=10, gt=0, description="Optimizer steps between loss log lines.")

    def identity(self) -> dict:
        """The settings that decide the adapters: a resumed run must use the same."""
        return self.model_dump(
            mode="json",
            # dtype counts as what it resolves to, start_from as its adapters' content (train_stack adds both):
            # runs from before these settings still resume.
            exclude={"stages", "evaluators", "eval_batch_size", "checkpoint_every", "log_every", "dtype", "start_from"},
        )


def load_train_config(path: str | os.PathLike | None = None, overrides: dict | None = None) -> TrainConfig:
    """Training settings from a YAML/JSON file (optional) with ``overrides`` on top; None values are ignored.

    Comma-separated strings are accepted for ``stages``, ``target_modules`` and ``evaluators``.
    """
    import yaml

    values: dict = {}
    if path is not None:
        file = Path(path).expanduser()
        if not file.is_file():
            raise InputError(f"--config: file not found: {file}")
        try:
            values = yaml.safe_load(file.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError:
            raise InputError(f"--config: {file} is not valid YAML or JSON") from None
        if not isinstance(values, dict):
            raise InputError(f"--config: {file} must hold a mapping of setting names to values")
    values.update({key: value for key, value in (overrides or {}).items() if value is not None})
    for key in ("stages", "target_modules", "evaluators"):
        if isinstance(values.get(key), str):
            values[key] = tuple(item.strip() for item in values[key].split(",") if item.strip())
    return validate_settings(TrainConfig, values, "training settings")
