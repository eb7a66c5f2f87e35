"""Microsoft's Phi family as fslm model ids.

Two architectures live under the Phi name, and LoRA must target the module
names of the right one (transformers' ``modeling_phi.py`` and
``modeling_phi3.py``):

* ``phi`` (Phi-1.5, Phi-2): separate ``q_proj``/``k_proj``/``v_proj``, the
  attention output ``dense``, and the MLP's ``fc1``/``fc2``. Base models
  without a chat template; prompts follow the "Instruct: ... Output:" layout
  of their model cards.
* ``phi3`` (Phi-3-mini, Phi-3.5-mini, Phi-4-mini): fused ``qkv_proj`` and
  ``gate_up_proj``, plus ``o_proj`` and ``down_proj``. Instruction-tuned with
  a chat template that takes a system message.

Every model targets all attention and MLP projections, and loads in bfloat16:
the weights were trained in 16 bits, and float32 would double the memory of
models that already need several GB.

Weights come from the Hugging Face hub by default. To run offline, point a
stage at a local folder holding the same files (``Stage.model_path``, CLI
``--model-path``), or put the folder at ``$FSLM_MODELS_DIR/<model id>``.
"""

from __future__ import annotations

from dataclasses import dataclass

from fslm_core import ModelSpec, hookimpl

PHI_LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "dense", "fc1", "fc2")
PHI3_LORA_TARGETS = ("qkv_proj", "o_proj", "gate_up_proj", "down_proj")
LORA_TARGETS = {"phi": PHI_LORA_TARGETS, "phi3": PHI3_LORA_TARGETS}

# The question-answer layout recommended on the Phi-1.5 and Phi-2 model cards.
BASE_PROMPT_TEMPLATE = "Instruct: {instruction}\n\n{input}\nOutput:"
DTYPE = "bfloat16"


@dataclass(frozen=True)
class PhiModel:
    """One published Phi checkpoint and the facts a stack needs about it."""

    id: str
    hub_id: str
    architecture: str  # transformers model_type: "phi" or "phi3"
    parameters: int
    context_length: int
    instruct: bool
    summary: str

    def spec(self) -> ModelSpec:
        return ModelSpec(
            id=self.id,
            source=self.hub_id,
            chat_template=self.instruct,
            prompt_template=BASE_PROMPT_TEMPLATE,
            lora_target_modules=LORA_TARGETS[self.architecture],
            dtype=DTYPE,
            context_length=self.context_length,
            parameters=self.parameters,
            description=f"{self.summary} ({self.architecture} architecture, "
            f"{'chat template' if self.instruct else 'base model, no chat template'}; hub: {self.hub_id})",
            install_hint=install_hint(self.id, self.hub_id),
        )


# Parameter counts are those of the models built from each checkpoint's config.
PHI_MODELS = (
    PhiModel("phi-1.5", "microsoft/phi-1_5", "phi", 1_418_270_720, 2048, False, "Phi-1.5, 1.4B"),
    PhiModel("phi-2", "microsoft/phi-2", "phi", 2_779_683_840, 2048, False, "Phi-2, 2.7B"),
    PhiModel(
        "phi-3-mini-4k-instruct",
        "microsoft/Phi-3-mini-4k-instruct",
        "phi3",
        3_821_079_552,
        4096,
        True,
        "Phi-3-mini-4k-instruct, 3.8B",
    ),
    PhiModel(
        "phi-3.5-mini-instruct",
        "microsoft/Phi-3.5-mini-instruct",
        "phi3",
        3_821_079_552,
        131_072,
        True,
        "Phi-3.5-mini-instruct, 3.8B, 128k context",
    ),
    PhiModel(
        "phi-4-mini-instruct",
        "microsoft/Phi-4-mini-instruct",
        "phi3",
        3_836_021_760,
        131_072,
        True,
        "Phi-4-mini-instruct, 3.8B, 128k context",
    ),
)


def install_hint(model_id: str, hub_id: str) -> str:
    return (
        f"download {hub_id} once (e.g. `hf download {hub_id} --local-dir <folder>`) and pass "
        f"--model-path <folder> (Stage.model_path), or put the folder at $FSLM_MODELS_DIR/{model_id}"
    )


def model_specs() -> list[ModelSpec]:
    """The specs this plugin registers, one per Phi model id."""
    return [model.spec() for model in PHI_MODELS]


@hookimpl
def register_models(register):
    for spec in model_specs():
        register(spec)
