"""The extension points of fslm, one hook spec per function.

A plugin is a module (or object) with functions decorated by
``fslm_core.hookimpl`` whose names match the specs below. It is found through
the ``fslm`` entry-point group of its distribution::

    [project.entry-points.fslm]
    my_plugin = "my_package.plugin"

Registration hooks receive a ``register`` callback: call it once per thing the
plugin provides, so one plugin can add many models (or formats, routers...)
while the spec stays stable. Built-in parts of fslm-core register through the
same hooks (see ``fslm_core.default_plugins``).

Registration hooks are called once per process, the first time the registry is
needed, through pluggy: ``tryfirst``/``trylast`` order the plugins and hook
wrappers wrap each plugin's call. A plugin whose hook raises is reported by
name and skipped, and the rest still load.

**The first registration of a name wins.** Plugins are called in pluggy's
order: ``tryfirst`` implementations first (the built-ins are ``tryfirst``),
then the plugin loaded last, ``trylast`` ones last. A later registration of a
name already taken is ignored with a warning that names both providers, so
a plugin cannot silently replace a built-in: it asks with ``tryfirst``.

Each registration hook declares here, with :func:`registers`, what kind of
thing it registers and which attribute names it; the registry
(:mod:`fslm_core.plugins.registry`) builds its kinds from these declarations.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from .backends import ModelBackend, ModelSpec
    from .benchmarks import Benchmark
    from .decompositions import Decomposition
    from .evaluators import Evaluator, StageScorer
    from .exporters import Exporter
    from .formats import MessageFormat
    from .routers import Router
    from .stacks import NamedStack
    from .tools import Tool

hookspec = pluggy.HookspecMarker("fslm")
hookimpl = pluggy.HookimplMarker("fslm")


@dataclass(frozen=True)
class Registration:
    """What one registration hook registers: its kind (``models``), its label in messages, the naming attribute."""

    kind: str
    label: str
    hook: str
    name_attribute: str = "name"

    def name_of(self, item: Any) -> str:
        return getattr(item, self.name_attribute)


REGISTRATIONS: dict[str, Registration] = {}
"""Every registration hook's declaration, by kind, in the order of this module."""


def registers(kind: str, label: str, name_attribute: str = "name"):
    """Declare a registration hook spec: the kind it fills and how its items are named."""

    def declare(function: Callable) -> Callable:
        REGISTRATIONS[kind] = Registration(kind, label, function.__name__, name_attribute)
        return hookspec(function)

    return declare


@registers("backends", "backend")
def register_backends(register: Callable[[type[ModelBackend]], None]) -> None:
    """Register model backends: code that loads a base model and runs stages on it.

    Called once when the registry is built.

    :param register: ``register(backend_class)``, where ``backend_class`` is a
        subclass of :class:`fslm_core.api.ModelBackend` with a unique
        ``name`` class attribute. Model specs name their backend by that name.
    """


@registers("models", "model id", name_attribute="id")
def register_models(register: Callable[[ModelSpec], None]) -> None:
    """Register model ids that stages can name in ``Stage.model``.

    Called once when the registry is built.

    :param register: ``register(spec)``, where ``spec`` is a
        :class:`fslm_core.api.ModelSpec` (id, backend, source of weights,
        LoRA target modules, chat-template use, dtype, context length...).
    """


@hookspec(firstresult=True)
def resolve_model(model_id: str) -> ModelSpec | None:
    """Build a model spec for an id that no plugin registered by name.

    Called when ``Stage.model`` is not a registered id, so a plugin can accept a
    family of ids (the built-in ``hf:<path-or-hub-id>``). Called in plugin
    order until one returns a spec.

    :param str model_id: the id as written in the declaration.
    :return: a :class:`fslm_core.api.ModelSpec`, or ``None`` if this
        plugin does not handle the id.
    """


@registers("formats", "message format")
def register_formats(register: Callable[[MessageFormat], None]) -> None:
    """Register inter-stage message formats.

    A format tells a stage how to lay out its output, parses it into fields
    and renders it for the stages that read it.

    :param register: ``register(message_format)``, an instance of
        :class:`fslm_core.api.MessageFormat` with a unique ``name``.
    """


@registers("routers", "router")
def register_routers(register: Callable[[Router], None]) -> None:
    """Register routers: policies that decide which stages run, and in which waves.

    :param register: ``register(router)``, an instance of
        :class:`fslm_core.api.Router` with a unique ``name``.
    """


@registers("decompositions", "decomposition")
def register_decompositions(register: Callable[[Decomposition], None]) -> None:
    """Register task decompositions: recipes that build a ready stack for a model.

    A decomposition names the stages of a task, their prompts, and the teacher
    prompts used to distil each stage's training targets.

    :param register: ``register(decomposition)``, an instance of
        :class:`fslm_core.api.Decomposition` with a unique ``name``.
    """


@registers("evaluators", "evaluator")
def register_evaluators(register: Callable[[Evaluator | StageScorer], None]) -> None:
    """Register evaluators that score a stage's outputs against targets.

    :param register: ``register(evaluator)``, an instance of
        :class:`fslm_core.api.Evaluator` (scores the texts a stage writes) or
        :class:`fslm_core.api.StageScorer` (scores the stage's model), with a
        unique ``name``.
    """


@registers("benchmarks", "benchmark")
def register_benchmarks(register: Callable[[Benchmark], None]) -> None:
    """Register lm-evaluation-harness task configs (benchmark adapters).

    ``fslm eval`` hands them to lm-eval's ``TaskManager`` so they run like the
    harness's own tasks.

    :param register: ``register(benchmark)``, a
        :class:`fslm_core.api.Benchmark` holding a task name and a
        builder of the lm-eval task config (a dict).
    """


@registers("stacks", "stack")
def register_stacks(register: Callable[[NamedStack], None]) -> None:
    """Register ready-made stacks: trained stack folders a plugin ships as package data.

    Called once when the registry is built. Record where the folder is; do not
    load it here.

    :param register: ``register(named_stack)``, a :class:`fslm_core.api.NamedStack`
        (a unique name, the folder holding ``stack.yaml``, a description, and
        whether it is the default stack when a command names none).
    """


@registers("tools", "tool")
def register_tools(register: Callable[[Tool], None]) -> None:
    """Register tools: code a stage runs on its input instead of a model (``tool:`` in a stack file).

    A tool reads its stage's input text and returns a :class:`fslm_core.api.ToolResult`;
    its message is recorded like a model's, so traces, routing and the cache need nothing special.

    :param register: ``register(tool)``, an instance of :class:`fslm_core.api.Tool` with a
        unique ``name``.
    """


@registers("exporters", "exporter")
def register_exporters(register: Callable[[Exporter], None]) -> None:
    """Register exporters: code that writes a stack in the form another runtime serves (``fslm export``).

    :param register: ``register(exporter)``, an instance of :class:`fslm_core.api.Exporter` with a
        unique ``name`` (what ``fslm export --to`` takes).
    """
