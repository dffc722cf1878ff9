"""The Registry screen: plugins (with load errors), components and their options schema,
artifacts (paths on disk or missing), datasets, the empty state, and its pictures."""

from __future__ import annotations

import importlib.metadata
from types import SimpleNamespace
from typing import Literal

from pydantic import BaseModel, Field
from rich.console import Console

from tuneyard.core import plugins as plugins_mod
from tuneyard.core.plugins import Plugins, get_plugins
from tuneyard.core.registry import Registry
from tuneyard.tui.screens import registry as registry_screen
from tuneyard.tui.screens.registry import OptionsScreen, RegistryScreen, options_schema



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


class BrokenEntryPoint:
    name, dist = "broken-plugin", SimpleNamespace(name="tuneyard-broken", version="9.9")
    value = "tuneyard_broken"

    def load(self):
        raise ImportError("No module named 'missing_dep'")


async def test_plugin_that_fails_to_load_shows_its_error(seeded_registry, tui_app, wait_for,
                                                         monkeypatch):
    real = importlib.metadata.entry_points(group="tuneyard")
    monkeypatch.setattr(plugins_mod.importlib.metadata, "entry_points",
                        lambda group: [*real, BrokenEntryPoint()])
    plugins = Plugins()
    plugins.load_entry_points()
    plugins.collect_components()
    monkeypatch.setattr(registry_screen, "get_plugins", lambda: plugins)
    app = tui_app(seeded_registry)
    async with app.run_test(size=(100, 30)) as pilot:
        screen = await open_registry(pilot, wait_for)
        table = screen.query_one("#plugins-table")
        rows = cells(table)
        assert rows[-1] == ["broken-plugin", "9.9", "package",
                            "failed to load: ImportError: No module named 'missing_dep'", "", ""]
        assert table.get_row_at(len(rows) - 1)[3].style == "red"
        assert len(rows) == len(get_plugins().infos) + 1


async def test_components_tab_and_options_schema(seeded_registry, tui_app, wait_for):
    app = tui_app(seeded_registry)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_registry(pilot, wait_for, "c")
        table = screen.query_one("#components-table")
        assert table.has_focus
        rows = cells(table)
        assert [r[:2] for r in rows[:6]] == [["dataset-source", n] for n in
                                             ("csv", "hf", "jsonl", "parquet", "text", "wordnet")]
        lora = rows.index(["strategy", "lora", "strategy-lora",
                           "r, alpha, dropout, target_modules, adapter_name",
                           "LoRA adapters (peft): train a small rank-r update, "
                           "base weights frozen"])
        for _ in range(lora):
            await pilot.press("down")
        await pilot.press("enter")
        modal = app.screen
        assert isinstance(modal, OptionsScreen)
        assert rendered_lines(modal.query_one("#schema").content) == [
            "field type default description",
            "r int 8 rank of the update matrices",
            "alpha int 16 scaling: the update is multiplied by alpha / r",
            "dropout float 0.05 dropout on the LoRA input",
            "target_modules list[str] | str \"all-linear\" module names to adapt, or 'all-linear'",
            "adapter_name str \"default\" peft adapter name",
        ]
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
def test_registry_plugins_snapshot(snap_compare, seeded_registry, tui_app, wait_for,
                                   monkeypatch):
    """The Plugins tab is active: one row per built-in plugin (dataset-files … tui), each
    version 0.1.0, source builtin, status ok in green, then its components and hooks; the
    footer lists p/c/a/d for the tabs."""
    async def run_before(pilot):
        await open_registry(pilot, wait_for)

    assert snap_compare(tui_app(seeded_registry),
                        terminal_size=(100, 30), run_before=run_before)


def test_registry_artifacts_snapshot(snap_compare, seeded_registry, tui_app, wait_for,
                                     monkeypatch):
    """The Artifacts tab is active, newest first: qa-lora-r16's checkpoint (stopped, yellow,
    run-d/checkpoints/checkpoint-18, 10:00), run-b's model (08:00) and run-a's adapter (07:00)
    (completed, green; run-b/final and run-a/final), paths relative to the registry's folder,
    all marked missing in red."""
    async def run_before(pilot):
        await open_registry(pilot, wait_for, "a")

    assert snap_compare(tui_app(seeded_registry),
                        terminal_size=(100, 30), run_before=run_before)
