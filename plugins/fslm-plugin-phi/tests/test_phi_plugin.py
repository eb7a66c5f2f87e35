"""fslm-plugin-phi without the hub: tiny random Phi and Phi-3 models through the plugin's loading path."""

from __future__ import annotations

import json
import os
import subprocess
import sys


import pytest
import torch
from transformers import AutoModelForCausalLM, Phi3Config, PhiConfig

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
from fslm_plugin_phi import PHI3_LORA_TARGETS, PHI_LORA_TARGETS, PHI_MODELS

BASE_IDS = ("phi-1.5", "phi-2")
INSTRUCT_IDS = ("phi-3-mini-4k-instruct", "phi-3.5-mini-instruct", "phi-4-mini-instruct")
SHORT = GenerationSettings(max_new_tokens=6)
INSTRUCTIONS = TINY_INSTRUCTIONS


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny_phi_config() -> PhiConfig:
    """The Phi-1.5/Phi-2 architecture, shrunk: partial rotary embeddings, biased projections."""
    return tiny_config("phi", partial_rotary_factor=0.5)


def tiny_phi3_config() -> Phi3Config:
    """The Phi-3/Phi-4-mini architecture, shrunk: fused qkv and gate-up, grouped-query attention."""
    return tiny_config("phi3", num_key_value_heads=2, partial_rotary_factor=0.75)


@pytest.fixture(scope="module")
def tiny_folders(tmp_path_factory):
    """Model id -> a tiny random model of its architecture (base models without a chat template)."""
    root = tmp_path_factory.mktemp("tiny-phi")
    phi = build_tiny_model(root / "phi", config=tiny_phi_config(), chat_template=False)
    phi3 = build_tiny_model(root / "phi3", config=tiny_phi3_config(), chat_template=True)
    return {model.id: phi if model.architecture == "phi" else phi3 for model in PHI_MODELS}


@pytest.fixture(scope="module")
def instruction_file(tmp_path_factory):
    """Four Alpaca-style examples for distilling and training stage adapters."""
    path = tmp_path_factory.mktemp("instructions") / "instructions.json"
    path.write_text(json.dumps(INSTRUCTIONS))
    return path


def two_stage_stack(model_id, folder, adapter) -> Stack:
    return Stack(
        name=f"{model_id}-two-stages",
        stages=[
            Stage(name="restate", model=model_id, model_path=folder, adapter=adapter,
                  instruction="Restate the request.", generation=SHORT),
            Stage(name="answer", model=model_id, model_path=folder, reads=("restate",),
                  instruction="Answer the request.", generation=SHORT),
        ],
    )


def fslm_cli(*args, env_extra=None):
    env = {key: value for key, value in os.environ.items() if key != "FSLM_MODELS_DIR"}
    env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", **(env_extra or {}))
    return subprocess.run(
        [sys.executable, "-m", "fslm_core.cli", *args], capture_output=True, text=True, env=env, timeout=120
    )


def test_registers_the_phi_family_with_what_a_stack_needs():
    registry = get_registry()
    for model_id in BASE_IDS + INSTRUCT_IDS:
        spec = registry.model(model_id)
        assert registry.provider("models", model_id).distribution == "fslm-plugin-phi"
        assert spec.source.startswith("microsoft/")
        assert spec.dtype == "bfloat16" and spec.context_length >= 2048
        assert spec.memory_estimate_bytes == 2 * spec.parameters > 2e9
        assert "--model-path" in spec.install_hint and f"$FSLM_MODELS_DIR/{model_id}" in spec.install_hint
    for model_id in BASE_IDS:
        spec = registry.model(model_id)
        assert not spec.chat_template and "{instruction}" in spec.prompt_template
        assert spec.lora_target_modules == PHI_LORA_TARGETS
    for model_id in INSTRUCT_IDS:
        assert registry.model(model_id).chat_template
        assert registry.model(model_id).lora_target_modules == PHI3_LORA_TARGETS
    assert registry.model("phi-2").source == "microsoft/phi-2"
    assert registry.model("phi-4-mini-instruct").context_length == 131_072


