"""The Runs screen: the table of the newest runs, sorting, filters, marking, opening a run."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from tuneyard.core.registry import Registry
from tuneyard.tui.screens.runs import RUNS_SHOWN, RunsScreen, RunsTable

NEWEST_FIRST = ["run-e", "run-d", "run-c", "run-b", "run-a"]


def row_keys(table: RunsTable) -> list[str]:
    return [row.key.value for row in table.ordered_rows]


def cell(table: RunsTable, run_id: str, column: str) -> str:
    return str(table.get_cell(run_id, column))


def summary(screen: RunsScreen) -> str:
    return str(screen.query_one("#summary").content)


def header_click(table: RunsTable, key: str) -> RunsTable.HeaderSelected:
    """The message a click on column ``key``'s header posts."""
    index = table.get_column_index(key)
    column = table.ordered_columns[index]
    return RunsTable.HeaderSelected(table, column.key, index, column.label)


async def started(app, pilot, wait_for) -> RunsScreen:
    await wait_for(pilot, lambda: isinstance(app.screen, RunsScreen) and app.screen.polls > 0)
    return app.screen


async def test_every_run_with_its_cells(seeded_registry, tui_app, wait_for):
    reg = Registry(seeded_registry)
    last_loss = reg.metrics("run-a", "loss")[-1][1]
    reg.db.execute("UPDATE runs SET base_model = NULL WHERE id IN ('run-c', 'run-d')")
    spec = reg.get_run("run-d")["spec"]
    spec["model"]["options"] = {}
    reg.update_run("run-d", spec=spec)
    app = tui_app(seeded_registry)
    async with app.run_test(size=(100, 30)) as pilot:
        screen = await started(app, pilot, wait_for)
        table = screen.query_one(RunsTable)
        assert row_keys(table) == NEWEST_FIRST
        assert [cell(table, "run-a", c) for c in (
            "mark", "name", "status", "model", "strategy", "dataset", "step", "loss", "eval",
            "tok_s", "duration", "started")] == [
            "", "smollm2-wordnet-lora", "completed", "SmolLM2-135M-Instruct.Q4_1.gguf", "lora",
            "wordnet", "40/40", f"{last_loss:.4g}", "perplexity 15", "2,400", "3:50",
            "2026-11-01 07:00"]
        assert table.get_cell("run-c", "status").style == "bold red"
        assert cell(table, "run-e", "duration") == "10:00"  # running: up to the pinned clock
        assert cell(table, "run-c", "eval") == ""
        assert cell(table, "run-c", "model") == "scratch-llama"  # the spec's model path
        assert cell(table, "run-d", "model") == "hf"  # no path: the model provider
        assert summary(screen) == "5 of 5 runs · status: all · sort: started ↓"
        assert table.has_focus


async def test_sort_and_filters(seeded_registry, tui_app, wait_for):
    losses = {r["id"]: r["last_loss"] for r in Registry(seeded_registry).list_runs()}
    app = tui_app(seeded_registry)
    async with app.run_test(size=(100, 30)) as pilot:
        screen = await started(app, pilot, wait_for)
        table = screen.query_one(RunsTable)
        await pilot.press("s")  # started → name, still descending
        assert row_keys(table) == ["run-e", "run-a", "run-b", "run-c", "run-d"]
        assert str(table.columns["name"].label) == "name ▼"
        await pilot.press("S")
        assert row_keys(table) == ["run-d", "run-c", "run-b", "run-a", "run-e"]
        assert summary(screen).endswith("sort: name ↑")
        table.post_message(header_click(table, "loss"))
        await pilot.pause()
        assert row_keys(table) == sorted(losses, key=losses.get)
        table.post_message(header_click(table, "loss"))  # the same header again: reversed
        await pilot.pause()
        assert row_keys(table) == sorted(losses, key=losses.get, reverse=True)

        await pilot.press("f")
        assert row_keys(table) == ["run-e"]
        assert summary(screen) == "1 of 5 runs · status: running · sort: loss ↓"
        for status, shown in (("completed", ["run-a", "run-b"]), ("failed", ["run-c"]),
                              ("stopped", ["run-d"]),
                              ("interrupted", []), ("queued", []), ("all", NEWEST_FIRST)):
            screen.action_cycle_status()
            assert screen.status_filter == status and sorted(row_keys(table)) == sorted(shown)

        await pilot.press("slash")
        assert screen.query_one("#filter").has_focus
        for text, shown in (("LoRA", ["run-a", "run-d", "run-e"]),  # name or strategy
                            ("jsonl", ["run-d"]), ("GGUF", ["run-a", "run-b", "run-e"]),
                            ("run-c", ["run-c"])):  # dataset, model, id
            screen.query_one("#filter").value = text
            await pilot.pause()
            assert sorted(row_keys(table)) == shown
        await pilot.press("escape")
        assert screen.query_one("#filter").value == ""
        assert table.has_focus and len(row_keys(table)) == 5


