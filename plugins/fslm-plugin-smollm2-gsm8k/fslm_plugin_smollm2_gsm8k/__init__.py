"""A program-aided stack for grade-school maths on the embedded SmolLM2-135M-Instruct: ``smollm2-gsm8k``.

The ``program`` stage (one LoRA adapter) writes a Python program for the
question; the ``python`` tool runs it in fslm's sandbox; the ``calculator``
writes its output as a plain number. ``smollm2-gsm8k-vote`` samples five
programs and keeps the most common output; ``smollm2-gsm8k-retry`` answers
again, by five sampled programs and a vote among those that print a whole
number, where the stack's own answer is not a whole number (a fraction, a
negative count, an error); ``smollm2-gsm8k-templates`` is the same stack
with an adapter that also learnt from template problems ("sells three
quarters of them, then bakes 10 more"); ``smollm2-gsm8k-baseline`` is what
it was measured against: the same model with one adapter trained on the same
rows' reference solutions, answering directly. The plugin also registers the
``numerals`` tool (question words such as "three quarters of" written as
digits), for a stage before the program stage. Trained and measured by
``examples/gsm8k_experiment`` (MODEL_CARD.md: data, scores, licence, limits).
"""

from __future__ import annotations

from pathlib import Path

from fslm_core import hookimpl
from fslm_core.api import NamedStack

from .numerals import NumeralsTool

HERE = Path(__file__).parent
STACKS = {
    "smollm2-gsm8k": (
        HERE / "stack",
        "SmolLM2-135M-Instruct writes a Python program, a sandboxed interpreter runs it (GSM8K; MIT)",
    ),
    "smollm2-gsm8k-vote": (HERE / "vote", "smollm2-gsm8k sampling five programs, keeping the most common output"),
    "smollm2-gsm8k-retry": (
        HERE / "retry",
        "smollm2-gsm8k answering again by five sampled programs where its answer is not a whole number",
    ),
    "smollm2-gsm8k-templates": (
        HERE / "templates",
        "smollm2-gsm8k with its program stage trained on 3,000 template problems as well as GSM8K's",
    ),
    "smollm2-gsm8k-baseline": (
        HERE / "baseline",
        "SmolLM2-135M-Instruct with one adapter trained on GSM8K's reference solutions (no tool)",
    ),
}
TARGETS_FILE = HERE / "data" / "distilled.jsonl.gz"


@hookimpl
def register_stacks(register):
    for name, (folder, description) in STACKS.items():
        if (folder / "stack.yaml").is_file():  # written by the experiment's package script
            register(NamedStack(name=name, folder=folder, description=description))


@hookimpl
def register_tools(register):
    register(NumeralsTool())
