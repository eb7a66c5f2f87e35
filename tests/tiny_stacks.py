"""Small stacks on the tiny random model that several test modules run, and messages written by hand."""

from __future__ import annotations

from fslm_core import GenerationSettings, Message, Stack, Stage


def written(stage: str, text: str, model: str = "m", **fields) -> Message:
    """A message as ``stage`` would record it after one token of a one-row batch (``fields`` override)."""
    settings = {"prompt_tokens": 1, "completion_tokens": 1, "latency_s": 0.1, "batch_size": 1, **fields}
    return Message(stage=stage, text=text, model=model, **settings)


def two_stage_stack(model_id: str, adapters, *, name: str = "tiny-two", dtype: str = "auto") -> Stack:
    """``facts`` then ``answer`` (which reads ``facts``), each with its own adapter and six new tokens."""
    settings = GenerationSettings(max_new_tokens=6)
    return Stack(
        name=name,
        dtype=dtype,
        stages=[
            Stage(
                name="facts", model=model_id, adapter=adapters[0], instruction="List key facts.", generation=settings
            ),
            Stage(
                name="answer",
                model=model_id,
                adapter=adapters[1],
                instruction="Answer.",
                reads=("facts",),
                generation=settings,
            ),
        ],
    )
