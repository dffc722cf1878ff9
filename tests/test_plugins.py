"""The plugin manager: isolation of broken plugins, component validation with exact messages,
lookups with suggestions, lifecycle hooks, entry points (built-ins included) and hook docs."""

from __future__ import annotations

import hashlib
import importlib.metadata
import inspect
import logging
import re
import tomllib
from pathlib import Path
from types import SimpleNamespace

import pytest
from pydantic import BaseModel

from tuneyard.core import hookspecs
from tuneyard.core import plugins as plugins_mod
from tuneyard.core.components import KINDS, DatasetSource, Evaluator, ModelProvider
from tuneyard.core.errors import PluginError, TuneyardError
from tuneyard.core.hookspecs import hookimpl
from tuneyard.core.plugins import REGISTRATION_HOOKS, Plugins, get_plugins

ROOT = Path(__file__).resolve().parents[1]


class Rows(DatasetSource):
    name = "rows"
    description = "in-memory rows"


class Judge(Evaluator):
    name = "judge"


class Nameless(DatasetSource):
    pass


class NotAModel:
    limit = 3


class BadOptions(DatasetSource):
    name = "bad-options"
    Options = NotAModel


class Unschemable(BaseModel):
    model_config = {"arbitrary_types_allowed": True}
    thing: NotAModel = None


class BrokenSchema(DatasetSource):
    name = "broken-schema"
    Options = Unschemable


class Registers:
    """A plugin object registering the given dataset sources (and, optionally, evaluators)."""

    def __init__(self, *sources, evaluators=()):
        self.sources, self.evaluators = sources, evaluators

    @hookimpl
    def register_dataset_sources(self, register):
        for cls in self.sources:
            register(cls)

    @hookimpl
    def register_evaluators(self, register):
        for cls in self.evaluators:
            register(cls)


class Raises:
    @hookimpl
    def register_evaluators(self, register):
        raise RuntimeError("no evaluators today")


def loaded(*plugins: tuple[str, object]) -> Plugins:
    pm = Plugins()
    for name, plugin in plugins:
        pm.register_plugin(plugin, name)
    pm.collect_components()
    return pm


# -- registration isolation ----------------------------------------------------------------
def test_raising_registration_hook_is_recorded_and_others_register(caplog):
    with caplog.at_level(logging.WARNING, logger="tuneyard.core.plugins"):
        pm = loaded(("a-good", Registers(Rows)), ("b-broken", Raises()),
                    ("c-good", Registers(evaluators=[Judge])))
    assert pm.infos["b-broken"].errors == [
        "register_evaluators raised RuntimeError: no evaluators today"]
    assert pm.infos["b-broken"].components == []
    assert pm.infos["b-broken"].hooks == ["register_evaluators"]
    assert pm.infos["a-good"].errors == []
    assert pm.infos["a-good"].components == ["dataset-source:rows"]
    assert pm.infos["c-good"].components == ["evaluator:judge"]
    assert pm.get("dataset-source", "rows").cls is Rows
    assert pm.get("dataset-source", "rows").plugin == "a-good"
    assert pm.get("evaluator", "judge").cls is Judge
    assert pm.get("evaluator", "judge").name == "judge"
    assert "plugin b-broken skipped: register_evaluators raised RuntimeError: no evaluators " \
           "today" in caplog.text
    assert pm.versions() == {"a-good": None, "c-good": None}


class RaisesInSources:
    @hookimpl
    def register_dataset_sources(self, register):
        register(Rows)
        raise ValueError("half way")


def test_components_registered_before_a_raise_are_dropped_with_the_plugin():
    pm = loaded(("half", RaisesInSources()))
    assert pm.infos["half"].errors == ["register_dataset_sources raised ValueError: half way"]
    assert pm.infos["half"].components == []
    assert pm.infos["half"].status == "failed"
    assert pm.components["dataset-source"] == {}
    assert pm.pm.get_plugin("half") is None  # its hooks are unregistered too


