"""EleutherAI's Pythia suite as fslm model ids: the paper's backbone.

The paper (arXiv 2410.15570) stacks four Pythia-160M models, each with its
own LoRA adapter; ``pythia-160m`` is that model. All sizes share the GPT-NeoX
architecture (transformers' ``modeling_gpt_neox.py``), so LoRA targets its
fused attention projection ``query_key_value``, the attention output
``dense`` and the MLP's ``dense_h_to_4h``/``dense_4h_to_h``.

Pythia models are base models: no chat template. Prompts use an
Alpaca-style layout, the layout of the instruction data stages are
fine-tuned on. They load in float32: they are small, and half precision on
CPU is slow or unsupported for some operations.

Weights come from the Hugging Face hub by default. To run offline, point a
stage at a local folder holding the same files (``Stage.model_path``, CLI
``--model-path``), or put the folder at ``$FSLM_MODELS_DIR/<model id>``.
"""

from __future__ import annotations

from fslm_core import ModelSpec, hookimpl

LORA_TARGETS = ("query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h")
PROMPT_TEMPLATE = "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n"
CONTEXT_LENGTH = 2048
DTYPE = "float32"
PAPER_MODEL = "pythia-160m"

# Model id -> parameter count of the model built from the checkpoint's config.
PYTHIA_MODELS = {
    "pythia-70m": 70_426_624,
    "pythia-160m": 162_322_944,
    "pythia-410m": 405_334_016,
    "pythia-1b": 1_011_781_632,
    "pythia-1.4b": 1_414_647_808,
}


def hub_id(model_id: str) -> str:
    return f"EleutherAI/{model_id}"


def install_hint(model_id: str) -> str:
    return (
        f"download {hub_id(model_id)} once (e.g. `hf download {hub_id(model_id)} --local-dir <folder>`) and pass "
        f"--model-path <folder> (Stage.model_path), or put the folder at $FSLM_MODELS_DIR/{model_id}"
    )


def model_spec(model_id: str) -> ModelSpec:
    size = model_id.removeprefix("pythia-").upper()
    role = ", the paper's backbone" if model_id == PAPER_MODEL else ""
    return ModelSpec(
        id=model_id,
        source=hub_id(model_id),
        chat_template=False,
        prompt_template=PROMPT_TEMPLATE,
        lora_target_modules=LORA_TARGETS,
        dtype=DTYPE,
        context_length=CONTEXT_LENGTH,
        parameters=PYTHIA_MODELS[model_id],
        description=f"Pythia-{size}{role} (GPT-NeoX architecture, base model, no chat template; "
        f"hub: {hub_id(model_id)})",
        install_hint=install_hint(model_id),
    )


def model_specs() -> list[ModelSpec]:
    """The specs this plugin registers, smallest model first."""
    return [model_spec(model_id) for model_id in PYTHIA_MODELS]


@hookimpl
def register_models(register):
    for spec in model_specs():
        register(spec)
