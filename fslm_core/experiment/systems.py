"""The systems an experiment compares, each as a stack the engine and lm-eval run alike."""

from __future__ import annotations

import functools
from pathlib import Path

from ..declarations import Stack, load_stack, with_dtype
from ..plugins import Registry
from ..runtime.stack_choice import single_model_stack
from .config import ExperimentConfig
from .eval_runs import EvalPlan

STACK_DIR = "stack"
BASELINE_DIR = "baseline"

DESCRIPTIONS = {
    "single": "the student alone",
    "single-lora": "the student with one LoRA adapter trained on the same examples (prompt to reference answer)",
    "stack-trained": "the trained stack",
    "stack-untrained": "the stack without adapters",
}


def baseline_stack(config: ExperimentConfig) -> Stack:
    """The same-data baseline before training: the student alone, reading the prompt as it is."""
    stack = single_model_stack(config.student)
    return stack.model_copy(update={"name": f"{config.name}-single-lora"})


def trained_folder(kind: str, config: ExperimentConfig, output: Path) -> Path:
    """Where the trained ``kind`` (``stack`` or ``baseline``) is read from after training.

    The packaged copy when the experiment packages one: what users install is
    what is measured, and it is committed, so a run resumed on a fresh clone
    still has it. Otherwise the training folder.
    """
    if config.package is not None and (config.package / kind / "stack.yaml").is_file():
        return config.package / kind
    return output / kind


def system_stack(system: str, config: ExperimentConfig, output: Path, registry: Registry) -> Stack:
    """The stack that evaluates ``system``, in the experiment's dtype, its stages capped as the config says."""
    stack = with_dtype(_system_stack(system, config, output, registry), config.dtype, field="dtype")
    return with_max_new_tokens(stack, config.evaluation.max_new_tokens)


def with_max_new_tokens(stack: Stack, cap: int | None) -> Stack:
    """``stack`` with no model stage writing more than ``cap`` tokens (None leaves it as it is)."""
    if cap is None:
        return stack
    stages = [
        stage.model_copy(update={"generation": stage.generation.model_copy(update={"max_new_tokens": cap})})
        if stage.tool is None and stage.generation.max_new_tokens > cap
        else stage
        for stage in stack.stages
    ]
    return stack.model_copy(update={"stages": stages})


def _system_stack(system: str, config: ExperimentConfig, output: Path, registry: Registry) -> Stack:
    if system == "single":
        return single_model_stack(config.student)
    if system == "single-lora":
        return load_stack(trained_folder(BASELINE_DIR, config, output))
    if system == "stack-trained":
        return load_stack(trained_folder(STACK_DIR, config, output))
    if system == "stack-untrained":
        decomposition = registry.decomposition(config.decomposition, field="decomposition")
        return decomposition.build(config.student, name=f"{config.name}-untrained")
    raise ValueError(f"unknown system {system!r}")


def paper_plan(config: ExperimentConfig, output: Path, registry: Registry) -> EvalPlan:
    """The eval step of the paper's experiment: its four systems on its tasks, zero-shot."""
    evaluation = config.evaluation
    return EvalPlan(
        systems={
            system: functools.partial(system_stack, system, config, output, registry) for system in config.systems
        },
        tasks=evaluation.tasks,
        seed=config.seed,
        documents=evaluation.documents,
        generation_documents=evaluation.generation_documents,
        batch_size=evaluation.batch_size,
        max_gen_toks=evaluation.max_gen_toks,
        traces_per_task=evaluation.traces_per_task,
        dtype=config.dtype,
    )
