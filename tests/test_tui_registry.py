"""The Registry screen: plugins (source, status, load errors, the header's badge), installing
and uninstalling them (the CLI's output streamed, the plugins reloaded), components and their
options schema, artifacts (paths on disk or missing), datasets, the empty state, and its
pictures."""

from __future__ import annotations

import importlib.metadata
import sys
import threading
from types import SimpleNamespace
from typing import Literal

from pydantic import BaseModel, Field
from rich.console import Console
from textual.widgets import Log, SelectionList

from tuneyard.core import plugins as plugins_mod
from tuneyard.core.components import Evaluator
from tuneyard.core.hookspecs import hookimpl
from tuneyard.core.plugins import Plugins, get_plugins
from tuneyard.core.registry import Registry
from tuneyard.plugins.strategies.lora import LoraOptions
from tuneyard.tui import actions
from tuneyard.tui.screens import compose as compose_screen
from tuneyard.tui.screens import registry as registry_screen
from tuneyard.tui.screens.registry import (ConfirmScreen, InstallScreen, OptionsScreen,
                                           PipScreen, RegistryScreen, options_schema)


def cells(table) -> list[list[str]]:
    return [[str(cell) for cell in table.get_row_at(i)] for i in range(table.row_count)]


def rendered_lines(renderable) -> list[str]:
    """``renderable`` as plain text lines (wide enough not to wrap), spaces collapsed."""
    console = Console(width=300, record=True)
    console.print(renderable)
    return [" ".join(line.split()) for line in console.export_text().splitlines()]


async def open_registry(pilot, wait_for, *keys: str) -> RegistryScreen:
    await pilot.press("g", *keys)
    screen = pilot.app.screen
    assert isinstance(screen, RegistryScreen)
    await wait_for(pilot, lambda: screen.polls > 0 and screen.components)
    await pilot.pause()
    return screen


async def test_plugins_tab_lists_every_plugin(seeded_registry, tui_app, wait_for):
    app = tui_app(seeded_registry)
    async with app.run_test(size=(100, 30)) as pilot:
        screen = await open_registry(pilot, wait_for)
        table = screen.query_one("#plugins-table")
        version = importlib.metadata.version("tuneyard")
        expected = [[i.name, version, "builtin", "ok", ", ".join(c.partition(":")[2]
                     for c in i.components), ", ".join(i.hooks)]
                    for i in get_plugins().infos.values()]
        assert cells(table) == expected
        assert ["strategy-lora", version, "builtin", "ok", "lora",
                "register_training_strategies"] in expected
        assert table.get_row_at(0)[3].style == "green"
        first = next(iter(get_plugins().infos.values()))
        assert str(screen.query_one("#plugin-detail").render()) == (
            f"{first.name} {version} — built-in, module {first.path}")
        assert app.skipped_plugins == [] and app.sub_title == "registry.db"


class BrokenEntryPoint:
    name, dist = "broken-plugin", SimpleNamespace(name="tuneyard-broken", version="9.9")
    value = "tuneyard_broken"

    def load(self):
        raise ImportError("No module named 'missing_dep'")


class Echo(Evaluator):
    name, description = "echo", "repeats the prompt (a test plugin's evaluator)"


def with_plugins(monkeypatch, *, broken: bool = False, demo: bool = False,
                 only: list[str] | None = None) -> Plugins:
    """A plugin manager with the built-ins, plus the ``broken-plugin`` package that fails to
    import and/or the ``demo`` package (``tuneyard-demo`` 0.1.0, evaluator ``echo``), loaded
    with ``only`` (``TUNEYARD_LOAD_PLUGINS``)."""
    real = list(importlib.metadata.entry_points(group="tuneyard"))
    monkeypatch.setattr(plugins_mod.importlib.metadata, "entry_points",
                        lambda group: [*real, *([BrokenEntryPoint()] if broken else [])])
    plugins = Plugins()
    plugins.load_entry_points(only)
    if demo:
        plugins.register_plugin(SimpleNamespace(
            register_evaluators=hookimpl(lambda register: register(Echo))), "demo")
        plugins.infos["demo"].version, plugins.infos["demo"].package = "0.1.0", "tuneyard-demo"
        plugins.infos["demo"].path = "tuneyard_demo.plugin"
    plugins.collect_components()
    return plugins


