"""The Run screen: one run's live monitor.

A header (name, id, status, model, strategy, dataset, device), a progress bar with the ETA and
tokens/s, and tabs: Curves (loss with eval loss, learning rate, and the strategy's own step
metrics when it logs any, e.g. DPO's rewards), Devices, Evaluations, Log and Spec. The first poll reads each curve downsampled (``Registry.metric_curve``), so a run of a
million steps opens as fast as a short one; each later poll reads only what is new: metric and
telemetry rows after the last row id seen (the curves are bounded
:class:`~tuneyard.tui.series.Series`), and the log only when the file changed. Stop, resume and
evaluate go through the registry or the CLI in thread workers.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar

import yaml
from rich.syntax import Syntax
from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, VerticalScroll
from textual.screen import Screen
from textual.widgets import (DataTable, Footer, Log, ProgressBar, Static, TabbedContent,
                             TabPane)

from tuneyard.core.errors import TuneyardError
from tuneyard.core.registry import Registry, baseline_and_final, strategy_metrics
from tuneyard.tui import actions
from tuneyard.tui.format import hms, model_name, num, parse_time, status_text
from tuneyard.tui.polling import Polling
from tuneyard.tui.screens.confirm import ConfirmScreen
from tuneyard.tui.series import POINTS, Curves, Series
from tuneyard.tui.widgets.device import DevicePanel
from tuneyard.tui.widgets.plot import MetricPlot

LOG_LINES = 200  # lines of run.log shown
LOG_TAIL_BYTES = 256 * 1024  # bytes read from the end of run.log to find them
RATE_STEPS = 20  # recent steps the ETA's steps/s is measured over
RATE_ROWS = RATE_STEPS * 8  # metric rows the first poll reads for them (≤ 8 metrics a step)
#: the curves the screen shows (tokens_per_s: its latest value)
CURVES = ("loss", "eval_loss", "learning_rate", "tokens_per_s")
STOPPABLE = ("running", "queued")
RESUMABLE = ("stopped", "interrupted", "failed")


@dataclass
class RunPoll:
    """What one poll read: the run row, and what is new since the rows already shown."""

    run: dict[str, Any]
    metrics: list[dict[str, Any]]  # metric rows after the last id shown…
    metrics_from: int  # …which was this id when the poll read them (0: the first poll, which
    # reads the newest RATE_ROWS rows, for the step times, and…)
    history: dict[str, list[tuple[int, float]]] | None  # …the CURVES, downsampled
    system: list[dict[str, Any]]  # telemetry rows after the last id shown
    evaluations: list[dict[str, Any]]
    checkpoints: list[dict[str, Any]]
    log_stamp: tuple[int, int] | None  # run.log's (size, mtime_ns); None: no file
    log: list[str] | None  # its last LOG_LINES lines ([]: no file) if the stamp changed


def tail(path: Path, lines: int = LOG_LINES) -> list[str]:
    """The last ``lines`` lines of a text file (read from its last ``LOG_TAIL_BYTES``)."""
    with open(path, "rb") as f:
        f.seek(0, 2)
        start = max(0, f.tell() - LOG_TAIL_BYTES)
        f.seek(start)
        text = f.read().decode("utf-8", errors="replace").splitlines()
    return (text[1:] if start else text)[-lines:]  # the first line read may be cut


def evaluation_rows(evaluations: list[dict[str, Any]]) -> list[tuple[str, str, str, str, str]]:
    """Per (evaluator, metric): baseline, final (the latest other checkpoint evaluated) and
    the change (absolute, and relative to the baseline)."""
    rows = []
    for (evaluator, metric), (base, final) in baseline_and_final(evaluations).items():
        change = ""
        if base is not None and final is not None:
            change = f"{final - base:+.4g}" + (f" ({(final - base) / abs(base):+.1%})"
                                               if base else "")
        rows.append((evaluator, metric, num(base), num(final), change))
    return rows


def eval_loss_points(run: dict[str, Any], evaluations: list[dict[str, Any]],
                     checkpoints: list[dict[str, Any]]) -> tuple[list[float], list[float]]:
    """``eval_loss`` results placed on the step axis: ``base`` at step 0, ``final`` at the
    run's step, a checkpoint folder at the step it was saved."""
    steps = {"base": 0, "final": run["step"] or 0}
    steps.update({Path(c["path"]).name: c["step"] for c in checkpoints})
    points = sorted((steps[e["checkpoint"]], e["value"]) for e in evaluations
                    if e["metric"] == "eval_loss" and e["checkpoint"] in steps)
    return [p[0] for p in points], [p[1] for p in points]


