"""The shipped trained stack: what it registers, what its package holds, and that its stages do their roles."""

from __future__ import annotations

import gzip
import json

import pytest

from fslm_core import get_registry, load_stack, resolve_stack
from fslm_core.testing import safetensors_dtypes
from fslm_core.distillation.role_checks import role_problem
from fslm_plugin_smollm2_paper import BASELINE_FOLDER, BASELINE_NAME, STACK_FOLDER, STACK_NAME, TARGETS_FILE

DEMO = {  # the questions of `make demo`, each with the words a right answer holds
    "What is the capital of France?": ("paris",),
    "Name three primary colors.": ("red", "blue", "yellow"),
    "What is the boiling point of water in degrees Celsius?": ("100",),
    # A 135M model does not know this one; adapters teach roles, not facts (the README shows its trace).
    "Who wrote the play Romeo and Juliet?": ("shakespeare",),
}
KNOWN = list(DEMO)[:3]


def test_the_trained_stack_is_registered_and_is_the_default():
    registry = get_registry()
    assert registry.named_stack(STACK_NAME).folder == STACK_FOLDER
    assert registry.default_stack().name == STACK_NAME
    assert resolve_stack(None).name == STACK_NAME
    assert registry.named_stack(BASELINE_NAME).folder == BASELINE_FOLDER
    assert resolve_stack(BASELINE_NAME).name == BASELINE_NAME


def test_the_package_holds_float16_adapters_under_50_mb_and_the_targets_they_learnt():
    stack = load_stack(STACK_FOLDER)
    assert [stage.name for stage in stack.stages] == ["interpret", "recall", "reason", "answer"]
    adapters = [stage.adapter for stage in stack.stages]
    assert all(adapter is not None for adapter in adapters)
    files = [adapter / "adapter_model.safetensors" for adapter in adapters]
    assert all(safetensors_dtypes(file) == {"F16"} for file in files)
    (baseline_stage,) = load_stack(BASELINE_FOLDER).stages
    assert safetensors_dtypes(baseline_stage.adapter / "adapter_model.safetensors") == {"F16"}
    total = sum(path.stat().st_size for path in STACK_FOLDER.parent.rglob("*") if path.is_file())
    assert total < 50e6, total
    rows = [json.loads(line) for line in gzip.open(TARGETS_FILE, "rt", encoding="utf-8")]
    assert len(rows) > 500
    assert all(set(row["targets"]) == {"interpret", "recall", "reason", "answer"} for row in rows)


@pytest.mark.slow
def test_on_the_demo_questions_each_trained_stage_does_its_role():
    stack = load_stack(STACK_FOLDER)
    recipes = {recipe.name: recipe for recipe in get_registry().decomposition("fslm-paper").stages}
    traces = stack.run(list(DEMO))
    for trace, (prompt, answer_words) in zip(traces, DEMO.items()):
        reference = " ".join(answer_words)
        for message in trace.messages:
            problem = role_problem(message.text, prompt, reference, recipes[message.stage].checks)
            assert problem is None, (prompt, message.stage, problem, message.text)
        if prompt in KNOWN:
            assert all(word in trace.answer.lower() for word in answer_words), (prompt, trace.answer)