@pytest.mark.parametrize("cls, message", [
    (Judge, f"{Judge!r} is not a subclass of DatasetSource"),
    (SimpleNamespace(name="x"), "namespace(name='x') is not a subclass of DatasetSource"),
    (Nameless, "Nameless has no 'name'"),
    (BadOptions, "dataset-source 'bad-options': Options must be a pydantic BaseModel subclass"),
])
def test_invalid_component_is_recorded_and_skipped(cls, message):
    pm = loaded(("bad", Registers(cls, Rows)), ("good", Registers(evaluators=[Judge])))
    assert pm.infos["bad"].errors == [message]
    assert pm.infos["bad"].components == []  # the whole plugin is skipped, valid ones too
    assert pm.components["dataset-source"] == {}
    assert pm.get("evaluator", "judge").plugin == "good"  # other plugins are untouched


def test_broken_options_schema_is_recorded():
    pm = loaded(("bad", Registers(BrokenSchema)))
    with pytest.raises(Exception) as why:  # pydantic's own reason, quoted in the message
        Unschemable.model_json_schema()
    assert pm.infos["bad"].errors == [
        f"dataset-source 'broken-schema': broken options model: {why.value}"]
    assert "Cannot generate a JsonSchema" in str(why.value)
    assert pm.components["dataset-source"] == {}


def test_duplicate_name_names_the_first_plugin():
    class OtherRows(DatasetSource):
        name = "rows"

    pm = loaded(("first", Registers(Rows)), ("second", Registers(OtherRows)))
    assert pm.infos["second"].errors == [
        "dataset-source name 'rows' is already registered by plugin 'first'"]
    assert pm.infos["second"].components == []
    assert pm.infos["first"].errors == []
    assert pm.get("dataset-source", "rows").cls is Rows


def test_same_name_in_different_kinds_is_fine():
    class RowsEvaluator(Evaluator):
        name = "rows"

    pm = loaded(("p", Registers(Rows, evaluators=[RowsEvaluator])))
    assert pm.infos["p"].errors == []
    assert pm.get("evaluator", "rows").cls is RowsEvaluator


# -- lookup --------------------------------------------------------------------------------
def test_get_unknown_name_suggests_and_lists_valid():
    class Jsonl(DatasetSource):
        name = "jsonl"

    pm = loaded(("p", Registers(Rows, Jsonl)))
    with pytest.raises(PluginError) as exc:
        pm.get("dataset-source", "jsnol")
    assert str(exc.value) == (
        "unknown dataset-source 'jsnol'; did you mean 'jsonl'? (valid: jsonl, rows)")
    assert isinstance(exc.value, TuneyardError)
    with pytest.raises(PluginError) as exc:
        pm.get("model-provider", "hf")
    assert str(exc.value) == "unknown model-provider 'hf' (valid: none)"


# -- lifecycle hooks -----------------------------------------------------------------------
def test_fire_isolates_failures_and_passes_subsets_of_kwargs(caplog):
    calls = []

    class Failing:
        @hookimpl
        def on_step_end(self, run_id, step, metrics):
            raise RuntimeError("exporter down")

    class StepOnly:
        @hookimpl
        def on_step_end(self, step):
            calls.append(("step-only", step))

    class Everything:
        @hookimpl
        def on_step_end(self, run_id, step, metrics):
            calls.append(("everything", run_id, step, metrics))

        @hookimpl
        def on_run_end(self, status):
            calls.append(("end", status))

    pm = Plugins()
    pm.register_plugin(Everything(), "everything")
    pm.register_plugin(Failing(), "failing")
    pm.register_plugin(StepOnly(), "step-only")
    with caplog.at_level(logging.WARNING, logger="tuneyard.core.plugins"):
        pm.fire("on_step_end", run_id="r1", step=3, metrics={"loss": 1.5})
        pm.fire("on_run_end", run_id="r1", status="completed", error=None)
    # last registered first (pluggy's order); the failing one does not stop the next
    assert calls == [("step-only", 3), ("everything", "r1", 3, {"loss": 1.5}), ("end", "completed")]
    assert "plugin failing: on_step_end raised RuntimeError: exporter down" in caplog.text


def test_fire_without_implementations_is_a_no_op():
    Plugins().fire("on_run_start", run_id="r", spec={}, output_dir="/tmp")


# -- entry points --------------------------------------------------------------------------
class FakeEntryPoint:
    def __init__(self, name, target=None, error=None, dist="tuneyard-extra"):
        self.name, self.target, self.error = name, target, error
        self.value = f"{name.replace('-', '_')}_module"
        self.dist = SimpleNamespace(name=dist, version="9.9")

    def load(self):
        if self.error:
            raise self.error
        return self.target


