"""The Run screen: header and progress, curves fed incrementally, devices, evaluations, log,
spec, and the stop/resume/evaluate/compare actions."""

from __future__ import annotations

import asyncio
import io
import re
import time
from datetime import timedelta
from pathlib import Path

import pytest
from rich.console import Console
from textual.widgets import DataTable, Log, ProgressBar, Static, TabbedContent

from tuneyard.core.registry import Registry
from tuneyard.tui import actions
from tuneyard.tui.format import parse_time
from tuneyard.tui.screens.run import ConfirmStop, RunScreen, tail
from tuneyard.tui.screens.runs import RunsScreen
from tuneyard.tui.series import Series
from tuneyard.tui.widgets.device import NO_GPU, DevicePanel


def plain(widget: Static) -> str:
    """A Static's content as plain text, trailing spaces dropped."""
    console = Console(width=120, file=io.StringIO(), record=True)
    console.print(widget.content)
    return "\n".join(line.rstrip() for line in console.export_text().splitlines())


def metric_reads(monkeypatch) -> list[int]:
    """The ``after`` row id of every ``Registry.metrics_since`` call from now on."""
    reads: list[int] = []
    since = Registry.metrics_since
    monkeypatch.setattr(Registry, "metrics_since", lambda self, run_id, after=0:
                        reads.append(after) or since(self, run_id, after))
    return reads


async def open_run(app, pilot, wait_for, run_id: str) -> RunScreen:
    app.open_run(run_id)
    await wait_for(pilot, lambda: isinstance(app.screen, RunScreen) and app.screen.polls > 0)
    return app.screen


@pytest.fixture
def notes(monkeypatch):
    """``notes(app)``: the list the app's notifications go to, as (message, severity)."""

    def install(app) -> list[tuple[str, str]]:
        seen: list[tuple[str, str]] = []
        monkeypatch.setattr(app, "notify", lambda message, severity="information", **kw:
                            seen.append((message, severity)))
        return seen

    return install


async def test_running_run(seeded_registry, tui_app, wait_for):
    app = tui_app(seeded_registry)
    out = seeded_registry.parent / "run-e"
    async with app.run_test(size=(100, 30)) as pilot:
        screen = await open_run(app, pilot, wait_for, "run-e")
        assert plain(screen.query_one("#head")) == (
            "wordnet-lora-long  run-e  running  on cuda\n"
            "model SmolLM2-135M-Instruct.Q4_1.gguf · strategy lora · dataset wordnet")
        bar = screen.query_one("#progress-bar", ProgressBar)
        assert (bar.progress, bar.total) == (25, 100)
        # every seeded step has the same time: no steps/s, so no ETA
        assert str(screen.query_one("#rate").content) == "step 25/100 · 2,250 tok/s"

        panel = screen.query_one(DevicePanel)
        rows = [re.split(r" {2,}", re.sub(r"[━╺╸]+", "", line))  # bars dropped
                for line in plain(panel.query_one("#gpus")).splitlines()]
        assert rows == [["device", "util", "memory", "power", "temp"],
                        ["cuda:0", "91%", "40.0 GiB / 141.0 GiB (28%)", "450 W", "61 °C"],
                        ["cuda:1", "89%", "38.0 GiB / 141.0 GiB (27%)", "430 W", "59 °C"]]
        assert str(panel.query_one("#cpu").content) == (
            "CPU 12.5% · run process RSS 3.0 GiB of 24.0 GiB RAM")
        assert str(panel.query_one("#sampled").content) == "latest sample 2026-11-01 11:50 UTC"

        assert str(screen.query_one("#eval-note").content) == "No evaluations yet."
        assert "training:\n  max_steps: 100\n  learning_rate: 0.001" in plain(
            screen.query_one("#spec-view"))
        log = screen.query_one("#log-view", Log)
        assert log.lines == [f"no log yet ({out}/run.log)"]
        out.mkdir()
        (out / "run.log").write_text("".join(f"line {i}\n" for i in range(300)))
        await wait_for(pilot, lambda: len(log.lines) == 200)
        assert log.lines[0] == "line 100" and log.lines[-1] == "line 299"
        await pilot.press("4")  # the Log tab shows the newest lines
        await wait_for(pilot, lambda: log.max_scroll_y > 0 and log.scroll_y == log.max_scroll_y)
        with open(out / "run.log", "a") as f:
            f.write("".join(f"line {i}\n" for i in range(300, 320)))
        await wait_for(pilot, lambda: log.lines[-1] == "line 319")
        await wait_for(pilot, lambda: log.scroll_y == log.max_scroll_y)


