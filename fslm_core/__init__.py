"""fslm-core: fine-tuned stacks of small language models.

Declare a :class:`Stack` of :class:`Stage` s, run it with :meth:`Stack.run`,
and read every inter-stage :class:`Message` in the returned :class:`Trace` s.
Plugins add model families, decompositions, message formats, routers,
evaluators and benchmarks through the hooks in :mod:`fslm_core.hookspecs`.
"""

from .backends import Generation, ModelBackend, ModelPool, ModelSpec
from .declarations import GenerationSettings, Stack, Stage, load_stack
from .decompositions import Decomposition, StageRecipe
from .distillation import DistillConfig, distill, load_distilled
from .engine import run_stack
from .errors import FslmError
from .hookspecs import hookimpl
from .messages import Message, Trace
from .plugins import get_registry, register_plugin
from .stage_evaluation import evaluate_stages
from .training import TrainConfig, train_stack


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
    "Stack",
    "Stage",
    "StageRecipe",
    "TrainConfig",
    "Trace",
    "decomposition",
    "distill",
    "evaluate_stages",
    "get_registry",
    "hookimpl",
    "load_distilled",
    "load_stack",
    "register_plugin",
    "run_stack",
    "train_stack",
]