def test_entry_point_that_fails_to_import_is_isolated(monkeypatch, caplog):
    good = SimpleNamespace(register_dataset_sources=hookimpl(lambda register: register(Rows)))
    eps = [FakeEntryPoint("broken", error=ImportError("No module named 'missing_dep'")),
           FakeEntryPoint("good", target=good)]
    seen_groups = []

    def entry_points(group):
        seen_groups.append(group)
        return eps

    monkeypatch.setattr(plugins_mod.importlib.metadata, "entry_points", entry_points)
    pm = Plugins()
    with caplog.at_level(logging.WARNING, logger="tuneyard.core.plugins"):
        pm.load_entry_points()
    pm.collect_components()
    assert seen_groups == ["tuneyard"]
    broken = pm.infos["broken"]
    assert broken.errors == ["failed to load: ImportError: No module named 'missing_dep'"]
    assert (broken.version, broken.source, broken.hooks) == ("9.9", "package", [])
    assert pm.infos["good"].errors == []
    assert pm.infos["good"].hooks == ["register_dataset_sources"]
    assert pm.infos["good"].components == ["dataset-source:rows"]
    assert pm.versions() == {"good": "9.9"}
    assert "plugin broken skipped: failed to load: ImportError: No module named 'missing_dep'" \
           in caplog.text


def test_builtin_wins_a_name_clash_with_a_third_party_plugin(monkeypatch):
    """Built-ins load first whatever their entry-point names, so a third-party package cannot
    silently replace a built-in component."""
    def plugin():
        return SimpleNamespace(register_dataset_sources=hookimpl(lambda register: register(Rows)))

    eps = [FakeEntryPoint("a-third-party", target=plugin()),
           FakeEntryPoint("z-builtin", target=plugin(), dist="tuneyard")]
    monkeypatch.setattr(plugins_mod.importlib.metadata, "entry_points", lambda group: eps)
    pm = Plugins()
    pm.load_entry_points()
    pm.collect_components()
    assert pm.components["dataset-source"]["rows"].plugin == "z-builtin"
    assert pm.infos["a-third-party"].errors == [
        "dataset-source name 'rows' is already registered by plugin 'z-builtin'"]


def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_builtin_entry_points_load_without_error():
    pm = get_plugins()
    declared = pyproject()["project"]["entry-points"]["tuneyard"]
    version = importlib.metadata.version("tuneyard")
    for name in declared:
        info = pm.infos[name]
        assert (info.errors, info.source, info.version) == ([], "builtin", version), name
        assert info.hooks, name
        assert info.components or info.hooks == ["register_commands"], name
    assert {k: sorted(v) for k, v in pm.components.items()} == {
        "dataset-source": ["conll", "csv", "fortunes", "hf", "jsonl", "parquet", "text",
                           "wordnet"],
        "model-provider": ["gguf", "hf", "scratch"],
        "strategy": ["dpo", "full", "lora", "orpo", "pretrain-clm", "pretrain-mlm"],
        "evaluator": ["accuracy", "bleu", "exact-match", "masked-lm", "perplexity",
                      "preference", "rouge", "samples", "seqeval", "squad"],
        "device-monitor": ["cpu", "nvidia"],
    }
    for kind, items in pm.components.items():
        for name, comp in items.items():
            assert comp.cls.kind == kind
            assert comp.cls.name == name
            assert comp.cls.description, f"{kind} '{name}' has no description"
            assert f"{kind}:{name}" in pm.infos[comp.plugin].components
    tasks = {name: info.cls.tasks for name, info in pm.components["evaluator"].items()}
    assert tasks == {
        "accuracy": ("sequence-classification",), "seqeval": ("token-classification",),
        "masked-lm": ("masked-lm",), **{name: ("causal-lm",) for name in (
            "bleu", "exact-match", "perplexity", "preference", "rouge", "samples", "squad")}}
    assert pm.get("model-provider", "hf").plugin == "model-hf"
    assert issubclass(pm.get("model-provider", "gguf").cls, ModelProvider)


# -- hook specs ----------------------------------------------------------------------------
HOOKSPECS = [fn for _, fn in inspect.getmembers(hookspecs, inspect.isfunction)
             if hasattr(fn, "tuneyard_spec")]


