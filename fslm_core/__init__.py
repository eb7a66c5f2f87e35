"""fslm-core: fine-tuned stacks of small language models.

Declare a :class:`Stack` of :class:`Stage` s, run it with :meth:`Stack.run`,
and read every inter-stage :class:`Message` in the returned :class:`Trace` s.
Plugins add model families, decompositions, message formats, routers,
evaluators and benchmarks through the hooks in :mod:`fslm_core.api.hookspecs`.
"""

from .api import Decomposition, Generation, ModelBackend, ModelSpec, StageRecipe, TeacherNotes, hookimpl
from .declarations import GenerationSettings, Stack, Stage, load_stack
from .distillation import DistillConfig, distill, load_distilled
from .errors import FslmError
from .messages import Message, RoutingDecision, Trace
from .plugins import get_registry, register_plugin
from .runtime import ModelPool, resolve_stack, run_stack
from .training import TrainConfig, score_stages, train_stack


def decomposition(name: str):
    """The registered decomposition called ``name`` (e.g. ``"fslm-paper"``)."""
    return get_registry().decomposition(name)


__all__ = [
    "Decomposition",
    "DistillConfig",
    "FslmError",
    "Generation",
    "GenerationSettings",
    "Message",
    "ModelBackend",
    "ModelPool",
    "ModelSpec",
    "RoutingDecision",
    "Stack",
    "Stage",
    "StageRecipe",
    "TeacherNotes",
    "TrainConfig",
    "Trace",
    "decomposition",
    "distill",
    "score_stages",
    "get_registry",
    "hookimpl",
    "load_distilled",
    "load_stack",
    "register_plugin",
    "resolve_stack",
    "run_stack",
    "train_stack",
]
