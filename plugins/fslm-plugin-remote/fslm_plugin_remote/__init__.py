"""fslm stages on an inference server: llama.cpp's ``llama-server``, OpenAI-compatible servers (vLLM),
LoRAX. A stage's model id says where it runs (:mod:`.targets`); the plugin registers the ``remote``
backend and resolves those ids."""

from __future__ import annotations

from fslm_core import ModelSpec, hookimpl

from .backend import RemoteBackend
from .targets import is_remote, parse_target


@hookimpl
def register_backends(register):
    register(RemoteBackend)


@hookimpl
def resolve_model(model_id: str) -> ModelSpec | None:
    if not is_remote(model_id):
        return None
    from fslm_core.plugins import get_registry

    target = parse_target(model_id)
    base = get_registry().model(target.base, field=f"model {model_id!r}: base")
    # The base's context length and prompt layout apply: the server runs the same model.
    return ModelSpec(
        id=model_id,
        backend=RemoteBackend.name,
        # The weights are the server's; one backend per server and adapter (the pool shares by source).
        source=model_id,
        context_length=base.context_length,
        chat_template=base.chat_template,
        prompt_template=base.prompt_template,
        description=f"{target.base} on {target.label}",
    )


@hookimpl
def register_exporters(register):
    from .llama_cpp_export import LlamaCppExporter

    register(LlamaCppExporter())
