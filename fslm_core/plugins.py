"""The plugin manager and the registry of everything plugins provide.

Loading order: the built-in plugins (``fslm_core.default_plugins``), then the
``fslm`` entry points of installed distributions, then ``check_pending`` so a
misspelt hook name fails loudly. Two environment variables keep a broken
plugin from locking users out:

``FSLM_DISABLE_PLUGINS``
    ``1`` / ``all``: load no external plugin; otherwise a comma-separated list
    of entry-point names not to load.
``FSLM_LOAD_PLUGINS``
    A comma-separated list of entry-point names: load only these (empty: none).

A plugin that fails to import, or whose registration hook raises, is named in
a warning and in ``fslm plugins``; the others still load.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pluggy

from . import hookspecs
from .backends import ModelBackend, ModelSpec
from .benchmarks import Benchmark
from .decompositions import Decomposition
from .errors import PluginError, UnknownNameError
from .evaluators import Evaluator
from .formats import MessageFormat
from .logs import get_logger
from .routers import Router

ENTRY_POINT_GROUP = "fslm"
DEFAULT_MODEL = "smollm2-135m-instruct"  # the embedded model of fslm-plugin-smollm2
DEFAULT_DECOMPOSITION = "fslm-paper"
DISABLE_ENV = "FSLM_DISABLE_PLUGINS"
LOAD_ENV = "FSLM_LOAD_PLUGINS"

DEFAULT_PLUGINS = (
    "fslm_core.default_plugins.transformers_backend",
    "fslm_core.default_plugins.formats",
    "fslm_core.default_plugins.routers",
    "fslm_core.default_plugins.paper",
    "fslm_core.default_plugins.evaluators",
    "fslm_core.default_plugins.stage_evaluators",
)

log = get_logger(__name__)


@dataclass(frozen=True)
class Provider:
    """Who provides a registered thing: the plugin's name and its distribution."""

    plugin: str
    distribution: str | None = None
    version: str | None = None

    def describe(self) -> str:
        if self.distribution:
            return f"{self.plugin} ({self.distribution} {self.version})"
        return self.plugin


@dataclass(frozen=True)
class BrokenPlugin:
    name: str
    distribution: str | None
    error: str
    stage: str  # "import" or the hook that raised


@dataclass
class Kind:
    """One kind of registered thing (models, formats...) with who provided each."""

    label: str
    hook: str
    key: Callable[[Any], str]
    items: dict[str, Any] = field(default_factory=dict)
    providers: dict[str, Provider] = field(default_factory=dict)


