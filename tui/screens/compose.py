"""The Compose screen: build a run spec from the registered components, preview its data as
the model will see it, save it as YAML, and launch it.

The plugins are loaded in a thread worker (no torch is imported); each part of the spec is an
:class:`~tuneyard.tui.widgets.form.OptionsForm` generated from its pydantic model, so the spec
holds only what was set. Previewing and launching run the ``tuneyard`` CLI in a thread worker
(:mod:`tuneyard.tui.actions`); their results come back as messages.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.message import Message
from textual.screen import Screen
from textual.widget import Widget
from textual.widgets import (Footer, Header, Input, Label, LoadingIndicator, Select,
                             SelectionList, Static)
from textual.widgets.selection_list import Selection
from textual.worker import get_current_worker

from tuneyard.core.cli import preview_text
from tuneyard.core.errors import SpecError, TuneyardError
from tuneyard.core.plugins import Plugins, get_plugins
from tuneyard.core.spec import DatasetSpec, RunSpec, TrainingSpec, validate_spec
from tuneyard.tui import actions
from tuneyard.tui.widgets.form import OptionsForm

#: component kind → (spec section, key that names the component, label of its picker)
COMPONENTS = {
    "dataset-source": ("dataset", "source", "source"),
    "model-provider": ("model", "provider", "provider"),
    "strategy": ("strategy", "name", "strategy"),
}
RUN_FIELDS = ("name", "output_dir")
DATASET_FIELDS = ("format", "columns", "eval_split", "eval", "eval_limit", "chat_template")
PREVIEW_ROWS = 5


class PluginsLoaded(Message):
    """The plugin manager, loaded in a worker thread."""

    def __init__(self, plugins: Plugins) -> None:
        super().__init__()
        self.plugins = plugins


class PreviewReady(Message):
    """The rendered rows of ``tuneyard data preview``, or its error message."""

    def __init__(self, text: Text | None = None, error: str | None = None) -> None:
        super().__init__()
        self.text, self.error = text, error


class Launched(Message):
    """The id of the run just launched, or the launch's error message."""

    def __init__(self, run_id: str | None = None, error: str | None = None) -> None:
        super().__init__()
        self.run_id, self.error = run_id, error


def mapping(value: Any) -> dict[str, Any]:
    """``value`` when it is a mapping, else ``{}`` (a loaded spec may hold anything)."""
    return value if isinstance(value, dict) else {}