def use_plugins(monkeypatch, plugins: Plugins) -> None:
    """Make ``plugins`` what the app (badge), the Registry and the Compose screens load."""
    for module in (plugins_mod, registry_screen, compose_screen):
        monkeypatch.setattr(module, "get_plugins", lambda: plugins)


async def test_plugin_that_fails_to_load_shows_its_error_and_the_badge(
        seeded_registry, tui_app, wait_for, monkeypatch):
    use_plugins(monkeypatch, with_plugins(monkeypatch, broken=True))
    app = tui_app(seeded_registry)
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_for(pilot, lambda: app.skipped_plugins)  # on the Runs screen already
        assert app.skipped_plugins == ["broken-plugin"]
        assert app.sub_title == "1 plugin skipped (g: Registry) — registry.db"
        title = app.format_title(app.title, app.sub_title)
        assert title.plain == "tuneyard  1 plugin skipped (g: Registry)  — registry.db"
        badge = [span for span in title.spans if "$error" in str(span.style)]
        assert [title.plain[s.start:s.end] for s in badge] == [" 1 plugin skipped (g: Registry) "]
        screen = await open_registry(pilot, wait_for)
        table = screen.query_one("#plugins-table")
        rows = cells(table)
        assert rows[-1] == ["broken-plugin", "9.9", "package tuneyard-broken",
                            "skipped: failed to load: Import…", "", ""]
        name, status = table.get_row_at(len(rows) - 1)[0], table.get_row_at(len(rows) - 1)[3]
        assert name.style == status.style == "red"
        assert len(rows) == len(get_plugins().infos) + 1
        table.move_cursor(row=len(rows) - 1)
        await pilot.pause()
        assert str(screen.query_one("#plugin-detail").render()).splitlines() == [
            "broken-plugin 9.9 — package tuneyard-broken, module tuneyard_broken",
            "skipped: failed to load: ImportError: No module named 'missing_dep'"]


async def test_plugin_left_out_by_load_plugins_shows_disabled(seeded_registry, tui_app,
                                                              wait_for, monkeypatch):
    use_plugins(monkeypatch, with_plugins(monkeypatch, broken=True, only=[]))
    app = tui_app(seeded_registry)
    async with app.run_test(size=(100, 30)) as pilot:
        screen = await open_registry(pilot, wait_for)
        table = screen.query_one("#plugins-table")
        last = table.row_count - 1
        assert cells(table)[last] == ["broken-plugin", "9.9", "package tuneyard-broken",
                                      "disabled", "", ""]
        assert table.get_row_at(last)[3].style == "yellow"
        table.move_cursor(row=last)
        await pilot.pause()
        assert str(screen.query_one("#plugin-detail").render()).splitlines()[1] == (
            "disabled: not in TUNEYARD_LOAD_PLUGINS")
        assert app.skipped_plugins == [] and app.sub_title == "registry.db"


# -- install and uninstall -----------------------------------------------------------------
class FakeCommand:
    """Stands in for :func:`tuneyard.tui.actions.plugins`: records the arguments, passes on
    ``lines`` (after the first, it waits until the test calls :meth:`go`, so the test sees
    the output arrive while the command runs) and returns ``code``."""

    def __init__(self, lines: list[str], code: int = 0) -> None:
        self.lines, self.code, self.calls = lines, code, []
        self._go = threading.Event()

    def go(self) -> None:
        self._go.set()

    def __call__(self, registry_path, args, on_line) -> int:
        self.calls.append((registry_path.name, args))
        for i, line in enumerate(self.lines):
            if i == 1:
                assert self._go.wait(10)
            on_line(line)
        return self.code


