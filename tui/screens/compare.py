"""Compare screen: two or more runs side by side.

A header table (status, strategy, model, steps, final loss, duration) above three tabs: the
loss curves overlaid, the latest evaluation metrics with the best value of each row in bold
green, and the spec keys whose values differ. The first poll reads each loss curve
downsampled; runs that are still training keep growing: each later poll reads only the metric
rows written since the last one shown (see :class:`~tuneyard.tui.series.Curves`).
"""

from __future__ import annotations

import json
from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Static, TabbedContent, TabPane

from tuneyard.core.errors import RunNotFound
from tuneyard.core.registry import Registry, baseline_and_final
from tuneyard.tui.format import duration_s, hms, model_name, num, status_text
from tuneyard.tui.polling import Polling
from tuneyard.tui.series import POINTS, Curves, Series
from tuneyard.tui.widgets.plot import MetricPlot

MISSING = object()  # a spec key a run does not have
LOWER_IS_BETTER = ("loss", "perplexity")  # metric names containing these; higher wins otherwise


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """Leaves of nested dicts and lists under dotted keys: ``{"a": {"b": [1]}}`` →
    ``{"a.b.0": 1}``. Empty dicts and lists have no leaves (an empty ``options: {}`` is the
    same as none)."""
    if isinstance(value, dict):
        items = value.items()
    elif isinstance(value, list):
        items = enumerate(value)
    else:
        return {prefix: value}
    flat: dict[str, Any] = {}
    for key, item in items:
        flat.update(flatten(item, f"{prefix}.{key}" if prefix else str(key)))
    return flat


def spec_diff(specs: list[dict[str, Any]]) -> list[tuple[str, list[Any]]]:
    """The dotted keys whose values differ across ``specs``, each with one value per spec
    (:data:`MISSING` where a spec lacks the key), in the order the keys first appear."""
    flats = [flatten(spec) for spec in specs]
    keys = dict.fromkeys(key for flat in flats for key in flat)
    rows = []
    for key in keys:
        values = [flat.get(key, MISSING) for flat in flats]
        if any(v is MISSING or v != values[0] for v in values):
            rows.append((key, values))
    return rows


def spec_value(value: Any) -> str:
    """A spec value as the YAML would write it; ``—`` for :data:`MISSING`."""
    if value is MISSING:
        return "—"
    return value if isinstance(value, str) else json.dumps(value)


def best_index(metric: str, values: list[float | None]) -> int | None:
    """Index of the best of ``values`` (lowest for loss/perplexity metrics, else highest), or
    ``None`` when fewer than two runs have a value."""
    present = [(v, i) for i, v in enumerate(values) if v is not None]
    if len(present) < 2:
        return None
    lower = any(word in metric for word in LOWER_IS_BETTER)
    return (min(present) if lower else max(present))[1]


def run_labels(runs: list[dict[str, Any]]) -> list[str]:
    """Each run's name, with the last part of its id when names repeat."""
    names = [r["name"] for r in runs]
    return [f"{r['name']} ({r['id'].rsplit('-', 1)[-1]})" if names.count(r["name"]) > 1
            else r["name"] for r in runs]


