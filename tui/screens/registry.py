"""Registry screen: installed plugins, the components they provide, artifacts and datasets.

Plugins and components come from the plugin manager (loaded once, in a thread worker, so they
show even before the registry file exists); artifacts and datasets come from the registry
through the polling worker, which also checks whether each artifact's path is still on disk.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rich.table import Table
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.message import Message
from textual.screen import ModalScreen, Screen
from textual.widgets import DataTable, Footer, Header, Static, TabbedContent, TabPane

from tuneyard.core.components import KINDS
from tuneyard.core.plugins import Plugins, get_plugins
from tuneyard.core.registry import Registry
from tuneyard.tui.format import status_text, when
from tuneyard.tui.polling import Polling
from tuneyard.tui.widgets.form import type_name


class PluginsLoaded(Message):
    """Plugin and component rows read by the loader thread (see :func:`plugin_rows`)."""

    def __init__(self, plugins: list[dict[str, Any]], components: list[dict[str, Any]]) -> None:
        super().__init__()
        self.plugins, self.components = plugins, components


def plugin_rows(plugins: Plugins) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Plain rows of every plugin and every component (with its options schema), in the order
    of ``plugins.infos`` and of :data:`KINDS`."""
    infos = [{"name": i.name, "version": i.version or "", "source": i.source,
              "hooks": list(i.hooks), "components": [c.partition(":")[2] for c in i.components],
              "errors": list(i.errors)} for i in plugins.infos.values()]
    comps = [{"kind": kind, "name": name, "plugin": c.plugin, "description": c.cls.description,
              "options": options_schema(c.cls.Options)}
             for kind in KINDS for name, c in sorted(plugins.components.get(kind, {}).items())]
    return infos, comps


def options_schema(model: Any) -> list[dict[str, str]]:
    """``field``, ``type``, ``default`` (JSON, or ``required``) and ``description`` of each
    field of a pydantic options model."""
    rows = []
    for field, info in model.model_fields.items():
        default = ("required" if info.is_required() else
                   json.dumps(info.get_default(call_default_factory=True), default=str))
        rows.append({"field": field, "type": type_name(info.annotation), "default": default,
                     "description": info.description or ""})
    return rows


def shown_path(path: str, root: Path) -> str:
    """``path`` relative to ``root`` (the registry's folder) when it lies inside it."""
    resolved = Path(path).resolve()
    return str(resolved.relative_to(root)) if resolved.is_relative_to(root) else path


def artifact_cells(a: dict[str, Any]) -> tuple:
    """Cells of one artifact: run, status, kind, path, on disk, created."""
    on_disk = Text("yes", style="green") if a["exists"] else Text("missing", style="red")
    return (a["run_name"], status_text(a["status"]), a["kind"], a["shown_path"], on_disk,
            when(a["created_at"]))


def dataset_cells(d: dict[str, Any]) -> tuple:
    """Cells of one dataset: source, fingerprint, train rows, eval rows, runs, last used."""
    return (d["source"], d["fingerprint"], str(d["train_rows"]), str(d["eval_rows"]),
            str(d["runs"]), when(d["last_used"]))


class OptionsScreen(ModalScreen):
    """The options schema of one component (Enter on the Components tab)."""

    BINDINGS = [Binding("escape", "dismiss", "Close")]
    DEFAULT_CSS = """
    OptionsScreen { align: center middle; }
    OptionsScreen > VerticalScroll {
        width: 90%; height: auto; max-height: 80%;
        border: round $accent; background: $panel; padding: 0 1;
    }
    """

    def __init__(self, component: dict[str, Any]) -> None:
        super().__init__()
        self.component = component

    def compose(self) -> ComposeResult:
        c = self.component
        with VerticalScroll():
            yield Static(Text(f"{c['kind']} {c['name']} ({c['plugin']})", style="bold"))
            yield Static(c["description"])
            yield Static(self.schema_table() if c["options"] else "no options", id="schema")
        yield Footer(compact=True)

    def schema_table(self) -> Table:
        """One row per option: field, type, default and description (wrapped)."""
        table = Table(box=None, pad_edge=False, header_style="bold", expand=True)
        for column in ("field", "type", "default"):
            table.add_column(column, no_wrap=True)
        table.add_column("description", ratio=1)
        for o in self.component["options"]:
            table.add_row(*(Text(o[key]) for key in ("field", "type", "default", "description")))
        return table


