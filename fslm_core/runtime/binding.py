"""Binding a stack: each stage's model id, format and router resolved through the registry, bases loaded once."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from ..api.backends import ModelBackend, ModelSpec
from ..api.formats import Constraint, MessageFormat
from ..api.routers import Router, declared_rules
from ..api.tools import Tool
from ..declarations import Stack, Stage
from ..errors import DeclarationError
from ..plugins import Registry, get_registry
from .constraints import check_constraint
from .pool import ModelPool, check_installed, default_pool, in_dtype, with_local_weights


@dataclass(frozen=True)
class BoundStage:
    """A stage with what it runs on: its loaded base, adapter and format; or, for a tool stage, its tool."""

    stage: Stage
    backend: ModelBackend | None
    adapter_name: str | None
    format: MessageFormat
    constraint: Constraint | None = None  # what decoding holds the output to, when enforcement is on
    tool: Tool | None = None
    vote_tool: Tool | None = None  # the tool a sampling stage's vote runs on each sample

    def constraint_for(self, enforce_formats: bool) -> Constraint | None:
        """The constraint this run holds the stage to: none when the run or the stage turns enforcement off."""
        return self.constraint if enforce_formats and self.stage.enforce_format else None


@dataclass(frozen=True)
class BoundStack:
    stack: Stack
    router: Router
    stages: dict[str, BoundStage]

    @cached_property
    def formats(self) -> dict[str, MessageFormat]:
        """Each stage's message format by stage name (what `stage_input` renders reads with)."""
        return {name: item.format for name, item in self.stages.items()}

    @cached_property
    def empty_when_unparsed(self) -> frozenset[str]:
        """Stages whose readers get nothing from a message that did not parse (``on_parse_error: empty``)."""
        return frozenset(name for name, item in self.stages.items() if item.stage.on_parse_error == "empty")


def check_stack(stack: Stack, registry: Registry | None = None) -> list[ModelSpec | None]:
    """Check every name a stack uses and that its weights are installed, loading nothing; return each stage's spec.

    A tool stage has no spec (None): its tool and options are checked instead.

    Each spec is in the dtype the stack's ``dtype`` means for it on this
    machine, so stages of one dtype share a loaded base and stages of two do not.
    :func:`bind_stack` calls it first, so a mistake in the last stage is
    reported before the first stage's model takes its time to load.
    """
    registry = registry or get_registry()
    # Errors name the stack file when the stack came from one, as its validation errors do.
    file = f"{stack.source}: " if stack.source is not None else ""
    router = registry.router(stack.router, field=f"{file}router")
    for rule, field in declared_rules(stack).items():
        if rule not in router.applies:
            takers = [name for name in registry.names("routers") if rule in registry.router(name).applies]
            raise DeclarationError(
                f"{file}{field}: router {router.name!r} does not apply {rule}; set the stack's router to one that "
                f"does ({', '.join(takers)})"
            )
    specs = []
    for index, stage in enumerate(stack.stages):
        where = f"{file}stages.{index}"
        if stage.tool is not None:
            check_tool(registry, stage.tool, stage.tool_options, f"{where}.tool", f"{where}.tool_options")
            specs.append(None)
            continue
        if stage.vote is not None and stage.vote.by not in VOTE_KEYS:
            check_tool(
                registry, stage.vote.by, stage.vote.tool_options, f"{where}.vote.by", f"{where}.vote.tool_options"
            )
        spec = with_local_weights(registry.model(stage.model, field=f"{where}.model"), stage.model_path)
        spec = in_dtype(spec, stack.dtype)
        message_format = registry.format(stage.format, field=f"{where}.format")
        check_schema(stage, message_format, f"{where}.json_schema")
        registry.backend(spec.backend, field=f"{where}.model")
        check_installed(spec)
        specs.append(spec)
    return specs


VOTE_KEYS = ("number", "text")
"""What a vote may key samples by besides a tool's name."""


def check_tool(registry: Registry, name: str, options: dict, field: str, options_field: str) -> Tool:
    """The registered tool ``name``, if it takes ``options``; errors name ``field`` or ``options_field``."""
    tool = registry.tool(name, field=field)
    try:
        tool.check_options(options)
    except ValueError as error:
        raise DeclarationError(f"{options_field}: {error}") from None
    return tool


def check_schema(stage: Stage, message_format: MessageFormat, field: str) -> None:
    """A declared ``json_schema`` needs a format that takes one, and must compile to something decoding enforces."""
    if stage.json_schema is None:
        return
    if not message_format.takes_schema:
        raise DeclarationError(
            f"{field}: format {message_format.name!r} takes no schema; set the stage's format to json "
            "or remove the schema"
        )
    constraint = message_format.constraint(stage.json_schema)
    if constraint is not None:
        check_constraint(constraint, field)


def bind_stack(stack: Stack, registry: Registry | None = None, pool: ModelPool | None = None) -> BoundStack:
    """Resolve names through the registry, load each base once and attach adapters."""
    registry = registry or get_registry()
    pool = pool or default_pool
    specs = check_stack(stack, registry)
    router = registry.router(stack.router, field="router")
    bound: dict[str, BoundStage] = {}
    for index, (stage, spec) in enumerate(zip(stack.stages, specs, strict=True)):
        where = f"stages.{index}"
        message_format = registry.format(stage.format, field=f"{where}.format")
        if spec is None:
            bound[stage.name] = BoundStage(stage, None, None, message_format, tool=registry.tool(stage.tool))
            continue
        vote_tool = registry.tool(stage.vote.by) if stage.vote and stage.vote.by not in VOTE_KEYS else None
        backend = pool.get(spec, registry.backend(spec.backend, field=f"{where}.model"))
        adapter_name = backend.attach_adapter(stage.adapter) if stage.adapter else None
        constraint = message_format.constraint(stage.json_schema)
        bound[stage.name] = BoundStage(stage, backend, adapter_name, message_format, constraint, vote_tool=vote_tool)
    return BoundStack(stack, router, bound)