def log_lines(app) -> list[str]:
    return list(app.screen.query_one(Log).lines)


def status_line(app) -> str:
    return str(app.screen.query_one("#pip-status").render())


async def test_install_streams_the_output_then_reloads_the_plugins(
        seeded_registry, tui_app, wait_for, monkeypatch):
    use_plugins(monkeypatch, with_plugins(monkeypatch))
    after = with_plugins(monkeypatch, demo=True)

    def reload():  # what reload_plugins does: the next get_plugins() loads the new set
        use_plugins(monkeypatch, after)
        return after

    monkeypatch.setattr(registry_screen, "reload_plugins", reload)
    lines = ["Processing ./tuneyard-demo", "  Preparing metadata (pyproject.toml): done",
             "Successfully installed tuneyard-demo-0.1.0",
             "plugin demo 0.1.0 (tuneyard-demo): evaluator echo — ok"]
    command = FakeCommand(lines)
    monkeypatch.setattr(actions, "plugins", command)
    app = tui_app(seeded_registry)
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.press("n")  # Compose, opened before the install, holds the old plugins
        await wait_for(pilot, lambda: getattr(app.screen, "plugins", None) is not None)
        compose = app.screen
        assert "echo" not in compose.plugins.components["evaluator"]
        compose.form("run-form").field_widget("name").value = "typed before the install"
        screen = await open_registry(pilot, wait_for)
        rows_before = cells(screen.query_one("#plugins-table"))
        await pilot.press("i")
        assert isinstance(app.screen, InstallScreen)
        await pilot.press(*"./tuneyard-demo", "tab", "space", "shift+tab", "enter")
        assert isinstance(app.screen, PipScreen)
        await wait_for(pilot, lambda: log_lines(app))
        assert log_lines(app) == lines[:1]  # streamed: the command is still running
        assert status_line(app) == "running… (its output streams above)"
        await pilot.press("escape")  # refused while it runs
        assert isinstance(app.screen, PipScreen)
        command.go()
        await wait_for(pilot, lambda: app.screen.code is not None)
        assert log_lines(app) == lines
        assert status_line(app) == "done (exit status 0) · esc: close"
        assert app.screen.query_one("#pip-status").content.style == "green"
        assert app.screen.query_one(Log).parent.border_title == (
            "tuneyard plugins install --upgrade ./tuneyard-demo")
        assert command.calls == [("registry.db", ["install", "--upgrade", "--",
                                                  "./tuneyard-demo"])]
        await pilot.press("escape")
        assert app.screen is screen
        rows = cells(screen.query_one("#plugins-table"))
        assert rows == rows_before + [["demo", "0.1.0", "package tuneyard-demo", "ok", "echo",
                                       "register_evaluators"]]
        assert ["evaluator", "echo", "demo", "", "repeats the prompt (a test plugin's evaluator)"
                ] in cells(screen.query_one("#components-table"))
        await pilot.press("n")  # the same Compose screen, with the new evaluator
        await wait_for(pilot, lambda: app.screen is compose and compose.plugins is after)
        assert "echo" in compose.plugins.components["evaluator"]
        await wait_for(pilot, lambda: compose.spec().get("name") == "typed before the install")
        evaluators = compose.query_one("#evaluator", SelectionList)
        assert "echo" in [evaluators.get_option_at_index(i).value
                          for i in range(evaluators.option_count)]