class Registry:
    """Everything the loaded plugins registered, looked up by name."""

    KINDS = {
        "backends": ("backend", "register_backends", lambda cls: cls.name),
        "models": ("model id", "register_models", lambda spec: spec.id),
        "decompositions": ("decomposition", "register_decompositions", lambda item: item.name),
        "formats": ("message format", "register_formats", lambda item: item.name),
        "routers": ("router", "register_routers", lambda item: item.name),
        "evaluators": ("evaluator", "register_evaluators", lambda item: item.name),
        "benchmarks": ("benchmark", "register_benchmarks", lambda item: item.name),
    }

    def __init__(self, manager: pluggy.PluginManager, broken: list[BrokenPlugin]):
        self.manager = manager
        self.broken = list(broken)
        self.kinds = {kind: Kind(*spec) for kind, spec in self.KINDS.items()}
        distributions = {id(plugin): dist for plugin, dist in manager.list_plugin_distinfo()}
        for kind in self.kinds.values():
            self._collect(kind, distributions)

    def _provider(self, plugin_name: str, plugin: object, distributions: dict) -> Provider:
        dist = distributions.get(id(plugin))
        if dist is not None:
            return Provider(plugin_name, dist.project_name, dist.version)
        return Provider(plugin_name, "fslm-core", _core_version())

    def _collect(self, kind: Kind, distributions: dict) -> None:
        hook = getattr(self.manager.hook, kind.hook)
        # In registration order (built-ins first), one plugin at a time so that a
        # plugin raising here is named and skipped instead of hiding the rest.
        for impl in hook.get_hookimpls():
            provider = self._provider(impl.plugin_name, impl.plugin, distributions)

            def register(item: Any, provider: Provider = provider) -> None:
                name = kind.key(item)
                if name in kind.items:
                    log.warning(
                        "duplicate registration ignored",
                        kind=kind.label,
                        name=name,
                        kept=kind.providers[name].describe(),
                        ignored=provider.describe(),
                    )
                    return
                kind.items[name] = item
                kind.providers[name] = provider

            try:
                impl.function(register=register)
            except Exception as error:  # a plugin's bug must not take the others down
                self._report_broken(impl.plugin_name, provider.distribution, kind.hook, error)

    def _report_broken(self, name: str, distribution: str | None, stage: str, error: Exception) -> None:
        broken = BrokenPlugin(name, distribution, f"{type(error).__name__}: {error}", stage)
        self.broken.append(broken)
        log.warning(
            "plugin failed; the others are loaded",
            plugin=name,
            distribution=distribution,
            during=stage,
            error=broken.error,
            fix=f"uninstall it or set {DISABLE_ENV}={name}",
        )

    # Lookups -----------------------------------------------------------------

    def get(self, kind: str, name: str, hint: str = "", field: str = "") -> Any:
        entries = self.kinds[kind]
        if name not in entries.items:
            raise UnknownNameError(entries.label, name, entries.items, hint, field)
        return entries.items[name]

    def names(self, kind: str) -> list[str]:
        return sorted(self.kinds[kind].items)

    def provider(self, kind: str, name: str) -> Provider:
        return self.kinds[kind].providers[name]

    def model(self, model_id: str, field: str = "") -> ModelSpec:
        """The spec of a registered model id, or one a plugin resolves (``hf:<path>``)."""
        models = self.kinds["models"]
        if model_id in models.items:
            return models.items[model_id]
        spec = self.manager.hook.resolve_model(model_id=model_id)
        if spec is not None:
            return spec
        raise UnknownNameError(
            "model id",
            model_id,
            models.items,
            "Use `hf:<local folder or hub id>` for any transformers model, or install a model plugin",
            field,
        )

    def stack_from_decomposition(
        self, name: str | None = None, model: str | None = None, model_path=None, field: str = "decomposition"
    ):
        """A ready stack of decomposition ``name`` on ``model`` (defaults: fslm-paper on the embedded model)."""
        recipe = self.decomposition(name or DEFAULT_DECOMPOSITION, field=field)
        return recipe.build(model or DEFAULT_MODEL, model_path=model_path)

    def backend(self, name: str, field: str = "") -> type[ModelBackend]:
        return self.get("backends", name, field=field)

    def decomposition(self, name: str, field: str = "") -> Decomposition:
        return self.get("decompositions", name, field=field)

    def format(self, name: str, field: str = "") -> MessageFormat:
        return self.get("formats", name, field=field)

    def router(self, name: str, field: str = "") -> Router:
        return self.get("routers", name, field=field)

    def evaluator(self, name: str, field: str = "") -> Evaluator:
        return self.get("evaluators", name, field=field)

    def benchmark(self, name: str, field: str = "") -> Benchmark:
        return self.get("benchmarks", name, field=field)


def _core_version() -> str | None:
    try:
        return importlib.metadata.version("fslm-core")
    except importlib.metadata.PackageNotFoundError:
        return None


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
            item = BrokenPlugin(
                entry_point.name, dist.name if dist else None, f"{type(error).__name__}: {error}", "import"
            )
            broken.append(item)
            log.warning(
                "plugin failed to import; the others are loaded",
                plugin=item.name,
                distribution=item.distribution,
                error=item.error,
                fix=f"uninstall it or set {DISABLE_ENV}={item.name}",
            )
    while True:
        try:
            manager.check_pending()
            break
        except pluggy.PluginValidationError as error:
            name = manager.get_name(error.plugin) or repr(error.plugin)
            manager.unregister(error.plugin)
            broken.append(BrokenPlugin(name, None, str(error), "check_pending"))
            log.warning("plugin implements an unknown hook; not loaded", plugin=name, error=str(error))
    return manager, broken


_registry: Registry | None = None


def get_registry() -> Registry:
    """The process's registry, built from the plugins on first use."""
    global _registry
    if _registry is None:
        _registry = Registry(*build_plugin_manager())
    return _registry


def reset_registry() -> None:
    """Forget the registry so the next use reloads the plugins (tests, notebooks)."""
    global _registry
    _registry = None


def register_plugin(plugin: object, name: str | None = None) -> None:
    """Register a plugin object in this process (for notebooks and tests) and rebuild the registry."""
    global _registry
    manager, broken = build_plugin_manager() if _registry is None else (_registry.manager, _registry.broken)
    manager.register(plugin, name=name)
    try:
        manager.check_pending()
    except pluggy.PluginValidationError as error:
        manager.unregister(plugin)
        raise PluginError(f"plugin {name or plugin!r} implements an unknown hook: {error}") from None
    _registry = Registry(manager, broken)
