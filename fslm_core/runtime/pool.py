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
from ..errors import ModelLoadError

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