async def test_install_dialog_cancel_and_editable(seeded_registry, tui_app, wait_for,
                                                  monkeypatch):
    command = FakeCommand(["Obtaining file:///src/tuneyard-demo"], code=0)
    command.go()
    monkeypatch.setattr(actions, "plugins", command)
    monkeypatch.setattr(registry_screen, "reload_plugins", get_plugins)
    app = tui_app(seeded_registry)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_registry(pilot, wait_for)
        await pilot.press("i", *"x", "escape")
        assert app.screen is screen and command.calls == []
        await pilot.press("i", "enter")  # nothing to install yet: the dialog stays
        assert isinstance(app.screen, InstallScreen)
        await pilot.press(*"../tuneyard-demo", "tab", "tab", "space", "shift+tab", "shift+tab",
                          "enter")
        await wait_for(pilot, lambda: isinstance(app.screen, PipScreen) and app.screen.code == 0)
        assert command.calls == [("registry.db", ["install", "--editable", "--",
                                                  "../tuneyard-demo"])]
        await pilot.press("escape", "c", "i")  # install is a Plugins tab key
        assert app.screen is screen and len(command.calls) == 1


async def test_uninstall_asks_first_then_reloads(seeded_registry, tui_app, wait_for,
                                                 monkeypatch):
    use_plugins(monkeypatch, with_plugins(monkeypatch, demo=True))
    monkeypatch.setattr(registry_screen, "reload_plugins", lambda: with_plugins(monkeypatch))
    command = FakeCommand(["Found existing installation: tuneyard-demo 0.1.0",
                           "Successfully uninstalled tuneyard-demo-0.1.0", "uninstalled demo"])
    command.go()
    monkeypatch.setattr(actions, "plugins", command)
    app = tui_app(seeded_registry)
    async with app.run_test(size=(100, 30)) as pilot:
        screen = await open_registry(pilot, wait_for)
        table = screen.query_one("#plugins-table")
        assert cells(table)[-1][0] == "demo"
        table.move_cursor(row=table.row_count - 1)
        await pilot.press("u")
        assert isinstance(app.screen, ConfirmScreen)
        assert str(app.screen.query_one("#question").render()) == (
            "Uninstall plugin demo? pip removes package tuneyard-demo from tuneyard's "
            "environment.")
        await pilot.press("n")
        assert app.screen is screen and command.calls == []
        await pilot.press("u", "y")
        await wait_for(pilot, lambda: isinstance(app.screen, PipScreen) and app.screen.code == 0)
        assert command.calls == [("registry.db", ["uninstall", "--", "tuneyard-demo"])]
        assert log_lines(app) == command.lines
        await pilot.press("escape")
        assert "demo" not in [row[0] for row in cells(table)]
        assert table.cursor_row == table.row_count - 1
        assert "echo" not in [row[1] for row in cells(screen.query_one("#components-table"))]


async def test_uninstall_of_a_builtin_shows_the_cli_refusal(seeded_registry, tui_app, wait_for,
                                                            monkeypatch):
    """The real ``tuneyard plugins uninstall`` runs (no confirmation: nothing is removed);
    its error and exit status 2 are shown."""
    monkeypatch.setattr(registry_screen, "reload_plugins", get_plugins)
    first = next(iter(get_plugins().infos.values()))
    app = tui_app(seeded_registry)
    async with app.run_test(size=(100, 30)) as pilot:
        await open_registry(pilot, wait_for)
        await pilot.press("u")
        assert isinstance(app.screen, PipScreen)
        await wait_for(pilot, lambda: app.screen.code is not None, timeout_s=60)
        assert app.screen.code == 2
        assert log_lines(app)[-1] == (
            f"Error: plugins uninstall: {first.name} is a built-in plugin, part of tuneyard; it "
            "cannot be uninstalled")
        assert status_line(app) == (
            "failed (exit status 2): the output above says why · esc: close")
        assert app.screen.query_one("#pip-status").content.style == "red"


