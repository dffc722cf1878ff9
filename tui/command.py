"""Plugin that adds ``tuneyard tui`` (also what a bare ``tuneyard`` opens in a terminal).

The TUI registers its command through ``register_commands`` like any plugin, so the core never
imports it.
"""

from __future__ import annotations

import click

from tuneyard.core.hookspecs import hookimpl


@hookimpl
def register_commands(cli: click.Group) -> None:
    @cli.command()
    @click.pass_context
    def tui(ctx: click.Context) -> None:
        """Open the terminal UI: runs, live monitor, compose, registry, compare."""
        from tuneyard.core.registry import default_path
        from tuneyard.tui.app import make_app

        make_app(ctx.obj.get("registry") or default_path()).run()
