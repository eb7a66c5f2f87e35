"""Loaded base models of the process, and where their weights are read from.

:class:`ModelPool` keeps one loaded backend per base (backend, source, file,
dtype), so stages naming the same model share it and differ only by adapter.
Before loading, a spec's weights may be redirected to a local folder: the
stage's ``model_path``, else ``$FSLM_MODELS_DIR/<model id>``.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from ..api.backends import ModelBackend, ModelSpec
from ..errors import DeclarationError, ModelLoadError
from .dtype_choice import auto_dtype

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


def local_folder_hint(model_id: str) -> str:
    """Where ``$FSLM_MODELS_DIR/<model id>`` was looked for, for errors about missing weights."""
    root = os.environ.get(MODELS_DIR_ENV, "").strip()
    if not root:
        return f"${MODELS_DIR_ENV}/{model_id} ({MODELS_DIR_ENV} is not set)"
    return f"${MODELS_DIR_ENV}/{model_id} (looked for {Path(root).expanduser().resolve() / model_id}: not found)"


def with_local_weights(spec: ModelSpec, model_path: Path | None = None) -> ModelSpec:
    """``spec`` with its weights read from ``model_path`` if given, else from ``$FSLM_MODELS_DIR/<id>`` if present."""
    if model_path is not None:
        return spec.with_source(model_path)
    folder = local_model_folder(spec.id)
    return spec.with_source(folder) if folder is not None else spec


def in_dtype(spec: ModelSpec, setting: str, field: str = "dtype", auto: str | None = None) -> ModelSpec:
    """``spec`` loading in what the dtype ``setting`` (a stack's ``dtype``) means for it on this machine.

    ``float32`` and ``bfloat16`` are taken as they are. ``auto`` is ``auto``
    if given, else :func:`~fslm_core.runtime.dtype_choice.auto_dtype` (the
    machine's measured choice) for a float32 model, and leaves a model whose plugin chose
    another dtype (Phi's bfloat16, which halves a 3.8B model's memory) as it
    is. ``int8`` gives the model int8 linear layers and computes the rest in
    float32 (the backend quantises a bfloat16 checkpoint layer by layer, never
    widening it whole). A model its plugin registered as int8-quantised
    computes in float32 whatever ``auto`` says.
    """
    if setting == "int8":
        return spec.model_copy(update={"dtype": "float32", "quantize": "int8"})
    if spec.quantize != "none":
        if setting == "bfloat16":
            raise DeclarationError(
                f"{field}: model {spec.id!r} is quantised to {spec.quantize}, whose layers compute in float32; "
                "use dtype float32 or auto"
            )
        return spec
    if setting == "auto":
        if spec.dtype != "float32":
            return spec
        dtype = auto or auto_dtype()
        if dtype == "int8":  # FSLM_AUTO_DTYPE=int8
            return in_dtype(spec, "int8", field)
    else:
        dtype = setting
    return spec if dtype == spec.dtype else spec.model_copy(update={"dtype": dtype})


def check_installed(spec: ModelSpec) -> None:
    """Raise if the spec has no weights to load (a plugin registered the id, but its weights package is missing)."""
    if spec.source is None:
        hint = spec.install_hint or "register it with a `source`"
        raise ModelLoadError(f"model {spec.id!r}: weights are not installed; {hint}")


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
        return (spec.backend, spec.source, spec.gguf_file, spec.dtype, spec.quantize)

    def get(self, spec: ModelSpec, backend_class: type[ModelBackend]) -> ModelBackend:
        check_installed(spec)
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
