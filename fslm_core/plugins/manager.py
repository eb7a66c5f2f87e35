"""The plugin manager: which plugins load, in which order, and which failed.

Loading order: the built-in plugins (``fslm_core.default_plugins``), then the
``fslm`` entry points of installed distributions, then ``check_pending`` so a
misspelt hook name fails loudly. Two environment variables keep a broken
plugin from locking users out:

``FSLM_DISABLE_PLUGINS``
    ``1`` / ``all``: load no external plugin; otherwise a comma-separated list
    of entry-point names not to load.
``FSLM_LOAD_PLUGINS``
    A comma-separated list of entry-point names: load only these (empty: none).

A plugin that fails to import is named in a warning and in ``fslm plugins``;
the others still load.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import os
from dataclasses import dataclass

import pluggy

from ..api import hookspecs
from ..logs import get_logger

ENTRY_POINT_GROUP = "fslm"
DISABLE_ENV = "FSLM_DISABLE_PLUGINS"
LOAD_ENV = "FSLM_LOAD_PLUGINS"

# Imported by name only: the built-in plugins sit above the layers of fslm_core that load them.
DEFAULT_PLUGINS = (
    "fslm_core.default_plugins.transformers_backend",
    "fslm_core.default_plugins.formats",
    "fslm_core.default_plugins.routers",
    "fslm_core.default_plugins.paper",
    "fslm_core.default_plugins.evaluators",
    "fslm_core.default_plugins.python_tool",
    "fslm_core.default_plugins.calculator_tool",
)

log = get_logger(__name__)


@dataclass(frozen=True)
class BrokenPlugin:
    name: str
    distribution: str | None
    error: str
    stage: str  # "import", "check_pending" or the hook that raised


def report_broken(broken: BrokenPlugin) -> BrokenPlugin:
    """Log a plugin that failed, with what to do about it."""
    log.warning(
        "plugin failed; the others are loaded",
        plugin=broken.name,
        distribution=broken.distribution,
        during=broken.stage,
        error=broken.error,
        fix=f"uninstall it or set {DISABLE_ENV}={broken.name}",
    )
    return broken


def _external_plugin_allowed(name: str) -> bool:
    disabled = os.environ.get(DISABLE_ENV, "").strip()
    if disabled.lower() in ("1", "all", "true", "yes"):
        return False
    if name in {item.strip() for item in disabled.split(",") if item.strip()}:
        return False
    if LOAD_ENV in os.environ:
        return name in {item.strip() for item in os.environ[LOAD_ENV].split(",") if item.strip()}
    return True


def build_plugin_manager() -> tuple[pluggy.PluginManager, list[BrokenPlugin]]:
    """A plugin manager with the built-ins and every allowed, importable external plugin."""
    manager = pluggy.PluginManager(ENTRY_POINT_GROUP)
    manager.add_hookspecs(hookspecs)
    for module_name in DEFAULT_PLUGINS:
        manager.register(importlib.import_module(module_name), name=module_name.rsplit(".", 1)[-1])
    broken: list[BrokenPlugin] = []
    for entry_point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        if manager.has_plugin(entry_point.name) or not _external_plugin_allowed(entry_point.name):
            continue
        try:
            manager.load_setuptools_entrypoints(ENTRY_POINT_GROUP, name=entry_point.name)
        except Exception as error:  # an import error in one plugin must not hide the others
            dist = getattr(entry_point, "dist", None)
            error_text = f"{type(error).__name__}: {error}"
            broken.append(report_broken(BrokenPlugin(entry_point.name, dist.name if dist else None, error_text, "import")))
    broken += _unload_invalid_plugins(manager)
    return manager, broken


def _unload_invalid_plugins(manager: pluggy.PluginManager) -> list[BrokenPlugin]:
    """Unregister each plugin implementing a hook that does not exist (a misspelt name), and report it."""
    broken = []
    while True:
        try:
            manager.check_pending()
            return broken
        except pluggy.PluginValidationError as error:
            name = manager.get_name(error.plugin) or repr(error.plugin)
            manager.unregister(error.plugin)
            broken.append(BrokenPlugin(name, None, str(error), "check_pending"))
            log.warning("plugin implements an unknown hook; not loaded", plugin=name, error=str(error))
