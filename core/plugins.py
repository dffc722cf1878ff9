"""The one plugin manager.

Built-in plugins and third-party ones load through the same path: the entry points of group
``tuneyard`` (tuneyard's own pyproject declares its built-ins there). A plugin that fails to
import, raises in a registration hook or registers an invalid component is recorded in
:attr:`Plugins.infos` with its error and skipped; it never stops the host.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import inspect
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import pluggy
from pydantic import BaseModel

from tuneyard.core import hookspecs
from tuneyard.core.components import BASES, KINDS, Component
from tuneyard.core.errors import PluginError, unknown_name

log = logging.getLogger(__name__)

GROUP = "tuneyard"

#: registration hook → component kind it registers
REGISTRATION_HOOKS = {
    "register_dataset_sources": "dataset-source",
    "register_model_providers": "model-provider",
    "register_training_strategies": "strategy",
    "register_evaluators": "evaluator",
    "register_device_monitors": "device-monitor",
}


@dataclass
class PluginInfo:
    """One loaded (or failed) plugin: what ``tuneyard plugins list`` prints."""

    name: str
    version: str | None
    source: str  # "builtin" or "package"
    hooks: list[str] = field(default_factory=list)
    components: list[str] = field(default_factory=list)  # "kind:name"
    errors: list[str] = field(default_factory=list)


@dataclass
class ComponentInfo:
    """A registered component class and the plugin that provided it."""

    cls: type[Component]
    plugin: str

    @property
    def name(self) -> str:
        return self.cls.name


class Plugins:
    """The loaded plugins and the components they registered."""

    def __init__(self) -> None:
        self.pm = pluggy.PluginManager(GROUP)
        self.pm.add_hookspecs(hookspecs)
        self.infos: dict[str, PluginInfo] = {}
        self.components: dict[str, dict[str, ComponentInfo]] = {k: {} for k in KINDS}

    # -- loading ---------------------------------------------------------------------------
    def load_entry_points(self) -> None:
        """Import and register every entry point of group ``tuneyard``, built-ins included.

        Built-ins load first, so a third-party component reusing a built-in name is the one
        reported as a duplicate and skipped.
        """
        def builtin(ep: importlib.metadata.EntryPoint) -> bool:
            return bool(ep.dist) and ep.dist.name == "tuneyard"

        eps = importlib.metadata.entry_points(group=GROUP)
        for ep in sorted(eps, key=lambda ep: (not builtin(ep), ep.name)):
            info = PluginInfo(ep.name, ep.dist.version if ep.dist else None,
                              "builtin" if builtin(ep) else "package")
            self.infos[ep.name] = info  # recorded even when loading fails
            try:
                self._register(ep.load(), info)
            except Exception as exc:  # a broken plugin is reported, never fatal
                info.errors.append(f"failed to load: {type(exc).__name__}: {exc}")
                log.warning("plugin %s failed to load: %s", ep.name, exc)

    def register_plugin(self, module: Any, name: str, source: str = "package") -> None:
        """Register an already imported plugin object (used by tests and plugin directories)."""
        self._register(module, PluginInfo(name=name, version=None, source=source))

    def _register(self, module: Any, info: PluginInfo) -> None:
        self.infos[info.name] = info
        self.pm.register(module, name=info.name)
        info.hooks = sorted(call.name for call in self.pm.get_hookcallers(module) or [])

    def collect_components(self) -> None:
        """Run every registration hook, one implementation at a time, validating each class."""
        for hook_name, kind in REGISTRATION_HOOKS.items():
            for impl in getattr(self.pm.hook, hook_name).get_hookimpls():
                plugin = impl.plugin_name
                try:
                    impl.function(register=self._registrar(kind, plugin))
                except Exception as exc:
                    self._fail(plugin, f"{hook_name} raised {type(exc).__name__}: {exc}")

    def _registrar(self, kind: str, plugin: str) -> Callable[[type], None]:
        def register(cls: type) -> None:
            problem = _check_component(cls, kind)
            if problem is None and cls.name in self.components[kind]:
                other = self.components[kind][cls.name].plugin
                problem = f"{kind} name '{cls.name}' is already registered by plugin '{other}'"
            if problem:
                self._fail(plugin, problem)
                return
            self.components[kind][cls.name] = ComponentInfo(cls, plugin)
            self.infos[plugin].components.append(f"{kind}:{cls.name}")

        return register

    def _fail(self, plugin: str, message: str) -> None:
        self.infos.setdefault(plugin, PluginInfo(plugin, None, "package")).errors.append(message)
        log.warning("plugin %s: %s", plugin, message)

    # -- use -------------------------------------------------------------------------------
    def get(self, kind: str, name: str) -> ComponentInfo:
        """The component ``name`` of ``kind``.

        Raises:
            PluginError: no such component; the message lists the valid names.
        """
        try:
            return self.components[kind][name]
        except KeyError:
            raise PluginError(unknown_name(kind, name, list(self.components[kind]))) from None

    def fire(self, hook_name: str, **kwargs: Any) -> None:
        """Call every implementation of a lifecycle hook, isolating failures.

        An implementation that raises is logged with its plugin's name; the others still run.
        """
        for impl in reversed(getattr(self.pm.hook, hook_name).get_hookimpls()):
            try:
                impl.function(**{k: kwargs[k] for k in impl.argnames})
            except Exception as exc:
                log.warning(
                    "plugin %s: %s raised %s: %s", impl.plugin_name, hook_name,
                    type(exc).__name__, exc,
                )

    def versions(self) -> dict[str, str | None]:
        """Plugin name → version of every plugin that loaded without error."""
        return {n: i.version for n, i in self.infos.items() if not i.errors}


def _check_component(cls: Any, kind: str) -> str | None:
    """Why ``cls`` is not a valid component of ``kind``, or ``None`` when it is."""
    base = BASES[kind]
    if not (inspect.isclass(cls) and issubclass(cls, base)):
        return f"{cls!r} is not a subclass of {base.__name__}"
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not name:
        return f"{cls.__name__} has no 'name'"
    options = getattr(cls, "Options", None)
    if not (inspect.isclass(options) and issubclass(options, BaseModel)):
        return f"{kind} '{name}': Options must be a pydantic BaseModel subclass"
    try:
        options.model_json_schema()
    except Exception as exc:
        return f"{kind} '{name}': broken options model: {exc}"
    return None


@cache
def get_plugins() -> Plugins:
    """The process-wide plugin manager, loaded on first use."""
    plugins = Plugins()
    plugins.load_entry_points()
    plugins.collect_components()
    return plugins
