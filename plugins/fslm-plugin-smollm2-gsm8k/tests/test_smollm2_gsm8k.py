"""The shipped program-aided GSM8K stack: what it registers, what its package holds, and that it computes."""

from __future__ import annotations

import gzip
import json
import re

import pytest

from fslm_core import get_registry, load_stack, resolve_stack
from fslm_core.declarations import with_dtype
from fslm_core.testing import safetensors_dtypes
from fslm_plugin_smollm2_gsm8k import STACKS, TARGETS_FILE

NATALIA = (
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
    "How many clips did Natalia sell altogether in April and May?"
)
MUFFINS = (
    "A baker makes 24 muffins and sells three quarters of them. Then he bakes 10 more. "
    "How many muffins does he have now?"
)


def test_the_five_stacks_are_registered_by_name():
    registry = get_registry()
    for name, (folder, _) in STACKS.items():
        assert registry.named_stack(name).folder == folder
        assert resolve_stack(name).name == name


def test_the_stacks_share_one_float16_adapter_and_the_package_holds_its_checked_targets():
    stack, vote, retry, templates, baseline = (load_stack(STACKS[name][0]) for name in STACKS)
    assert [(stage.name, stage.tool) for stage in stack.stages] == [
        ("program", None),
        ("run", "python"),
        ("answer", "calculator"),
    ]
    program = stack.stage("program")
    assert safetensors_dtypes(program.adapter / "adapter_model.safetensors") == {"F16"}
    voting = vote.stage("program")
    assert voting.adapter == program.adapter and voting.samples == 5 and voting.vote.by == "python"
    # The retry: the stack itself, and where its answer is not a whole number, a vote among whole numbers.
    assert retry.stages == stack.stages and retry.fallback.generation.answer_form == "whole_number"
    assert retry.fallback.generation.signal is None  # the answer's form alone, no threshold
    fallback = resolve_stack(retry.fallback.stack).stage("program")
    assert fallback.adapter == program.adapter and fallback.samples == 5
    assert fallback.vote.by == "python" and fallback.vote.answer_form == "whole_number"
    # The templates stack: the same stages with an adapter of its own.
    assert [stage.model_copy(update={"adapter": None}) for stage in templates.stages] == [
        stage.model_copy(update={"adapter": None}) for stage in stack.stages
    ]
    assert templates.stage("program").adapter != program.adapter
    assert safetensors_dtypes(templates.stage("program").adapter / "adapter_model.safetensors") == {"F16"}
    (answer,) = baseline.stages
    assert safetensors_dtypes(answer.adapter / "adapter_model.safetensors") == {"F16"}
    total = sum(path.stat().st_size for path in STACKS["smollm2-gsm8k"][0].parent.rglob("*") if path.is_file())
    assert total < 65e6, total  # three float16 adapters of about 20 MB and the targets
    rows = [json.loads(line) for line in gzip.open(TARGETS_FILE, "rt", encoding="utf-8")]
    assert len(rows) > 5000 and all(set(row["targets"]) == {"program"} for row in rows)
    assert all("print(" in row["targets"]["program"] for row in rows[:100])


@pytest.mark.slow
def test_the_stack_writes_programs_that_the_sandbox_runs():
    stack = with_dtype(load_stack(STACKS["smollm2-gsm8k"][0]), "float32")
    natalia, muffins = stack.run([NATALIA, MUFFINS])
    # The adapter taught the format: only assignments and a print (untrained, the model writes prose), which
    # the sandbox runs to a number. Whether the number is right is measured in docs/results_gsm8k.md (6.6%).
    for trace in (natalia, muffins):
        program, run, answer = trace.messages
        lines = program.text.strip().splitlines()
        assert all(re.fullmatch(r"[a-z_][a-z0-9_]* = .+", line) for line in lines[:-1]), trace.render()
        assert re.fullmatch(r"print\(.+\)", lines[-1]), trace.render()
        assert run.model == "tool:python" and float(run.text) == float(answer.text), trace.render()


@pytest.mark.slow
def test_the_templates_stack_answers_the_muffins_question():
    # Its stage learnt "a fraction taken away, then more added" from template problems (none with these numbers).
    stack = with_dtype(load_stack(STACKS["smollm2-gsm8k-templates"][0]), "float32")
    (trace,) = stack.run([MUFFINS])
    program, run, answer = trace.messages
    assert "24 - " in program.text and run.text.strip() == "16.0" and answer.text == "16", trace.render()
