"""The plugin commands and isolation as a user meets them: ``--plugins-dir``, ``plugins list``,
``plugins install/uninstall`` argument checks, a broken plugin next to ``--help``, a failing
component failing its run with the plugin named, and the plugin versions a run records."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from tuneyard.core.cli import cli
from tuneyard.core.components import EvalResult, Evaluator
from tuneyard.core.errors import PluginFailed, TuneyardError
from tuneyard.core.plugins import get_plugins, pip_argv
from tuneyard.core.registry import Registry
from tuneyard.core.run.evaluate import checked_result

BOOM = "raise RuntimeError('kaboom at import')\n"

HELLO = '''
import click
from tuneyard.core.hookspecs import hookimpl


@hookimpl
def register_commands(cli):
    @cli.command()
    def hello():
        """Say hello."""
        click.echo("hello from a plugin")
'''

BAD_COMMANDS = '''
from tuneyard.core.hookspecs import hookimpl


@hookimpl
def register_commands(cli):
    raise ValueError("no commands today")
'''

FRAGILE = '''
from tuneyard.core.components import EvalResult, Evaluator
from tuneyard.core.hookspecs import hookimpl


class Fragile(Evaluator):
    name = "fragile"
    description = "divides by the number of empty references"

    def evaluate(self, ctx):
        empty = sum(1 for e in ctx.examples if not e.completion)
        return EvalResult({"ratio": len(ctx.examples) / empty})


class Count(Evaluator):
    name = "count"
    description = "how many held-out examples"

    def evaluate(self, ctx):
        return EvalResult({"examples": float(len(ctx.examples))})


@hookimpl
def register_evaluators(register):
    register(Fragile)
    register(Count)
'''


@pytest.fixture(autouse=True)
def no_plugins_dir(monkeypatch):
    """``--plugins-dir`` sets TUNEYARD_PLUGINS_DIR in os.environ; restore it and the plugin
    manager after each test."""
    monkeypatch.setenv("TUNEYARD_PLUGINS_DIR", "")
    get_plugins.cache_clear()
    yield
    get_plugins.cache_clear()


def plugins_dir(tmp_path: Path, **files: str) -> Path:
    folder = tmp_path / "plugins"
    folder.mkdir()
    for name, text in files.items():
        (folder / f"{name}.py").write_text(text)
    return folder


def tuneyard(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None):
    """Run the real console entry point in a child process."""
    return subprocess.run([sys.executable, "-m", "tuneyard.core.cli", *args], capture_output=True,
                          text=True, env=env, cwd=cwd, timeout=120)


def test_help_and_plugins_list_work_with_a_plugin_that_raises_on_import(tmp_path):
    folder = plugins_dir(tmp_path, boom=BOOM, hello=HELLO)
    warning = "plugin boom skipped: failed to load: RuntimeError: kaboom at import"
    helped = tuneyard("--plugins-dir", str(folder), "--help", cwd=tmp_path)
    assert helped.returncode == 0, helped.stderr
    assert helped.stdout.startswith("Usage: tuneyard [OPTIONS] [COMMAND] [ARGS]...")
    assert "hello Say hello." in " ".join(helped.stdout.split())  # the healthy plugin works
    assert warning in " ".join(helped.stderr.split())
    listed = tuneyard(f"--plugins-dir={folder}", "plugins", "list", cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert warning in " ".join(listed.stderr.split())
    assert f"{warning}\n" in listed.stdout
    rows = {line.split()[0]: line.split() for line in listed.stdout.splitlines()
            if line.startswith(("boom ", "hello "))}
    assert rows["boom"][1:] == [rows["boom"][1], "file", "skipped"]
    assert rows["hello"][2:] == ["file", "register_commands", "ok"]
    said = tuneyard("--plugins-dir", str(folder), "hello", cwd=tmp_path)
    assert (said.returncode, said.stdout) == (0, "hello from a plugin\n")


def test_a_register_commands_failure_is_isolated(tmp_path):
    folder = plugins_dir(tmp_path, bad=BAD_COMMANDS, hello=HELLO)
    env = {**subprocess_env(), "TUNEYARD_PLUGINS_DIR": str(folder)}
    helped = tuneyard("--help", env=env, cwd=tmp_path)
    assert helped.returncode == 0
    assert "plugin bad skipped: register_commands raised ValueError: no commands today" in (
        " ".join(helped.stderr.split()))
    assert "hello" in helped.stdout


def test_load_plugins_empty_loads_no_third_party_plugin(tmp_path):
    folder = plugins_dir(tmp_path, boom=BOOM, hello=HELLO)
    env = {**subprocess_env(), "TUNEYARD_PLUGINS_DIR": str(folder), "TUNEYARD_LOAD_PLUGINS": ""}
    listed = tuneyard("plugins", "list", "--json", env=env, cwd=tmp_path)
    assert (listed.returncode, listed.stderr) == (0, "")  # nothing imported, nothing to warn
    assert {p["name"]: p["status"] for p in json.loads(listed.stdout)} == {
        "boom": "disabled", "hello": "disabled"}


def subprocess_env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if not k.startswith("TUNEYARD_")}


def test_plugins_list_json_all_matches_the_registry(tmp_path):
    folder = plugins_dir(tmp_path, hello=HELLO)
    reg = tmp_path / "registry.db"
    Registry(reg)  # plugins list records into an existing registry
    runner = CliRunner()
    third = runner.invoke(cli, ["--plugins-dir", str(folder), "plugins", "list", "--json"])
    assert [p["name"] for p in json.loads(third.output)] == ["hello"]
    result = runner.invoke(cli, ["--registry", str(reg), "--plugins-dir", str(folder), "plugins",
                                 "list", "--json", "--all"])
    assert result.exit_code == 0, result.output
    listed = json.loads(result.output)
    rows = list(Registry(reg).db.query("SELECT * FROM plugins ORDER BY rowid"))
    assert [(p["name"], p["version"], p["source"], p["package"], p["path"], p["status"],
             p["hooks"], p["components"]) for p in listed] == [
        (r["name"], r["version"], r["source"], r["package"], r["path"], r["status"],
         json.loads(r["hooks"]), json.loads(r["components"])) for r in rows]
    assert listed[-1]["source"] == "file" and listed[0]["source"] == "builtin"
    lora = next(p for p in listed if p["name"] == "strategy-lora")
    assert lora["options"]["strategy:lora"]["properties"]["r"]["default"] == 8


def test_plugins_list_without_third_party_plugins_says_so():
    result = CliRunner().invoke(cli, ["plugins", "list"])
    assert result.exit_code == 0
    assert " ".join(result.output.split()) == (
        "No third-party plugins (install one: tuneyard plugins install NAME|PATH; --all lists "
        "the built-ins too).")


# -- install / uninstall arguments ---------------------------------------------------------
def test_pip_argv_is_a_list_in_this_interpreter(tmp_path):
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    assert pip_argv("install", "tuneyard-text2sql") == [
        sys.executable, "-m", "pip", "install", "tuneyard-text2sql"]
    assert pip_argv("install", "tuneyard-x>=1.0", upgrade=True) == [
        sys.executable, "-m", "pip", "install", "--upgrade", "tuneyard-x>=1.0"]
    assert pip_argv("install", str(pkg), editable=True) == [
        sys.executable, "-m", "pip", "install", "--editable", str(pkg)]
    assert pip_argv("uninstall", "tuneyard-text2sql") == [
        sys.executable, "-m", "pip", "uninstall", "--yes", "tuneyard-text2sql"]


@pytest.mark.parametrize("args, message", [
    (["install", "--", "--index-url=http://evil"],
     "plugins install: '--index-url=http://evil' looks like an option, not a package name or "
     "path"),
    (["install", "--", "-r"], "plugins install: '-r' looks like an option, not a package name or "
                              "path"),
    (["install", "--editable", "tuneyard-text2sql"],
     "plugins install --editable: tuneyard-text2sql is not a folder; --editable installs a local "
     "package folder (one with a pyproject.toml)"),
    (["install", "tuneyard-x>=1.0; rm -rf /"],
     "plugins install: 'tuneyard-x>=1.0; rm -rf /' is neither a path here nor a package name "
     "(NAME or NAME==VERSION): Expected a marker variable or quoted string"),
    (["install", " "], "plugins install: give a package name or path"),
    (["uninstall", "--", "-y"], "plugins uninstall: '-y' looks like an option, not a package "
                                "name or path"),
    (["uninstall", "tuneyard"], "plugins uninstall: tuneyard is tuneyard itself, not a plugin"),
    (["uninstall", "tuneyard==0.1.0"],
     "plugins uninstall: no installed plugin or plugin package named 'tuneyard==0.1.0' "
     "(installed: none)"),
    (["uninstall", "requests"], "plugins uninstall: no installed plugin or plugin package "
                                "named 'requests' (installed: none)"),
    (["uninstall", "model-hf"], "plugins uninstall: model-hf is a built-in plugin, part of "
                                "tuneyard; it cannot be uninstalled"),
])
def test_install_and_uninstall_refuse_bad_arguments(args, message):
    result = CliRunner().invoke(cli, ["plugins", *args])
    assert result.exit_code == 2
    assert " ".join(result.output.split()) == f"Error: {message}"


def test_uninstall_of_a_file_plugin_says_to_delete_the_file(tmp_path):
    folder = plugins_dir(tmp_path, hello=HELLO)
    result = CliRunner().invoke(cli, ["--plugins-dir", str(folder), "plugins", "uninstall",
                                      "hello"])
    assert result.exit_code == 2
    assert " ".join(result.output.split()) == (
        f"Error: plugins uninstall: hello is a plugins-directory file; delete "
        f"{folder / 'hello.py'} instead")


def test_pip_argv_without_pip(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "pip" else real(name, *a))
    with pytest.raises(TuneyardError) as exc:
        pip_argv("install", "tuneyard-x")
    assert str(exc.value) == (f"pip is not installed in tuneyard's interpreter ({sys.executable});"
                              f" add it with: {sys.executable} -m ensurepip")


# -- a run and its plugins -----------------------------------------------------------------
def run_with(folder: Path, spec: Path) -> tuple[object, Registry]:
    """``tuneyard --plugins-dir FOLDER run SPEC`` in this process, into a registry next to the
    spec; returns click's result and the registry."""
    reg = spec.parent / "registry.db"
    result = CliRunner().invoke(cli, ["--registry", str(reg), "--plugins-dir", str(folder),
                                      "run", str(spec)])
    return result, Registry(reg)


