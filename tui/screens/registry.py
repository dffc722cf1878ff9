"""Registry screen: installed plugins, the components they provide, artifacts and datasets.

Plugins and components come from the plugin manager (loaded once, in a thread worker, so they
show even before the registry file exists); artifacts and datasets come from the registry
through the polling worker, which also checks whether each artifact's path is still on disk.

On the Plugins tab, ``i`` installs a plugin package and ``u`` uninstalls the highlighted one:
a thread worker runs ``tuneyard plugins install|uninstall`` (pip) in a child process, posting
each line of its output as it arrives (shown in :class:`PipScreen`), then reloads the plugins
in this process (:func:`~tuneyard.core.plugins.reload_plugins`) so the tables, the header's
skipped-plugins badge and the next Compose screen show what changed.
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
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.message import Message
from textual.screen import ModalScreen, Screen
from textual.widgets import (Checkbox, DataTable, Footer, Header, Input, Log, Static,
                             TabbedContent, TabPane)

from tuneyard.core.components import KINDS
from tuneyard.core.plugins import Plugins, get_plugins, reload_plugins
from tuneyard.core.registry import Registry
from tuneyard.tui import actions
from tuneyard.tui.format import status_text, when
from tuneyard.tui.polling import Polling
from tuneyard.tui.screens.confirm import ConfirmScreen
from tuneyard.tui.widgets.form import type_name


class PluginsLoaded(Message):
    """Plugin and component rows read by the loader thread (see :func:`plugin_rows`)."""

    def __init__(self, plugins: list[dict[str, Any]], components: list[dict[str, Any]]) -> None:
        super().__init__()
        self.plugins, self.components = plugins, components


class PipOutput(Message):
    """One line of the output of ``tuneyard plugins install|uninstall`` (pip's included)."""

    def __init__(self, line: str) -> None:
        super().__init__()
        self.line = line


class PipDone(Message):
    """The command ended with exit status ``code``; then the plugins were reloaded: their rows
    and their components' (see :func:`plugin_rows`)."""

    def __init__(self, code: int, plugins: list[dict[str, Any]],
                 components: list[dict[str, Any]]) -> None:
        super().__init__()
        self.code, self.plugins, self.components = code, plugins, components


def plugin_rows(plugins: Plugins) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Plain rows of every plugin and every component (with its options schema), in the order
    of ``plugins.infos`` and of :data:`KINDS`."""
    infos = [{"name": i.name, "version": i.version or "", "source": i.source,
              "package": i.package, "path": i.path, "status": i.status,
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


#: Cells a plugin's status shows at most: a skipped one's error is cut (the detail line below
#: the table has all of it) rather than push the components and hooks columns out of view.
STATUS_WIDTH = 32


def plugin_cells(p: dict[str, Any]) -> tuple:
    """Cells of one plugin: name, version, source, status, components, hooks. The source names
    the package or the file; a skipped plugin's name and status (with its error) are red, a
    disabled one's yellow."""
    source = {"package": f"package {p['package']}",
              "file": f"file {Path(p['path'] or '').name}"}.get(p["source"], p["source"])
    style = {"ok": "green", "failed": "red", "disabled": "yellow"}[p["status"]]
    status = {"ok": "ok", "failed": "skipped: " + "; ".join(p["errors"]),
              "disabled": "disabled"}[p["status"]]
    if len(status) > STATUS_WIDTH:
        status = status[:STATUS_WIDTH - 1] + "…"
    return (Text(p["name"], style="" if p["status"] == "ok" else style), p["version"], source,
            Text(status, style=style), ", ".join(p["components"]), ", ".join(p["hooks"]))


def plugin_detail(p: dict[str, Any]) -> Text:
    """What the table cuts short, for the highlighted plugin: where it comes from (package and
    module, or file path) and, in full, why it was skipped or disabled."""
    where = {"builtin": f"built-in, module {p['path']}",
             "package": f"package {p['package']}, module {p['path']}",
             "file": f"file {p['path']}"}.get(p["source"], p["source"])
    text = Text.assemble((p["name"], "bold"), " ", p["version"] or "(no version)", " — ", where)
    if p["status"] == "failed":
        text.append("\nskipped: " + "; ".join(p["errors"]), style="red")
    elif p["status"] == "disabled":
        text.append("\ndisabled: not in TUNEYARD_LOAD_PLUGINS", style="yellow")
    return text


def uninstall_target(p: dict[str, Any]) -> str:
    """What ``tuneyard plugins uninstall`` is given for a plugin row: its distribution when it
    comes from a package (a duplicate's name is ``name [package]``), else its name (the CLI
    refuses built-ins and files with the reason)."""
    return p["package"] if p["source"] == "package" and p["package"] else p["name"]


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


class InstallScreen(ModalScreen[dict[str, Any] | None]):
    """Ask what to install (``i`` on the Plugins tab): a package name or a local path, with
    ``--upgrade`` and ``--editable``. Dismissed with ``{"target", "upgrade", "editable"}``, or
    ``None`` (esc)."""

    BINDINGS = [Binding("escape", "dismiss", "Cancel")]
    DEFAULT_CSS = """
    InstallScreen { align: center middle; }
    InstallScreen > Vertical {
        width: 72; height: auto; border: round $accent; background: $panel; padding: 0 1;
    }
    InstallScreen Horizontal { height: auto; }
    InstallScreen Checkbox { width: auto; }
    InstallScreen .hint { color: $text-muted; }
    """

    def compose(self) -> ComposeResult:
        with Vertical() as box:
            box.border_title = "Install a plugin (pip, into tuneyard's environment)"
            yield Input(placeholder="package name or path: tuneyard-text2sql, ./my-plugin",
                        id="target")
            with Horizontal():
                yield Checkbox("--upgrade", id="upgrade", compact=True)
                yield Checkbox("--editable (a local folder)", id="editable", compact=True)
            yield Static("enter: install · tab: the options · esc: cancel", classes="hint")
        yield Footer(compact=True)

    @on(Input.Submitted, "#target")
    def _submit(self, event: Input.Submitted) -> None:
        if event.value.strip():
            self.dismiss({"target": event.value.strip(),
                          "upgrade": self.query_one("#upgrade", Checkbox).value,
                          "editable": self.query_one("#editable", Checkbox).value})


class PipScreen(ModalScreen[None]):
    """The output of a ``tuneyard plugins install|uninstall`` command as it arrives, then its
    exit status. It closes (esc) only once the command has ended."""

    BINDINGS = [Binding("escape", "close", "Close")]
    DEFAULT_CSS = """
    PipScreen { align: center middle; }
    PipScreen > Vertical {
        width: 90%; height: 80%; border: round $accent; background: $panel; padding: 0 1;
    }
    PipScreen Log { height: 1fr; background: $panel; overflow: auto; }
    PipScreen #pip-status { height: auto; text-style: bold; }
    """

    def __init__(self, command: str) -> None:
        super().__init__()
        self.command = command
        self.code: int | None = None  # the exit status, once ended

    def compose(self) -> ComposeResult:
        with Vertical() as box:
            box.border_title = self.command
            yield Log(id="pip-log", highlight=False)
            yield Static(Text("running… (its output streams above)", style="yellow"),
                         id="pip-status")
        yield Footer(compact=True)

    def write(self, line: str) -> None:
        self.query_one(Log).write_line(line)

    def finish(self, code: int) -> None:
        """Show the exit status: done (green) or failed (red; the output says why)."""
        self.code = code
        status = (Text("done (exit status 0) · esc: close", style="green") if code == 0 else
                  Text(f"failed (exit status {code}): the output above says why · esc: close",
                       style="red"))
        self.query_one("#pip-status", Static).update(status)

    def action_close(self) -> None:
        if self.code is None:
            self.notify("still running: it closes when pip is done", severity="warning")
        else:
            self.dismiss()


class RegistryScreen(Polling, Screen):
    """Tabs: Plugins (i: install, u: uninstall), Components (Enter: options schema),
    Artifacts, Datasets."""

    BINDINGS = [
        Binding("p", "tab('plugins')", "Plugins"),
        Binding("c", "tab('components')", "Components"),
        Binding("a", "tab('artifacts')", "Artifacts"),
        Binding("d", "tab('datasets')", "Datasets"),
        # (the Plugins tab's hint line shows these: the footer has no room for them at 80)
        Binding("i", "install", "Install", show=False),
        Binding("u", "uninstall", "Uninstall", show=False),
    ]
    DEFAULT_CSS = """
    RegistryScreen DataTable { height: 1fr; }
    RegistryScreen .hint { color: $text-muted; padding: 0 1; }
    RegistryScreen #plugin-detail { height: auto; max-height: 6; padding: 0 1; }
    """

    def __init__(self) -> None:
        super().__init__()
        self.plugins: list[dict[str, Any]] = []  # rows of the Plugins table, in order
        self.components: list[dict[str, Any]] = []  # rows of the Components table, in order
        self.pip: PipScreen | None = None  # the running (or last) install/uninstall
        self._shown: Any = ...  # last registry data shown (redraw only on change)

    def compose(self) -> ComposeResult:
        yield Header()
        with TabbedContent(id="tabs"):
            with TabPane("Plugins", id="plugins"):
                yield Static("i: install a plugin package · u: uninstall the highlighted one",
                             classes="hint")
                yield self._table("plugins-table", "plugin", "version", "source", "status",
                                  "components", "hooks")
                yield Static(id="plugin-detail")
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
        self._fill_plugins(message.plugins, message.components)

    def _fill_plugins(self, plugins: list[dict[str, Any]],
                      components: list[dict[str, Any]]) -> None:
        """Fill (or refill, after a reload) the Plugins and Components tables; the cursor
        stays on its row number."""
        self.plugins, self.components = plugins, components
        table = self.query_one("#plugins-table", DataTable)
        row = table.cursor_row
        table.clear()
        table.add_rows(plugin_cells(p) for p in self.plugins)
        table.move_cursor(row=max(0, min(row, len(self.plugins) - 1)))
        self._show_detail()
        table = self.query_one("#components-table", DataTable)
        table.clear()
        table.add_rows((c["kind"], c["name"], c["plugin"],
                        ", ".join(o["field"] for o in c["options"]), c["description"])
                       for c in self.components)

    @on(DataTable.RowHighlighted, "#plugins-table")
    def _show_detail(self) -> None:
        row = self.query_one("#plugins-table", DataTable).cursor_row
        detail = self.query_one("#plugin-detail", Static)
        detail.update(plugin_detail(self.plugins[row]) if 0 <= row < len(self.plugins) else "")

    @on(DataTable.RowSelected, "#components-table")
    def _show_options(self, event: DataTable.RowSelected) -> None:
        self.app.push_screen(OptionsScreen(self.components[event.cursor_row]))

    # -- install and uninstall (pip, through the CLI) ----------------------------------------
    def action_install(self) -> None:
        """Ask what to install, then install it."""
        def install(answer: dict[str, Any] | None) -> None:
            if answer:
                flags = [f"--{f}" for f in ("upgrade", "editable") if answer[f]]
                self.run_plugins_command("install", *flags, "--", answer["target"])

        if self._idle():
            self.app.push_screen(InstallScreen(), install)

    def action_uninstall(self) -> None:
        """Uninstall the highlighted plugin's package, once confirmed. A built-in or a file
        plugin goes straight to the CLI, which refuses it and says what to do instead."""
        row = self.query_one("#plugins-table", DataTable).cursor_row
        if not (0 <= row < len(self.plugins) and self._idle()):
            return
        plugin, target = self.plugins[row], uninstall_target(self.plugins[row])

        def uninstall(yes: bool | None) -> None:
            if yes:
                self.run_plugins_command("uninstall", "--", target)

        if plugin["source"] != "package":
            uninstall(True)
            return
        self.app.push_screen(
            ConfirmScreen(f"Uninstall plugin {plugin['name']}? pip removes package {target} "
                          "from tuneyard's environment."), uninstall)

    def _idle(self) -> bool:
        """No install/uninstall is running (else say so)."""
        if self.pip is not None and self.pip.code is None:
            self.notify("a plugin install/uninstall is already running", severity="warning")
            return False
        return True

    def run_plugins_command(self, *args: str) -> None:
        """Run ``tuneyard plugins ARGS`` in a worker, its output in a :class:`PipScreen`."""
        self.pip = PipScreen("tuneyard plugins " + " ".join(a for a in args if a != "--"))
        self.app.push_screen(self.pip)
        self._pip(self.app.registry_path, list(args))

    @work(thread=True, exclusive=True, group="pip")
    def _pip(self, registry_path: Path, args: list[str]) -> None:
        try:
            code = actions.plugins(registry_path, args,
                                   lambda line: self.post_message(PipOutput(line)))
        except OSError as exc:
            self.post_message(PipOutput(f"cannot run tuneyard: {exc}"))
            code = 1
        self.post_message(PipDone(code, *plugin_rows(reload_plugins())))

    def on_pip_output(self, message: PipOutput) -> None:
        if self.pip is not None:
            self.pip.write(message.line)

    def on_pip_done(self, message: PipDone) -> None:
        if self.pip is not None:
            self.pip.finish(message.code)
        self._fill_plugins(message.plugins, message.components)
        # the badge; Compose picks the new components up when shown again
        self.app.show_skipped_plugins([p["name"] for p in message.plugins
                                       if p["status"] == "failed"])

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

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """Install and uninstall work on the Plugins tab only."""
        return (action not in ("install", "uninstall")
                or self.query_one(TabbedContent).active == "plugins")

    def on_tabbed_content_tab_activated(self, event: TabbedContent.TabActivated) -> None:
        self.query_one(f"#{event.pane.id}-table", DataTable).focus()
