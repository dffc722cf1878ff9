"""App-level keys: the command palette opens every screen; r, n, g switch screens and r
closes a monitor back to the Runs list."""

from __future__ import annotations

from textual.command import CommandPalette

from tuneyard.tui.screens.compose import ComposeScreen
from tuneyard.tui.screens.registry import RegistryScreen
from tuneyard.tui.screens.run import RunScreen
from tuneyard.tui.screens.runs import RunsScreen


async def test_command_palette_opens_the_screens(seeded_registry, tui_app, wait_for):
    app = tui_app(seeded_registry)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: app.screen.polls > 0)
        for command, screen in (("Registry", RegistryScreen), ("Compose a run", ComposeScreen),
                                ("Runs", RunsScreen)):
            await pilot.press("ctrl+p")
            await wait_for(pilot, lambda: isinstance(app.screen, CommandPalette))
            await pilot.press(*command)
            await pilot.pause(0.3)
            await pilot.press("enter")
            await wait_for(pilot, lambda s=screen: isinstance(app.screen, s))


async def test_app_keys_switch_screens_and_r_returns_to_the_list(seeded_registry, tui_app,
                                                                  wait_for):
    app = tui_app(seeded_registry)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: app.screen.polls > 0)
        await pilot.press("g")
        assert isinstance(app.screen, RegistryScreen)
        app.open_run("run-e")
        await wait_for(pilot, lambda: isinstance(app.screen, RunScreen) and app.screen.polls)
        assert [type(s) for s in app.screen_stack] == [RunsScreen, RunScreen]
        app.open_run("run-a")  # e.g. a launch from Compose: the new monitor over the list
        await wait_for(pilot, lambda: app.screen.run_id == "run-a" and app.screen.polls)
        assert [type(s) for s in app.screen_stack] == [RunsScreen, RunScreen]
        await pilot.press("r")  # from a monitor
        assert isinstance(app.screen, RunsScreen) and len(app.screen_stack) == 1
        app.open_compare(["run-a", "run-b"])
        await wait_for(pilot, lambda: app.screen.polls)
        await pilot.press("r")  # from Compare
        assert isinstance(app.screen, RunsScreen) and len(app.screen_stack) == 1
        await pilot.press("n")
        assert isinstance(app.screen, ComposeScreen)
        await pilot.press("r")
        assert isinstance(app.screen, RunsScreen) and len(app.screen_stack) == 1


async def test_screens_closed_before_they_finish_opening_do_not_crash(seeded_registry,
                                                                      tui_app, wait_for):
    app = tui_app(seeded_registry)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: app.screen.polls > 0)
        app.open_run("run-e")
        app.open_run("run-a")  # pops run-e's monitor while it is still mounting
        await pilot.press("escape", "enter", "escape", "enter", "r")
        app.open_compare(["run-a", "run-b"])
        await pilot.press("escape")
        await pilot.pause(0.5)
        assert app.is_running and type(app.screen_stack[0]) is RunsScreen
