"""Stacks that mix model families from two plugins, and local weights found through $FSLM_MODELS_DIR."""

from __future__ import annotations

import json

import pytest

from fslm_core import (
    GenerationSettings,
    ModelPool,
    Stack,
    Stage,
    decomposition,
    distill,
    get_registry,
    load_stack,
    run_stack,
    train_stack,
)
from fslm_core.runtime import MODELS_DIR_ENV, bind_stack, local_model_folder, with_local_weights
from fslm_core.testing import TINY_INSTRUCTIONS, build_random_adapter, build_tiny_model, tiny_config

SHORT = GenerationSettings(max_new_tokens=6)
INSTRUCTIONS = TINY_INSTRUCTIONS


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tiny_families(tmp_path_factory):
    """Tiny random models of the three architectures behind the Pythia and Phi plugins."""
    root = tmp_path_factory.mktemp("tiny-families")
    return {
        "gpt_neox": build_tiny_model(root / "gpt_neox", config=tiny_config("gpt_neox"), chat_template=False),
        "phi": build_tiny_model(root / "phi", config=tiny_config("phi"), chat_template=False),
        "phi3": build_tiny_model(root / "phi3", config=tiny_config("phi3", num_key_value_heads=2), chat_template=True),
    }


@pytest.fixture
def models_dir(tmp_path, monkeypatch, tiny_families):
    """$FSLM_MODELS_DIR holding local copies (links) of pythia-70m and phi-2."""
    root = tmp_path / "models"
    root.mkdir()
    (root / "pythia-70m").symlink_to(tiny_families["gpt_neox"], target_is_directory=True)
    (root / "phi-2").symlink_to(tiny_families["phi"], target_is_directory=True)
    monkeypatch.setenv(MODELS_DIR_ENV, str(root))
    return root


def test_stack_mixing_pythia_and_phi_stages_loads_each_base_once(tiny_families, tmp_path):
    registry = get_registry()
    neox, phi3 = tiny_families["gpt_neox"], tiny_families["phi3"]
    pythia_targets = registry.model("pythia-160m").lora_target_modules
    phi_targets = registry.model("phi-4-mini-instruct").lora_target_modules
    stack = Stack(
        name="pythia-and-phi",
        router="parallel",
        stages=[
            Stage(
                name="interpret",
                model="phi-4-mini-instruct",
                model_path=phi3,
                adapter=build_random_adapter(phi3, tmp_path / "interpret", seed=1, target_modules=phi_targets),
                instruction="Restate the request.",
                generation=SHORT,
            ),
            Stage(
                name="recall",
                model="pythia-160m",
                model_path=neox,
                adapter=build_random_adapter(neox, tmp_path / "recall", seed=2, target_modules=pythia_targets),
                instruction="List the key facts.",
                generation=SHORT,
            ),
            Stage(
                name="answer",
                model="pythia-160m",
                model_path=neox,
                reads=("interpret", "recall"),
                adapter=build_random_adapter(neox, tmp_path / "answer", seed=3, target_modules=pythia_targets),
                instruction="Answer the request.",
                generation=SHORT,
            ),
        ],
    )
    pool = ModelPool()

    bound = bind_stack(stack, pool=pool)
    traces = run_stack(stack, ["What is the capital of France?", "What is 12 + 7?"], pool=pool)

    assert len(pool.loaded()) == 2
    assert bound.stages["recall"].backend is bound.stages["answer"].backend
    assert bound.stages["interpret"].backend is not bound.stages["recall"].backend
    assert {backend.spec.id: type(backend.model.base_model.model).__name__ for backend in pool.loaded()} == {
        "phi-4-mini-instruct": "Phi3ForCausalLM",
        "pythia-160m": "GPTNeoXForCausalLM",
    }
    for trace in traces:
        assert [(m.stage, m.model) for m in trace.messages] == [
            ("interpret", "phi-4-mini-instruct"),
            ("recall", "pythia-160m"),
            ("answer", "pythia-160m"),
        ]
        assert trace.answer is not None


