"""A trained fslm-paper stack on the embedded SmolLM2-135M-Instruct: ``smollm2-paper``.

Four LoRA adapters (interpret, recall, reason, answer), trained by
``fslm experiment examples/paper_experiment/experiment.yaml`` on Alpaca
examples whose intermediate targets Qwen2.5-Coder-1.5B-Instruct wrote while
seeing the reference answer. The stack folder (``stack/``) and the targets it
learnt from (``data/distilled.jsonl.gz``) are package data; the base model
comes from ``fslm-plugin-smollm2``. See MODEL_CARD.md for what it was trained
on, how it scores, its licence (CC BY-NC 4.0) and its limits.

Installed, it is the stack fslm uses when a command names none, and
``--stack smollm2-paper`` names it anywhere. ``smollm2-paper-baseline`` is
what it was measured against: the same model with one adapter trained on the
same examples to answer directly.
"""

from __future__ import annotations

from pathlib import Path

from fslm_core import hookimpl
from fslm_core.api import NamedStack

HERE = Path(__file__).parent
STACK_NAME = "smollm2-paper"
STACK_FOLDER = HERE / "stack"
BASELINE_NAME = "smollm2-paper-baseline"
BASELINE_FOLDER = HERE / "baseline"
TARGETS_FILE = HERE / "data" / "distilled.jsonl.gz"


@hookimpl
def register_stacks(register):
    # Both folders are written by `fslm experiment`; a checkout before its package step has neither.
    if (STACK_FOLDER / "stack.yaml").is_file():
        register(
            NamedStack(
                name=STACK_NAME,
                folder=STACK_FOLDER,
                description="fslm-paper on SmolLM2-135M-Instruct, four trained LoRA adapters (CC BY-NC 4.0)",
                default=True,
            )
        )
    if (BASELINE_FOLDER / "stack.yaml").is_file():
        register(
            NamedStack(
                name=BASELINE_NAME,
                folder=BASELINE_FOLDER,
                description="SmolLM2-135M-Instruct with one LoRA adapter trained on the same examples (CC BY-NC 4.0)",
            )
        )