async def test_eta_and_curves_fed_incrementally_at_80x24(seeded_registry, tui_app, wait_for,
                                                monkeypatch):
    reg = Registry(seeded_registry)
    start = parse_time(reg.get_run("run-e")["started_at"])
    for step in range(1, 26):  # one step every 2 s
        reg.db.execute("UPDATE metrics SET at = ? WHERE run_id = 'run-e' AND step = ?",
                       [(start + timedelta(seconds=2 * step)).isoformat(), step])
    seeded = reg.metrics("run-e", "loss")
    reads = metric_reads(monkeypatch)
    app = tui_app(seeded_registry)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_run(app, pilot, wait_for, "run-e")
        plot = screen.query_one("#loss").region  # usable at 80×24
        assert plot.width >= 38 and plot.height >= 15
        assert screen.steps_per_s() == pytest.approx(0.5)
        assert str(screen.query_one("#rate").content) == (
            "step 25/100 · ETA 2:30 · 2,250 tok/s")  # 75 steps left at 0.5 steps/s
        loss = screen.series["loss"]
        assert len(loss) == len(seeded) == 25
        assert loss.points() == ([s for s, _ in seeded], [v for _, v in seeded])
        assert screen.query_one("#lr").curves["learning rate"][0] == list(range(1, 26))

        reg.add_metrics("run-e", 26, {"loss": 1.5, "learning_rate": 7.4e-4})
        await wait_for(pilot, lambda: len(loss) == 26)
        polls = screen.polls
        await wait_for(pilot, lambda: screen.polls >= polls + 3)
        assert len(loss) == 26 and loss.last == (26, 1.5)  # each row read once
        assert screen.query_one("#loss").curves["train loss"][0][-1] == 26
        assert screen.query_one("#progress-bar", ProgressBar).progress == 26
        assert reads and reads[0] > 0 and sorted(reads) == reads  # the first, downsampled


REWARDS = ("rewards/accuracies", "rewards/chosen", "rewards/margins", "rewards/rejected")


def dpo_run(path: Path) -> str:
    """A running DPO run in the seeded registry, 20 steps of loss and rewards (run-e's
    spec with strategy dpo)."""
    reg = Registry(path)
    spec = reg.get_run("run-e")["spec"]
    spec["strategy"] = {"name": "dpo", "options": {"beta": 0.1}}
    run_id = reg.create_run(spec, name="wordnet-dpo", status="running", strategy="dpo",
                            max_steps=40, dataset_source="wordnet", device="cuda",
                            base_model="SmolLM2-135M-Instruct.Q4_1.gguf")
    reg.db.execute("UPDATE runs SET id = 'run-f', created_at = ? WHERE id = ?",
                   [reg.get_run("run-e")["created_at"], run_id])
    run_id = "run-f"
    for step in range(1, 21):
        reg.add_metrics(run_id, step, {
            "loss": 0.6931 - 0.02 * step, "learning_rate": 1e-5, "rewards/chosen": 0.01 * step,
            "rewards/rejected": -0.02 * step, "rewards/margins": 0.03 * step,
            "rewards/accuracies": min(1.0, 0.5 + 0.05 * step),
            **({"eval_loss": 0.45} if step == 10 else {})})  # DPO's loss on held-out pairs
    reg.add_evaluation(run_id, "base", "perplexity", {"eval_loss": 5.7})  # a cross-entropy
    return run_id