def test_hookspecs_found():
    names = {fn.__name__ for fn in HOOKSPECS}
    assert set(REGISTRATION_HOOKS) <= names
    assert set(REGISTRATION_HOOKS.values()) == set(KINDS)
    assert {"register_commands", "on_run_start", "on_step_end", "on_evaluation",
            "on_checkpoint_saved", "on_run_end"} <= names


@pytest.mark.parametrize("spec", HOOKSPECS, ids=lambda fn: fn.__name__)
def test_hookspec_is_documented(spec):
    doc = inspect.getdoc(spec)
    assert doc, spec.__name__
    assert "\nRuns " in doc, "say when and in which process it runs"
    params = list(inspect.signature(spec).parameters)
    if params:
        assert "\nArgs:\n" in doc
        args = doc.split("\nArgs:\n", 1)[1].split("\nReturns:", 1)[0]
        for param in params:
            assert f"\n    {param}: " in "\n" + args, f"parameter {param} undocumented"
    assert "\nReturns:\n" in doc
    assert all(spec.__annotations__.get(p) for p in params), "parameters are typed"
    assert spec.__annotations__.get("return") is not None


ISOLATED = ("(isolated: the other plugins and the run are not affected; repeats are logged at "
            "debug level)")


# -- plugins directory, TUNEYARD_LOAD_PLUGINS, tracing ---------------------------------------
EVALUATOR_FILE = '''
from tuneyard.core.components import EvalResult, Evaluator
from tuneyard.core.hookspecs import hookimpl


class Nothing(Evaluator):
    name = "{name}"
    description = "always 0"

    def evaluate(self, ctx):
        return EvalResult({{"nothing": 0.0}})


@hookimpl
def register_evaluators(register):
    register(Nothing)
'''


def write(folder: Path, filename: str, text: str) -> Path:
    folder.mkdir(exist_ok=True)
    path = folder / filename
    path.write_text(text)
    return path


def test_plugins_directory_files_load_as_file_plugins(tmp_path):
    path = write(tmp_path, "my_eval.py", EVALUATOR_FILE.format(name="nothing"))
    write(tmp_path, "_helper.py", "raise RuntimeError('never imported')")
    write(tmp_path, "notes.txt", "not python")
    pm = Plugins()
    pm.load(tmp_path)
    info = pm.infos["my_eval"]
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:12]
    assert (info.source, info.version, info.path, info.package, info.status) == (
        "file", f"sha256:{digest}", str(path), None, "ok")
    assert info.hooks == ["register_evaluators"]
    assert info.components == ["evaluator:nothing"]
    assert pm.get("evaluator", "nothing").plugin == "my_eval"
    assert "_helper" not in pm.infos and "notes" not in pm.infos
    assert pm.infos["model-hf"].source == "builtin"  # built-ins load through the same call


def test_file_plugin_failures_are_isolated(tmp_path, caplog):
    write(tmp_path, "boom.py", "raise RuntimeError('kaboom at import')")
    write(tmp_path, "model-hf.py", EVALUATOR_FILE.format(name="other"))  # a built-in's name
    write(tmp_path, "twice.py", EVALUATOR_FILE.format(name="perplexity"))  # a built-in component
    write(tmp_path, "fine.py", EVALUATOR_FILE.format(name="fine"))
    pm = Plugins()
    with caplog.at_level(logging.WARNING, logger="tuneyard.core.plugins"):
        pm.load(tmp_path)
    assert pm.infos["boom"].errors == ["failed to load: RuntimeError: kaboom at import"]
    clash = pm.infos[f"model-hf [{tmp_path / 'model-hf.py'}]"]
    assert clash.errors == ["plugin name 'model-hf' is already taken by the builtin plugin "
                            "from tuneyard"]
    assert pm.infos["twice"].errors == [
        "evaluator name 'perplexity' is already registered by plugin 'evaluator-perplexity'"]
    assert pm.get("evaluator", "perplexity").plugin == "evaluator-perplexity"
    assert "other" not in pm.components["evaluator"]
    assert pm.get("evaluator", "fine").plugin == "fine"
    assert [r.getMessage() for r in caplog.records] == [
        "plugin boom skipped: failed to load: RuntimeError: kaboom at import",
        f"plugin model-hf [{tmp_path / 'model-hf.py'}] skipped: plugin name 'model-hf' is "
        "already taken by the builtin plugin from tuneyard",
        "plugin twice skipped: evaluator name 'perplexity' is already registered by plugin "
        "'evaluator-perplexity'"]


