"""The one plugin manager.

Every plugin loads through :meth:`Plugins.load`, in this order:

1. built-ins: the entry points of group ``tuneyard`` declared by tuneyard's own pyproject;
2. installed packages: the other entry points of group ``tuneyard`` (``tuneyard plugins install``);
3. one-off files: each ``*.py`` in the plugins directory (``--plugins-dir DIR`` or
   ``TUNEYARD_PLUGINS_DIR``), named after the file, versioned by a hash of its content.

``TUNEYARD_LOAD_PLUGINS=a,b`` loads only those third-party plugins (by plugin or distribution
name; empty = none), the way out of a broken one; built-ins always load (as in simonw/llm's
``LLM_LOAD_PLUGINS``). ``TUNEYARD_TRACE_PLUGINS=1`` prints every hook call with its plugin and
duration to stderr (as datasette's ``DATASETTE_TRACE_PLUGINS``).

A plugin that fails to import, raises in a registration hook, registers an invalid component
(not a subclass of its kind's base, no name, a broken options model) or a name already taken is
recorded in :attr:`Plugins.infos` with its error and skipped whole: its components are dropped
and its hooks unregistered. It never stops the host.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.metadata
import importlib.util
import inspect
import logging
import os
import re
import site
import subprocess
import sys
import sysconfig
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import pluggy
from pydantic import BaseModel

from tuneyard.core import hookspecs
from tuneyard.core.components import BASES, KINDS, Component
from tuneyard.core.errors import PluginError, TuneyardError, unknown_name

log = logging.getLogger(__name__)

GROUP = "tuneyard"
PLUGINS_DIR_ENV = "TUNEYARD_PLUGINS_DIR"
LOAD_ENV = "TUNEYARD_LOAD_PLUGINS"
TRACE_ENV = "TUNEYARD_TRACE_PLUGINS"

#: A component's name: lower-case words of letters and digits joined by dashes.
COMPONENT_NAME = re.compile(r"[a-z0-9]+(-[a-z0-9]+)*")

#: every hook spec's name, from the one list of hooks (:mod:`tuneyard.core.hookspecs`)
HOOKS = sorted(name for name in dir(hookspecs)
               if hasattr(getattr(hookspecs, name), f"{GROUP}_spec"))

#: the hooks called during a run (``on_*``), in the run process
LIFECYCLE_HOOKS = [name for name in HOOKS if name.startswith("on_")]

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
    """One plugin, loaded, failed or not loaded: a row of ``tuneyard plugins list``.

    Attributes:
        name: the entry-point name, or the file's stem for a plugins-directory file.
        version: the distribution's version; ``sha256:<12 hex>`` of a file plugin's content.
        source: ``builtin``, ``package`` or ``file``.
        package: the distribution that ships it (``None`` for a file).
        path: the module (``package.module``) or the file's absolute path.
        hooks: names of the hooks it implements.
        components: ``kind:name`` of each component it registered.
        errors: why it was skipped; empty when it loaded.
        disabled: not loaded because ``TUNEYARD_LOAD_PLUGINS`` leaves it out.
    """

    name: str
    version: str | None
    source: str
    package: str | None = None
    path: str | None = None
    hooks: list[str] = field(default_factory=list)
    components: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    disabled: bool = False

    @property
    def status(self) -> str:
        """``ok``, ``failed`` or ``disabled``."""
        return "disabled" if self.disabled else "failed" if self.errors else "ok"


@dataclass
class ComponentInfo:
    """A registered component class and the plugin that provided it."""

    cls: type[Component]
    plugin: str

    @property
    def name(self) -> str:
        return self.cls.name


class Plugins:
    """The loaded plugins and the components they registered.

    Args:
        trace: print every hook call (plugin, hook, duration in ms) to stderr; default: the
            ``TUNEYARD_TRACE_PLUGINS`` environment variable is set, to anything but ``0``,
            ``false``, ``no`` or ``off``.
    """

    def __init__(self, trace: bool | None = None) -> None:
        self.pm = pluggy.PluginManager(GROUP)
        self.pm.add_hookspecs(hookspecs)
        self.infos: dict[str, PluginInfo] = {}
        self.components: dict[str, dict[str, ComponentInfo]] = {k: {} for k in KINDS}
        self.trace = (os.environ.get(TRACE_ENV, "").strip().lower() not in
                      ("", "0", "false", "no", "off")) if trace is None else trace
        self._reported: set[tuple] = set()  # (plugin, hook, run id) failures already logged
        self.commands: dict[str, Any] = {}  # name → click command added by a plugin

    # -- loading ---------------------------------------------------------------------------
    def load(self, plugins_dir: str | Path | None = None, only: list[str] | None = None) -> None:
        """Load built-ins, installed packages and the files of ``plugins_dir``, then run the
        registration hooks.

        Args:
            plugins_dir: a folder of one-off ``*.py`` plugins (files starting with ``_`` are
                skipped); ``None`` = none.
            only: names of the third-party plugins to load (plugin or distribution names);
                ``None`` = all of them, ``[]`` = none. Built-ins always load.
        """
        if only is not None:
            only = [_canonical(name) for name in only]
        with contextlib.redirect_stdout(sys.stderr):  # stdout stays the command's (--json)
            self.load_entry_points(only)
            if plugins_dir is not None:
                self.load_directory(Path(plugins_dir), only)
            self.collect_components()
            self.collect_commands()
        third_party = {_canonical(n) for i in self.infos.values() if i.source != "builtin"
                       for n in (i.name, i.package) if n}
        for name in sorted(set(only or ()) - third_party):
            log.warning("%s names '%s', which is not a third-party plugin (installed: %s)",
                        LOAD_ENV, name, ", ".join(sorted(
                            i.name for i in self.infos.values() if i.source != "builtin"))
                        or "none")

    def load_entry_points(self, only: list[str] | None = None) -> None:
        """Import and register every entry point of group ``tuneyard``, built-ins included.

        Built-ins load first, so a third-party component reusing a built-in name is the one
        reported as a duplicate and skipped.
        """
        dists: dict[int, tuple[str | None, str | None]] = {}  # id(distribution) → …

        def dist(ep: importlib.metadata.EntryPoint) -> tuple[str | None, str | None]:
            """The (name, version) of the distribution that ships ``ep``, read once per
            distribution (``Distribution.name`` and ``.version`` parse its metadata on every
            call: 80 parses for tuneyard's 20 entry points)."""
            if ep.dist is None:
                return None, None
            if id(ep.dist) not in dists:
                dists[id(ep.dist)] = ep.dist.name, ep.dist.version
            return dists[id(ep.dist)]

        def builtin(ep: importlib.metadata.EntryPoint) -> bool:
            return dist(ep)[0] == "tuneyard"

        eps = importlib.metadata.entry_points(group=GROUP)
        for ep in sorted(eps, key=lambda ep: (not builtin(ep), ep.name)):
            name, version = dist(ep)
            info = PluginInfo(ep.name, version, "builtin" if builtin(ep) else "package", name,
                              ep.value)
            self._add(info, ep.load, only)

    def load_directory(self, folder: Path, only: list[str] | None = None) -> None:
        """Import each ``*.py`` file of ``folder`` as a plugin named after the file.

        Files starting with ``_`` are not plugins, but plugin files may import them
        (``import _helpers``): the folder is appended to ``sys.path``. A missing folder is
        logged as a warning (nothing loads from it).
        """
        if not folder.is_dir():
            log.warning("plugins directory %s is not a folder; no file plugins loaded", folder)
            return
        if str(folder.resolve()) not in sys.path:
            sys.path.append(str(folder.resolve()))
        for path in sorted(folder.glob("*.py")):
            if path.name.startswith("_") or path.is_dir():
                continue
            path = path.absolute()  # a symlink keeps its own name
            try:
                digest = "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()[:12]
            except OSError as exc:  # a dangling symlink, no permission
                digest, problem = None, f"cannot read {path}: {exc.strerror or exc}"
            else:
                problem = None
            info = PluginInfo(path.stem, digest, "file", None, str(path))
            if problem:
                self._fail(info, problem)
                continue
            self._add(info, lambda path=path: _import_file(path), only)

    def register_plugin(self, module: Any, name: str, source: str = "package") -> None:
        """Register an already imported plugin object (used by tests)."""
        self._add(PluginInfo(name=name, version=None, source=source), lambda: module, None)

    def _add(self, info: PluginInfo, load: Callable[[], Any], only: list[str] | None) -> None:
        """Import (``load``) and register one plugin, recording it in :attr:`infos` even when
        it is disabled or fails. A name already taken is recorded as ``name [where]``."""
        if info.name in self.infos:
            other = self.infos[info.name]
            taken = f"plugin name '{info.name}' is already taken by the {other.source} plugin " \
                    f"from {other.package or other.path}"
            info.name = f"{info.name} [{info.package or info.path}]"
            self._fail(info, taken)
            return
        self.infos[info.name] = info
        if (only is not None and info.source != "builtin"
                and not {_canonical(info.name), _canonical(info.package or "")} & set(only)):
            info.disabled = True
            return
        start = time.perf_counter()
        try:
            module = load()
            unknown = _unknown_hooks(module)
            if unknown:
                self._fail(info, unknown)
                return
            self.pm.register(module, name=info.name)
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # a broken plugin is reported, never fatal (sys.exit too)
            self._fail(info, f"failed to load: {type(exc).__name__}: {' '.join(str(exc).split())}")
            return
        finally:
            self._trace(info.name, "import", start)
        info.hooks = sorted(call.name for call in self.pm.get_hookcallers(module) or [])

    def collect_components(self) -> None:
        """Run every registration hook, one implementation at a time, checking each class as
        it arrives; then, plugin by plugin in load order, add the components of each plugin
        that did not fail (a name already taken fails the later plugin). A failed plugin is
        skipped whole: its components dropped, its hooks unregistered."""
        staged: dict[str, list[tuple[str, type]]] = {}
        for hook_name, kind in REGISTRATION_HOOKS.items():
            for impl in getattr(self.pm.hook, hook_name).get_hookimpls():
                self._call(impl, hook_name, {"register": self._registrar(
                    kind, impl.plugin_name, staged)}, registration=True)
        for info in self.infos.values():
            for kind, cls in [] if info.errors else staged.get(info.name, []):
                if cls.name in self.components[kind]:
                    other = self.components[kind][cls.name].plugin
                    self._fail(info, f"{kind} name '{cls.name}' is already registered by "
                                     f"plugin '{other}'")
                    break
                self.components[kind][cls.name] = ComponentInfo(cls, info.name)
                info.components.append(f"{kind}:{cls.name}")
        self._skip_failed()

    def collect_commands(self, core: dict[str, Any] | None = None) -> None:
        """Run every ``register_commands`` against a copy of a command group holding the
        ``core`` commands (none by default: tuneyard's own come from its built-in plugin
        ``commands``, :mod:`tuneyard.core.cli`), the built-in plugins' first; keep what the
        plugins added in :attr:`commands` (the CLI adds them to its group). A plugin that
        raises or replaces a command is skipped whole, in every process, and the commands it
        added go."""
        import click

        core = core or {}
        group = click.Group("tuneyard", commands=dict(core))
        impls = getattr(self.pm.hook, "register_commands").get_hookimpls()
        for impl in sorted(impls, key=lambda i: self.infos[i.plugin_name].source != "builtin"):
            before = dict(group.commands)
            self._call(impl, "register_commands", {"cli": group}, registration=True)
            info = self.infos[impl.plugin_name]
            taken = [name for name, cmd in before.items() if group.commands.get(name) is not cmd]
            if taken:
                self._fail(info, f"register_commands: command '{taken[0]}' is already taken")
            if info.errors:
                group.commands.clear()
                group.commands.update(before)
        self.commands = {n: c for n, c in group.commands.items() if n not in core}
        self._skip_failed()

    def _registrar(self, kind: str, plugin: str,
                   staged: dict[str, list[tuple[str, type]]]) -> Callable[[type], None]:
        def register(cls: type) -> None:
            problem = _check_component(cls, kind)
            if problem:
                self._fail(self.infos[plugin], problem)
            else:
                staged.setdefault(plugin, []).append((kind, cls))

        return register

    def _fail(self, info: PluginInfo, message: str) -> None:
        self.infos.setdefault(info.name, info)
        info.errors.append(message)
        log.warning("plugin %s skipped: %s", info.name, message)

    def _skip_failed(self) -> None:
        """Drop the components and hooks of every plugin that failed (keeping its
        :class:`PluginInfo`, with its errors)."""
        for info in self.infos.values():
            if not info.errors:
                continue
            info.components = []
            for items in self.components.values():
                for name in [n for n, c in items.items() if c.plugin == info.name]:
                    del items[name]
            if self.pm.get_plugin(info.name) is not None:
                self.pm.unregister(name=info.name)

    # -- use -------------------------------------------------------------------------------
    def get(self, kind: str, name: str) -> ComponentInfo:
        """The component ``name`` of ``kind``.

        Raises:
            PluginError: no such component; the message lists the valid names.
        """
        try:
            return self.components[kind][name]
        except KeyError:
            message = unknown_name(kind, name, list(self.components[kind]))
        off = [f"{i.name} ({'disabled by ' + LOAD_ENV if i.disabled else 'skipped'})"
               for i in self.infos.values() if i.status != "ok"]
        if off:
            message += f"; not loaded: {', '.join(off)} (see tuneyard plugins list)"
        raise PluginError(message)

    def fire(self, hook_name: str, **kwargs: Any) -> None:
        """Call every implementation of a lifecycle hook, isolating failures.

        An implementation that raises is logged with its plugin's name (once per plugin, hook
        and run, the repeats at debug level); the others still run, and so does the run.
        """
        for impl in reversed(getattr(self.pm.hook, hook_name).get_hookimpls()):
            self._call(impl, hook_name, kwargs)

    def _call(self, impl: Any, hook_name: str, kwargs: dict[str, Any],
              registration: bool = False) -> None:
        """Call one hook implementation with the arguments it takes; trace it; on an exception
        record it against the plugin (a registration hook: the plugin is then skipped)."""
        start = time.perf_counter()
        try:
            impl.function(**{k: kwargs[k] for k in impl.argnames})
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # SystemExit too: a plugin never ends the host
            message = f"{hook_name} raised {type(exc).__name__}: {exc}"
            if registration:
                self._fail(self.infos[impl.plugin_name], message)
            elif (key := (impl.plugin_name, hook_name, kwargs.get("run_id"))) not in self._reported:
                self._reported.add(key)
                log.warning("plugin %s: %s (isolated: the other plugins and the run are not "
                            "affected; repeats are logged at debug level)", impl.plugin_name,
                            message)
            else:
                log.debug("plugin %s: %s", impl.plugin_name, message)
        finally:
            self._trace(impl.plugin_name, hook_name, start)

    def _trace(self, plugin: str, what: str, start: float) -> None:
        if self.trace:
            ms = (time.perf_counter() - start) * 1000
            print(f"tuneyard trace: plugin {plugin}: {what} {ms:.2f} ms", file=sys.stderr,
                  flush=True)

    def versions(self, names: list[str] | None = None) -> dict[str, str | None]:
        """Plugin name → version of every plugin that loaded without error (or of ``names``)."""
        return {n: i.version for n, i in self.infos.items()
                if i.status == "ok" and (names is None or n in names)}

    def used_by_run(self, component_plugins: list[str]) -> list[str]:
        """Names of the plugins a run uses: those of its components (``component_plugins``),
        plus every plugin whose lifecycle hooks or device monitors run in the run process."""
        lifecycle = {impl.plugin_name for hook in LIFECYCLE_HOOKS
                     for impl in getattr(self.pm.hook, hook).get_hookimpls()}
        monitors = {c.plugin for c in self.components["device-monitor"].values()}
        return sorted(set(component_plugins) | lifecycle | monitors)


def _canonical(name: str) -> str:
    """A plugin or distribution name compared as pip compares distribution names (PEP 503):
    lower-case, runs of ``-``, ``_`` and ``.`` as one ``-``."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _unknown_hooks(module: Any) -> str | None:
    """Why ``module`` cannot load: it marks a function ``@hookimpl`` that is not a tuneyard hook
    (a typo would otherwise never be called); ``None`` when every hook it implements exists."""
    for name in dir(module):
        if hasattr(getattr(module, name, None), f"{GROUP}_impl") and name not in HOOKS:
            return unknown_name("hook", name, HOOKS)
    return None


def _import_file(path: Path) -> Any:
    """Import a plugins-directory file as module ``tuneyard_plugins_dir.<stem>``."""
    name = f"tuneyard_plugins_dir.{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def _check_component(cls: Any, kind: str) -> str | None:
    """Why ``cls`` is not a valid component of ``kind``, or ``None`` when it is."""
    base = BASES[kind]
    if not (inspect.isclass(cls) and issubclass(cls, base)):
        return f"{cls!r} is not a subclass of {base.__name__}"
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not name:
        return f"{cls.__name__} has no 'name'"
    if not COMPONENT_NAME.fullmatch(name):
        return (f"{kind} name {name!r}: use lower-case letters, digits and dashes "
                "(e.g. 'token-f1')")
    options = getattr(cls, "Options", None)
    if not (inspect.isclass(options) and issubclass(options, BaseModel)):
        return f"{kind} '{name}': Options must be a pydantic BaseModel subclass"
    try:
        options.model_json_schema()
    except Exception as exc:
        return f"{kind} '{name}': broken options model: {exc}"
    if kind == "device-monitor":  # the run builds monitors without options
        try:
            options()
        except Exception as exc:
            return (f"device-monitor '{name}': every option needs a default (monitors are "
                    f"built without options): {' '.join(str(exc).split())}")
    return None


def only_from_env() -> list[str] | None:
    """``TUNEYARD_LOAD_PLUGINS`` as a list of names (``None`` when unset; empty = none)."""
    value = os.environ.get(LOAD_ENV)
    return None if value is None else [n.strip() for n in value.split(",") if n.strip()]


@cache
def get_plugins() -> Plugins:
    """The process-wide plugin manager, loaded on first use from the environment
    (``TUNEYARD_PLUGINS_DIR``, ``TUNEYARD_LOAD_PLUGINS``, ``TUNEYARD_TRACE_PLUGINS``).
    ``get_plugins.cache_clear()`` makes the next call load again (after ``plugins install``)."""
    plugins = Plugins()
    plugins.load(os.environ.get(PLUGINS_DIR_ENV) or None, only_from_env())
    return plugins


def reload_plugins() -> Plugins:
    """Load every plugin again, in this process, after pip changed the environment: the new
    packages' entry points are found, upgraded ones re-imported, removed ones gone."""
    old = get_plugins()
    for info in old.infos.values():
        if info.source == "package" and info.path:
            top = info.path.split(":")[0].split(".")[0]
            for module in [m for m in sys.modules if m == top or m.startswith(top + ".")]:
                del sys.modules[module]
    importlib.invalidate_caches()
    site.addsitedir(sysconfig.get_path("purelib"))  # the .pth file of an editable install
    get_plugins.cache_clear()
    return get_plugins()


def pip_argv(action: str, target: str, *, upgrade: bool = False,
             editable: bool = False) -> list[str]:
    """The pip command line that installs or uninstalls a plugin package in tuneyard's own
    interpreter (``sys.executable -m pip``), as a list: no shell ever parses it.

    Args:
        action: ``install`` or ``uninstall``.
        target: a distribution name (``tuneyard-text2sql``, with an optional version
            specifier, PEP 508) or, for ``install``, a local folder or archive (made absolute).
            For ``uninstall`` give the distribution from :func:`package_of`.
        upgrade: ``pip install --upgrade``.
        editable: ``pip install --editable`` (``target`` must be a local folder).

    Raises:
        TuneyardError: ``target`` is empty, looks like an option (starts with ``-``), is
            neither a local path nor a valid requirement, an editable target is not a folder,
            or pip is not installed in this interpreter.
    """
    from packaging.requirements import InvalidRequirement, Requirement

    if not target.strip():
        raise TuneyardError(f"plugins {action}: give a package name or path")
    if target.startswith("-"):
        raise TuneyardError(f"plugins {action}: {target!r} looks like an option, not a package "
                            "name or path")
    path = Path(target).expanduser()
    local = action == "install" and (path.exists() or target.startswith((".", "/", "~")))
    if editable and not path.is_dir():
        raise TuneyardError(f"plugins install --editable: {target} is not a folder; --editable "
                            "installs a local package folder (one with a pyproject.toml)")
    if not local:
        try:
            Requirement(target)
        except InvalidRequirement as exc:
            raise TuneyardError(f"plugins {action}: {target!r} is neither a path here nor a "
                                f"package name (NAME or NAME==VERSION): "
                                f"{str(exc).splitlines()[0]}") from None
    if importlib.util.find_spec("pip") is None:
        raise TuneyardError(f"pip is not installed in tuneyard's interpreter ({sys.executable});"
                            f" add it with: {sys.executable} -m ensurepip")
    argv = [sys.executable, "-m", "pip", action]
    if action == "uninstall":
        return [*argv, "--yes", target]
    if upgrade:
        argv.append("--upgrade")
    if editable:
        argv.append("--editable")
    return [*argv, str(path.resolve()) if local else target]


def package_of(plugins: Plugins, name: str) -> str:
    """The distribution to uninstall for ``name``, a plugin or distribution name (compared as
    pip compares names).

    Raises:
        TuneyardError: ``name`` is tuneyard itself, a built-in or plugins-directory plugin, or
            no installed third-party plugin; the message says what to do instead.
    """
    wanted = _canonical(name)
    if wanted == "tuneyard":
        raise TuneyardError(f"plugins uninstall: {name} is tuneyard itself, not a plugin")
    exact = [i for i in plugins.infos.values() if i.name == name]
    for info in exact or plugins.infos.values():
        if wanted not in (_canonical(info.name), _canonical(info.package or "")):
            continue
        if info.source == "builtin":
            raise TuneyardError(f"plugins uninstall: {name} is a built-in plugin, part of "
                                "tuneyard; it cannot be uninstalled")
        if info.source == "file":
            raise TuneyardError(f"plugins uninstall: {name} is a plugins-directory file; "
                                f"delete {info.path} instead")
        return info.package
    installed = sorted({i.package for i in plugins.infos.values() if i.source == "package"})
    raise TuneyardError(f"plugins uninstall: no installed plugin or plugin package named "
                        f"'{name}' (installed: {', '.join(installed) or 'none'})")


def run_pip(argv: list[str]) -> None:
    """Run ``argv`` (from :func:`pip_argv`), its output going to this process's stdout/stderr.

    Raises:
        TuneyardError: pip exited with a non-zero status.
    """
    code = subprocess.run(argv, check=False).returncode
    if code:
        raise TuneyardError(f"pip {argv[3]} failed (exit status {code}); its output is above")