async def test_a_strategys_own_step_metrics_get_their_plot(seeded_registry, tui_app, wait_for):
    run_id = dpo_run(seeded_registry)
    app = tui_app(seeded_registry)
    async with app.run_test(size=(120, 30)) as pilot:
        screen = await open_run(app, pilot, wait_for, run_id)
        plot = screen.query_one("#strategy-plot")
        assert plot.display and plot.title == "dpo metrics"
        assert sorted(plot.curves) == list(REWARDS)
        assert plot.curves["rewards/margins"] == (list(range(1, 21)), pytest.approx(
            [0.03 * s for s in range(1, 21)]))
        # beside DPO's loss, its held-out DPO loss only: not perplexity's cross-entropy
        assert screen.query_one("#loss").curves["eval loss"] == ([10], [0.45])
        Registry(seeded_registry).add_metrics(run_id, 21, {"loss": 0.27, "rewards/margins": 0.7})
        await wait_for(pilot, lambda: plot.curves["rewards/margins"][0][-1] == 21)
        screen.dismiss()
        screen = await open_run(app, pilot, wait_for, "run-e")  # a LoRA run logs none
        assert not screen.query_one("#strategy-plot").display


def test_snapshot_run_strategy_metrics(snap_compare, seeded_registry, tui_app, wait_for):
    """A DPO run's Curves tab at 120×30, step 20/40: the falling loss with one held-out (DPO)
    eval loss point at step 10 and no perplexity point, the flat learning rate, and a third
    plot "dpo metrics" with the four reward curves (accuracies rising to 1.0, chosen and
    margins rising, rejected falling) and their legend."""
    run_id = dpo_run(seeded_registry)

    async def ready(pilot):
        await open_run(pilot.app, pilot, wait_for, run_id)
        pilot.app.screen.query_one(TabbedContent).active = "curves"
        await pilot.pause()

    assert snap_compare(tui_app(seeded_registry), terminal_size=(120, 30), run_before=ready)


async def test_completed_run(seeded_registry, tui_app, wait_for, notes, monkeypatch):
    calls: list[tuple] = []
    monkeypatch.setattr(actions, "evaluate", lambda *args: calls.append(args) or 4242)
    app = tui_app(seeded_registry)
    seen = notes(app)
    out = seeded_registry.parent / "run-a"
    async with app.run_test(size=(100, 30)) as pilot:
        screen = await open_run(app, pilot, wait_for, "run-a")
        table = screen.query_one("#eval-table", DataTable)
        assert [table.get_row_at(i) for i in range(table.row_count)] == [
            ["perplexity", "perplexity", "43", "15", "-28 (-65.1%)"],
            ["perplexity", "eval_loss", "3.761", "2.708", "-1.053 (-28.0%)"],
        ]
        xs, ys = screen.query_one("#loss").curves["eval loss"]  # base at 0, final at 40
        assert xs == [0, 40] and ys == pytest.approx([3.7612, 2.7081], abs=1e-4)
        panel = screen.query_one(DevicePanel)
        assert plain(panel.query_one("#gpus")) == NO_GPU
        assert str(panel.query_one("#cpu").content) == "No CPU sample yet."

        await pilot.press("s", "u", "c")
        assert app.screen is screen
        assert [message for message, _ in seen] == [
            "smollm2-wordnet-lora is completed: only a running or queued run can be stopped",
            ("smollm2-wordnet-lora is completed: only a stopped, interrupted or failed run can"
             " be resumed"),
            "mark runs with space on the Runs screen",
        ]
        assert {severity for _, severity in seen} == {"warning"}
        await pilot.press("e")
        await wait_for(pilot, lambda: len(seen) == 4)
        evaluating = (f"evaluating smollm2-wordnet-lora (pid 4242); results appear under "
                      f"Evaluations, output in {out}/eval.log")
        assert seen[3] == (evaluating, "information")
        assert calls == [(app.registry_path, "run-a", str(out))]


