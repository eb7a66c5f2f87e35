"""fslm-core: fine-tuned stacks of small language models.

Declare a :class:`Stack` of :class:`Stage` s, run it with :meth:`Stack.run`,
and read every inter-stage :class:`Message` in the returned :class:`Trace` s.
Plugins add model families, decompositions, message formats, routers,
evaluators and benchmarks through the hooks in :mod:`fslm_core.hookspecs`.
"""

from .backends import Generation, ModelBackend, ModelPool, ModelSpec
from .declarations import GenerationSettings, Stack, Stage, load_stack
from .decompositions import Decomposition, StageRecipe
from .engine import run_stack
from .errors import FslmError
from .hookspecs import hookimpl
from .messages import Message, Trace
from .plugins import get_registry, register_plugin


def decomposition(name: str):
    """The registered decomposition called ``name`` (e.g. ``"fslm-paper"``)."""
    return get_registry().decomposition(name)


__all__ = [
    "Decomposition",
    "FslmError",
    "Generation",
    "GenerationSettings",
    "Message",
    "ModelBackend",
    "ModelPool",
    "ModelSpec",
    "Stack",
    "Stage",
    "StageRecipe",
    "Trace",
    "decomposition",
    "get_registry",
    "hookimpl",
    "load_stack",
    "register_plugin",
    "run_stack",
]