def test_a_failing_evaluator_fails_the_run_naming_its_plugin(tmp_path, qa_jsonl, make_spec):
    folder = plugins_dir(tmp_path, fragile=FRAGILE)
    result, registry = run_with(folder, make_spec(qa_jsonl, **{"training.max_steps": 2, "evaluators": [{"name": "fragile"}]}))
    assert result.exit_code == 1  # a bug in the plugin: a failed run, not a user error
    message = ("evaluator 'fragile' (plugin fragile) failed to evaluate: ZeroDivisionError: "
               "division by zero")
    assert f"Error: {message}" in " ".join(result.output.split())
    [run] = registry.list_runs()
    assert (run["status"], run["error"]) == ("failed", message)


def test_a_run_records_the_versions_of_the_plugins_it_used(tmp_path, qa_jsonl, make_spec):
    folder = plugins_dir(tmp_path, fragile=FRAGILE)
    result, registry = run_with(folder, make_spec(qa_jsonl, **{"training.max_steps": 2, "evaluators": [{"name": "count"}]}))
    assert result.exit_code == 0, result.output
    [run] = registry.list_runs()
    versions = registry.get_run(run["id"])["plugin_versions"]
    builtin = get_plugins().infos["model-hf"].version
    assert versions == {
        "dataset-files": builtin, "model-hf": builtin, "strategy-lora": builtin,
        "fragile": get_plugins().infos["fragile"].version,
        "monitor-cpu": builtin, "monitor-nvidia": builtin}
    assert versions["fragile"].startswith("sha256:")
    evals = registry.evaluations(run["id"])
    assert {(e["checkpoint"], e["metric"], e["value"]) for e in evals} == {
        ("base", "examples", 8.0), ("final", "examples", 8.0)}