def test_plugins_action_streams_merged_output_and_returns_the_status(tmp_path, monkeypatch):
    """Each line reaches the callback while the child still runs (it waits for a file the
    callback writes on the first line); stdout and stderr arrive merged, in order."""
    flag = tmp_path / "seen"
    script = ("import pathlib, sys, time\n"
              "print('one')\n"
              "for _ in range(500):\n"
              f"    if pathlib.Path({str(flag)!r}).exists(): break\n"
              "    time.sleep(0.01)\n"
              "else:\n"
              "    print('not streamed')\n"
              "print('two', file=sys.stderr)\n"
              "print('three')\n"
              "sys.exit(3)\n")
    argvs = []

    def command(registry_path, *args):
        argvs.append((registry_path, args))
        return [sys.executable, "-c", script]

    monkeypatch.setattr(actions, "_command", command)
    lines = []

    def on_line(line):
        lines.append(line)
        flag.touch()

    code = actions.plugins(tmp_path / "registry.db", ["install", "--", "x"], on_line)
    assert (code, lines) == (3, ["one", "two", "three"])
    assert argvs == [(tmp_path / "registry.db", ("plugins", "install", "--", "x"))]


async def test_components_tab_and_options_schema(seeded_registry, tui_app, wait_for):
    app = tui_app(seeded_registry)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_registry(pilot, wait_for, "c")
        table = screen.query_one("#components-table")
        assert table.has_focus
        rows = cells(table)
        sources = ("conll", "csv", "fortunes", "hf", "jsonl", "parquet", "text", "wordnet")
        assert [r[:2] for r in rows[:8]] == [["dataset-source", n] for n in sources]
        lora = rows.index(["strategy", "lora", "strategy-lora",
                           "r, alpha, dropout, target_modules, adapter_name, use_dora, "
                           "use_rslora, init, modules_to_save, qlora",
                           "LoRA adapters (peft): train a small rank-r update, "
                           "base weights frozen"])
        for _ in range(lora):
            await pilot.press("down")
        await pilot.press("enter")
        modal = app.screen
        assert isinstance(modal, OptionsScreen)
        assert rendered_lines(modal.query_one("#schema").content)[:6] == [
            "field type default description",
            "r int 8 rank of the update matrices",
            "alpha int 16 scaling: the update is multiplied by alpha / r",
            "dropout float 0.05 dropout on the LoRA input",
            "target_modules list[str] | str \"all-linear\" module names to adapt, or 'all-linear'",
            "adapter_name str \"default\" peft adapter name",
        ]
        starts = [line.split()[0] for line in rendered_lines(modal.query_one("#schema").content)
                  if line]  # a long description wraps onto lines of its own
        assert [w for w in starts if w in LoraOptions.model_fields][5:] == [
            "use_dora", "use_rslora", "init", "modules_to_save", "qlora"]
        await pilot.press("escape")
        assert app.screen is screen


def test_options_schema_of_required_and_factory_defaults():
    class Options(BaseModel):
        path: str = Field(description="a file")
        by: Literal["line", "file"] = "line"
        config: dict[str, int] = Field(default_factory=dict)
        limit: int | None = None

    assert options_schema(Options) == [
        {"field": "path", "type": "str", "default": "required", "description": "a file"},
        {"field": "by", "type": "'line' | 'file'", "default": '"line"',
         "description": ""},
        {"field": "config", "type": "dict[str, int]", "default": "{}", "description": ""},
        {"field": "limit", "type": "int | None", "default": "null", "description": ""},
    ]


async def test_artifacts_tab_marks_missing_paths(seeded_registry, tui_app, wait_for):
    (seeded_registry.parent / "run-a" / "final").mkdir(parents=True)
    app = tui_app(seeded_registry)
    async with app.run_test(size=(100, 30)) as pilot:
        screen = await open_registry(pilot, wait_for, "a")
        table = screen.query_one("#artifacts-table")
        assert sorted(cells(table)) == [
            ["qa-lora-r16", "stopped", "checkpoint", "run-d/checkpoints/checkpoint-18", "missing",
             "2026-11-01 10:00"],
            ["smollm2-wordnet-full", "completed", "model", "run-b/final", "missing",
             "2026-11-01 08:00"],
            ["smollm2-wordnet-lora", "completed", "adapter", "run-a/final", "yes",
             "2026-11-01 07:00"],
        ]
        assert not screen.query_one("#artifacts-empty").display


