"""fslm-plugin-pythia without the hub: a tiny random GPT-NeoX through the plugin's loading path."""

from __future__ import annotations

import json


import pytest
import torch
from transformers import AutoModelForCausalLM

from fslm_core import (
    GenerationSettings,
    ModelPool,
    Stack,
    Stage,
    distill,
    get_registry,
    load_stack,
    run_stack,
    train_stack,
)
from fslm_core.testing import TINY_INSTRUCTIONS, build_random_adapter, build_tiny_model, tiny_config
from fslm_plugin_pythia import LORA_TARGETS, PAPER_MODEL, PYTHIA_MODELS

SHORT = GenerationSettings(max_new_tokens=6)
INSTRUCTIONS = TINY_INSTRUCTIONS


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tiny_neox(tmp_path_factory):
    """A two-layer random GPT-NeoX (Pythia's architecture) with a local tokenizer and no chat template."""
    config = tiny_config("gpt_neox", intermediate_size=128, rotary_pct=0.25)
    return build_tiny_model(tmp_path_factory.mktemp("tiny-pythia"), config=config, chat_template=False)


def two_stage_stack(folder, adapters) -> Stack:
    return Stack(
        name="pythia-two-stages",
        stages=[
            Stage(name="recall", model=PAPER_MODEL, model_path=folder, adapter=adapters[0],
                  instruction="List the key facts.", generation=SHORT),
            Stage(name="answer", model=PAPER_MODEL, model_path=folder, adapter=adapters[1], reads=("recall",),
                  instruction="Answer the request.", generation=SHORT),
        ],
    )


def test_registers_pythia_70m_to_1_4b_without_chat_template():
    registry = get_registry()
    assert set(PYTHIA_MODELS) == {"pythia-70m", "pythia-160m", "pythia-410m", "pythia-1b", "pythia-1.4b"}
    for model_id in PYTHIA_MODELS:
        spec = registry.model(model_id)
        assert registry.provider("models", model_id).distribution == "fslm-plugin-pythia"
        assert spec.source == f"EleutherAI/{model_id}"
        assert not spec.chat_template and spec.lora_target_modules == LORA_TARGETS
        assert spec.context_length == 2048 and spec.dtype == "float32"
        assert spec.memory_estimate_bytes == 4 * spec.parameters
    assert "paper" in registry.model(PAPER_MODEL).description
    assert registry.model("pythia-160m").parameters == 162_322_944


def test_lora_targets_cover_every_gpt_neox_projection(tiny_neox):
    model = AutoModelForCausalLM.from_pretrained(tiny_neox)
    linear = {name.rsplit(".", 1)[-1] for name, module in model.named_modules()
              if isinstance(module, torch.nn.Linear) and module is not model.get_output_embeddings()}
    assert linear == set(LORA_TARGETS)


def test_two_stage_stack_runs_with_an_adapter_per_stage_on_one_base(tiny_neox, tmp_path):
    adapters = [build_random_adapter(tiny_neox, tmp_path / f"adapter{i}", seed=i, target_modules=LORA_TARGETS)
                for i in range(2)]
    pool = ModelPool()

    prompts = ["What is 12 + 7?", "Name a primary color."]
    traces = run_stack(two_stage_stack(tiny_neox, adapters), prompts, pool=pool, dtype="float32")

    [backend] = pool.loaded()
    assert backend.spec.id == PAPER_MODEL and backend.model.dtype == torch.float32
    assert len(backend.adapter_names) == 2
    for trace in traces:
        assert [message.stage for message in trace.messages] == ["recall", "answer"]
        assert all(message.completion_tokens > 0 for message in trace.messages)
    assert not backend.uses_chat_template
    assert backend.render_prompt("List the key facts.", "hi") == (
        "### Instruction:\nList the key facts.\n\n### Input:\nhi\n\n### Response:\n"
    )


def test_fslm_distils_and_trains_adapters_on_the_gpt_neox_targets(tiny_neox, tmp_path):
    instructions = tmp_path / "instructions.json"
    instructions.write_text(json.dumps(INSTRUCTIONS))
    # A randomly initialised teacher cannot write the notes layout; one prompt per stage still gives every
    # stage a target, which is what this test needs to reach GPT-NeoX's training path.
    distill(instructions, tmp_path / "distilled", teacher=PAPER_MODEL, teacher_model_path=tiny_neox,
            max_new_tokens=6, teacher_prompt="per-stage", progress=False)

    result = train_stack(tmp_path / "distilled", tmp_path / "trained", model=PAPER_MODEL, model_path=tiny_neox,
                         stages=("interpret", "recall"), epochs=3, batch_size=2, rank=4, learning_rate=1e-2,
                         eval_fraction=0.0, progress=False)

    for name in ("interpret", "recall"):
        training = result.stages[name]
        assert training.steps == 6
        assert sum(training.losses[-2:]) < sum(training.losses[:2]), (name, training.losses)
        adapter_config = json.loads((training.adapter / "adapter_config.json").read_text())
        assert set(adapter_config["target_modules"]) == set(LORA_TARGETS)
    pool = ModelPool()
    traces = run_stack(load_stack(result.stack_file), ["What is 12 + 7?"], pool=pool)
    assert [message.adapter is not None for message in traces[0].messages] == [True, True, False, False]
    [backend] = pool.loaded()
    assert len(backend.adapter_names) == 2