MONITORS = '''
from pydantic import BaseModel
from tuneyard.core.components import DeviceMonitor
from tuneyard.core.hookspecs import hookimpl


class Needs(BaseModel):
    endpoint: str


class Remote(DeviceMonitor):
    name = "remote"
    description = "needs an endpoint it is never given"
    Options = Needs


class Offline(DeviceMonitor):
    name = "offline"
    description = "cannot reach its device"

    def __init__(self, options):
        raise ConnectionError("no device at /dev/accel0")


@hookimpl
def register_device_monitors(register):
    register({cls})
'''


def test_device_monitors_that_cannot_be_built_are_skipped(tmp_path, qa_jsonl, make_spec):
    folder = plugins_dir(tmp_path, remote=MONITORS.format(cls="Remote"),
                         offline=MONITORS.format(cls="Offline"))
    result, registry = run_with(folder, make_spec(qa_jsonl, **{"training.max_steps": 2}))
    assert result.exit_code == 0, result.output
    [error] = get_plugins().infos["remote"].errors  # caught when it registers
    assert error.startswith("device-monitor 'remote': every option needs a default (monitors "
                            "are built without options): 1 validation error for Needs endpoint "
                            "Field required")
    [run] = registry.list_runs()
    assert run["status"] == "completed"
    log = (Path(run["output_dir"]) / "run.log").read_text()
    assert "WARNING device monitor offline (plugin offline) could not start, skipped: " \
           "ConnectionError: no device at /dev/accel0" in log


