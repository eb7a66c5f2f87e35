"""Model backends: what a stage needs from a loaded base model.

A :class:`ModelSpec` says where a model's weights are and how to use them; a
:class:`ModelBackend` is one loaded base model on which any number of stages
run, each with its own LoRA adapter (or none). :class:`ModelPool` keeps one
loaded backend per base, so stages naming the same model share it.
"""

from __future__ import annotations

import os
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from pydantic import BaseModel, ConfigDict, Field

from .declarations import GenerationSettings
from .errors import ModelLoadError

_BYTES_PER_PARAM = {"float32": 4, "float16": 2, "bfloat16": 2}


class ModelSpec(BaseModel):
    """How to load one model id. Registered by plugins through ``register_models``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(description="The id stages use in `Stage.model`.")
    backend: str = Field(default="transformers", description="Name of the registered backend that loads it.")
    source: str | None = Field(
        default=None,
        description="Local folder or hub id of the weights; None when the weights are not installed.",
    )
    gguf_file: str | None = Field(default=None, description="GGUF file name inside `source`, if the weights are GGUF.")
    chat_template: bool = Field(default=True, description="Apply the tokenizer's chat template when it has one.")
    prompt_template: str = Field(
        default="{instruction}\n\n{input}\n\nResponse:",
        description="Prompt layout for models without a chat template.",
    )
    lora_target_modules: tuple[str, ...] | None = Field(
        default=None, description="Module names LoRA adapts; None lets peft choose by architecture."
    )
    dtype: str = Field(default="float32", description="torch dtype the weights are loaded in.")
    context_length: int | None = Field(default=None, description="Maximum tokens of prompt plus output.")
    parameters: int | None = Field(default=None, description="Parameter count, for the memory estimate.")
    description: str = ""
    install_hint: str = Field(default="", description="What to do when the weights are missing.")

    @property
    def memory_estimate_bytes(self) -> int | None:
        """Bytes the weights take in memory at `dtype` (activations not included)."""
        if self.parameters is None:
            return None
        return self.parameters * _BYTES_PER_PARAM.get(self.dtype, 4)

    def with_source(self, path: Path) -> ModelSpec:
        """This spec with its weights read from a local folder instead."""
        return self.model_copy(update={"source": str(path)})


MODELS_DIR_ENV = "FSLM_MODELS_DIR"


def local_model_folder(model_id: str) -> Path | None:
    """``$FSLM_MODELS_DIR/<model id>`` if that folder exists, else None.

    One folder of local model copies serves every stack on a machine, so stack
    files name model ids only and stay portable between machines. Ids that
    name their own weights (``hf:<path or hub id>``) are not looked up.
    """
    root = os.environ.get(MODELS_DIR_ENV, "").strip()
    if not root or ":" in model_id:
        return None
    folder = Path(root).expanduser() / model_id
    return folder if folder.is_dir() else None


def with_local_weights(spec: ModelSpec, model_path: Path | None = None) -> ModelSpec:
    """``spec`` with its weights read from ``model_path`` if given, else from ``$FSLM_MODELS_DIR/<id>`` if present."""
    if model_path is not None:
        return spec.with_source(model_path)
    folder = local_model_folder(spec.id)
    return spec.with_source(folder) if folder is not None else spec


@dataclass
class Generation:
    """One generated continuation, with the cost of the batch it was generated in."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    latency_s: float
    batch_size: int


class ModelBackend(ABC):
    """A loaded base model; stages run on it with or without a LoRA adapter.

    Subclasses are registered through the ``register_backends`` hook. All
    methods take whole batches: the backend owns batching, padding and
    device placement.
    """

    name: ClassVar[str]

    def __init__(self, spec: ModelSpec):
        self.spec = spec

    @classmethod
    @abstractmethod
    def load(cls, spec: ModelSpec) -> ModelBackend:
        """Load the base model described by ``spec``; raise ModelLoadError if it cannot."""

    @abstractmethod
    def attach_adapter(self, path: Path) -> str:
        """Attach the PEFT adapter folder at ``path`` (once) and return its name."""

    @abstractmethod
    def render_prompt(self, instruction: str, user_text: str) -> str:
        """Lay out a stage's instruction and input as the model expects (chat template or plain)."""

    @abstractmethod
    def generate(
        self,
        prompts: Sequence[str],
        adapters: Sequence[str | None],
        settings: GenerationSettings,
        batch_size: int,
        on_batch: Callable[[int], None] | None = None,
    ) -> list[Generation]:
        """Continue each rendered prompt, prompt ``i`` with adapter ``adapters[i]`` (None: plain base).

        Results come back in the order of ``prompts``. ``on_batch(n)`` is called
        after each internal batch of ``n`` prompts (progress bars).
        """

    def loglikelihood(
        self,
        pairs: Sequence[tuple[str, str]],
        adapters: Sequence[str | None],
        batch_size: int,
    ) -> list[tuple[float, bool]]:
        """Log-probability of each continuation given its context, and whether it is the greedy one."""
        raise NotImplementedError(f"backend {self.name!r} does not score continuations")

    def loglikelihood_rolling(
        self,
        texts: Sequence[str],
        adapters: Sequence[str | None],
        batch_size: int,
    ) -> list[float]:
        """Log-probability of each whole text (perplexity-style), scored in windows of the model's context."""
        raise NotImplementedError(f"backend {self.name!r} does not score whole texts")

    def count_tokens(self, text: str) -> int:
        """Number of tokens ``text`` takes."""
        raise NotImplementedError(f"backend {self.name!r} does not count tokens")


class ModelPool:
    """Loaded base models of this process, one per (backend, source, file, dtype).

    Stages naming the same model share one loaded base; each attaches its own
    adapter to it. The engine uses :data:`default_pool` unless given another.
    """

    def __init__(self) -> None:
        self._loaded: dict[tuple, ModelBackend] = {}
        self._lock = threading.Lock()

    @staticmethod
    def key(spec: ModelSpec) -> tuple:
        return (spec.backend, spec.source, spec.gguf_file, spec.dtype)

    def get(self, spec: ModelSpec, backend_class: type[ModelBackend]) -> ModelBackend:
        if spec.source is None:
            hint = spec.install_hint or "register it with a `source`"
            raise ModelLoadError(f"model {spec.id!r}: weights are not installed; {hint}")
        key = self.key(spec)
        with self._lock:
            if key not in self._loaded:
                self._loaded[key] = backend_class.load(spec)
            return self._loaded[key]

    def loaded(self) -> list[ModelBackend]:
        return list(self._loaded.values())

    def clear(self) -> None:
        with self._lock:
            self._loaded.clear()


default_pool = ModelPool()
