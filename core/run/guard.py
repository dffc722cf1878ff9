"""Calling plugin code during a run: a component that raises or breaks its contract fails the
run with an error naming the component and its plugin."""

from __future__ import annotations

from typing import Any

from tuneyard.core.errors import PluginFailed, TuneyardError


def guarded(comp: Any, plugin_of: dict[str, str], action: str, fn: Any, *args: Any, **kw: Any):
    """Call a component method; any other exception than a TuneyardError (a mistake in the
    user's input, reported as it is) or Ctrl-C becomes a PluginFailed naming the component and
    its plugin, ``sys.exit`` included."""
    try:
        return fn(*args, **kw)
    except (TuneyardError, KeyboardInterrupt):
        raise
    except BaseException as exc:
        raise component_failed(comp, plugin_of, f"failed to {action}: "
                                                f"{type(exc).__name__}: {exc}") from exc


def component_label(comp: Any, plugin_of: dict[str, str]) -> str:
    """How errors name a component: ``<kind> '<name>' (plugin <plugin>)``."""
    return f"{comp.kind} '{comp.name}' (plugin {plugin_of.get(f'{comp.kind}:{comp.name}', '?')})"


def component_failed(comp: Any, plugin_of: dict[str, str], what: str) -> PluginFailed:
    """The error of a component that failed or broke its contract, naming its plugin."""
    return PluginFailed(f"{component_label(comp, plugin_of)} {what}")