def write_spec(path: Path, spec: dict[str, Any]) -> None:
    """Write ``spec`` as YAML (keys in the order set), creating missing folders."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(spec, sort_keys=False, allow_unicode=True), encoding="utf-8")


def launch_path(spec: dict[str, Any], now: datetime) -> Path:
    """Where a launched spec that was never saved goes:
    ``<output_dir>/specs/<name>-<YYYYmmdd-HHMMSS>.yaml``."""
    name = f"{spec.get('name') or 'run'}-{now:%Y%m%d-%H%M%S}.yaml"
    return Path(spec.get("output_dir", "runs")) / "specs" / name


def changed_keys(loaded: dict[str, Any], kept: dict[str, Any], prefix: str = "") -> list[str]:
    """Dotted keys of ``loaded`` whose value ``kept`` does not hold (the forms dropped them)."""
    out = []
    for key, value in loaded.items():
        if isinstance(value, dict) and isinstance(kept.get(key), dict):
            out += changed_keys(value, kept[key], f"{prefix}{key}.")
        elif kept.get(key) != value:
            out.append(prefix + str(key))
    return out


class ComposeScreen(Screen):
    """Compose a run spec from the registered components and launch it.

    Attributes:
        plugins: the plugin manager once loaded (``None`` while loading).
        spec_path: the file the spec was last saved to; a launch writes the spec there.
    """

    AUTO_FOCUS = ""  # nothing: r/n/g/q work at once; tab enters the first field
    BINDINGS = [
        Binding("ctrl+d", "preview", "Preview", priority=True),
        Binding("ctrl+s", "save", "Save"),
        Binding("ctrl+o", "open", "Open"),
        Binding("ctrl+l", "launch", "Launch"),
        Binding("escape", "close", "Close", show=False),  # the panels say "esc"
    ]

    DEFAULT_CSS = """
    ComposeScreen #form { height: 1fr; padding: 0 1; }
    ComposeScreen .section { text-style: bold; color: $accent; margin-top: 1; }
    ComposeScreen .component, ComposeScreen .options, ComposeScreen #evaluator-options,
    ComposeScreen .evaluator { height: auto; }
    ComposeScreen .picker { height: auto; margin-bottom: 1; }
    ComposeScreen .picker-label { width: 30; text-style: bold; }
    ComposeScreen .picker Select { width: 1fr; }
    ComposeScreen .options, ComposeScreen #evaluator-options { padding-left: 2; }
    ComposeScreen .evaluator-title { text-style: italic; margin-bottom: 1; }
    ComposeScreen #evaluator { height: auto; margin-bottom: 1; }
    ComposeScreen #preview { display: none; height: 50%; border: round $accent; }
    ComposeScreen #preview-body { min-height: 3; }
    ComposeScreen #status { display: none; height: auto; max-height: 8; padding: 0 1; }
    ComposeScreen #path-bar { display: none; height: 1; padding: 0 1; background: $boost; }
    ComposeScreen #path-label { width: auto; margin-right: 1; text-style: bold; }
    ComposeScreen #path { width: 1fr; }
    ComposeScreen #path-help { width: auto; margin-left: 1; color: $text-muted; }
    """

    def __init__(self) -> None:
        super().__init__()
        self.plugins: Plugins | None = None
        self.spec_path: Path | None = None
        self._opened: Path | None = None  # the spec file loaded last (ctrl+s suggests it)
        self._chosen: dict[str, str | None] = {}  # component kind → name whose form is shown
        self._bar_mode = "save"
        self._overwrite: Path | None = None  # a path the user was warned exists

    def compose(self) -> ComposeResult:
        yield Header()
        with VerticalScroll(id="form", can_focus=False):
            yield LoadingIndicator()
        with VerticalScroll(id="preview"):
            yield Static("", id="preview-body")
        yield Static("", id="status", markup=False)
        with Horizontal(id="path-bar"):
            yield Label("", id="path-label")
            yield Input(id="path", compact=True)
            yield Label("enter: ok, esc: cancel", id="path-help")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.query_one("#preview").border_title = "Data preview (esc closes)"
        self._load_plugins()

    @work(thread=True, group="plugins")
    def _load_plugins(self) -> None:
        self.post_message(PluginsLoaded(get_plugins()))

    def on_screen_resume(self) -> None:
        """Shown again: plugins may have been installed or uninstalled meanwhile (Registry
        screen); check in the worker (see :meth:`on_plugins_loaded`)."""
        if self.plugins is not None:
            self._load_plugins()

    async def on_plugins_loaded(self, message: PluginsLoaded) -> None:
        """Build the form; when the plugins changed since, rebuild it keeping what was typed
        (a component that is gone falls back to the first one of its kind)."""
        if message.plugins is self.plugins:
            return
        kept = self.spec() if self.plugins is not None else {}
        self.plugins = message.plugins
        await self._fill(kept)

    # -- the form ----------------------------------------------------------------------------
    async def _fill(self, data: dict[str, Any]) -> None:
        """Rebuild every section from a spec dict (``{}``: defaults)."""
        form = self.query_one("#form", VerticalScroll)
        await form.remove_children()
        await form.mount_all(list(self._sections(data)))

    def _sections(self, data: dict[str, Any]) -> Iterator[Widget]:
        assert self.plugins is not None
        dataset = mapping(data.get("dataset"))
        yield Label("Run", classes="section")
        yield OptionsForm(RunSpec, {k: data[k] for k in RUN_FIELDS if k in data},
                          fields=RUN_FIELDS, id="run-form")
        yield Label("Dataset", classes="section")
        yield self._component("dataset-source", dataset)
        yield OptionsForm(DatasetSpec, {k: dataset[k] for k in DATASET_FIELDS if k in dataset},
                          fields=DATASET_FIELDS, id="dataset-form")
        yield Label("Model", classes="section")
        yield self._component("model-provider", mapping(data.get("model")))
        yield Label("Strategy", classes="section")
        yield self._component("strategy", mapping(data.get("strategy")))
        yield Label("Evaluators", classes="section")
        registered = self.plugins.components["evaluator"]
        listed = data.get("evaluators")
        chosen = {e["name"]: mapping(e.get("options"))
                  for e in (listed if isinstance(listed, list) else [])
                  if isinstance(e, dict) and isinstance(e.get("name"), str)
                  and e["name"] in registered}
        yield SelectionList(*[Selection(Text(f"{name} — {info.cls.description}"), name,
                                        name in chosen) for name, info in registered.items()],
                            id="evaluator", compact=True)
        yield Vertical(*[self._evaluator(n, opts) for n, opts in chosen.items()],
                       id="evaluator-options")
        yield Label("Training", classes="section")
        yield OptionsForm(TrainingSpec, mapping(data.get("training")), id="training-form")

    def _component(self, kind: str, part: dict[str, Any]) -> Widget:
        """The picker of a component ``kind`` and the options form of the one chosen."""
        assert self.plugins is not None
        _, key, label = COMPONENTS[kind]
        registered = self.plugins.components[kind]
        name = part.get(key) if part.get(key) in registered else next(iter(registered), None)
        self._chosen[kind] = name
        select = Select([(Text(f"{n} — {info.cls.description}"), n)
                         for n, info in registered.items()],
                        value=Select.NULL if name is None else name, allow_blank=name is None,
                        compact=True, id=kind)
        options = mapping(part.get("options")) if part.get(key) == name else {}
        forms = [self._options(kind, name, options)] if name else []
        return Vertical(Horizontal(Label(label, classes="picker-label"), select, classes="picker"),
                        Vertical(*forms, id=f"{kind}-options", classes="options"),
                        classes="component")

    def _options(self, kind: str, name: str, values: dict[str, Any]) -> OptionsForm:
        assert self.plugins is not None
        return OptionsForm(self.plugins.components[kind][name].cls.Options, values)

    def _evaluator(self, name: str, values: dict[str, Any]) -> Widget:
        return Vertical(Label(f"{name} options", classes="evaluator-title"),
                        self._options("evaluator", name, values), name=name, classes="evaluator")

    @on(Select.Changed, "#dataset-source, #model-provider, #strategy")
    async def _component_changed(self, event: Select.Changed) -> None:
        kind = event.select.id or ""
        if event.value is Select.NULL or event.value == self._chosen.get(kind):
            return
        self._chosen[kind] = str(event.value)
        holder = self.query_one(f"#{kind}-options")
        await holder.remove_children()
        await holder.mount(self._options(kind, str(event.value), {}))

    @on(SelectionList.SelectedChanged, "#evaluator")
    async def _evaluators_changed(self, event: SelectionList.SelectedChanged) -> None:
        selected = event.selection_list.selected
        holder = self.query_one("#evaluator-options")
        for box in list(holder.children):
            if box.name not in selected:
                await box.remove()
        shown = {box.name for box in holder.children}
        for name in selected:
            if name not in shown:
                await holder.mount(self._evaluator(name, {}))

    def form(self, form_id: str) -> OptionsForm:
        """One of the fixed forms: ``run-form``, ``dataset-form``, ``training-form``, or the
        options of a component kind (``strategy-options``, ``dataset-source-options``, …)."""
        node = self.query_one(f"#{form_id}")
        return node if isinstance(node, OptionsForm) else node.query_one(OptionsForm)

    def spec(self) -> dict[str, Any]:
        """The run spec as composed: only the keys that were set, in the order of the docs."""
        run = self.form("run-form").values()
        spec: dict[str, Any] = {"name": run["name"]} if "name" in run else {}
        for kind, (section, key, _) in COMPONENTS.items():
            part: dict[str, Any] = {key: self._chosen.get(kind)}
            forms = self.query_one(f"#{kind}-options").query(OptionsForm)
            if forms and (options := forms.first().values()):
                part["options"] = options
            if section == "dataset":
                part.update(self.form("dataset-form").values())
            spec[section] = part
        if training := self.form("training-form").values():
            spec["training"] = training
        evaluators = []
        for box in self.query_one("#evaluator-options").children:
            options = box.query_one(OptionsForm).values()
            evaluators.append({"name": box.name, **({"options": options} if options else {})})
        if evaluators:
            spec["evaluators"] = evaluators
        if "output_dir" in run:
            spec["output_dir"] = run["output_dir"]
        return spec

    def validate_all(self) -> int:
        """Validate every form (errors shown inline), then the whole spec (errors in the status
        line); returns the number of errors."""
        self._status("")
        count, first = 0, None
        for form in self.query(OptionsForm):
            errors = form.validate()
            count += len(errors)
            field = next((name for name in errors if name), None)
            if first is None and field:
                first = form.field_widget(field)
        if first is not None:
            first.focus()  # scrolls the first field in error into view
        if count:
            return count
        try:
            validate_spec(self.spec())
        except SpecError as exc:
            self._status(str(exc), error=True)
            return len(str(exc).splitlines())
        return 0

    def _status(self, text: str, error: bool = False) -> None:
        status = self.query_one("#status", Static)
        status.update(text)
        status.display = bool(text)
        status.set_class(error, "error")

    # -- preview -----------------------------------------------------------------------------
    def action_preview(self) -> None:
        """Show the first rows of the dataset as the model will see them."""
        if self.plugins is None:
            return
        self.query_one("#preview").display = True
        self.query_one("#preview-body").loading = True
        self._preview(self.app.registry_path, self.spec())

    @work(thread=True, exclusive=True, group="preview")
    def _preview(self, registry_path: Path, spec: dict[str, Any]) -> None:
        worker = get_current_worker()
        try:
            with tempfile.TemporaryDirectory(prefix="tuneyard-preview-") as tmp:
                path = Path(tmp) / "spec.yaml"
                write_spec(path, spec)
                result = actions.preview(registry_path, path, rows=PREVIEW_ROWS)
        except (TuneyardError, OSError, ValueError) as exc:
            message = PreviewReady(error=str(exc))
        else:
            try:
                message = PreviewReady(preview_text(result))
            except (KeyError, TypeError) as exc:
                message = PreviewReady(error=f"unexpected output of tuneyard data preview: "
                                             f"{type(exc).__name__}: {exc}")
        if not worker.is_cancelled:
            self.post_message(message)

    def on_preview_ready(self, message: PreviewReady) -> None:
        body = self.query_one("#preview-body", Static)
        body.loading = False
        body.update(message.text if message.text is not None else Text(message.error or ""))
        body.set_class(bool(message.error), "error")

    # -- save, open, launch ------------------------------------------------------------------
    def action_save(self) -> None:
        """Ask where to save the spec (default ``<name>.yaml`` in the working directory)."""
        if self.plugins is None:
            return
        name = self.form("run-form").values().get("name") or "spec"
        self._ask("save", "Save spec to", self.spec_path or self._opened
                  or Path.cwd() / f"{name}.yaml")

    def action_open(self) -> None:
        """Ask which spec YAML to load into the forms."""
        if self.plugins is not None:
            self._ask("open", "Open spec", self._opened or f"{Path.cwd()}{os.sep}")

    def _ask(self, mode: str, label: str, path: Path | str) -> None:
        self._bar_mode, self._overwrite = mode, None
        self.query_one("#path-bar").display = True
        self.query_one("#path-label", Label).update(label)
        field = self.query_one("#path", Input)
        field.value = str(path)
        field.focus()

    def action_close(self) -> None:
        """Close the path bar, else the preview, else leave the focused field."""
        bar, preview = self.query_one("#path-bar"), self.query_one("#preview")
        if bar.display:
            bar.display = False
        elif preview.display:
            preview.display = False
        else:
            self.set_focus(None)

    @on(Input.Submitted, "#path")
    async def _path_submitted(self, event: Input.Submitted) -> None:
        path = Path(event.value.strip()).expanduser()
        if self._bar_mode == "save":
            self.save(path)
        else:
            await self.open(path)

    def save(self, path: Path) -> None:
        """Write the spec to ``path``; an existing file is overwritten only when asked twice."""
        if path.exists() and path != self._overwrite:
            self._overwrite = path
            self.notify(f"{path} exists: press enter again to overwrite it", severity="warning")
            return
        try:
            write_spec(path, self.spec())
        except OSError as exc:
            self.notify(f"{path}: cannot write: {exc.strerror}", severity="error")
            return
        self.spec_path = path
        self.query_one("#path-bar").display = False
        errors = self.validate_all()
        self.notify(f"saved {path}" + (f" ({errors} to fix before launch)" if errors else ""))

    async def open(self, path: Path) -> None:
        """Fill the forms from the spec YAML at ``path``; keys the forms cannot hold (unknown
        components or fields) are named in a warning."""
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except OSError as exc:
            self.notify(f"{path}: cannot read: {exc.strerror}", severity="error")
            return
        except UnicodeDecodeError as exc:
            self.notify(f"{path}: not UTF-8 text (byte {exc.start}); save it as UTF-8",
                        severity="error")
            return
        except yaml.YAMLError as exc:
            self.notify(f"{path}: invalid YAML: {exc}", severity="error")
            return
        if not isinstance(data, dict):
            self.notify(f"{path}: a run spec is a mapping with keys dataset, model, strategy",
                        severity="error")
            return
        self.query_one("#path-bar").display = False
        await self._fill(data)
        self._opened, self.spec_path = path, None
        dropped = changed_keys(data, self.spec())
        if dropped:
            self.notify(f"opened {path}; not kept: {', '.join(dropped)}", severity="warning")
        else:
            self.notify(f"opened {path}")

    def action_launch(self) -> None:
        """Validate, save and start the run, then show it."""
        if self.plugins is None:
            return
        if any(w.node is self and w.group == "launch" and w.is_running for w in self.workers):
            self.notify("a launch is already under way", severity="warning")
            return
        errors = self.validate_all()
        if errors:
            self.notify(f"fix {errors} error{'s' if errors > 1 else ''}", severity="error")
            return
        spec = self.spec()
        path = self.spec_path or launch_path(spec, self.app.clock())
        try:
            write_spec(path, spec)
        except OSError as exc:
            self._status(f"{path}: cannot write the spec: {exc.strerror}", error=True)
            return
        self._status(f"launching {path} …")
        self._launch(self.app.registry_path, path)

    @work(thread=True, group="launch")
    def _launch(self, registry_path: Path, path: Path) -> None:
        try:
            message = Launched(run_id=actions.launch(registry_path, path))
        except (TuneyardError, OSError) as exc:
            message = Launched(error=str(exc))
        self.post_message(message)

    def on_launched(self, message: Launched) -> None:
        if message.error:
            self._status(message.error, error=True)
            return
        self._status("")
        self.notify(f"started run {message.run_id}")
        self.app.open_run(message.run_id)
