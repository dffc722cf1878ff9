"""Plugin that adds ``tuneyard tui`` (also what a bare ``tuneyard`` opens in a terminal).

The TUI registers its command through ``register_commands`` like any plugin, so the core never
imports it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from tuneyard.core.hookspecs import hookimpl

if TYPE_CHECKING:
    from tuneyard.tui.app import TuneyardApp


@hookimpl
def register_commands(cli: click.Group) -> None:
    @cli.command()
    @click.pass_context
    def tui(ctx: click.Context) -> None:
        """Open the terminal UI: runs, live monitor, compose, registry, compare."""
        from tuneyard.core.registry import default_path

        open_app(ctx.obj.get("registry") or default_path()).run()


def open_app(registry_path: str | Path) -> TuneyardApp:
    """The app for a TUI process (what ``tuneyard tui`` runs)."""
    from tuneyard.tui.app import make_app

    return make_app(Path(registry_path))