@pytest.mark.parametrize("returned, what", [
    (None, "NoneType, not an EvalResult"),
    (EvalResult({"x": "not a float"}), "metric 'x' = 'not a float'; metrics map names to numbers"),
    (EvalResult({"ok": True}), "metric 'ok' = True; metrics map names to numbers"),
    (EvalResult({"x": 1.0}, [{"seen": {1, 2}}]),
     "details that are not JSON (Object of type set is not JSON serializable)"),
])
def test_an_evaluator_that_breaks_its_contract_is_named(returned, what):
    class Sloppy(Evaluator):
        name = "sloppy"

    with pytest.raises(PluginFailed) as exc:
        checked_result(Sloppy(None), {"evaluator:sloppy": "sloppy-plugin"}, returned)
    assert str(exc.value) == f"evaluator 'sloppy' (plugin sloppy-plugin) evaluate() returned {what}"
    assert exc.value.exit_code == 1


def test_checked_result_keeps_a_good_result_as_floats():
    result = checked_result(None, {}, EvalResult({"n": 3, "f1": 0.5}, [{"a": [1]}]))
    assert (result.metrics, result.details) == ({"n": 3.0, "f1": 0.5}, [{"a": [1]}])
    assert type(result.metrics["n"]) is float


def test_plugins_new_refuses_a_name_already_taken(tmp_path):
    result = CliRunner().invoke(cli, ["plugins", "new", "perplexity", "--dir", str(tmp_path)])
    assert result.exit_code == 2
    assert " ".join(result.output.split()) == (
        "Error: plugins new: the name 'perplexity' is taken by plugin 'evaluator-perplexity'; "
        "choose another (a second one would be skipped when loaded)")
    assert list(tmp_path.iterdir()) == []


BROKEN_PACKAGE = {
    "pyproject.toml": '[build-system]\nrequires = ["setuptools>=61"]\n'
                      'build-backend = "setuptools.build_meta"\n\n[project]\n'
                      'name = "tuneyard-broken"\nversion = "0.1.0"\n\n'
                      '[project.entry-points.tuneyard]\nbroken = "tuneyard_broken"\n',
    "tuneyard_broken/__init__.py": "import a_module_that_is_not_installed\n",
}


def test_an_installed_package_that_raises_on_import(fresh_venv, tmp_path):
    pkg = tmp_path / "tuneyard-broken"
    for rel, text in BROKEN_PACKAGE.items():
        (pkg / rel).parent.mkdir(parents=True, exist_ok=True)
        (pkg / rel).write_text(text)
    installed = tuneyard_in(fresh_venv, "plugins", "install", str(pkg), cwd=tmp_path)
    error = ("failed to load: ModuleNotFoundError: No module named "
             "'a_module_that_is_not_installed'")
    assert installed.returncode == 1  # installed, but it does not load: say so, exit 1
    assert " ".join(installed.stderr.split()).endswith(
        f"Error: plugin broken is installed but skipped: {error} (fix it, or tuneyard plugins "
        "uninstall tuneyard-broken)")
    helped = tuneyard_in(fresh_venv, "--help", cwd=tmp_path)
    assert helped.returncode == 0 and helped.stdout.startswith("Usage: tuneyard")
    assert f"plugin broken skipped: {error}" in " ".join(helped.stderr.split())
    listed = tuneyard_in(fresh_venv, "plugins", "list", "--json", cwd=tmp_path)
    [plugin] = json.loads(listed.stdout)
    assert (plugin["name"], plugin["source"], plugin["status"], plugin["errors"]) == (
        "broken", "package", "failed", [error])
    removed = tuneyard_in(fresh_venv, "plugins", "uninstall", "broken", cwd=tmp_path)
    assert removed.returncode == 0, removed.stderr
    assert removed.stdout.endswith("uninstalled tuneyard-broken\n")


def tuneyard_in(python: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(python), "-m", "tuneyard.core.cli", *args], capture_output=True,
                          text=True, cwd=cwd, timeout=300)
