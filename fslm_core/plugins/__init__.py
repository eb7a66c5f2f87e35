"""Plugins and the registry: which plugins load, what they provide, and the stacks named through them.

``get_registry()`` is the process's registry; ``reset_registry()`` forgets it
so the next use reloads the installed plugins; ``register_plugin`` adds one
in-process (notebooks, tests).
"""

from .manager import (
    DEFAULT_PLUGINS,
    DISABLE_ENV,
    ENTRY_POINT_GROUP,
    LOAD_ENV,
    BrokenPlugin,
    build_plugin_manager,
)
from .registry import Provider, Registry, get_registry, register_plugin, reset_registry
from .stacks import (
    CLI_ARGUMENTS,
    DEFAULT_DECOMPOSITION,
    DEFAULT_MODEL,
    LM_EVAL_ARGUMENTS,
    StackArguments,
    resolve_stack,
    single_model_stack,
)

__all__ = [
    "CLI_ARGUMENTS",
    "DEFAULT_DECOMPOSITION",
    "DEFAULT_MODEL",
    "DEFAULT_PLUGINS",
    "DISABLE_ENV",
    "ENTRY_POINT_GROUP",
    "LM_EVAL_ARGUMENTS",
    "LOAD_ENV",
    "BrokenPlugin",
    "Provider",
    "Registry",
    "StackArguments",
    "build_plugin_manager",
    "get_registry",
    "register_plugin",
    "reset_registry",
    "resolve_stack",
    "single_model_stack",
]