async def test_datasets_tab(seeded_registry, tui_app, wait_for):
    app = tui_app(seeded_registry)
    async with app.run_test(size=(100, 30)) as pilot:
        screen = await open_registry(pilot, wait_for, "d")
        assert cells(screen.query_one("#datasets-table")) == [
            ["wordnet", "word0123456789ab", "1900", "100", "3", "2026-11-01 11:50"],
            ["jsonl", "json0123456789ab", "1900", "100", "1", "2026-11-01 10:00"],
            ["text", "text0123456789ab", "1900", "100", "1", "2026-11-01 09:00"],
        ]


async def test_without_registry_plugins_still_show(tmp_path, tui_app, wait_for):
    path = tmp_path / "registry.db"
    app = tui_app(path)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_registry(pilot, wait_for, "a")
        note = screen.query_one("#artifacts-empty")
        assert note.display and not screen.query_one("#artifacts-table").display
        assert str(note.render()) == (
            f"No runs yet: the first `tuneyard run` creates {path.resolve()}.")
        assert not screen.query_one("#datasets-table").display
        assert screen.query_one("#plugins-table").row_count == len(get_plugins().infos)
        assert len(screen.components) == sum(map(len, get_plugins().components.values()))
        assert not path.exists()


async def test_empty_registry_says_no_artifacts(tmp_path, tui_app, wait_for):
    Registry(tmp_path / "registry.db")
    app = tui_app(tmp_path / "registry.db")
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_registry(pilot, wait_for)
        assert str(screen.query_one("#artifacts-empty").render()) == (
            "No artifacts yet: completed runs record their adapters and models here.")
        assert str(screen.query_one("#datasets-empty").render()) == (
            "No datasets yet: each run records the dataset it trained on.")


# -- pictures ------------------------------------------------------------------------------
def test_registry_plugins_snapshot(snap_compare, seeded_registry, tui_app, wait_for):
    """The Plugins tab is active: a hint line (i: install, u: uninstall), then one row per
    built-in plugin (dataset-files … tui), each version 0.1.0, source builtin, status ok in
    green, then its components and hooks; below the table, the highlighted plugin's detail
    (dataset-files 0.1.0 — built-in, module …); the footer lists p/c/a/d for the tabs."""
    async def run_before(pilot):
        await open_registry(pilot, wait_for)

    assert snap_compare(tui_app(seeded_registry),
                        terminal_size=(100, 30), run_before=run_before)


def test_registry_skipped_plugin_snapshot(snap_compare, seeded_registry, tui_app, wait_for,
                                          monkeypatch):
    """A plugin failed to load: the header shows the red badge "1 plugin skipped (g:
    Registry)" before the registry path; on the Plugins tab the last row, broken-plugin 9.9,
    package tuneyard-broken, is highlighted, its status "skipped: failed to load: Import…" cut
    at 32 cells; the detail below says in full (red) why it was skipped."""
    use_plugins(monkeypatch, with_plugins(monkeypatch, broken=True))

    async def run_before(pilot):
        screen = await open_registry(pilot, wait_for)
        await wait_for(pilot, lambda: pilot.app.skipped_plugins)
        table = screen.query_one("#plugins-table")
        table.move_cursor(row=table.row_count - 1)
        await pilot.pause()

    assert snap_compare(tui_app(seeded_registry),
                        terminal_size=(100, 30), run_before=run_before)


def test_registry_artifacts_snapshot(snap_compare, seeded_registry, tui_app, wait_for):
    """The Artifacts tab is active, newest first: qa-lora-r16's checkpoint (stopped, yellow,
    run-d/checkpoints/checkpoint-18, 10:00), run-b's model (08:00) and run-a's adapter (07:00)
    (completed, green; run-b/final and run-a/final), paths relative to the registry's folder,
    all marked missing in red."""
    async def run_before(pilot):
        await open_registry(pilot, wait_for, "a")

    assert snap_compare(tui_app(seeded_registry),
                        terminal_size=(100, 30), run_before=run_before)
