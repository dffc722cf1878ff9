"""A form generated from a pydantic model: a component's ``Options`` or a part of the run spec.

One row per field: its name (``*`` when required) and type on the left; on the right the
input (bool → Switch, Literal → Select, numbers and strings → Input restricted to the type,
lists → comma-separated Input, anything else → YAML Input such as ``{hidden_size: 64}``), the
field's description, and its validation error, which appears as soon as the field is edited or
left and clears when fixed. Defaults are shown as the input's placeholder, so a field left
empty keeps its default and stays out of :meth:`OptionsForm.values` (the spec holds only what
was set).
"""

from __future__ import annotations

import types
from typing import Any, Literal, Union, get_args, get_origin

import annotated_types
import yaml
from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.content import Content
from textual.widget import Widget
from textual.widgets import Input, Select, Static, Switch

#: Constraint (annotated_types) → how the type line shows it.
BOUNDS = {annotated_types.Gt: (">", "gt"), annotated_types.Ge: ("≥", "ge"),
          annotated_types.Lt: ("<", "lt"), annotated_types.Le: ("≤", "le")}


def type_name(annotation: Any) -> str:
    """A short, readable type: ``int``, ``list[str] | str``, ``'line' | 'file'``, ``int | None``."""
    origin, args = get_origin(annotation), get_args(annotation)
    if annotation is type(None):
        return "None"
    if origin is Literal:
        return " | ".join(repr(a) for a in args)
    if origin in (Union, types.UnionType):
        return " | ".join(type_name(a) for a in args)
    if origin is not None:
        return f"{getattr(origin, '__name__', origin)}[{', '.join(type_name(a) for a in args)}]"
    if annotation is Any:
        return "any"
    return getattr(annotation, "__name__", str(annotation))


def describe(info: FieldInfo) -> str:
    """The type line of a field: type, bounds and whether it is required
    (``float ≥ 0, < 1``, ``str required``)."""
    bounds = [f"{sign} {getattr(item, attr)}" for item in info.metadata
              for cls, (sign, attr) in BOUNDS.items() if isinstance(item, cls)]
    if info.is_required():
        bounds.append("required")
    return " ".join([type_name(info.annotation), ", ".join(bounds)]).strip()


def _members(annotation: Any) -> list[Any]:
    """The members of a union (``None`` left out), or ``[annotation]``."""
    if get_origin(annotation) in (Union, types.UnionType):
        return [a for a in get_args(annotation) if a is not type(None)]
    return [annotation]


def kind_of(annotation: Any) -> str:
    """How a field is edited: ``bool``, ``choice`` (Literal), ``int``, ``float``, ``str``,
    ``list`` (comma-separated) or ``yaml`` (anything else, typed as YAML)."""
    members = _members(annotation)
    if len(members) == 1:
        only = members[0]
        if get_origin(only) is Literal:
            return "choice"
        if only in (bool, int, float, str):
            return only.__name__
    if all(get_origin(m) is list or m is str for m in members) and members != [str]:
        return "list"
    if set(members) <= {int, float}:
        return "float"
    return "yaml"


def parse(text: str, annotation: Any) -> Any:
    """The Python value of ``text`` typed into a field of type ``annotation``; text that does
    not parse is returned as it is, so the model's own validation reports it.

    A list field takes comma-separated items (``q_proj, v_proj``); when the field may also be
    a string (``list[str] | str``), text without a comma is that string.
    """
    kind = kind_of(annotation)
    if kind in ("int", "float"):
        try:
            return int(text) if kind == "int" else float(text)
        except ValueError:
            return text
    if kind == "list":
        members = _members(annotation)
        if "," not in text and str in members:
            return text
        item_type = next(get_args(m)[0] for m in members if get_origin(m) is list)
        return [parse(item.strip(), item_type) for item in text.split(",") if item.strip()]
    if kind == "yaml":
        try:
            return yaml.safe_load(text)
        except yaml.YAMLError:
            return text
    return text


def show(value: Any) -> str:
    """``value`` as a field's text: the inverse of :func:`parse`."""
    if isinstance(value, list):
        return ", ".join(show(v) for v in value)
    if isinstance(value, dict):
        return yaml.safe_dump(value, default_flow_style=True, sort_keys=False).strip()
    return str(value)