class ConfirmStop(ConfirmScreen):
    """Asks y/n before stopping the run named ``name``."""

    def __init__(self, name: str) -> None:
        super().__init__(Text.assemble(
            "Stop ", (name, "bold"), "?\n\nIt saves a checkpoint at its next step, then ends ",
            ("stopped", "italic"), "; ", ("u", "bold"), " resumes it from there."))


class RunScreen(Polling, Screen):
    """The live monitor of ``run_id`` (an id, unique id prefix or name)."""

    DEFAULT_CSS = """
    RunScreen #head { height: auto; padding: 0 1; }
    RunScreen #progress { height: 1; padding: 0 1; }
    RunScreen.-waiting #progress, RunScreen.-waiting TabbedContent { display: none; }
    RunScreen #progress-bar { width: auto; }
    RunScreen #progress-bar Bar > .bar--bar { background: $panel-lighten-2; }
    RunScreen #rate { width: 1fr; padding-left: 1; }
    RunScreen TabbedContent { height: 1fr; }
    RunScreen ContentSwitcher { height: 1fr; }
    RunScreen TabPane { height: 1fr; padding: 0 1; }
    RunScreen #plots { height: 1fr; }
    RunScreen MetricPlot { width: 1fr; height: 1fr; }
    RunScreen #strategy-plot { display: none; }
    RunScreen.-strategy-metrics #strategy-plot { display: block; }
    RunScreen #eval-note { height: auto; color: $text-muted; }
    RunScreen #log-view { height: 1fr; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "app.pop_screen", "Back"),
        Binding("s", "stop", "Stop"),
        Binding("u", "resume", "Resume"),
        Binding("e", "evaluate", "Eval"),
        Binding("c", "compare", "Compare"),
        Binding("r", "app.runs", "Runs", show=False),  # esc (Back) is in the footer
        # the tabs: their labels show the keys, the footer has no room at 80 columns
        *(Binding(str(i), f"tab('{tab}')", tab, show=False) for i, tab in enumerate(
            ("curves", "devices", "evaluations", "log", "spec"), 1)),
    ]

    def __init__(self, run_id: str) -> None:
        super().__init__(classes="-waiting")  # progress and tabs hide until the run is read
        self.run_id = run_id
        self.run_row: dict[str, Any] | None = None  # the latest poll's run
        self.curves = Curves()  # the metric curves, fed by each poll
        self._step_times: deque[tuple[int, datetime]] = deque(maxlen=RATE_STEPS)
        self._devices: dict[str, dict[str, Any]] = {}
        self._evaluations: list[dict[str, Any]] | None = None
        self._checkpoints: list[dict[str, Any]] = []
        self._eval_loss: tuple[list[float], list[float]] = ([], [])
        # what is shown already: the last telemetry row id, run.log's stamp
        self._system_after = 0
        self._log_stamp: tuple[int, int] | None = (-1, -1)

    def compose(self) -> ComposeResult:
        yield Static(f"loading run {self.run_id} …", id="head")
        with Horizontal(id="progress"):
            yield ProgressBar(show_eta=False, id="progress-bar")
            yield Static(id="rate")
        with TabbedContent():
            with TabPane("1 Curves", id="curves"), Horizontal(id="plots"):
                yield MetricPlot("loss", placeholder="no steps yet", id="loss")
                yield MetricPlot("learning rate", placeholder="no steps yet", id="lr")
                yield MetricPlot("strategy metrics", id="strategy-plot")
            with TabPane("2 Devices", id="devices"):
                yield DevicePanel()
            with TabPane("3 Evaluations", id="evaluations"):
                yield Static("No evaluations yet.", id="eval-note")
                table = DataTable(cursor_type="row", id="eval-table")
                table.add_columns("evaluator", "metric", "baseline", "final", "change")
                yield table
            with TabPane("4 Log", id="log"):
                yield Log(id="log-view")
            with TabPane("5 Spec", id="spec"), VerticalScroll():
                yield Static(id="spec-view")
        yield Footer(compact=True)

    # -- polling ---------------------------------------------------------------------------
    def fetch(self, registry: Registry) -> RunPoll:
        run = registry.get_run(self.run_id)
        log = Path(run["output_dir"] or ".") / "run.log"
        try:
            st = log.stat()
            stamp: tuple[int, int] | None = (st.st_size, st.st_mtime_ns)
        except FileNotFoundError:
            stamp = None
        after, history = self.curves.after, None
        if after:
            metrics = registry.metrics_since(run["id"], after)
        else:
            with registry.snapshot():  # the newest rows are the history's last
                names = [*CURVES, *strategy_metrics(registry.metric_names(run["id"]))]
                history = {name: registry.metric_curve(run["id"], name, POINTS)
                           for name in names}
                metrics = registry.latest_metrics(run["id"], RATE_ROWS)
        return RunPoll(run, metrics, after, history,
                       registry.system_metrics_since(run["id"], self._system_after),
                       registry.evaluations(run["id"]), registry.checkpoints(run["id"]),
                       stamp, None if stamp == self._log_stamp else tail(log) if stamp else [])

    def show(self, data: RunPoll | None) -> None:
        if data is None:
            self.show_error(f"no registry at {self.app.registry_path} yet")
            return
        first, changed = self.run_row is None, data.run != self.run_row
        self.run_row = run = data.run
        self.remove_class("-waiting")
        if changed or data.checkpoints != self._checkpoints:
            self._checkpoints = data.checkpoints
            self._show_head(run)
        grown = self._add_metrics(data)
        system = [s for s in data.system if s["id"] > self._system_after]
        evaluated = data.evaluations != self._evaluations
        if evaluated:
            self._show_evaluations(run, data.evaluations, data.checkpoints)
        if first or grown or evaluated:
            self._draw_curves()
        if first or system:
            self._show_devices(system)
        if data.log is not None and data.log_stamp != self._log_stamp:
            self._log_stamp = data.log_stamp
            self._show_log(run, data.log)
        if first:
            text = yaml.safe_dump(run["spec"], sort_keys=False)
            self.query_one("#spec-view", Static).update(
                Syntax(text, "yaml", theme="ansi_dark").highlight(text))  # no background
        if changed or grown:
            self._show_progress(run)

    def show_error(self, error: str) -> None:
        head = self.query_one("#head", Static)
        head.update(error)
        head.add_class("error")

    def _show_head(self, run: dict[str, Any]) -> None:
        head = self.query_one("#head", Static)
        head.remove_class("error")
        title = Text.assemble((run["name"], "bold"), "  ", (run["id"], "dim"), "  ",
                              status_text(run["status"]), f"  on {run.get('device') or '?'}")
        if run.get("stop_requested_at") and run["status"] in STOPPABLE:
            title.append("  stop requested", style="yellow")
        title.append(f"\nmodel {model_name(run)} · strategy {run.get('strategy') or '?'} · "
                     f"dataset {run.get('dataset_source') or '?'}")
        if self._checkpoints:
            last = self._checkpoints[-1]
            path = Path(last["path"])
            if path.is_relative_to(run.get("output_dir") or "/nowhere"):
                path = path.relative_to(run["output_dir"])
            title.append(f"\ncheckpoint step {last['step']}: {path}", style="dim")
        if run.get("error"):
            title.append(f"\n{run['error']}", style="red")
        head.update(title)

    @property
    def series(self) -> dict[str, Series]:
        """Metric name → its curve."""
        return self.curves.series

    def _add_metrics(self, data: RunPoll) -> bool:
        """Add a poll's metric rows to the curves (or start them from its history) and to the
        step times; whether the curves changed."""
        if data.history is not None:
            self.curves.start(data.history, data.metrics[-1]["id"] if data.metrics else 0)
            self._step_times.clear()
            added = data.metrics
        else:
            added = self.curves.add(data.metrics, data.metrics_from)
        if added is None:  # cleared, to be read again from the start
            self._step_times.clear()
            self.poll_now()
            return True
        for row in added:
            if not self._step_times or self._step_times[-1][0] != row["step"]:
                self._step_times.append((row["step"], parse_time(row["at"])))
        return bool(added)

    def _show_devices(self, rows: list[dict[str, Any]]) -> None:
        for row in rows:
            self._system_after = row["id"]
            self._devices[row["device"]] = row
        self.query_one(DevicePanel).show(self._devices)

    def _show_log(self, run: dict[str, Any], lines: list[str]) -> None:
        log = self.query_one("#log-view", Log)
        log.clear()
        log.write_lines(lines or [f"no log yet ({run['output_dir']}/run.log)"])
        self.call_after_refresh(log.scroll_end, animate=False)  # the newest line, once laid out

    def on_tabbed_content_tab_activated(self, event: TabbedContent.TabActivated) -> None:
        if event.pane.id == "log":  # a hidden log could not scroll: show its end now
            self.call_after_refresh(self.query_one("#log-view", Log).scroll_end, animate=False)

    def _draw_curves(self) -> None:
        empty = Series()
        curves: dict[str, Any] = {"train loss": self.series.get("loss", empty)}
        during = self.series.get("eval_loss", empty).points()  # training.eval_steps
        names = strategy_metrics(sorted(self.series))
        # the evaluators' eval_loss (base, final) is a cross-entropy: beside the training loss
        # only when that is one too; a strategy that logs its own metrics (DPO, ORPO) has a
        # loss of its own, and its trainer's held-out eval_loss is that loss
        before_after = [] if names else list(zip(*self._eval_loss))
        points = sorted([*before_after, *zip(*during)])
        if points:
            curves["eval loss"] = tuple(map(list, zip(*points)))
        self.query_one("#loss", MetricPlot).show(curves)
        self.query_one("#lr", MetricPlot).show(
            {"learning rate": self.series.get("learning_rate", empty)})
        self.set_class(bool(names), "-strategy-metrics")
        if names:
            plot = self.query_one("#strategy-plot", MetricPlot)
            plot.title = f"{(self.run_row or {}).get('strategy') or 'strategy'} metrics"
            plot.show({name: self.series[name] for name in names})

    def _show_evaluations(self, run: dict[str, Any], evaluations: list[dict[str, Any]],
                          checkpoints: list[dict[str, Any]]) -> None:
        self._evaluations = evaluations
        self._eval_loss = eval_loss_points(run, evaluations, checkpoints)
        table = self.query_one("#eval-table", DataTable)
        table.clear()
        for row in evaluation_rows(evaluations):
            table.add_row(*row, key=f"{row[0]}/{row[1]}")
        self.query_one("#eval-note", Static).update(
            "baseline: the model before training; final: the latest checkpoint evaluated"
            if evaluations else "No evaluations yet.")

    def steps_per_s(self) -> float | None:
        """Steps per second over the last ``RATE_STEPS`` steps (from the metric times), since
        the last resume (the time a run spent stopped is no training time)."""
        resumed = parse_time((self.run_row or {}).get("resumed_at"))
        times = [(s, t) for s, t in self._step_times if resumed is None or t >= resumed]
        if len(times) < 2:
            return None
        (s0, t0), (s1, t1) = times[0], times[-1]
        seconds = (t1 - t0).total_seconds()
        return (s1 - s0) / seconds if seconds > 0 and s1 > s0 else None

    def _show_progress(self, run: dict[str, Any]) -> None:
        step, total = run["step"] or 0, run.get("max_steps")
        self.query_one("#progress-bar", ProgressBar).update(total=total, progress=step)
        parts = [f"step {step}/{total or '?'}"]
        rate = self.steps_per_s()
        if run["status"] == "running" and rate and total:
            parts.append(f"ETA {hms((total - step) / rate)}")
        tokens = self.series.get("tokens_per_s")
        if tokens and tokens.last:
            parts.append(f"{tokens.last[1]:,.0f} tok/s")
        self.query_one("#rate", Static).update(" · ".join(parts))

    # -- actions ---------------------------------------------------------------------------
    def _ready(self, allowed: tuple[str, ...], doing: str) -> dict[str, Any] | None:
        """The run if its status allows ``doing``, else None (and say why)."""
        run = self.run_row
        if run is None:
            self.notify(f"run {self.run_id} is not loaded", severity="warning")
        elif run["status"] not in allowed:
            either = ", ".join(allowed[:-1]) + " or " * (len(allowed) > 1) + allowed[-1]
            self.notify(f"{run['name']} is {run['status']}: only a {either} run can be {doing}",
                        severity="warning")
        else:
            return run
        return None

    def _report(self, message: str, severity: str = "information") -> None:
        """Notify from a thread worker and poll at once."""
        self.app.call_from_thread(self.notify, message, severity=severity)
        self.poll_now()

    def action_tab(self, tab: str) -> None:
        self.query_one(TabbedContent).active = tab

    def action_stop(self) -> None:
        run = self._ready(STOPPABLE, "stopped")
        if run:
            self.app.push_screen(ConfirmStop(run["name"]),
                                 lambda yes: self._request_stop(run["id"]) if yes else None)

    @work(thread=True, group="action")
    def _request_stop(self, run_id: str) -> None:
        try:
            asked = Registry(self.app.registry_path, create=False).request_stop(run_id)
        except TuneyardError as exc:
            self._report(str(exc), "error")
            return
        self._report("stop requested: the run saves a checkpoint at its next step" if asked
                     else "the run is no longer active: nothing to stop",
                     "information" if asked else "warning")

    def action_resume(self) -> None:
        run = self._ready(RESUMABLE, "resumed")
        if run:
            self._resume(run)

    @work(thread=True, group="action")
    def _resume(self, run: dict[str, Any]) -> None:
        try:
            actions.resume(self.app.registry_path, run["id"])
        except (actions.ActionError, OSError) as exc:
            self._report(str(exc), "error")
            return
        self._report(f"resuming {run['name']} from its last checkpoint")

    def action_evaluate(self) -> None:
        run = self._ready(("completed",), "evaluated")
        if run:
            self._evaluate(run)

    @work(thread=True, group="action")
    def _evaluate(self, run: dict[str, Any]) -> None:
        try:
            pid = actions.evaluate(self.app.registry_path, run["id"], run["output_dir"])
        except OSError as exc:
            self._report(f"cannot start tuneyard eval: {exc}", "error")
            return
        self._report(f"evaluating {run['name']} (pid {pid}); results appear under Evaluations,"
                     f" output in {run['output_dir']}/eval.log")

    def action_compare(self) -> None:
        ids = sorted(self.app.marked | ({self.run_row["id"]} if self.run_row else set()))
        if len(ids) < 2:
            self.notify("mark runs with space on the Runs screen", title="compare",
                        severity="warning")
            return
        self.app.open_compare(ids)