async def test_space_marks_c_compares_enter_opens(seeded_registry, tui_app, wait_for,
                                                  monkeypatch):
    app = tui_app(seeded_registry)
    notes: list[str] = []
    monkeypatch.setattr(app, "notify", lambda message, **kw: notes.append(message))
    async with app.run_test(size=(100, 30)) as pilot:
        screen = await started(app, pilot, wait_for)
        table = screen.query_one(RunsTable)
        await pilot.press("space", "c")
        assert app.marked == {"run-e"} and app.screen is screen
        assert notes == ["Mark two or more runs with space to compare them."]
        table.move_cursor(row=2)
        await pilot.press("space")
        assert [cell(table, k, "mark") for k in NEWEST_FIRST] == ["●", "", "●", "", ""]
        assert summary(screen).endswith("· 2 marked")
        await pilot.press("c")
        assert type(app.screen).__name__ == "CompareScreen"
        assert app.screen.run_ids == ["run-c", "run-e"]
        app.pop_screen()
        await pilot.pause()
        screen.action_mark()  # unmarks run-c
        assert app.marked == {"run-e"} and cell(table, "run-c", "mark") == ""
        await pilot.press("enter")
        assert type(app.screen).__name__ == "RunScreen" and app.screen.run_id == "run-c"


@pytest.mark.parametrize("create", [False, True], ids=["no file", "no runs"])
async def test_empty_registry_says_how_to_start(tmp_path, tui_app, wait_for, create):
    path = tmp_path / "registry.db"
    if create:
        Registry(path)
    app = tui_app(path)
    async with app.run_test(size=(100, 30)) as pilot:
        screen = await started(app, pilot, wait_for)
        assert str(screen.query_one("#empty").content) == (
            f"No runs yet in {path}. Press n to compose one, or run: tuneyard run SPEC.yaml")
        assert screen.query_one("#empty").display and not screen.query_one(RunsTable).display


async def test_polls_update_cells_in_place_and_keep_the_cursor(seeded_registry, tui_app,
                                                              wait_for, monkeypatch):
    app = tui_app(seeded_registry)
    reg = Registry(seeded_registry)
    async with app.run_test(size=(100, 30)) as pilot:
        screen = await started(app, pilot, wait_for)
        table = screen.query_one(RunsTable)
        table.move_cursor(row=3)
        rebuilds: list[bool] = []
        monkeypatch.setattr(table, "clear", lambda columns=False: rebuilds.append(columns))
        polls = screen.polls
        await wait_for(pilot, lambda: screen.polls >= polls + 3)
        reg.add_metrics("run-e", 26, {"loss": 1.2345, "tokens_per_s": 3000.0})
        await wait_for(pilot, lambda: cell(table, "run-e", "loss") == "1.234")
        assert cell(table, "run-e", "step") == "26/100" and cell(table, "run-e", "tok_s") == "3,000"
        assert rebuilds == []  # unchanged rows are never rebuilt, changed cells rewritten
        monkeypatch.undo()
        spec = {"name": "newest", "training": {"max_steps": 5}}
        reg.db["runs"].insert({"id": "run-f", "name": "newest", "status": "queued",
                               "spec": json.dumps(spec), "step": 0, "max_steps": 5,
                               "created_at": "2026-11-01T11:59:00+00:00"})
        await wait_for(pilot, lambda: table.row_count == 6)
        assert row_keys(table)[0] == "run-f"
        assert screen.current_run() == "run-b"

        app.open_run("run-b")  # covered: the Runs screen stops polling until shown again
        await wait_for(pilot, lambda: app.screen.polls >= 3)
        polls = screen.polls
        await wait_for(pilot, lambda: app.screen.polls >= 6)
        assert screen.polls == polls
        app.pop_screen()
        await wait_for(pilot, lambda: screen.polls > polls)