def test_missing_plugins_directory_is_a_warning(tmp_path, caplog):
    pm = Plugins()
    with caplog.at_level(logging.WARNING, logger="tuneyard.core.plugins"):
        pm.load(tmp_path / "nope")
    assert caplog.messages == [f"plugins directory {tmp_path / 'nope'} is not a folder; no file "
                               "plugins loaded"]
    assert pm.infos["model-hf"].status == "ok"


@pytest.mark.parametrize("only, loaded", [
    (None, {"a", "b"}), ([], set()), (["b"], {"b"}), (["a", "b", "unknown"], {"a", "b"})])
def test_load_only_names_third_party_plugins(tmp_path, only, loaded):
    write(tmp_path, "a.py", EVALUATOR_FILE.format(name="ev-a"))
    write(tmp_path, "b.py", EVALUATOR_FILE.format(name="ev-b"))
    pm = Plugins()
    pm.load(tmp_path, only)
    assert {n for n in ("a", "b") if pm.infos[n].status == "ok"} == loaded
    assert {n for n in ("a", "b") if pm.infos[n].disabled} == {"a", "b"} - loaded
    assert {c.plugin for c in pm.components["evaluator"].values()} - {
        n for n, info in pm.infos.items() if info.source == "builtin"} == loaded
    assert pm.infos["model-hf"].status == "ok"  # built-ins always load


def test_load_only_matches_distribution_names(monkeypatch):
    eps = [FakeEntryPoint("ep-name", target=Registers(Rows), dist="tuneyard-extra")]
    monkeypatch.setattr(plugins_mod.importlib.metadata, "entry_points", lambda group: eps)
    pm = Plugins()
    pm.load(None, ["tuneyard-extra"])
    assert (pm.infos["ep-name"].status, pm.infos["ep-name"].package) == ("ok", "tuneyard-extra")


def test_get_plugins_reads_the_environment(tmp_path, monkeypatch):
    write(tmp_path, "a.py", EVALUATOR_FILE.format(name="ev-a"))
    write(tmp_path, "b.py", EVALUATOR_FILE.format(name="ev-b"))
    monkeypatch.setenv("TUNEYARD_PLUGINS_DIR", str(tmp_path))
    monkeypatch.setenv("TUNEYARD_LOAD_PLUGINS", " b , ")
    get_plugins.cache_clear()
    try:
        pm = get_plugins()
        assert (pm.infos["a"].status, pm.infos["b"].status) == ("disabled", "ok")
    finally:
        get_plugins.cache_clear()


def test_trace_prints_every_hook_call_with_plugin_and_duration(tmp_path, capsys):
    write(tmp_path, "a.py", EVALUATOR_FILE.format(name="ev-a")
          + "\n@hookimpl\ndef on_run_end(status):\n    pass\n")
    pm = Plugins(trace=True)
    pm.load(tmp_path)
    pm.fire("on_run_end", run_id="r", status="completed", error=None)
    lines = capsys.readouterr().err.splitlines()
    pattern = re.compile(r"tuneyard trace: plugin (\S+): (\S+) \d+\.\d\d ms")
    calls = [pattern.fullmatch(line).groups() for line in lines]
    assert ("a", "import") in calls
    assert ("a", "register_evaluators") in calls
    assert ("evaluator-perplexity", "register_evaluators") in calls
    assert calls[-1] == ("a", "on_run_end")
    # one import per plugin, one call per hook implemented
    assert len(calls) == len(pm.infos) + sum(len(i.hooks) for i in pm.infos.values())
    assert ("tui", "register_commands") in calls