def test_mixed_stack_distils_trains_and_runs_with_each_family_lora_targets(tiny_families, tmp_path):
    """fslm-paper with interpret/recall on a Pythia base and reason/answer on a Phi-3 base, trained end to end."""
    registry = get_registry()
    neox, phi3 = tiny_families["gpt_neox"], tiny_families["phi3"]
    paper = decomposition("fslm-paper").build("pythia-160m", model_path=neox)
    stages = [
        stage
        if stage.name in ("interpret", "recall")
        else stage.model_copy(update={"model": "phi-4-mini-instruct", "model_path": phi3})
        for stage in paper.stages
    ]
    mixed = paper.model_copy(update={"name": "pythia-and-phi-paper", "stages": tuple(stages)})
    instructions = tmp_path / "instructions.json"
    instructions.write_text(json.dumps(INSTRUCTIONS))
    distill(
        instructions,
        tmp_path / "distilled",
        teacher="pythia-160m",
        teacher_model_path=neox,
        max_new_tokens=6,
        teacher_prompt="per-stage",
        progress=False,
    )
    training_pool = ModelPool()

    result = train_stack(
        tmp_path / "distilled",
        tmp_path / "trained",
        stack=mixed,
        epochs=2,
        batch_size=2,
        rank=4,
        learning_rate=1e-2,
        eval_fraction=0.0,
        progress=False,
        pool=training_pool,
    )

    assert len(training_pool.loaded()) == 2
    for stage in mixed.stages:
        training = result.stages[stage.name]
        config = json.loads((training.adapter / "adapter_config.json").read_text())
        assert set(config["target_modules"]) == set(registry.model(stage.model).lora_target_modules), stage.name
        assert training.steps == 4 and sum(training.losses[-2:]) < sum(training.losses[:2]), training.losses
    pool = ModelPool()
    traces = run_stack(load_stack(result.stack_file), ["What is the capital of France?"], pool=pool)
    assert len(pool.loaded()) == 2
    assert [(m.stage, m.model, m.adapter is not None) for m in traces[0].messages] == [
        ("interpret", "pythia-160m", True),
        ("recall", "pythia-160m", True),
        ("reason", "phi-4-mini-instruct", True),
        ("answer", "phi-4-mini-instruct", True),
    ]


def test_models_dir_supplies_weights_to_a_stack_that_names_only_model_ids(models_dir, tiny_families, tmp_path):
    stack = Stack(
        name="portable",
        stages=[
            Stage(name="recall", model="pythia-70m", instruction="List the key facts.", generation=SHORT),
            Stage(name="answer", model="phi-2", reads=("recall",), instruction="Answer.", generation=SHORT),
        ],
    )
    saved = load_stack(stack.save(tmp_path / "stack.yaml"))
    assert "model_path" not in (tmp_path / "stack.yaml").read_text()
    pool = ModelPool()

    traces = run_stack(saved, ["Name a primary color."], pool=pool)

    assert {backend.spec.id: backend.spec.source for backend in pool.loaded()} == {
        "pythia-70m": str(models_dir / "pythia-70m"),
        "phi-2": str(models_dir / "phi-2"),
    }
    assert traces[0].answer is not None


def test_stage_model_path_wins_over_models_dir_and_hf_ids_are_not_looked_up(models_dir, tiny_families):
    registry = get_registry()
    pythia = registry.model("pythia-70m")
    assert with_local_weights(pythia).source == str(models_dir / "pythia-70m")
    assert with_local_weights(pythia, tiny_families["phi"]).source == str(tiny_families["phi"])
    assert with_local_weights(registry.model("pythia-1b")).source == "EleutherAI/pythia-1b"
    assert local_model_folder("hf:pythia-70m") is None


def test_without_models_dir_specs_keep_their_registered_source(monkeypatch):
    monkeypatch.delenv(MODELS_DIR_ENV, raising=False)
    assert with_local_weights(get_registry().model("phi-2")).source == "microsoft/phi-2"


def test_plugins_listing_shows_the_local_copy_a_stage_would_load(models_dir):
    from click.testing import CliRunner

    from fslm_core.cli import cli, plugin_listing

    models = {row["name"]: row for row in plugin_listing()["models"]}
    assert models["pythia-70m"]["source"] == str(models_dir / "pythia-70m")
    assert models["pythia-70m"]["registered_source"] == "EleutherAI/pythia-70m"
    assert models["pythia-1b"]["source"] == models["pythia-1b"]["registered_source"] == "EleutherAI/pythia-1b"
    result = CliRunner().invoke(cli, ["plugins"])
    assert f"weights from {models_dir / 'pythia-70m'}" in result.output
