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
"""

from __future__ import annotations

import pluggy

hookspec = pluggy.HookspecMarker("fslm")
hookimpl = pluggy.HookimplMarker("fslm")


@hookspec
def register_backends(register):
    """Register model backends: code that loads a base model and runs stages on it.

    Called once when the registry is built.

    :param register: ``register(backend_class)``, where ``backend_class`` is a
        subclass of :class:`fslm_core.api.ModelBackend` with a unique
        ``name`` class attribute. Model specs name their backend by that name.
    """


@hookspec
def register_models(register):
    """Register model ids that stages can name in ``Stage.model``.

    Called once when the registry is built.

    :param register: ``register(spec)``, where ``spec`` is a
        :class:`fslm_core.api.ModelSpec` (id, backend, source of weights,
        LoRA target modules, chat-template use, dtype, context length...).
    """


@hookspec(firstresult=True)
def resolve_model(model_id):
    """Build a model spec for an id that no plugin registered by name.

    Called when ``Stage.model`` is not a registered id, so a plugin can accept a
    family of ids (the built-in ``hf:<path-or-hub-id>``). Called in plugin
    order until one returns a spec.

    :param str model_id: the id as written in the declaration.
    :return: a :class:`fslm_core.api.ModelSpec`, or ``None`` if this
        plugin does not handle the id.
    """


@hookspec
def register_formats(register):
    """Register inter-stage message formats.

    A format tells a stage how to lay out its output, parses it into fields
    and renders it for the stages that read it.

    :param register: ``register(message_format)``, an instance of
        :class:`fslm_core.api.MessageFormat` with a unique ``name``.
    """


@hookspec
def register_routers(register):
    """Register routers: policies that decide which stages run, and in which waves.

    :param register: ``register(router)``, an instance of
        :class:`fslm_core.api.Router` with a unique ``name``.
    """


@hookspec
def register_decompositions(register):
    """Register task decompositions: recipes that build a ready stack for a model.

    A decomposition names the stages of a task, their prompts, and the teacher
    prompts used to distil each stage's training targets.

    :param register: ``register(decomposition)``, an instance of
        :class:`fslm_core.api.Decomposition` with a unique ``name``.
    """


@hookspec
def register_evaluators(register):
    """Register evaluators that score a stage's outputs against targets.

    :param register: ``register(evaluator)``, an instance of
        :class:`fslm_core.api.Evaluator` (scores the texts a stage writes) or
        :class:`fslm_core.api.StageScorer` (scores the stage's model), with a
        unique ``name``.
    """


@hookspec
def register_benchmarks(register):
    """Register lm-evaluation-harness task configs (benchmark adapters).

    ``fslm eval`` hands them to lm-eval's ``TaskManager`` so they run like the
    harness's own tasks.

    :param register: ``register(benchmark)``, a
        :class:`fslm_core.api.Benchmark` holding a task name and a
        builder of the lm-eval task config (a dict).
    """


@hookspec
def register_stacks(register):
    """Register ready-made stacks: trained stack folders a plugin ships as package data.

    Called once when the registry is built. Record where the folder is; do not
    load it here.

    :param register: ``register(named_stack)``, a :class:`fslm_core.api.NamedStack`
        (a unique name, the folder holding ``stack.yaml``, a description, and
        whether it is the default stack when a command names none).
    """
