"""The registry of everything plugins provide, looked up by name.

Each registration hook is called through pluggy, one plugin at a time in
pluggy's order (``tryfirst`` implementations first, ``trylast`` ones last,
otherwise the plugin loaded last first; the built-ins are ``tryfirst``), so a
plugin raising there is named and skipped while the others still register,
and hook wrappers wrap each plugin's call. A name already registered is
ignored with a warning naming both providers: the first one called wins.
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pluggy

from ..api.backends import ModelBackend, ModelSpec
from ..api.benchmarks import Benchmark
from ..api.decompositions import Decomposition
from ..api.evaluators import Evaluator, StageScorer
from ..api.formats import MessageFormat
from ..api.hookspecs import REGISTRATIONS
from ..api.routers import Router
from ..api.stacks import NamedStack
from ..api.tools import Tool
from ..errors import PluginError, UnknownNameError
from ..logs import get_logger
from .manager import BrokenPlugin, build_plugin_manager, report_broken

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


@dataclass
class Kind:
    """One kind of registered thing (models, formats...) with who provided each."""

    label: str
    hook: str
    key: Callable[[Any], str]
    items: dict[str, Any] = field(default_factory=dict)
    providers: dict[str, Provider] = field(default_factory=dict)

    def add(self, item: Any, provider: Provider) -> None:
        name = self.key(item)
        if name in self.items:
            log.warning(
                "duplicate registration ignored",
                kind=self.label,
                name=name,
                kept=self.providers[name].describe(),
                ignored=provider.describe(),
            )
            return
        self.items[name] = item
        self.providers[name] = provider


class Registry:
    """Everything the loaded plugins registered, looked up by name."""

    KINDS = {kind: (item.label, item.hook, item.name_of) for kind, item in REGISTRATIONS.items()}
    """Each kind of registered thing, from the hook specs' declarations: (label, hook, how an item is named)."""

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
        implementations = [impl for impl in getattr(self.manager.hook, kind.hook).get_hookimpls() if not _wraps(impl)]
        # pluggy calls the last of its list first; each plugin alone, with every hook wrapper around it.
        for impl in reversed(implementations):
            provider = self._provider(impl.plugin_name, impl.plugin, distributions)
            others = [other.plugin for other in implementations if other is not impl]
            call_one = self.manager.subset_hook_caller(kind.hook, remove_plugins=others)
            try:
                call_one(register=lambda item, provider=provider: kind.add(item, provider))
            except Exception as error:  # a plugin's bug must not take the others down
                error_text = f"{type(error).__name__}: {error}"
                self.broken.append(report_broken(BrokenPlugin(impl.plugin_name, provider.distribution, error_text, kind.hook)))

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

    def backend(self, name: str, field: str = "") -> type[ModelBackend]:
        return self.get("backends", name, field=field)

    def decomposition(self, name: str, field: str = "") -> Decomposition:
        return self.get("decompositions", name, field=field)

    def format(self, name: str, field: str = "") -> MessageFormat:
        return self.get("formats", name, field=field)

    def router(self, name: str, field: str = "") -> Router:
        return self.get("routers", name, field=field)

    def evaluator(self, name: str, field: str = "") -> Evaluator | StageScorer:
        return self.get("evaluators", name, field=field)

    def benchmark(self, name: str, field: str = "") -> Benchmark:
        return self.get("benchmarks", name, field=field)

    def tool(self, name: str, field: str = "") -> Tool:
        return self.get("tools", name, field=field)

    def named_stack(self, name: str, field: str = "") -> NamedStack:
        return self.get("stacks", name, field=field)

    def default_stack(self) -> NamedStack | None:
        """The ready-made stack a command uses when it names none, if a plugin offers one."""
        return next((item for item in self.kinds["stacks"].items.values() if item.default), None)


def _wraps(impl: pluggy.HookImpl) -> bool:
    return impl.hookwrapper or impl.wrapper


def _core_version() -> str | None:
    try:
        return importlib.metadata.version("fslm-core")
    except importlib.metadata.PackageNotFoundError:
        return None


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
