"""The Runs screen (the app's start): the runs in the registry, sortable and filterable.

It shows the newest :data:`RUNS_SHOWN` runs (a poll reads them in ~50 ms on a registry of
10,000 runs, ``bench/registry_scale.py``); ``tuneyard runs list --limit N`` lists older ones.

Enter opens a run's live monitor; space marks runs and ``c`` compares the marked ones. The
table is rebuilt only when the visible rows change order; otherwise only the cells that changed
are rewritten, so the cursor stays on its run across polls (row keys are run ids).
"""

from __future__ import annotations

from typing import Any, ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Input, Static

from tuneyard.core.registry import Registry
from tuneyard.tui.format import duration_s, hms, model_name, num, status_text, when
from tuneyard.tui.polling import Polling

STATUSES = ("all", "running", "completed", "failed", "stopped", "interrupted", "queued")

#: (column key, header label), in display order; the marker column has no header.
COLUMNS = (("mark", " "), ("name", "name"), ("status", "status"), ("model", "model"),
           ("strategy", "strategy"), ("dataset", "dataset"), ("step", "step"),
           ("loss", "loss"), ("eval", "eval"), ("tok_s", "tok/s"), ("duration", "duration"),
           ("started", "started"))
SORTABLE = tuple(key for key, _ in COLUMNS if key != "mark")
MAX_WIDTH = {"name": 24, "model": 24}  # cells a column shows at most (the rest is cut)
#: Rows added at once; the rest follow in chunks of as many, each after the table has measured
#: the last (DataTable measures every new cell when idle, ~0.5 ms a row here), so a registry of
#: thousands of runs shows at once and keys answer while the table fills.
CHUNK_ROWS = 100
#: Runs shown (the newest): the filters and sorts apply to them.
RUNS_SHOWN = 500


def headline(run: dict[str, Any]) -> str:
    """The run's headline evaluation, e.g. ``perplexity 15``."""
    if run.get("eval_value") is None:
        return ""
    return f"{run['eval_metric']} {num(run['eval_value'])}"


def searchable(run: dict[str, Any]) -> str:
    """What the text filter matches: id, name, model, strategy and dataset, lower case."""
    fields = (run["id"], run["name"], model_name(run), run.get("strategy"),
              run.get("dataset_source"))
    return " ".join(str(f or "") for f in fields).lower()


class FilterInput(Input):
    """The text filter; escape clears it and returns to the table."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "leave", "Clear filter")]

    def action_leave(self) -> None:
        self.value = ""
        self.screen.query_one(RunsTable).focus()


class RunsTable(DataTable):
    """The runs table; enter opens the run under the cursor (not in the footer: it is what
    enter does in every list, and the footer needs the room at 80 columns)."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("enter", "select_cursor", "Open", show=False)]