def test_sys_exit_and_typos_in_a_plugin_do_not_stop_the_host(tmp_path, capsys):
    write(tmp_path, "quits.py", "import sys\nsys.exit(3)\n")
    write(tmp_path, "typo.py", "from tuneyard.core.hookspecs import hookimpl\n\n\n@hookimpl\n"
                               "def register_evaluator(register):\n    pass\n")
    write(tmp_path, "chatty.py", "print('hello from import')\n" + EVALUATOR_FILE.format(
        name="chatty").replace("    register(Nothing)", "    print('registering')\n"
                                                        "    register(Nothing)"))
    write(tmp_path, "exits_later.py", "import sys\nfrom tuneyard.core.hookspecs import hookimpl"
                                      "\n\n\n@hookimpl\ndef register_evaluators(register):\n"
                                      "    sys.exit('bye')\n")
    pm = Plugins()
    pm.load(tmp_path)
    assert pm.infos["quits"].errors == ["failed to load: SystemExit: 3"]
    specs = sorted(fn.__name__ for fn in HOOKSPECS)
    assert pm.infos["typo"].errors == [
        "unknown hook 'register_evaluator'; did you mean 'register_evaluators'? "
        f"(valid: {', '.join(specs)})"]
    assert pm.infos["exits_later"].errors == ["register_evaluators raised SystemExit: bye"]
    assert pm.infos["chatty"].status == "ok"
    out = capsys.readouterr()
    assert out.out == ""  # a plugin's prints go to stderr: stdout stays the command's
    assert "hello from import\nregistering\n" in out.err


def test_base_exceptions_in_lifecycle_hooks_are_isolated_but_ctrl_c_is_not(caplog):
    calls = []

    class Exits:
        @hookimpl
        def on_run_end(self, status):
            raise SystemExit(0)

    class Odd:
        @hookimpl
        def on_run_end(self, status):
            raise BaseException("bx")

    class Records:
        @hookimpl
        def on_run_end(self, status):
            calls.append(status)

    class CtrlC:
        @hookimpl
        def on_step_end(self, step):
            raise KeyboardInterrupt

    pm = Plugins()
    for name, plugin in (("records", Records()), ("exits", Exits()), ("odd", Odd()),
                         ("ctrl-c", CtrlC())):
        pm.register_plugin(plugin, name)
    with caplog.at_level(logging.WARNING, logger="tuneyard.core.plugins"):
        pm.fire("on_run_end", run_id="r", status="completed", error=None)
    assert calls == ["completed"]
    assert caplog.messages == [
        f"plugin odd: on_run_end raised BaseException: bx {ISOLATED}",
        f"plugin exits: on_run_end raised SystemExit: 0 {ISOLATED}"]
    with pytest.raises(KeyboardInterrupt):  # the user's Ctrl-C still stops tuneyard
        pm.fire("on_step_end", run_id="r", step=1, metrics={})


def test_a_command_name_clash_skips_the_plugin_and_restores_the_command():
    import click

    @click.group()
    def group():
        pass

    @group.command()
    def run():
        """The real run."""

    class Hijacks:
        @hookimpl
        def register_commands(self, cli):
            @cli.command("extra")
            def extra():
                pass

            @cli.command("run")
            def fake_run():
                """Hijacked."""

    class HalfThenRaises:
        @hookimpl
        def register_commands(self, cli):
            @cli.command("half")
            def half():
                pass

            raise RuntimeError("commands boom")

    class Fine:
        @hookimpl
        def register_commands(self, cli):
            @cli.command("fine")
            def fine():
                pass

    pm = loaded(("hijacks", Hijacks()), ("half", HalfThenRaises()), ("fine", Fine()))
    pm.collect_commands(dict(group.commands))
    assert list(pm.commands) == ["fine"]
    assert list(group.commands) == ["run"]  # a copy is handed to the plugins
    assert pm.pm.get_plugin("hijacks") is None and pm.pm.get_plugin("half") is None
    assert pm.infos["hijacks"].errors == ["register_commands: command 'run' is already taken"]
    assert pm.infos["half"].errors == ["register_commands raised RuntimeError: commands boom"]
    assert pm.infos["fine"].status == "ok"


def test_component_names_are_checked():
    class Shouting(Evaluator):
        name = "My Weird Name!"

    pm = loaded(("p", Registers(evaluators=[Shouting])))
    assert pm.infos["p"].errors == [
        "evaluator name 'My Weird Name!': use lower-case letters, digits and dashes "
        "(e.g. 'token-f1')"]


def test_load_only_warns_about_unknown_names_and_normalises_them(tmp_path, caplog, monkeypatch):
    eps = [FakeEntryPoint("ep-name", target=Registers(Rows), dist="tuneyard-extra")]
    monkeypatch.setattr(plugins_mod.importlib.metadata, "entry_points", lambda group: eps)
    pm = Plugins()
    with caplog.at_level(logging.WARNING, logger="tuneyard.core.plugins"):
        pm.load(None, ["Tuneyard_Extra", "nosuch"])
    assert pm.infos["ep-name"].status == "ok"
    assert caplog.messages == ["TUNEYARD_LOAD_PLUGINS names 'nosuch', which is not a third-party "
                               "plugin (installed: ep-name)"]