async def test_failed_and_stopped_runs_resume(seeded_registry, tui_app, wait_for, notes,
                                              monkeypatch):
    Registry(seeded_registry).add_system_metrics("run-d", [
        {"device": "cpu", "util_pct": 50.0, "mem_bytes": 2**30, "mem_total_bytes": 8 * 2**30,
         "power_w": None, "temp_c": None}])
    calls: list[str] = []

    def resume(path, run_id):
        calls.append(run_id)
        if run_id == "run-c":
            raise actions.ActionError("run-c: no checkpoint to resume from")

    monkeypatch.setattr(actions, "resume", resume)
    app = tui_app(seeded_registry)
    seen = notes(app)
    async with app.run_test(size=(100, 30)) as pilot:
        screen = await open_run(app, pilot, wait_for, "run-c")
        assert plain(screen.query_one("#head")).splitlines()[2] == (
            "DataError: dataset: source 'text' gave 0 rows")
        assert str(screen.query_one("#rate").content) == "step 3/200 · 2,030 tok/s"
        await pilot.press("u")
        await wait_for(pilot, lambda: seen)
        assert seen == [("run-c: no checkpoint to resume from", "error")]
        app.pop_screen()

        screen = await open_run(app, pilot, wait_for, "run-d")
        panel = screen.query_one(DevicePanel)
        assert plain(panel.query_one("#gpus")) == NO_GPU  # CPU telemetry only
        assert str(panel.query_one("#cpu").content) == (
            "CPU 50.0% · run process RSS 1.0 GiB of 8.0 GiB RAM")
        await pilot.press("u")
        await wait_for(pilot, lambda: len(seen) == 2)
        assert seen[1] == ("resuming qa-lora-r16 from its last checkpoint", "information")
        assert calls == ["run-c", "run-d"]


async def test_stop_asks_first(seeded_registry, tui_app, wait_for, notes, monkeypatch):
    app = tui_app(seeded_registry)
    app.marked.add("run-a")
    seen = notes(app)
    compared: list[list[str]] = []
    monkeypatch.setattr(app, "open_compare", compared.append)
    reg = Registry(seeded_registry)
    async with app.run_test(size=(100, 30)) as pilot:
        screen = await open_run(app, pilot, wait_for, "run-e")
        await pilot.press("s")
        assert isinstance(app.screen, ConfirmStop)
        await pilot.press("n")
        assert app.screen is screen
        await pilot.pause(0.1)
        assert reg.get_run("run-e")["stop_requested_at"] is None
        await pilot.press("s", "y")
        await wait_for(pilot, lambda: "stop requested" in plain(screen.query_one("#head")))
        assert reg.get_run("run-e")["stop_requested_at"] is not None
        await pilot.press("e")
        assert seen == [
            ("stop requested: the run saves a checkpoint at its next step", "information"),
            ("wordnet-lora-long is running: only a completed run can be evaluated", "warning")]
        await pilot.press("c")  # this run and the marked ones
        assert compared == [["run-a", "run-e"]]


async def test_a_long_run_opens_with_its_curves_downsampled(seeded_registry, tui_app, wait_for,
                                                            monkeypatch):
    reg = Registry(seeded_registry)
    run_id = reg.create_run({"name": "long", "training": {"max_steps": 5000}})
    reg.add_steps(run_id, [(s, {"loss": 5000 / s, "learning_rate": 1e-3},
                            "2026-11-01T10:00:00+00:00") for s in range(1, 5001)])
    reg.update_run(run_id, status="completed")
    reads = metric_reads(monkeypatch)
    app = tui_app(seeded_registry)
    async with app.run_test(size=(100, 30)) as pilot:
        screen = await open_run(app, pilot, wait_for, run_id)
        xs, ys = screen.series["loss"].points()
        assert xs == [s for s, _ in reg.metric_curve(run_id, "loss")]  # 1,000 of 5,000 steps
        assert len(xs) == 1000 and (xs[0], xs[-1]) == (1, 5000) and (ys[0], ys[-1]) == (5000, 1)
        assert screen.query_one("#loss").curves["train loss"][0][-1] == 5000
        assert str(screen.query_one("#rate").content) == "step 5000/5000"
        app.open_compare([run_id, "run-a"])
        await wait_for(pilot, lambda: type(app.screen).__name__ == "CompareScreen"
                       and app.screen.polls > 0)
        curves = app.screen.query_one("#loss-plot").curves
        assert len(curves["long"][0]) == 1000 and curves["long"][0][-1] == 5000
        assert len(curves["smollm2-wordnet-lora"][0]) == 40  # a short one: every step
    assert 0 not in reads  # no screen read every row of a run


