"""The tuneyard terminal UI: browse runs, watch one train live, compose, compare, inspect.

``tuneyard`` (no arguments, in a terminal) and ``tuneyard tui`` open it. It reads the registry
in worker threads and starts runs as separate processes through the CLI, so closing it never
stops a run and it never imports torch. Built by :func:`make_app`, which the CLI and the tests
share.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path

from textual.app import App, SystemCommand
from textual.binding import Binding
from textual.screen import Screen

from tuneyard.tui.screens.runs import RunsScreen


def _compose() -> Screen:
    from tuneyard.tui.screens.compose import ComposeScreen

    return ComposeScreen()


def _registry() -> Screen:
    from tuneyard.tui.screens.registry import RegistryScreen

    return RegistryScreen()


class TuneyardApp(App):
    """The app. Modes: ``runs`` (start; Run monitor and Compare open on top of it),
    ``compose`` and ``registry``.

    Args:
        registry_path: the registry file (it may not exist yet: the first run creates it).
        poll_interval_s: seconds between registry polls (at most one poll per interval).
        clock: the current time (UTC); tests pin it so pictures do not change.
    """

    TITLE = "tuneyard"
    CSS_PATH = "app.tcss"
    # Compose and Registry load plugins and pydantic schemas: imported when first opened, so
    # the Runs screen's first frame does not wait for them.
    MODES = {"runs": RunsScreen, "compose": _compose, "registry": _registry}
    DEFAULT_MODE = "runs"
    BINDINGS = [
        Binding("r", "runs", "Runs"),
        Binding("n", "switch_mode('compose')", "New"),
        Binding("g", "switch_mode('registry')", "Registry"),
        Binding("q", "quit", "Quit"),
    ]

    def __init__(self, registry_path: Path, *, poll_interval_s: float = 1.0,
                 clock: Callable[[], datetime] | None = None) -> None:
        super().__init__()
        self.registry_path = Path(registry_path).resolve()
        self.poll_interval_s = poll_interval_s
        self.clock = clock or (lambda: datetime.now(UTC))
        self.marked: set[str] = set()  # run ids marked for Compare (space on the Runs screen)
        self.sub_title = str(registry_path)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """Hide the key of the mode already shown (the footer has room for the others at 80
        columns)."""
        if action == "switch_mode" and parameters and parameters[0] == self.current_mode:
            return False
        # (a monitor and Compare bind r themselves, unshown: their footer shows esc Back)
        return not (action == "runs" and isinstance(self.screen, RunsScreen))

    def action_runs(self) -> None:
        """Show the Runs list (closing any Run or Compare screen open over it)."""
        self.switch_mode("runs")
        while len(self.screen_stack) > 1:
            self.pop_screen()

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        yield SystemCommand("Runs", "Every run in the registry", self.action_runs)
        yield SystemCommand("Compose a run", "Pick data, model, strategy, evaluators; launch",
                            lambda: self.switch_mode("compose"))
        yield SystemCommand("Registry", "Plugins, components, artifacts, datasets",
                            lambda: self.switch_mode("registry"))

    def open_run(self, run_id: str) -> None:
        """Show the live monitor of ``run_id`` over the Runs list (esc returns to it)."""
        from tuneyard.tui.screens.run import RunScreen

        self.action_runs()
        self.push_screen(RunScreen(run_id))

    def open_compare(self, run_ids: list[str]) -> None:
        """Compare two or more runs (in the Runs mode)."""
        from tuneyard.tui.screens.compare import CompareScreen

        self.switch_mode("runs")
        self.push_screen(CompareScreen(run_ids))


def make_app(registry_path: Path, **kwargs) -> TuneyardApp:
    """The app as the CLI runs it; tests build theirs here too."""
    return TuneyardApp(registry_path, **kwargs)