class CompareScreen(Polling, Screen):
    """Runs ``run_ids`` (ids, id prefixes or names) side by side.

    Args:
        run_ids: the runs to compare (two or more).
    """

    BINDINGS = [
        Binding("escape", "app.pop_screen", "Back"),
        Binding("r", "app.runs", "Runs", show=False),  # esc (Back) is in the footer
        Binding("l", "tab('curves')", "Loss curves"),
        Binding("m", "tab('metrics')", "Metrics"),
        Binding("d", "tab('diff')", "Spec diff"),
    ]
    DEFAULT_CSS = """
    CompareScreen #header-table { height: auto; max-height: 6; overflow-x: hidden; }
    CompareScreen #loss-plot { height: 1fr; min-height: 8; }
    CompareScreen #compare-tabs { height: 1fr; }
    CompareScreen #metrics-table, CompareScreen #diff-table { height: 1fr; }
    """

    def __init__(self, run_ids: list[str]) -> None:
        super().__init__()
        self.run_ids = list(run_ids)
        self.runs: list[dict[str, Any]] = []  # the runs found, in the order asked
        self.curves: dict[str, Curves] = {}  # run id → its metric curves
        self._shown_evals: Any = None  # what the screen shows, to redraw only on change
        self._header_rows: list[tuple] = []
        self._said: tuple[str, bool] | None = ("Loading runs…", False)  # as composed

    def compose(self) -> ComposeResult:
        # built whole here (no on_mount queries: the screen may close before it mounts)
        yield Static("Loading runs…", classes="empty", id="compare-message")
        header = DataTable(id="header-table", cursor_type="none", zebra_stripes=True)
        header.add_columns("run", "status", "strategy", "steps", "final loss", "duration", "model")
        header.can_focus = False
        header.display = False
        yield header
        tabs = TabbedContent(id="compare-tabs")
        tabs.display = False
        with tabs:
            with TabPane("Loss curves", id="curves"):
                yield MetricPlot("loss", ylabel="loss", placeholder="no steps logged yet",
                                 id="loss-plot")
            with TabPane("Metrics", id="metrics"):
                yield Static(classes="empty", id="metrics-empty")
                yield DataTable(id="metrics-table", cursor_type="none", zebra_stripes=True)
            with TabPane("Spec diff", id="diff"):
                yield Static(classes="empty", id="diff-empty")
                yield DataTable(id="diff-table", cursor_type="none", zebra_stripes=True)
        yield Footer(compact=True)

    # -- worker thread -----------------------------------------------------------------------
    def fetch(self, registry: Registry) -> dict[str, Any]:
        runs, missing, metrics, evals = [], [], {}, {}
        for ref in self.run_ids:
            try:
                run = registry.get_run(ref)
            except RunNotFound:
                missing.append(ref)
                continue
            if any(r["id"] == run["id"] for r in runs):
                continue
            rid = run["id"]
            after = self.curves[rid].after if rid in self.curves else 0
            if after:
                metrics[rid] = (registry.metrics_since(rid, after), after, None)
            else:  # the first poll: the loss curve downsampled, and the newest row's id
                with registry.snapshot():
                    history = {"loss": registry.metric_curve(rid, "loss", POINTS)}
                    metrics[rid] = (registry.latest_metrics(rid, 1), after, history)
            evals[rid] = {key: final for key, (_, final) in
                          baseline_and_final(registry.evaluations(rid)).items()
                          if final is not None}
            runs.append(run)
        return {"runs": runs, "missing": missing, "metrics": metrics, "evals": evals}

    # -- UI thread ---------------------------------------------------------------------------
    def show(self, data: dict[str, Any] | None) -> None:
        if data is None:
            self._say(f"No registry yet at {self.app.registry_path}: nothing to compare.",
                      comparing=False)
            return
        unknown = ", ".join(f"'{ref}'" for ref in data["missing"])
        if len(data["runs"]) < 2:
            found = len(data["runs"])
            self._say(f"Compare needs two or more runs; found {found} of {len(self.run_ids)}"
                      + (f" (no run {unknown} in the registry)." if unknown else "."),
                      comparing=False)
            return
        self._say(f"No run {unknown} in the registry; comparing the others." if unknown else "",
                  comparing=True)
        first = not self.runs
        self.runs = data["runs"]
        grown = first
        for rid, (rows, read_after, history) in data["metrics"].items():
            curves = self.curves.setdefault(rid, Curves())
            if history is not None:
                curves.start(history, rows[-1]["id"] if rows else 0)
                grown = grown or bool(rows)
                continue
            added = curves.add(rows, read_after)
            if added is None:  # cleared, to be read again from the start
                self.poll_now()
            grown = grown or added != []
        labels = run_labels(self.runs)
        self._show_header(labels)
        if grown:
            self.query_one(MetricPlot).show(
                {label: self.loss(r["id"]) for label, r in zip(labels, self.runs, strict=True)})
        if data["evals"] != self._shown_evals:
            self._shown_evals = data["evals"]
            self._show_metrics(labels, [data["evals"][r["id"]] for r in self.runs])
        if first:
            self._show_diff(labels)

    def loss(self, run_id: str) -> Series:
        """The loss curve of a run shown (empty until its first step)."""
        return self.curves[run_id].series.get("loss") or Series()

    def _say(self, message: str, *, comparing: bool) -> None:
        """Show ``message`` (if any) above the comparison, and the comparison if ``comparing``."""
        if self._said == (message, comparing):
            return
        self._said = (message, comparing)
        note = self.query_one("#compare-message", Static)
        note.update(message)
        note.display = bool(message)
        self.query_one("#header-table").display = comparing
        self.query_one("#compare-tabs").display = comparing

    def _show_header(self, labels: list[str]) -> None:
        now, rows = self.app.clock(), []
        for label, run in zip(labels, self.runs, strict=True):
            last = self.loss(run["id"]).last  # (step, loss) or None
            rows.append((label, status_text(run["status"]), run.get("strategy") or "",
                         f"{run['step']}/{run['max_steps'] or '?'}", num(last[1] if last else None),
                         hms(duration_s(run, now)), model_name(run)))
        if rows != self._header_rows:
            self._header_rows = rows
            table = self.query_one("#header-table", DataTable)
            table.clear()
            table.add_rows(rows)

    def _show_metrics(self, labels: list[str], evals: list[dict[tuple[str, str], float]]) -> None:
        table = self.query_one("#metrics-table", DataTable)
        table.clear(columns=True)
        keys = list(dict.fromkeys(key for run_evals in evals for key in run_evals))
        self._empty("metrics", not keys, "No evaluations yet: runs are evaluated when they end.")
        table.add_columns("evaluator", "metric", *labels)
        for evaluator, metric in keys:
            values = [e.get((evaluator, metric)) for e in evals]
            best = best_index(metric, values)
            table.add_row(evaluator, metric, *(
                Text(num(v), style="bold green" if i == best else "")
                for i, v in enumerate(values)))

    def _show_diff(self, labels: list[str]) -> None:
        table = self.query_one("#diff-table", DataTable)
        rows = spec_diff([run.get("spec") or {} for run in self.runs])
        self._empty("diff", not rows, "The runs' specs are identical.")
        table.add_columns("key", *labels)
        for key, values in rows:
            table.add_row(key, *(spec_value(v) for v in values))

    def _empty(self, tab: str, empty: bool, message: str) -> None:
        note = self.query_one(f"#{tab}-empty", Static)
        note.update(message)
        note.display, self.query_one(f"#{tab}-table").display = empty, not empty

    # -- keys --------------------------------------------------------------------------------
    def action_tab(self, tab: str) -> None:
        self.query_one(TabbedContent).active = tab

    def on_tabbed_content_tab_activated(self, event: TabbedContent.TabActivated) -> None:
        for table in event.pane.query(DataTable):
            table.focus()
