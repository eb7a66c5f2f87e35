"""Makes ``fslm`` a model name lm-evaluation-harness knows, with nothing imported by hand.

lm-eval 0.4.13 reads no entry points: its model registry knows only the
models a process has imported. The ``fslm_lm_eval.pth`` file that fslm-core
installs next to this module calls :func:`install` when Python starts; it
only puts a finder on ``sys.meta_path`` (nothing is imported). When lm-eval
later imports ``lm_eval.models``, the module that fills its registry with its
own models, the finder adds ``fslm`` beside them as a lazy
``module:object`` path, which lm-eval imports only when the name is used
(``lm_eval --model fslm``, ``simple_evaluate(model="fslm")``).

This module is kept apart from ``fslm_core`` so that starting Python costs
nothing more than this file.
"""

from __future__ import annotations

import importlib.abc
import sys

MODEL_NAME = "fslm"
MODEL_PATH = "fslm_core.lmeval.model:FslmLM"
WATCHED_MODULE = "lm_eval.models"


def register() -> None:
    """Add ``fslm`` to lm-eval's model registry (as a lazy path), unless a name ``fslm`` is there already."""
    try:
        from lm_eval.api.registry import model_registry

        if MODEL_NAME not in model_registry:
            model_registry.register(MODEL_NAME, target=MODEL_PATH)
    except Exception as error:  # noqa: BLE001 - lm-eval's own models must load whatever happens here
        import warnings

        warnings.warn(f"fslm: could not register the fslm model with lm-eval: {error!r}", stacklevel=2)


class _RegisterAfterImport(importlib.abc.Loader):
    """Runs the real loader of ``lm_eval.models``, then :func:`register`."""

    def __init__(self, loader: importlib.abc.Loader) -> None:
        self.loader = loader

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module) -> None:
        self.loader.exec_module(module)
        register()

    def __getattr__(self, name: str):
        # Anything else (get_resource_reader, get_source...) is the real loader's business.
        return getattr(self.loader, name)


class _Finder(importlib.abc.MetaPathFinder):
    """Wraps the loader of ``lm_eval.models`` once; answers no other import."""

    def find_spec(self, fullname, path, target=None):
        if fullname != WATCHED_MODULE:
            return None
        sys.meta_path.remove(self)
        for finder in sys.meta_path:
            find_spec = getattr(finder, "find_spec", None)
            spec = find_spec(fullname, path, target) if find_spec else None
            if spec is not None:
                if spec.loader is not None:
                    spec.loader = _RegisterAfterImport(spec.loader)
                return spec
        return None


def install() -> None:
    """Watch for lm-eval's models module (called by ``fslm_lm_eval.pth`` at start-up)."""
    if WATCHED_MODULE in sys.modules:
        register()
    elif not any(isinstance(finder, _Finder) for finder in sys.meta_path):
        sys.meta_path.insert(0, _Finder())