async def test_a_thousand_runs_show_the_newest(tmp_path, tui_app, wait_for):
    assert RUNS_SHOWN == 500
    reg = Registry(tmp_path / "registry.db")
    start = datetime(2026, 10, 1, tzinfo=UTC)
    reg.db["runs"].insert_all(
        {"id": f"r{i:04d}", "name": f"run {i}", "status": "completed", "spec": "{}", "step": i,
         "max_steps": 1000, "created_at": (start + timedelta(seconds=i)).isoformat()}
        for i in range(1000))
    app = tui_app(tmp_path / "registry.db")
    async with app.run_test(size=(100, 30)) as pilot:
        screen = await started(app, pilot, wait_for)
        table = screen.query_one(RunsTable)
        await wait_for(pilot, lambda: table.row_count == 500)
        assert summary(screen).startswith("500 of 500 runs (newest of 1,000) · status: all")
        assert row_keys(table)[0] == "r0999" and row_keys(table)[-1] == "r0500"
        screen.query_one("#filter").value = "run 99"
        await pilot.pause()
        assert row_keys(table) == [f"r0{i}" for i in range(999, 989, -1)]  # not r0099: older


def test_snapshot_runs(snap_compare, seeded_registry, tui_app, wait_for):
    """The Runs screen at 100×30: five runs newest first (wordnet-lora-long running,
    qa-lora-r16 stopped, scratch-shakespeare failed in red, two completed) with name, status,
    model (cut with …), strategy, dataset, step/max and loss columns; the cursor on the first
    row; "5 of 5 runs · status: all · sort: started ↓" beside the filter; the footer keys."""

    async def ready(pilot):
        await started(pilot.app, pilot, wait_for)

    assert snap_compare(tui_app(seeded_registry), terminal_size=(100, 30), run_before=ready)


def test_snapshot_runs_80x24(snap_compare, seeded_registry, tui_app, wait_for):
    """The Runs screen at 80×24 with run-c marked: name and status come first and stay
    readable, the ● marker on scratch-shakespeare, "· 1 marked" in the summary; further
    columns are cut at the right edge (the table scrolls sideways)."""

    async def ready(pilot):
        screen = await started(pilot.app, pilot, wait_for)
        screen.query_one(RunsTable).move_cursor(row=2)
        await pilot.press("space")

    assert snap_compare(tui_app(seeded_registry), terminal_size=(80, 24), run_before=ready)


async def test_columns_widen_when_a_cell_outgrows_them(seeded_registry, tui_app, wait_for):
    app = tui_app(seeded_registry)
    async with app.run_test(size=(100, 30)) as pilot:
        screen = await started(app, pilot, wait_for)
        table = screen.query_one(RunsTable)
        screen.query_one("#filter").value = "wordnet-lora-long"  # only run-e: no eval yet
        await wait_for(pilot, lambda: row_keys(table) == ["run-e"])
        assert table.columns["eval"].width == len("eval")
        reg = Registry(seeded_registry)
        reg.update_run("run-e", status="completed")
        reg.add_evaluation("run-e", "final", "perplexity", {"perplexity": 12.5})
        await wait_for(pilot, lambda: cell(table, "run-e", "eval") == "perplexity 12.5")
        assert table.columns["eval"].width == len("perplexity 12.5")
        assert table.columns["status"].width == len("completed")


async def test_no_match_says_so(seeded_registry, tui_app, wait_for):
    app = tui_app(seeded_registry)
    async with app.run_test(size=(100, 30)) as pilot:
        screen = await started(app, pilot, wait_for)
        screen.query_one("#filter").value = "no such run"
        await pilot.pause()
        assert not screen.query_one(RunsTable).display
        assert str(screen.query_one("#empty").content) == (
            "No run matches status 'all' and 'no such run' (f cycles the status; esc in the "
            "filter clears it).")


async def test_the_table_has_the_focus_again_after_an_empty_status(seeded_registry, tui_app,
                                                                   wait_for):
    app = tui_app(seeded_registry)
    async with app.run_test(size=(100, 30)) as pilot:
        screen = await started(app, pilot, wait_for)
        table = screen.query_one(RunsTable)
        await pilot.press(*"fffff")  # … stopped → interrupted: nothing matches
        assert screen.status_filter == "interrupted" and not table.display
        await pilot.press("f", "f")  # queued → all
        assert screen.status_filter == "all" and app.focused is table
        await pilot.press("down", "enter")
        assert type(app.screen).__name__ == "RunScreen"
