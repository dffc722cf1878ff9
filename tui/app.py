"""The tuneyard terminal UI: browse runs, watch one train live, compose, compare, inspect.

``tuneyard`` (no arguments, in a terminal) and ``tuneyard tui`` open it. It reads the registry
in worker threads and starts runs as separate processes through the CLI, so closing it never
stops a run and it never imports torch. Built by :func:`make_app`, which the CLI and the tests
share. When a plugin failed to load (and was skipped), a badge in the header says so on every
screen, checked in a worker after the first frame.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path

from textual import work
from textual.app import App, SystemCommand
from textual.binding import Binding
from textual.content import Content
from textual.message import Message
from textual.screen import Screen

from tuneyard.tui.screens.runs import RunsScreen


def _compose() -> Screen:
    from tuneyard.tui.screens.compose import ComposeScreen

    return ComposeScreen()


def _registry() -> Screen:
    from tuneyard.tui.screens.registry import RegistryScreen

    return RegistryScreen()


class PluginsChecked(Message):
    """Names of the plugins that failed to load (status ``failed``), read in a worker."""

    def __init__(self, failed: list[str]) -> None:
        super().__init__()
        self.failed = failed


def badge_text(failed: list[str]) -> str:
    """The header's badge for the plugins that failed to load (``""`` when none did)."""
    if not failed:
        return ""
    return f"{len(failed)} plugin{'s' if len(failed) > 1 else ''} skipped (g: Registry)"


class TuneyardApp(App):
    """The app. Modes: ``runs`` (start; Run monitor and Compare open on top of it),
    ``compose`` and ``registry``.

    Args:
        registry_path: the registry file (it may not exist yet: the first run creates it).
        poll_interval_s: seconds between registry polls (at most one poll per interval).
        clock: the current time (UTC); tests pin it so pictures do not change.

    Attributes:
        skipped_plugins: names of the plugins that failed to load (the header's badge).
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
        self.skipped_plugins: list[str] = []
        self._registry_label = str(registry_path)
        self.sub_title = self._registry_label

    def on_mount(self) -> None:
        self.call_after_refresh(self._check_plugins)  # after the first frame: it imports them

    @work(thread=True, exclusive=True, group="plugins")
    def _check_plugins(self) -> None:
        from tuneyard.core.plugins import get_plugins

        self.post_message(PluginsChecked([i.name for i in get_plugins().infos.values()
                                          if i.status == "failed"]))

    def on_plugins_checked(self, message: PluginsChecked) -> None:
        self.show_skipped_plugins(message.failed)

    def show_skipped_plugins(self, failed: list[str]) -> None:
        """Show (or clear) the badge for the plugins that failed to load."""
        self.skipped_plugins = list(failed)
        self.sub_title = " — ".join(filter(None, [badge_text(failed), self._registry_label]))

    def format_title(self, title: str, sub_title: str) -> Content:
        """Title — sub-title, with the skipped-plugins badge (first in the sub-title, so a long
        registry path never pushes it out) in the error colour."""
        badge = badge_text(self.skipped_plugins)
        if not (badge and sub_title.startswith(badge)):
            return super().format_title(title, sub_title)
        rest = sub_title[len(badge):].removeprefix(" — ")
        return Content.assemble(Content(title), " ", (f" {badge} ", "bold $text on $error"),
                                super().format_title("", rest) if rest else "")

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
