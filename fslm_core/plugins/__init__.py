"""Plugins and the registry: which plugins load and what they provide.

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

__all__ = [
    "DEFAULT_PLUGINS",
    "DISABLE_ENV",
    "ENTRY_POINT_GROUP",
    "LOAD_ENV",
    "BrokenPlugin",
    "Provider",
    "Registry",
    "build_plugin_manager",
    "get_registry",
    "register_plugin",
    "reset_registry",
]
