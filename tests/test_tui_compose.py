"""The Compose screen: component pickers, forms generated from the options models with inline
validation, save/open as YAML, launch, data preview, and its pictures."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, Field
from textual.app import App
from textual.widgets import Input, OptionList, Select, SelectionList, Static, Switch

from tuneyard.core.plugins import get_plugins
from tuneyard.core.registry import Registry
from tuneyard.core.spec import load_spec, validate_options, validate_spec
from tuneyard.plugins.strategies.lora import LoraOptions
from tuneyard.tui import actions
from tuneyard.core.cli import PROMPT, TRAINED, preview_text
from tuneyard.tui.screens.compose import ComposeScreen
from tuneyard.tui.screens.run import RunScreen
from tuneyard.tui.widgets.form import OptionsForm, describe, parse, type_name
from tuneyard.tui.widgets.plot import MetricPlot

EXAMPLE = Path(__file__).parent.parent / "examples" / "smollm2-wordnet-lora.yaml"


def token(text: str, trained: bool) -> dict:
    return {"text": text, "trained": trained}


#: ``tuneyard data preview --json`` for two rows of the QA data (the CLI's contract).
PREVIEW = {"source": "jsonl", "format": "instruction", "total_rows": 40, "rows": [
    {"prompt": "define the word cat", "completion": "a small animal", "n_tokens": 8,
     "n_trained": 4, "tokens": [
         token("<|im_start|>user\n", False), token("define the", False), token(" word cat", False),
         token("<|im_end|>\n<|im_start|>assistant\n", False), token("a", True),
         token(" small", True), token(" animal", True), token("<|im_end|>", True)]},
    {"prompt": "define the word dog", "completion": "a domesticated animal", "n_tokens": 7,
     "n_trained": 3, "tokens": [
         token("<|im_start|>user\n", False), token("define the word dog", False),
         token("<|im_end|>\n<|im_start|>assistant\n", False), token("a domesticated", True),
         token(" animal", True), token("<|im_end|>", True), token("\n", False)]},
]}


async def open_compose(pilot, wait_for) -> ComposeScreen:
    await pilot.press("n")
    screen = pilot.app.screen
    assert isinstance(screen, ComposeScreen)
    await wait_for(pilot, lambda: screen.plugins is not None and screen.query("#training-form"))
    await pilot.pause()
    return screen


async def choose(pilot, wait_for, screen: ComposeScreen, kind: str, name: str) -> OptionsForm:
    """Pick component ``name`` of ``kind``; returns its options form once shown."""
    screen.query_one(f"#{kind}", Select).value = name
    options = get_plugins().components[kind][name].cls.Options
    await wait_for(pilot, lambda: screen.form(f"{kind}-options").model is options)
    await pilot.pause()
    return screen.form(f"{kind}-options")


async def fill_qa_spec(pilot, wait_for, screen: ComposeScreen, data: Path, model: Path,
                       runs: Path) -> None:
    """Enter jsonl + hf model + lora (r 4 on q_proj, v_proj) + perplexity, 12 steps."""
    run = screen.form("run-form")
    run.field_widget("name").value = "qa-lora"
    run.field_widget("output_dir").value = str(runs)
    source = await choose(pilot, wait_for, screen, "dataset-source", "jsonl")
    source.field_widget("path").value = str(data)
    screen.form("dataset-form").field_widget("eval_split").value = "0.2"
    hf = await choose(pilot, wait_for, screen, "model-provider", "hf")
    hf.field_widget("path").value = str(model)
    lora = await choose(pilot, wait_for, screen, "strategy", "lora")
    lora.field_widget("r").value = "4"
    lora.field_widget("target_modules").value = "q_proj, v_proj"
    screen.query_one("#evaluator", SelectionList).select("perplexity")
    await wait_for(pilot, lambda: screen.query(".evaluator"))
    training = screen.form("training-form")
    training.field_widget("max_steps").value = "12"
    training.field_widget("learning_rate").value = "5e-3"
    await pilot.pause()


def qa_spec(data: Path, model: Path, runs: Path) -> dict:
    """The spec :func:`fill_qa_spec` enters, exactly as it must be saved."""
    return {
        "name": "qa-lora",
        "dataset": {"source": "jsonl", "options": {"path": str(data)}, "eval_split": 0.2},
        "model": {"provider": "hf", "options": {"path": str(model)}},
        "strategy": {"name": "lora", "options": {"r": 4, "target_modules": ["q_proj", "v_proj"]}},
        "training": {"max_steps": 12, "learning_rate": 5e-3},
        "evaluators": [{"name": "perplexity"}],
        "output_dir": str(runs),
    }


def error_of(form: OptionsForm, name: str) -> str | None:
    """The error shown under field ``name`` (below its description), or None."""
    note = str(form.query_one(f"#field-{name} .field-note", Static).render())
    return note.removeprefix(form.fields[name].description or "").strip("\n") or None


# -- pickers and forms -----------------------------------------------------------------------
async def test_pickers_list_exactly_the_registered_components(tmp_path, tui_app, wait_for):
    components = get_plugins().components
    async with tui_app(tmp_path / "registry.db").run_test(size=(80, 24)) as pilot:
        screen = await open_compose(pilot, wait_for)
        for kind in ("dataset-source", "model-provider", "strategy"):
            prompts = [str(o.prompt) for o in screen.query_one(f"#{kind}").query_one(
                OptionList).options]
            assert prompts == [f"{n} — {c.cls.description}" for n, c in components[kind].items()]
        evaluators = screen.query_one("#evaluator", SelectionList)
        assert [o.value for o in evaluators.options] == list(components["evaluator"])
        perplexity = next(o for o in evaluators.options if o.value == "perplexity")
        assert str(perplexity.prompt) == ("perplexity — Token-weighted cross-entropy "
                                          "(eval_loss, nats/token) and perplexity")
        first = {kind: next(iter(components[kind])) for kind in components}
        assert screen.spec() == {"dataset": {"source": first["dataset-source"]},
                                 "model": {"provider": first["model-provider"]},
                                 "strategy": {"name": first["strategy"]}}

        await pilot.press("tab", "x", "tab", "o", "u", "t", "tab")  # keyboard only
        assert screen.form("run-form").values() == {"name": "x", "output_dir": "out"}
        assert pilot.app.focused is screen.query_one("#dataset-source", Select)
        await pilot.press("tab")
        source = screen.form("dataset-source-options")
        assert pilot.app.focused is source.field_widget("path")
        assert str(source.query_one("#field-path .field-name").render()) == "path *\nstr required"
        assert source.field_widget("path").placeholder == "required"
        await pilot.press("tab")  # leaving a required field empty says so
        assert error_of(source, "path") == "Field required"


async def test_lora_form_shows_its_fields_defaults_and_inline_errors(tmp_path, tui_app,
                                                                     wait_for):
    async with tui_app(tmp_path / "registry.db").run_test(size=(100, 30)) as pilot:
        screen = await open_compose(pilot, wait_for)
        form = await choose(pilot, wait_for, screen, "strategy", "lora")
        names = [w.id.removeprefix("field-") for w in form.query(".field")]
        assert names == list(LoraOptions.model_fields) == [
            "r", "alpha", "dropout", "target_modules", "adapter_name", "use_dora",
            "use_rslora", "init", "modules_to_save", "qlora"]
        typed = names[:5] + ["modules_to_save"]  # the others are switches and a choice
        assert {n: form.field_widget(n).placeholder for n in typed} == {
            "r": "8", "alpha": "16", "dropout": "0.05", "target_modules": "all-linear",
            "adapter_name": "default", "modules_to_save": "None"}
        assert all(form.field_widget(n).value == "" for n in typed)
        assert [type(form.field_widget(n)).__name__ for n in names[5:]] == [
            "Switch", "Switch", "Select", "Input", "Switch"]
        assert (form.field_widget("r").type, form.field_widget("dropout").type) == (
            "integer", "number")
        assert str(form.query_one("#field-dropout .field-name").render()) == (
            "dropout\nfloat ≥ 0, < 1")
        assert str(form.query_one("#field-r .field-note").render()) == (
            "rank of the update matrices")
        assert screen.spec()["strategy"] == {"name": "lora"}

        r = form.field_widget("r")
        r.focus()
        await pilot.press("a", "b", "c")
        assert r.value == ""  # an integer field takes no letters
        await pilot.press("-", "1")
        assert str(form.query_one("#field-r .field-note").render()) == (
            "rank of the update matrices\nInput should be greater than 0")
        assert r.has_class("-invalid")
        assert error_of(form, "alpha") is None
        await pilot.press("backspace", "backspace", "4")
        assert error_of(form, "r") is None
        assert not r.has_class("-invalid")
        assert form.values() == {"r": 4}
        form.field_widget("dropout").value = "1.5"
        await pilot.pause()
        assert error_of(form, "dropout") == "Input should be less than 1"


class Sample(BaseModel):
    steps: int = 1
    lr: float = 0.1
    sizes: list[int] = [1]
    modules: list[str] | str = "all"
    flag: bool = False
    check: bool | None = None  # a switch starting off: untouched, it stays out
    mode: Literal["a", "b"] = "a"
    limit: int | None = Field(None, ge=1)
    config: dict[str, int] = {}
    path: str = Field(description="where")


class FormApp(App):
    def compose(self):
        yield OptionsForm(Sample)


async def test_form_values_are_parsed_and_untouched_defaults_left_out():
    app = FormApp()
    async with app.run_test(size=(100, 40)) as pilot:
        form = app.query_one(OptionsForm)
        assert isinstance(form.field_widget("flag"), Switch)
        assert isinstance(form.field_widget("mode"), Select)
        assert form.values() == {}
        for name, text in {"steps": "3", "lr": "0.5", "sizes": "2, 3", "modules": "q, v",
                           "config": "{a: 1}", "path": "x.jsonl"}.items():
            form.field_widget(name).value = text
        form.field_widget("flag").value = True
        form.field_widget("mode").value = "b"
        await pilot.pause()
        assert form.values() == {"steps": 3, "lr": 0.5, "sizes": [2, 3], "modules": ["q", "v"],
                                 "flag": True, "mode": "b", "config": {"a": 1}, "path": "x.jsonl"}
        assert form.validate() == {}
        form.field_widget("modules").value = "q"
        form.field_widget("mode").value = "a"
        form.field_widget("config").value = "[1"
        await pilot.pause()
        values = form.values()
        assert (values["modules"], "mode" in values, values["config"]) == ("q", False, "[1")
        assert form.validate() == {"config": "Input should be a valid dictionary"}


def test_type_lines_and_parsing():
    fields = Sample.model_fields
    assert [describe(fields[n]) for n in ("steps", "modules", "limit", "path")] == [
        "int", "list[str] | str", "int | None ≥ 1", "str required"]
    assert type_name(Literal["line", "file"]) == "'line' | 'file'"
    assert parse("7", int) == 7 and parse("x7", int) == "x7"
    assert parse("1e-4", float) == 1e-4
    assert parse("4, 8,", list[int]) == [4, 8]


# -- save, open, launch ----------------------------------------------------------------------
async def test_saved_yaml_round_trips_and_launches_from_there(
        tmp_path, tui_app, wait_for, qa_jsonl, tiny_model_dir, monkeypatch):
    monkeypatch.chdir(tmp_path)
    expected = qa_spec(qa_jsonl, tiny_model_dir, tmp_path / "runs")
    launched = []
    monkeypatch.setattr(actions, "launch", lambda registry_path, spec_path: launched.append(
        (spec_path, yaml.safe_load(Path(spec_path).read_text()))) or "run-new")
    app = tui_app(tmp_path / "registry.db")
    async with app.run_test(size=(100, 30)) as pilot:
        screen = await open_compose(pilot, wait_for)
        await fill_qa_spec(pilot, wait_for, screen, qa_jsonl, tiny_model_dir, tmp_path / "runs")
        await pilot.press("ctrl+s")
        assert screen.query_one("#path", Input).value == str(tmp_path / "qa-lora.yaml")
        await pilot.press("enter")
        await pilot.pause()
        saved = tmp_path / "qa-lora.yaml"
        assert yaml.safe_load(saved.read_text()) == expected
        assert list(yaml.safe_load(saved.read_text())) == list(expected)  # the docs' key order
        spec = load_spec(saved)
        assert spec.model_dump(exclude_defaults=True) == expected
        lora = get_plugins().get("strategy", "lora").cls.Options
        assert validate_options(lora, spec.strategy.options, "strategy.options").r == 4
        assert screen.spec_path == saved

        screen.form("training-form").field_widget("max_steps").value = "20"
        await pilot.press("ctrl+s", "enter")
        await pilot.pause()
        assert yaml.safe_load(saved.read_text())["training"]["max_steps"] == 12  # asked first
        await pilot.press("enter")
        await pilot.pause()
        assert yaml.safe_load(saved.read_text())["training"]["max_steps"] == 20

        await pilot.press("ctrl+l")
        await wait_for(pilot, lambda: type(app.screen).__name__ == "RunScreen")
        expected["training"]["max_steps"] = 20
        assert launched == [(saved, expected)]


async def test_open_fills_the_forms_from_a_spec(tmp_path, tui_app, wait_for):
    loaded = yaml.safe_load(EXAMPLE.read_text())
    async with tui_app(tmp_path / "registry.db").run_test(size=(100, 30)) as pilot:
        screen = await open_compose(pilot, wait_for)
        await pilot.press("ctrl+o")
        screen.query_one("#path", Input).value = str(EXAMPLE)
        await pilot.press("enter")
        await wait_for(pilot, lambda: screen.query(".evaluator"))
        assert screen.spec() == loaded
        assert screen.form("strategy-options").field_widget("target_modules").value == (
            "q_proj, k_proj, v_proj, o_proj")
        assert sorted(screen.query_one("#evaluator", SelectionList).selected) == [
            "perplexity", "rouge"]
        validate_spec(screen.spec())


async def test_launch_validates_then_opens_the_run_or_shows_its_error(tmp_path, tui_app,
                                                                     wait_for, monkeypatch):
    calls, notes, answer = [], [], threading.Event()
    message = "spec.yaml:12: strategy.options.target_modules: ['nope'] not found in the model"

    def launch(registry_path, spec_path):
        calls.append((registry_path, spec_path, yaml.safe_load(Path(spec_path).read_text())))
        if len(calls) == 1:
            answer.wait(10)
            raise actions.ActionError(message)
        return "run-new"

    monkeypatch.setattr(actions, "launch", launch)
    app = tui_app(tmp_path / "registry.db")
    async with app.run_test(size=(100, 30)) as pilot:
        screen = await open_compose(pilot, wait_for)
        monkeypatch.setattr(screen, "notify", lambda message, **kw: notes.append(message))
        lora = await choose(pilot, wait_for, screen, "strategy", "lora")
        lora.field_widget("r").value = "-1"
        await pilot.press("ctrl+l")
        assert notes == ["fix 3 errors"]
        assert error_of(lora, "r") == "Input should be greater than 0"
        assert error_of(screen.form("dataset-source-options"), "path") == "Field required"
        assert error_of(screen.form("model-provider-options"), "path") == "Field required"
        assert calls == []
        # the first field in error (the dataset's path, at the top) has the focus
        assert app.focused is screen.form("dataset-source-options").field_widget("path")

        await fill_qa_spec(pilot, wait_for, screen, tmp_path / "qa.jsonl", tmp_path / "model",
                           tmp_path / "runs")
        await pilot.press("ctrl+l")
        await wait_for(pilot, lambda: calls)
        await pilot.press("ctrl+l")  # while the first launch runs: refused
        assert (notes[-1], len(calls)) == ("a launch is already under way", 1)
        answer.set()
        status = screen.query_one("#status", Static)
        await wait_for(pilot, lambda: str(status.render()) == message)
        assert status.has_class("error") and status.display
        assert isinstance(app.screen, ComposeScreen)

        await pilot.press("ctrl+l")
        await wait_for(pilot, lambda: type(app.screen).__name__ == "RunScreen")
        path = tmp_path / "runs" / "specs" / "qa-lora-20261101-120000.yaml"
        spec = qa_spec(tmp_path / "qa.jsonl", tmp_path / "model", tmp_path / "runs")
        assert calls == [(tmp_path / "registry.db", path, spec)] * 2
        assert app.current_mode == "runs"


# -- preview ---------------------------------------------------------------------------------
def test_preview_text_highlights_the_trained_tokens():
    text = preview_text(PREVIEW)
    styled = [(text.plain[s.start:s.end], s.style) for s in text.spans]
    row1 = styled[styled.index(("\nrow 1: 4 of 8 tokens trained\n", "bold")) + 1:][:8]
    assert row1 == [("<|im_start|>user\n", PROMPT), ("define the", PROMPT),
                    (" word cat", PROMPT), ("<|im_end|>\n<|im_start|>assistant\n", PROMPT),
                    ("a", TRAINED), (" small", TRAINED), (" animal", TRAINED),
                    ("<|im_end|>", TRAINED)]
    assert TRAINED != PROMPT and TRAINED.bgcolor is not None
    assert text.plain.startswith("jsonl · format instruction · 40 rows; first 2.")
    assert "row 2: 3 of 7 tokens trained\n<|im_start|>user\ndefine the word dog" in text.plain


async def test_preview_shows_the_rows_and_errors(tmp_path, tui_app, wait_for, monkeypatch):
    seen, answer = [], threading.Event()

    def preview(registry_path, spec_path, rows=5):
        seen.append((rows, yaml.safe_load(Path(spec_path).read_text())))
        answer.wait(10)
        return PREVIEW

    monkeypatch.setattr(actions, "preview", preview)
    async with tui_app(tmp_path / "registry.db").run_test(size=(100, 30)) as pilot:
        screen = await open_compose(pilot, wait_for)
        form = await choose(pilot, wait_for, screen, "dataset-source", "jsonl")
        form.field_widget("path").focus()  # ctrl+d works from inside an input too
        await pilot.press("q", "a", ".", "j", "s", "o", "n", "l", "ctrl+d")
        body = screen.query_one("#preview-body", Static)
        await wait_for(pilot, lambda: seen)
        assert body.loading and screen.query_one("#preview").display  # while the CLI runs
        answer.set()
        await wait_for(pilot, lambda: body.content == preview_text(PREVIEW))
        assert not body.loading
        assert seen == [(5, {"dataset": {"source": "jsonl", "options": {"path": "qa.jsonl"}},
                             "model": {"provider": "gguf"}, "strategy": {"name": "full"}})]
        assert screen.query_one("#preview").display and not body.has_class("error")

        def fail(registry_path, spec_path, rows=5):
            raise actions.ActionError("dataset.options.path: 'qa.jsonl': file not found")

        monkeypatch.setattr(actions, "preview", fail)
        await pilot.press("ctrl+d")
        await wait_for(pilot, lambda: body.has_class("error"))
        assert str(body.content) == "dataset.options.path: 'qa.jsonl': file not found"

        monkeypatch.setattr(actions, "preview", lambda *args, **kw: {"source": "jsonl"})
        await pilot.press("ctrl+d")
        await wait_for(pilot, lambda: "unexpected" in str(body.content))
        assert str(body.content) == ("unexpected output of tuneyard data preview: "
                                     "KeyError: 'rows'")
        await pilot.press("escape")
        assert not screen.query_one("#preview").display


# -- pictures --------------------------------------------------------------------------------
def test_compose_lora_snapshot(snap_compare, tmp_path, tui_app, wait_for):
    """The Strategy section with lora chosen (its description beside the picker), then the
    LoRA form: r (focused, -1 typed, red 'Input should be greater than 0' under its help),
    alpha 16, dropout 0.05, target_modules all-linear, adapter_name default as dim
    placeholders, each with its type line (``int > 0``, ``float ≥ 0, < 1``, …) and help; the
    footer shows ^d Preview, ^s Save, ^o Open, ^l Launch (r/n/g/q hidden: r is an input)."""
    async def run_before(pilot):
        screen = await open_compose(pilot, wait_for)
        form = await choose(pilot, wait_for, screen, "strategy", "lora")
        form.field_widget("r").cursor_blink = False  # the picture must not depend on timing
        form.field_widget("r").focus()
        await pilot.press("-", "1")
        await pilot.pause()

    assert snap_compare(tui_app(tmp_path / "registry.db"), terminal_size=(100, 30),
                        run_before=run_before)


def test_compose_preview_snapshot(snap_compare, tmp_path, tui_app, wait_for, monkeypatch):
    """The data preview panel (bottom half, titled 'Data preview (esc closes)'): 'jsonl · format
    instruction · 40 rows; first 2.' with the legend, then row 1 (4 of 8 tokens trained) and
    row 2 (3 of 7): the chat-template prompt dim, the answers and their <|im_end|> bold on
    green; the form (Run, Dataset) above it."""
    monkeypatch.setattr(actions, "preview", lambda registry_path, spec_path, rows=5: PREVIEW)

    async def run_before(pilot):
        screen = await open_compose(pilot, wait_for)
        await choose(pilot, wait_for, screen, "dataset-source", "jsonl")
        await pilot.press("ctrl+d")
        body = screen.query_one("#preview-body", Static)
        await wait_for(pilot, lambda: body.content == preview_text(PREVIEW))
        await pilot.pause()

    assert snap_compare(tui_app(tmp_path / "registry.db"), terminal_size=(100, 30),
                        run_before=run_before)


# -- end to end ----------------------------------------------------------------------------
async def test_compose_launch_and_watch_a_real_run_complete(
        tmp_path, tui_app, wait_for, qa_jsonl, tiny_model_dir):
    """Compose a LoRA run on the tiny random model, launch it (its own process, through the
    CLI), and watch the live monitor: the loss curve grows poll by poll until ``completed``."""
    app = tui_app(tmp_path / "registry.db", poll_interval_s=0.2)
    async with app.run_test(size=(100, 30)) as pilot:
        screen = await open_compose(pilot, wait_for)
        await fill_qa_spec(pilot, wait_for, screen, qa_jsonl, tiny_model_dir, tmp_path / "runs")
        screen.form("training-form").field_widget("max_steps").value = "150"
        await pilot.press("ctrl+l")
        await wait_for(pilot, lambda: isinstance(app.screen, RunScreen), timeout_s=90)
        monitor = app.screen
        seen: list[int] = []

        def done() -> bool:
            seen.append(len(monitor.series.get("loss", ())))
            return (monitor.run_row or {}).get("status") in ("completed", "failed")

        await wait_for(pilot, done, timeout_s=180)
        await pilot.pause(0.5)
        run = monitor.run_row
        assert run["status"] == "completed", run["error"]
        growing = sorted(set(seen))
        assert growing[-1] == 150 and len([n for n in growing if 0 < n < 150]) >= 2, growing
        plot = monitor.query_one("#loss", MetricPlot).curves
        xs, ys = plot["train loss"]
        assert xs[0] == 1 and xs[-1] == 150
        assert plot["eval loss"][0] == [0, 150]  # baseline and final evaluations
        losses = Registry(tmp_path / "registry.db").metrics(run["id"], "loss")
        assert ys[-1] == losses[-1][1] and losses[-1][1] < losses[0][1]
        assert "completed" in str(monitor.query_one("#head", Static).render())