async def test_unknown_run_says_so(seeded_registry, tui_app, wait_for):
    app = tui_app(seeded_registry)
    async with app.run_test(size=(100, 30)) as pilot:
        app.open_run("nope")
        await wait_for(pilot, lambda: app.screen.polls > 0)
        head = app.screen.query_one("#head")
        assert str(head.content) == (
            f"no run 'nope' in {seeded_registry} (see: tuneyard runs list)")
        assert head.has_class("error") and not app.screen.query_one(TabbedContent).display
        await pilot.press("escape")
        assert isinstance(app.screen, RunsScreen)


def test_series_stays_bounded():
    series = Series(capacity=1000)
    for step in range(1, 200_001):
        series.add(step, 1.0 / step)
    xs, ys = series.points()
    assert len(series) == 200_000 and len(series.steps) < 2000  # memory flat
    assert len(xs) <= 1001 and xs[0] == 1 and xs[-1] == 200_000 and ys[-1] == 1 / 200_000
    assert xs == sorted(xs)


def test_tail_reads_only_the_end(tmp_path):
    path = tmp_path / "run.log"
    path.write_text("".join(f"{i:09d}\n" for i in range(100_000)))  # 1 MB
    assert tail(path, 3) == ["000099997", "000099998", "000099999"]
    assert tail(path, 10**6)[0] == f"{100_000 - 256 * 1024 // 10:09d}"  # the cut line dropped


async def open_run_e(pilot, wait_for, tab: str) -> None:
    await open_run(pilot.app, pilot, wait_for, "run-e")
    pilot.app.screen.query_one(TabbedContent).active = tab
    await pilot.pause()


def test_snapshot_run_curves(snap_compare, seeded_registry, tui_app, wait_for):
    """run-e's monitor, Curves tab, at 100×30: "wordnet-lora-long  run-e  running  on cuda",
    the model/strategy/dataset line, a 25% progress bar with "step 25/100 · 2,250 tok/s",
    the tabs, the falling train-loss curve (steps 1–25) and the falling learning rate side by
    side, and the footer keys (esc Back, s Stop, u Resume, e Eval, c Compare, n New,
    g Registry, q Quit); the tab labels carry their keys (1 Curves … 5 Spec)."""

    async def ready(pilot):
        await open_run_e(pilot, wait_for, "curves")

    assert snap_compare(tui_app(seeded_registry), terminal_size=(100, 30), run_before=ready)


def test_snapshot_run_devices(snap_compare, seeded_registry, tui_app, wait_for):
    """run-e's Devices tab at 100×30: a table with cuda:0 (bar, 91%, 40.0 GiB / 141.0 GiB
    (28%), 450 W, 61 °C) and cuda:1 (89%, 38.0 GiB / 141.0 GiB (27%), 430 W, 59 °C), then
    "CPU 12.5% · run process RSS 3.0 GiB of 24.0 GiB RAM" and the latest sample's time."""

    async def ready(pilot):
        await open_run_e(pilot, wait_for, "devices")

    assert snap_compare(tui_app(seeded_registry), terminal_size=(100, 30), run_before=ready)