class RunsScreen(Polling, Screen):
    """Every run, newest first until sorted otherwise."""

    AUTO_FOCUS = "RunsTable"
    DEFAULT_CSS = """
    RunsScreen #bar { height: 1; }
    RunsScreen #filter { width: 1fr; min-width: 16; }
    RunsScreen #summary { width: auto; padding: 0 1; color: $text-muted; }
    RunsScreen RunsTable { height: 1fr; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("space", "mark", "Mark", key_display="␣"),
        Binding("c", "compare", "Compare"),
        Binding("s", "cycle_sort", "Sort"),
        Binding("S", "reverse_sort", "Reverse", show=False),  # the summary shows ↑/↓
        Binding("f", "cycle_status", "Status"),
        Binding("slash", "find", "Filter"),
    ]

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.runs: list[dict[str, Any]] | None = None  # latest poll; None: no registry yet
        self.total = 0  # runs in the registry (more than in self.runs when over RUNS_SHOWN)
        self.sort_key, self.sort_reverse = "started", True
        self.status_filter = "all"
        self._rows: dict[str, tuple[str, ...]] = {}  # run id → cells as shown
        self._pending: list[tuple[str, tuple[str, ...]]] = []  # rows not in the table yet
        self._widths: dict[str, int] = {}  # column key → width (cells)
        self._cursor_to: str | None = None  # run to put the cursor on once the table is full

    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal(id="bar"):
            yield FilterInput(placeholder="/ filter by name, model, strategy, dataset",
                              compact=True, id="filter")
            yield Static(id="summary")
        yield RunsTable(cursor_type="row", zebra_stripes=True, fixed_columns=3)
        yield Static(id="empty", classes="empty")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self._build()

    def fetch(self, registry: Registry) -> tuple[list[dict[str, Any]], int]:
        """The newest runs, and how many the registry holds."""
        return registry.list_runs(RUNS_SHOWN), registry.count_runs()

    def show(self, data: tuple[list[dict[str, Any]], int] | None) -> None:
        runs, self.total = data or (None, 0)
        if self._pending:  # still filling the table: shown when the fill ends
            self.runs = runs
            return
        if self.polls and runs == self.runs:
            self._tick()
            return
        self.runs = runs
        self._refresh()

    def _tick(self) -> None:
        """Rewrite the durations of running runs (they grow with the clock)."""
        table = self.query_one(RunsTable)
        at = [key for key, _ in COLUMNS].index("duration")
        for run in self.runs or []:
            cells = self._rows.get(run["id"])
            if run["status"] == "running" and cells:
                duration = hms(duration_s(run, self.app.clock()))
                if len(duration) > self._widths.get("duration", 0):
                    self._refresh(rebuild=True)  # a wider column
                    return
                if duration != cells[at]:
                    self._rows[run["id"]] = (*cells[:at], duration, *cells[at + 1:])
                    table.update_cell(run["id"], "duration", duration)

    # -- rows ------------------------------------------------------------------------------
    def visible(self) -> list[dict[str, Any]]:
        """The polled runs that pass the filters, in the chosen order."""
        text = self.query_one(FilterInput).value.strip().lower()
        runs = [r for r in self.runs or []
                if self.status_filter in ("all", r["status"]) and text in searchable(r)]
        keyed = [(self._sort_value(r), r) for r in runs]
        known = sorted((p for p in keyed if p[0] is not None), key=lambda p: p[0],
                       reverse=self.sort_reverse)
        return [r for _, r in known] + [r for value, r in keyed if value is None]

    def _sort_value(self, run: dict[str, Any]) -> Any:
        key = self.sort_key
        if key == "duration":
            return duration_s(run, self.app.clock())
        raw = {"name": run["name"], "status": run["status"], "model": model_name(run),
               "strategy": run.get("strategy"), "dataset": run.get("dataset_source"),
               "step": run.get("step"), "loss": run.get("last_loss"),
               "eval": run.get("eval_value"), "tok_s": run.get("tokens_per_s"),
               "started": run.get("started_at") or run.get("created_at")}[key]
        return raw.lower() if isinstance(raw, str) else raw

    def _cells(self, run: dict[str, Any]) -> tuple[str, ...]:
        tok_s = run.get("tokens_per_s")
        return ("●" if run["id"] in self.app.marked else "", run["name"], run["status"],
                model_name(run), run.get("strategy") or "", run.get("dataset_source") or "",
                f"{run.get('step') or 0}/{run.get('max_steps') or '?'}",
                num(run.get("last_loss")), headline(run),
                "" if tok_s is None else f"{tok_s:,.0f}",
                hms(duration_s(run, self.app.clock())),
                when(run.get("started_at") or run.get("created_at")))

    def _refresh(self, rebuild: bool = False) -> None:
        """Show the polled runs: rewrite the changed cells, or rebuild the table when the rows
        changed (or ``rebuild``: the sort changed, so the headers do)."""
        table = self.query_one(RunsTable)
        rows = {r["id"]: self._cells(r) for r in self.visible()}
        table.display = bool(rows)
        if rows and self.app.focused is None:
            table.focus()  # hidden while nothing matched, it lost the focus
        empty = self.query_one("#empty", Static)
        empty.display = not rows
        if not self.runs:
            empty.update(f"No runs yet in {self.app.registry_path}. Press n to compose one, or "
                         "run: tuneyard run SPEC.yaml")
        elif not rows:
            text = self.query_one(FilterInput).value.strip()
            empty.update(f"No run matches status '{self.status_filter}'"
                         + (f" and '{text}'" if text else "")
                         + " (f cycles the status; esc in the filter clears it).")
        if not rebuild and not self._pending and list(rows) == list(self._rows) \
                and self._fits(rows.values()):
            for run_id, cells in rows.items():
                for (key, _), old, new in zip(COLUMNS, self._rows[run_id], cells, strict=True):
                    if old != new:
                        table.update_cell(run_id, key, self._cell(key, new))
            self._rows = rows
        else:
            self._rows = rows
            self._build()
        self._summarize()

    def _fits(self, rows: Any) -> bool:
        """Whether every cell fits its column (else the table is rebuilt with wider ones)."""
        return all(len(v) <= self._widths.get(key, 0) or key in MAX_WIDTH
                   for cells in rows for (key, _), v in zip(COLUMNS, cells, strict=True))

    def _cell(self, key: str, value: str) -> str | Text:
        if key == "status":
            return status_text(value)
        return Text(value, overflow="ellipsis", no_wrap=True) if key in MAX_WIDTH else value

    def _build(self) -> None:
        """Refill the table from ``_rows``, keeping the cursor on its run."""
        table = self.query_one(RunsTable)
        current = self.current_run()
        table.clear(columns=True)
        for i, (key, label) in enumerate(COLUMNS):
            label += (" ▼" if self.sort_reverse else " ▲") if key == self.sort_key else ""
            # widths from all the rows' text, so columns do not jump while the table fills
            longest = max((len(cells[i]) for cells in self._rows.values()), default=0)
            width = min(MAX_WIDTH.get(key, 32), max(longest, len(label)))
            self._widths[key] = width
            table.add_column(label, key=key, width=width)
        rows = list(self._rows.items())
        self._pending, self._cursor_to = rows[CHUNK_ROWS:], current
        self._add_rows(rows[:CHUNK_ROWS])

    def _add_rows(self, rows: list[tuple[str, tuple[str, ...]]]) -> None:
        """Add rows to the table; schedule the pending ones once it is idle again."""
        table = self.query_one(RunsTable)
        for run_id, cells in rows:
            table.add_row(*(self._cell(key, v) for (key, _), v in zip(COLUMNS, cells, strict=True)),
                          key=run_id)
        if self._pending:
            self.set_timer(0.01, self._add_pending)  # timers wait for the idle measuring
            return
        if self._cursor_to in self._rows:
            table.move_cursor(row=table.get_row_index(self._cursor_to), animate=False)
        self._cursor_to = None

    def _add_pending(self) -> None:
        chunk, self._pending = self._pending[:CHUNK_ROWS], self._pending[CHUNK_ROWS:]
        if chunk:
            self._add_rows(chunk)
            if not self._pending:
                self._refresh()  # polls that came during the fill

    def _summarize(self) -> None:
        arrow = "↓" if self.sort_reverse else "↑"
        marked = f" · {len(self.app.marked)} marked" if self.app.marked else ""
        self.query_one("#summary", Static).update(
            f"{len(self._rows)} of {len(self.runs or [])} runs{self._capped()} · status: "
            f"{self.status_filter} · sort: {self.sort_key} {arrow}{marked}")

    def _capped(self) -> str:
        """``(newest of N)`` when the registry holds more runs than are shown."""
        return f" (newest of {self.total:,})" if self.total > len(self.runs or []) else ""

    def current_run(self) -> str | None:
        """The id of the run under the cursor (None when the table is empty)."""
        table = self.query_one(RunsTable)
        if not table.row_count:
            return None
        return table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value

    # -- events and actions ----------------------------------------------------------------
    def on_input_changed(self, event: Input.Changed) -> None:
        self._refresh()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.query_one(RunsTable).focus()

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        self.app.open_run(event.row_key.value)

    def on_data_table_header_selected(self, event: DataTable.HeaderSelected) -> None:
        key = event.column_key.value
        if key == self.sort_key:
            self.sort_reverse = not self.sort_reverse
        elif key in SORTABLE:
            self.sort_key, self.sort_reverse = key, False
        self._refresh(rebuild=True)

    def action_cycle_sort(self) -> None:
        self.sort_key = SORTABLE[(SORTABLE.index(self.sort_key) + 1) % len(SORTABLE)]
        self._refresh(rebuild=True)

    def action_reverse_sort(self) -> None:
        self.sort_reverse = not self.sort_reverse
        self._refresh(rebuild=True)

    def action_cycle_status(self) -> None:
        self.status_filter = STATUSES[(STATUSES.index(self.status_filter) + 1) % len(STATUSES)]
        self._refresh()

    def action_find(self) -> None:
        self.query_one(FilterInput).focus()

    def action_mark(self) -> None:
        run_id = self.current_run()
        if run_id is None:
            return
        self.app.marked.symmetric_difference_update({run_id})
        self._refresh()

    def action_compare(self) -> None:
        if len(self.app.marked) < 2:
            self.notify("Mark two or more runs with space to compare them.",
                        title="compare", severity="warning")
            return
        self.app.open_compare(sorted(self.app.marked))