def test_plugin_files_can_import_underscore_helpers(tmp_path):
    write(tmp_path, "_shared.py", "NAME = 'from-helper'\n")
    write(tmp_path, "uses.py", "from _shared import NAME\n" + EVALUATOR_FILE.format(
        name="{NAME}").replace('name = "{NAME}"', "name = NAME"))
    pm = Plugins()
    pm.load(tmp_path)
    assert pm.infos["uses"].errors == []
    assert pm.get("evaluator", "from-helper").plugin == "uses"
    assert "_shared" not in pm.infos


def test_unreadable_files_in_the_plugins_directory_are_isolated(tmp_path):
    write(tmp_path, "good.py", EVALUATOR_FILE.format(name="good"))
    (tmp_path / "dangling.py").symlink_to(tmp_path / "gone.py")
    (tmp_path / "folder.py").mkdir()
    shared = write(tmp_path / "shared", "impl_v2.py", EVALUATOR_FILE.format(name="linked"))
    (tmp_path / "notifier.py").symlink_to(shared)
    pm = Plugins()
    pm.load(tmp_path, [])  # even with every third-party plugin disabled
    assert pm.infos["dangling"].errors == [
        f"cannot read {tmp_path / 'dangling.py'}: No such file or directory"]
    assert "folder" not in pm.infos
    assert pm.infos["good"].disabled and pm.infos["notifier"].disabled  # named after the link
    assert pm.infos["model-hf"].status == "ok"


def test_a_skipped_plugin_does_not_block_a_later_plugin_with_the_same_component():
    class Flaky:
        @hookimpl
        def register_evaluators(self, register):
            register(Judge)
            raise RuntimeError("half way")

    class Twice:
        @hookimpl
        def register_dataset_sources(self, register):
            register(Rows)
            register(Rows)

    pm = loaded(("a-flaky", Flaky()), ("b-good", Registers(evaluators=[Judge])),
                ("c-twice", Twice()))
    assert pm.get("evaluator", "judge").plugin == "b-good"
    assert pm.infos["b-good"].errors == []
    assert pm.infos["c-twice"].errors == [
        "dataset-source name 'rows' is already registered by plugin 'c-twice'"]
    assert pm.components["dataset-source"] == {}


def test_unknown_component_mentions_plugins_not_loaded(tmp_path):
    write(tmp_path, "off.py", EVALUATOR_FILE.format(name="off"))
    write(tmp_path, "boom.py", "raise RuntimeError('x')")
    pm = Plugins()
    pm.load(tmp_path, ["boom"])
    with pytest.raises(PluginError) as exc:
        pm.get("evaluator", "off")
    assert str(exc.value).endswith(
        "; not loaded: boom (skipped), off (disabled by TUNEYARD_LOAD_PLUGINS) (see tuneyard "
        "plugins list)")


@pytest.mark.parametrize("value, on", [("", False), ("0", False), ("false", False),
                                       ("Off", False), ("no", False), ("1", True),
                                       ("yes", True)])
def test_trace_switch(monkeypatch, value, on):
    monkeypatch.setenv("TUNEYARD_TRACE_PLUGINS", value)
    assert Plugins().trace is on


def test_uninstall_resolves_the_exact_plugin_name_first():
    file_info = plugins_mod.PluginInfo("length_ratio", "sha256:0", "file", None, "/p/l.py")
    pkg_info = plugins_mod.PluginInfo("length-ratio", "0.1.0", "package",
                                      "tuneyard-length-ratio", "tuneyard_length_ratio")
    pm = Plugins()
    pm.infos = {"length_ratio": file_info, "length-ratio": pkg_info}
    with pytest.raises(TuneyardError) as exc:
        plugins_mod.package_of(pm, "length_ratio")
    assert str(exc.value) == ("plugins uninstall: length_ratio is a plugins-directory file; "
                              "delete /p/l.py instead")
    assert plugins_mod.package_of(pm, "length-ratio") == "tuneyard-length-ratio"
    assert plugins_mod.package_of(pm, "Tuneyard_Length.Ratio") == "tuneyard-length-ratio"