class OptionsForm(Vertical):
    """The fields of ``model`` as a form.

    Args:
        model: the pydantic model (a component's ``Options``, ``TrainingSpec``, …).
        values: values to start from (e.g. a loaded spec's); they count as set.
        fields: show only these fields (default: all); errors of the others are ignored.
    """

    DEFAULT_CSS = """
    OptionsForm { height: auto; }
    OptionsForm .field { height: auto; margin-bottom: 1; }
    OptionsForm .field-name { width: 30; padding-right: 1; }
    OptionsForm .field-note { color: $text-muted; }
    OptionsForm .field-right { width: 1fr; height: auto; }
    OptionsForm .form-error { color: $error; display: none; }
    OptionsForm Input { background: $boost; }
    OptionsForm Switch { border: none; height: 1; padding: 0; width: auto; }
    OptionsForm .no-options { color: $text-muted; margin-bottom: 1; }
    """

    def __init__(self, model: type[BaseModel], values: dict[str, Any] | None = None, *,
                 fields: tuple[str, ...] | None = None, id: str | None = None) -> None:
        super().__init__(id=id)
        self.model = model
        self.fields = {name: info for name, info in model.model_fields.items()
                       if fields is None or name in fields}
        self._given = dict(values or {})
        self._touched: set[str] = set()
        self._shown: dict[str, str] = {}  # field name ("": the whole model) → error shown
        self._start: dict[str, Any] = {}  # switch or choice field → the value it started with

    def compose(self) -> ComposeResult:
        if not self.fields:
            yield Static("no options", classes="no-options")
        for name, info in self.fields.items():
            with Horizontal(classes="field", id=f"field-{name}"):
                yield Static(Content.assemble((name, "bold"), (" *" if info.is_required() else "",
                                              "bold $error"), "\n", (describe(info), "dim")),
                             classes="field-name")
                with Vertical(classes="field-right"):
                    yield self._input(name, info)
                    yield Static(self._note(name, ""), classes="field-note")
        yield Static("", classes="form-error", markup=False)

    def _note(self, name: str, error: str) -> Content:
        """What is shown under a field's input: its description, then its error if any."""
        lines = [Content(self.fields[name].description or ""), Content.styled(error, "$error")]
        return Content("\n").join(line for line in lines if line)

    def _input(self, name: str, info: FieldInfo) -> Widget:
        kind = kind_of(info.annotation)
        default = info.get_default(call_default_factory=True)
        value = self._given.get(name, None if info.is_required() else default)
        if kind == "bool":
            self._start[name] = bool(value)
            return Switch(bool(value), animate=False, name=name, classes="field-value")
        if kind == "choice":
            choices = get_args(_members(info.annotation)[0])
            chosen = value if value in choices else Select.NULL
            self._start[name] = None if chosen is Select.NULL else chosen
            return Select([(str(c), c) for c in choices], value=chosen,
                          allow_blank=chosen is Select.NULL, prompt="None", compact=True,
                          name=name, classes="field-value")
        placeholder = "required" if info.is_required() else show(default)
        restrict = {"int": "integer", "float": "number"}.get(kind, "text")
        return Input(show(self._given[name]) if name in self._given else "",
                     placeholder=placeholder, type=restrict, valid_empty=True, compact=True,
                     name=name, classes="field-value")

    def field_widget(self, name: str) -> Widget:
        """The input widget of field ``name``."""
        return self.query_one(f"#field-{name} .field-value")

    def values(self) -> dict[str, Any]:
        """The fields that were set, parsed to Python types: a non-empty input, a switch or
        choice changed from its default, or a value given to the form."""
        out: dict[str, Any] = {}
        for name, info in self.fields.items():
            widget = self.field_widget(name)
            if isinstance(widget, Input):
                if widget.value.strip():
                    out[name] = parse(widget.value.strip(), info.annotation)
                continue
            value = None if widget.value is Select.NULL else widget.value
            if name in self._given or value != self._start[name]:
                out[name] = value
        return out

    def errors(self) -> dict[str, str]:
        """Field name → pydantic's message for the current values (``""`` for an error of the
        whole model); empty when valid. Shows nothing."""
        try:
            self.model.model_validate(self.values())
        except ValidationError as exc:
            found: dict[str, str] = {}
            for err in exc.errors():
                loc = [str(part) for part in err["loc"]]
                if loc and loc[0] not in self.fields:
                    continue
                msg = str(err["ctx"]["error"]) if err["type"] == "value_error" else err["msg"]
                inner = ".".join(loc[1:])
                found.setdefault(loc[0] if loc else "", f"{inner}: {msg}" if inner else msg)
            return found
        return {}

    def validate(self) -> dict[str, str]:
        """Validate every field with the model and show each error under its field (clearing
        the fixed ones). Returns field name → message (``""``: the whole model)."""
        self._touched.update(self.fields)
        return self._show_errors()

    def _show_errors(self) -> dict[str, str]:
        found = self.errors()
        for name in [*self.fields, ""]:
            message = found.get(name, "") if name in self._touched or not name else ""
            if message == self._shown.get(name, ""):
                continue
            self._shown[name] = message
            if name:
                self.query_one(f"#field-{name} .field-note", Static).update(
                    self._note(name, message))
                self.field_widget(name).set_class(bool(message), "-invalid")
            else:
                whole = self.query_one(".form-error", Static)
                whole.update(message)
                whole.display = bool(message)
        return found

    def _edited(self, widget: Widget) -> None:
        if widget.name in self.fields:
            self._touched.add(widget.name)
            self._show_errors()

    def on_input_changed(self, event: Input.Changed) -> None:
        self._edited(event.input)

    def on_input_blurred(self, event: Input.Blurred) -> None:
        self._edited(event.input)

    def on_switch_changed(self, event: Switch.Changed) -> None:
        self._edited(event.switch)

    def on_select_changed(self, event: Select.Changed) -> None:
        self._edited(event.select)