class RegistryScreen(Polling, Screen):
    """Tabs: Plugins, Components (Enter: options schema), Artifacts, Datasets."""

    BINDINGS = [
        Binding("p", "tab('plugins')", "Plugins"),
        Binding("c", "tab('components')", "Components"),
        Binding("a", "tab('artifacts')", "Artifacts"),
        Binding("d", "tab('datasets')", "Datasets"),
    ]
    DEFAULT_CSS = """
    RegistryScreen DataTable { height: 1fr; }
    RegistryScreen .hint { color: $text-muted; padding: 0 1; }
    """

    def __init__(self) -> None:
        super().__init__()
        self.components: list[dict[str, Any]] = []  # rows of the Components table, in order
        self._shown: Any = ...  # last registry data shown (redraw only on change)

    def compose(self) -> ComposeResult:
        yield Header()
        with TabbedContent(id="tabs"):
            with TabPane("Plugins", id="plugins"):
                yield self._table("plugins-table", "plugin", "version", "source", "status",
                                  "components", "hooks")
            with TabPane("Components", id="components"):
                yield Static("Enter: options schema of the selected component", classes="hint")
                yield self._table("components-table", "kind", "name", "plugin", "options",
                                  "description")
            with TabPane("Artifacts", id="artifacts"):
                yield Static(classes="empty", id="artifacts-empty")
                yield self._table("artifacts-table", "run", "status", "kind", "path", "on disk",
                                  "created")
            with TabPane("Datasets", id="datasets"):
                yield Static(classes="empty", id="datasets-empty")
                yield self._table("datasets-table", "source", "fingerprint", "train rows",
                                  "eval rows", "runs", "last used")
        yield Footer(compact=True)

    @staticmethod
    def _table(table_id: str, *columns: str) -> DataTable:
        table: DataTable = DataTable(id=table_id, cursor_type="row", zebra_stripes=True)
        table.add_columns(*columns)
        return table

    def on_mount(self) -> None:
        self._load_plugins()

    # -- plugins and components (no registry needed) ----------------------------------------
    @work(thread=True, exclusive=True, group="plugins")
    def _load_plugins(self) -> None:
        self.post_message(PluginsLoaded(*plugin_rows(get_plugins())))

    def on_plugins_loaded(self, message: PluginsLoaded) -> None:
        table = self.query_one("#plugins-table", DataTable)
        for p in message.plugins:
            status = (Text("; ".join(p["errors"]), style="red") if p["errors"]
                      else Text("ok", style="green"))
            table.add_row(p["name"], p["version"], p["source"], status,
                          ", ".join(p["components"]), ", ".join(p["hooks"]))
        self.components = message.components
        table = self.query_one("#components-table", DataTable)
        for c in self.components:
            table.add_row(c["kind"], c["name"], c["plugin"],
                          ", ".join(o["field"] for o in c["options"]), c["description"])

    @on(DataTable.RowSelected, "#components-table")
    def _show_options(self, event: DataTable.RowSelected) -> None:
        self.app.push_screen(OptionsScreen(self.components[event.cursor_row]))

    # -- artifacts and datasets (polled) ----------------------------------------------------
    def fetch(self, registry: Registry) -> dict[str, Any]:
        root = registry.path.resolve().parent
        artifacts = [{**a, "shown_path": shown_path(a["path"], root),
                      "exists": Path(a["path"]).exists()} for a in registry.all_artifacts()]
        return {"artifacts": artifacts, "datasets": registry.datasets()}

    def show(self, data: dict[str, Any] | None) -> None:
        if data == self._shown:
            return
        self._shown = data
        if data is None:
            note = f"No runs yet: the first `tuneyard run` creates {self.app.registry_path}."
            self._fill("artifacts", [], note)
            self._fill("datasets", [], note)
            return
        self._fill("artifacts", [artifact_cells(a) for a in data["artifacts"]],
                   "No artifacts yet: completed runs record their adapters and models here.")
        self._fill("datasets", [dataset_cells(d) for d in data["datasets"]],
                   "No datasets yet: each run records the dataset it trained on.")

    def _fill(self, tab: str, rows: list[tuple], empty: str) -> None:
        """Refill the table of ``tab`` with ``rows`` (cells), or say ``empty`` when none."""
        table = self.query_one(f"#{tab}-table", DataTable)
        note = self.query_one(f"#{tab}-empty", Static)
        table.clear()
        table.add_rows(rows)
        note.update(empty)
        note.display, table.display = not rows, bool(rows)

    # -- keys --------------------------------------------------------------------------------
    def action_tab(self, tab: str) -> None:
        self.query_one(TabbedContent).active = tab

    def on_tabbed_content_tab_activated(self, event: TabbedContent.TabActivated) -> None:
        self.query_one(f"#{event.pane.id}-table", DataTable).focus()
