"""Which stack a command or call works on: one place for every way of naming it.

A stack is given as a :class:`~fslm_core.Stack`, a stack file or folder, a
registered decomposition built for a model id, or (for evaluation) a model
alone; with none of these, the default decomposition on the default model.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..declarations import Stack, Stage, load_stack
from ..errors import StackChoiceError
from ..plugins.registry import Registry, get_registry

DEFAULT_MODEL = "smollm2-135m-instruct"  # the embedded model of fslm-plugin-smollm2
DEFAULT_DECOMPOSITION = "fslm-paper"
SINGLE_MODEL_INSTRUCTION = "Answer the user's request. Be correct and concise."


@dataclass(frozen=True)
class StackArguments:
    """How the caller's users write the arguments that choose a stack, so that errors name what they typed."""

    stack: str = "stack"
    decomposition: str = "decomposition"
    model: str = "model"
    model_path: str = "model_path"
    prefix: str = ""  # before every message, e.g. "model_args: "
    decomposition_field: str = "decomposition"  # names the argument in an unknown-decomposition error


def single_model_stack(
    model: str, model_path: str | os.PathLike | None = None, instruction: str = SINGLE_MODEL_INSTRUCTION
) -> Stack:
    """A one-stage stack: the model alone, no adapter, reading the prompt as it is."""
    stage = Stage(name="answer", model=model, model_path=model_path, instruction=instruction, template="{prompt}")
    return Stack(name=f"single:{model}", description=f"{model} alone", stages=[stage])


def resolve_stack(
    stack: Stack | str | os.PathLike | None = None,
    decomposition: str | None = None,
    model: str | None = None,
    model_path: str | os.PathLike | None = None,
    *,
    model_alone: bool = False,
    arguments: StackArguments = StackArguments(),
    registry: Registry | None = None,
) -> Stack:
    """The stack named by a caller's arguments.

    :param stack: a stack, the path of a stack file or folder, or the name of a ready-made stack a plugin
        registered (``fslm plugins`` lists them); it names its own models.
    :param decomposition: a registered decomposition to build on ``model``. With nothing named at all:
        the default ready-made stack if a plugin offers one, else :data:`DEFAULT_DECOMPOSITION` on
        :data:`DEFAULT_MODEL`.
    :param model_alone: a ``model`` without a decomposition is evaluated by itself
        (:func:`single_model_stack`), and naming nothing is an error.
    :raises StackChoiceError: when the arguments contradict each other or name nothing.
    """
    a = arguments
    if stack and decomposition:
        raise StackChoiceError(f"{a.prefix}give either {a.stack} or {a.decomposition}, not both")
    if stack and (model or model_path):
        if isinstance(stack, Stack):
            raise StackChoiceError(
                f"{a.prefix}{a.model} and {a.model_path} apply when no stack is given; a stack names its own models"
            )
        alone = " or a model alone" if model_alone else ""
        raise StackChoiceError(
            f"{a.prefix}{a.model} and {a.model_path} apply to {a.decomposition}{alone}; a stack file names its models"
        )
    if isinstance(stack, Stack):
        return stack
    if stack:
        return load_stack(_named_stack_folder(str(stack), registry) or stack)
    if model_alone and not decomposition:
        if not model:
            raise StackChoiceError(
                f"{a.prefix}name what to evaluate: {a.stack}, {a.decomposition} with {a.model}, or {a.model} alone"
            )
        return single_model_stack(model, model_path)
    registry = registry or get_registry()
    if not (decomposition or model or model_path):
        default = registry.default_stack()
        if default is not None:
            return load_stack(default.folder)
    recipe = registry.decomposition(decomposition or DEFAULT_DECOMPOSITION, a.decomposition_field)
    return recipe.build(model or DEFAULT_MODEL, model_path=model_path)


def _named_stack_folder(name: str, registry: Registry | None) -> Path | None:
    """The folder of the ready-made stack called ``name``, unless ``name`` is a path that exists."""
    if Path(name).expanduser().exists():
        return None
    registry = registry or get_registry()
    if name in registry.names("stacks"):
        return registry.named_stack(name).folder
    return None