@pytest.mark.parametrize("model_id", ["phi-2", "phi-4-mini-instruct"])
def test_lora_targets_cover_every_projection_of_the_architecture(model_id, tiny_folders):
    spec = get_registry().model(model_id)
    model = AutoModelForCausalLM.from_pretrained(tiny_folders[model_id])
    linear = {name.rsplit(".", 1)[-1] for name, module in model.named_modules()
              if isinstance(module, torch.nn.Linear) and module is not model.get_output_embeddings()}
    assert linear == set(spec.lora_target_modules)


@pytest.mark.parametrize("model_id", ["phi-2", "phi-4-mini-instruct"])
def test_stack_runs_on_local_weights_with_an_adapter_on_the_plugin_targets(model_id, tiny_folders, tmp_path):
    spec = get_registry().model(model_id)
    folder = tiny_folders[model_id]
    adapter = build_random_adapter(folder, tmp_path / "adapter", seed=1, target_modules=spec.lora_target_modules)
    pool = ModelPool()

    traces = run_stack(two_stage_stack(model_id, folder, adapter), ["What is the capital of France?"], pool=pool)

    [backend] = pool.loaded()
    assert backend.spec.id == model_id and backend.spec.source == str(folder)
    assert backend.model.dtype == torch.bfloat16
    assert [message.stage for message in traces[0].messages] == ["restate", "answer"]
    assert traces[0].answer is not None
    wrapped = {name.rsplit(".", 1)[-1] for name, module in backend.model.named_modules() if hasattr(module, "lora_A")}
    assert wrapped == set(spec.lora_target_modules)
    prompt = backend.render_prompt("Restate the request.", "hello")
    if spec.chat_template:
        assert backend.uses_chat_template and prompt.startswith("<|im_start|>system\nRestate the request.")
    else:
        assert not backend.uses_chat_template and prompt == "Instruct: Restate the request.\n\nhello\nOutput:"


@pytest.mark.parametrize("model_id", ["phi-2", "phi-4-mini-instruct"])
def test_fslm_distils_and_trains_an_adapter_on_the_plugin_targets(model_id, tiny_folders, instruction_file, tmp_path):
    spec = get_registry().model(model_id)
    folder = tiny_folders[model_id]
    distill(instruction_file, tmp_path / "distilled", teacher=model_id, teacher_model_path=folder,
            max_new_tokens=6, progress=False)

    result = train_stack(tmp_path / "distilled", tmp_path / "trained", model=model_id, model_path=folder,
                         stages=("interpret",), epochs=3, batch_size=2, rank=4, learning_rate=1e-2,
                         eval_fraction=0.0, progress=False)

    training = result.stages["interpret"]
    assert training.steps == 6
    assert sum(training.losses[-2:]) < sum(training.losses[:2]), training.losses
    adapter_config = json.loads((training.adapter / "adapter_config.json").read_text())
    assert set(adapter_config["target_modules"]) == set(spec.lora_target_modules)
    pool = ModelPool()
    traces = run_stack(load_stack(result.stack_file), ["What is the capital of France?"], pool=pool)
    assert traces[0].message("interpret").adapter == str(training.adapter)
    assert [backend.spec.id for backend in pool.loaded()] == [model_id]


def test_offline_without_local_weights_says_how_to_point_at_them(tmp_path):
    # An empty hub cache: the weights are nowhere on this machine.
    result = fslm_cli("run", "--model", "phi-2", "hi", env_extra={"HF_HOME": str(tmp_path)})
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "phi-2" in lines[0] and "--model-path" in lines[0] and "$FSLM_MODELS_DIR/phi-2" in lines[0]


def test_plugins_command_lists_phi_ids_only_while_the_plugin_is_loaded():
    listing = json.loads(fslm_cli("plugins", "--json").stdout)
    phi_rows = {row["name"]: row for row in listing["models"] if row["distribution"] == "fslm-plugin-phi"}
    assert set(phi_rows) == set(BASE_IDS + INSTRUCT_IDS)
    assert phi_rows["phi-2"]["plugin"] == "phi" and phi_rows["phi-2"]["memory_estimate_gb"] == pytest.approx(5.56)

    disabled = json.loads(fslm_cli("plugins", "--json", env_extra={"FSLM_DISABLE_PLUGINS": "phi"}).stdout)
    names = [row["name"] for row in disabled["models"]]
    assert not set(names) & set(phi_rows)
    assert "fslm-paper" in [row["name"] for row in disabled["decompositions"]]