# -- end to end ----------------------------------------------------------------------------
async def test_closing_the_tui_leaves_the_run_going_and_stop_checkpoints_it(
        tmp_path, tui_app, wait_for, qa_jsonl, make_spec):
    """A real detached run: closing the TUI does not stop it; a new TUI finds it running, and
    s + y stops it gracefully: status ``stopped`` and a checkpoint, both on screen."""
    path = tmp_path / "registry.db"
    spec = make_spec(qa_jsonl, **{"training.max_steps": 100_000})
    run_id = actions.launch(path, spec)
    registry = Registry(path, create=False)
    app = tui_app(path, poll_interval_s=0.2)
    async with app.run_test(size=(100, 30)) as pilot:
        app.open_run(run_id)
        await wait_for(pilot, lambda: len(app.screen.series.get("loss", ())) > 0, timeout_s=90)
    step = registry.get_run(run_id)["step"]
    await wait_for_step(registry, run_id, step + 20)  # the TUI is gone; the run goes on
    assert registry.get_run(run_id)["status"] == "running"

    app = tui_app(path, poll_interval_s=0.2)
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_for(pilot, lambda: app.screen.polls > 0)
        table = app.screen.query_one(DataTable)
        assert str(table.get_cell(run_id, "status")) == "running"
        await pilot.press("enter")
        monitor = app.screen
        assert isinstance(monitor, RunScreen) and monitor.run_id == run_id
        await wait_for(pilot, lambda: monitor.run_row is not None)
        await pilot.press("s")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmStop))
        await pilot.press("y")
        await wait_for(pilot, lambda: monitor.run_row["status"] == "stopped", timeout_s=60)
        [ckpt] = registry.checkpoints(run_id)
        log = monitor.query_one(Log)  # a detached run logs to run.log too
        await wait_for(pilot, lambda: any("stopped at step" in line for line in log.lines))
        assert any(line.endswith(" INFO training") for line in log.lines)
        await wait_for(pilot, lambda: "checkpoint step" in str(monitor.query_one("#head").render()))
        head = str(monitor.query_one("#head").render())
    assert "stopped" in head
    assert f"checkpoint step {ckpt['step']}: checkpoints/checkpoint-{ckpt['step']}" in head
    assert (Path(ckpt["path"]) / "trainer_state.json").is_file()
    assert 0 < ckpt["step"] < 100_000 and registry.get_run(run_id)["ended_at"]


async def wait_for_step(registry: Registry, run_id: str, step: int, timeout_s: float = 60):
    deadline = time.monotonic() + timeout_s
    while registry.get_run(run_id)["step"] < step:
        assert time.monotonic() < deadline, f"run {run_id} did not reach step {step}"
        await asyncio.sleep(0.1)


async def test_eta_counts_from_the_last_resume_and_curves_reread_relogged_steps(
        seeded_registry, tui_app, wait_for):
    reg = Registry(seeded_registry)
    start = parse_time(reg.get_run("run-e")["started_at"])
    for step in range(1, 21):  # steps 1-20, one a second; then stopped for an hour
        reg.db.execute("UPDATE metrics SET at = ? WHERE run_id = 'run-e' AND step = ?",
                       [(start + timedelta(seconds=step)).isoformat(), step])
    resumed = start + timedelta(hours=1)
    for step in range(21, 26):  # steps 21-25 after the resume, one every 4 s
        reg.db.execute("UPDATE metrics SET at = ? WHERE run_id = 'run-e' AND step = ?",
                       [(resumed + timedelta(seconds=4 * (step - 20))).isoformat(), step])
    reg.update_run("run-e", resumed_at=resumed.isoformat())
    app = tui_app(seeded_registry)
    async with app.run_test(size=(100, 30)) as pilot:
        screen = await open_run(app, pilot, wait_for, "run-e")
        assert screen.steps_per_s() == pytest.approx(0.25)  # not 5 steps over an hour
        assert str(screen.query_one("#rate").content).startswith("step 25/100 · ETA 5:00")

        # killed after step 25 with a checkpoint at 22; the resumed run logs 23… again
        reg.delete_metrics_after("run-e", 22)
        reg.add_metrics("run-e", 23, {"loss": 0.5})
        loss = screen.series
        await wait_for(pilot, lambda: "loss" in loss and loss["loss"].last == (23, 0.5))
        xs, ys = loss["loss"].points()
        assert xs == list(range(1, 24)) and ys[-1] == 0.5


async def test_a_broken_registry_is_reported_once_not_every_poll(tmp_path, tui_app, wait_for,
                                                                  notes):
    (tmp_path / "registry.db").write_text("not a database")
    app = tui_app(tmp_path / "registry.db")
    seen = notes(app)
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_for(pilot, lambda: app.screen.polls >= 5)
    assert len(seen) == 1 and seen[0][1] == "error"
    assert "file is not a database" in seen[0][0]
