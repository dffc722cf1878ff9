"""Packaging and boundaries: the wheel holds every package and built-in plugin (a package
missing from ``[tool.setuptools] packages`` drops silently from the wheel but not from an
editable install); core/plugins never import the TUI; the TUI never imports torch & co;
``tuneyard --help`` stays light."""

from __future__ import annotations

import ast
import json
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> zipfile.ZipFile:
    """The wheel built (offline, no isolation) from a copy of the source tree."""
    src = tmp_path_factory.mktemp("src")
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    shutil.copy(ROOT / "pyproject.toml", src)
    for extra in ("README.md", "LICENSE"):
        if (ROOT / extra).exists():
            shutil.copy(ROOT / extra, src)
    for folder in sorted({d.split("/")[0] for d in PYPROJECT["tool"]["setuptools"]["package-dir"]
                          .values()}):
        shutil.copytree(ROOT / folder, src / folder, ignore=ignore)
    out = tmp_path_factory.mktemp("dist")
    proc = subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(out),
         str(src)],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    [whl] = out.glob("tuneyard-*.whl")
    with zipfile.ZipFile(whl) as zf:
        yield zf


def test_wheel_has_every_package(wheel):
    names = set(wheel.namelist())
    packages = PYPROJECT["tool"]["setuptools"]["packages"]
    assert "tuneyard.core" in packages and "tuneyard.tui" in packages
    for package in packages:
        assert f"{package.replace('.', '/')}/__init__.py" in names, package
    # every sub-package on disk is declared (else it silently drops from the wheel)
    for short, folder in PYPROJECT["tool"]["setuptools"]["package-dir"].items():
        for init in (ROOT / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / folder).parts
            package = ".".join((short, *rel))
            assert package in packages, f"{package} ({init.parent}) missing from packages"


def test_wheel_has_every_core_module(wheel):
    names = set(wheel.namelist())
    for module in sorted((ROOT / "core").glob("*.py")):
        assert f"tuneyard/core/{module.name}" in names


def test_wheel_has_builtin_plugins_and_console_script(wheel):
    names = set(wheel.namelist())
    declared = PYPROJECT["project"]["entry-points"]["tuneyard"]
    assert len(declared) >= 13
    for name, module in declared.items():
        assert f"{module.replace('.', '/')}.py" in names, f"entry point {name}: {module}"
    [ep_file] = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
    entry_points = wheel.read(ep_file).decode()
    assert "[console_scripts]\ntuneyard = tuneyard.core.cli:main\n" in entry_points
    for name, module in declared.items():
        assert f"{name} = {module}\n" in entry_points
    assert PYPROJECT["project"]["scripts"] == {"tuneyard": "tuneyard.core.cli:main"}


# -- import boundaries ---------------------------------------------------------------------
def imported_modules(path: Path, package: str = "") -> set[str]:
    """Dotted names of every module ``path`` imports, anywhere in the file; relative imports
    are resolved against ``package`` (the dotted package the file belongs to)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(parts + ([node.module] if node.module else []))
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def package_of(path: Path) -> str:
    """The dotted package of a source file, from pyproject's ``package-dir``."""
    dirs = PYPROJECT["tool"]["setuptools"]["package-dir"].items()
    short, folder = max(((s, f) for s, f in dirs if path.is_relative_to(ROOT / f)),
                        key=lambda item: len(item[1]))
    return ".".join((short, *path.parent.relative_to(ROOT / folder).parts))


def violations(folders: list[str], forbidden: list[str]) -> list[str]:
    out = []
    for folder in folders:
        for path in sorted((ROOT / folder).rglob("*.py")):
            for name in sorted(imported_modules(path, package_of(path))):
                if any(name == f or name.startswith(f + ".") for f in forbidden):
                    out.append(f"{path.relative_to(ROOT)} imports {name}")
    return out


def test_imported_modules_sees_every_form(tmp_path):
    path = tmp_path / "m.py"
    path.write_text("import textual.app\nfrom tuneyard import tui\n"
                    "def f():\n    from torch import nn\n    import transformers as t\n"
                    "from .. import tui\nfrom ..tui.app import App\nfrom . import spec\n")
    assert imported_modules(path, "tuneyard.core") == {
        "textual.app", "tuneyard", "tuneyard.tui", "torch", "torch.nn", "transformers",
        "tuneyard.tui.app", "tuneyard.tui.app.App", "tuneyard.core", "tuneyard.core.spec"}


def test_core_and_plugins_never_import_the_tui():
    assert violations(["core", "plugins"], ["textual", "tuneyard.tui"]) == []


def test_tui_never_imports_training_libraries():
    assert violations(["tui"], ["torch", "transformers", "peft", "datasets", "accelerate"]) == []


def core_import_graph() -> dict[str, set[str]]:
    """Module → the ``tuneyard.core`` modules it imports, anywhere in the file (lazy imports
    inside functions too: a circle of lazy imports is still a circle)."""
    modules = {}
    for path in sorted((ROOT / "core").rglob("*.py")):
        name = package_of(path) + ("" if path.stem == "__init__" else f".{path.stem}")
        modules[name] = imported_modules(path, package_of(path))
    return {name: {m for m in imports if m in modules and m != name}
            for name, imports in modules.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every import circle of ``graph``, once each (Tarjan's strongly connected components
    of more than one module, sorted)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(found)


def test_cycles_finds_a_lazy_circle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_core_has_no_import_circle():
    graph = core_import_graph()
    assert "tuneyard.core.cli" not in graph["tuneyard.core.plugins"]  # the CLI is a plugin
    assert cycles(graph) == []


def test_no_module_of_the_run_package_is_over_400_lines():
    lengths = {p.name: len(p.read_text().splitlines()) for p in (ROOT / "core/run").glob("*.py")}
    assert {"pipeline.py", "data.py", "model.py", "train.py", "evaluate.py", "checkpoints.py",
            "lifecycle.py", "__main__.py"} <= set(lengths)
    assert {name: n for name, n in lengths.items() if n > 400} == {}


# -- a light CLI ---------------------------------------------------------------------------
HELP = """
import json, sys
sys.argv = ["tuneyard", "--help"]
from tuneyard.core.cli import main
try:
    main()
except SystemExit as exc:
    code = exc.code
heavy = sorted(m for m in ("torch", "transformers", "peft", "datasets", "accelerate", "textual")
               if m in sys.modules)
print(json.dumps({"code": code, "heavy": heavy}))
"""


def test_help_does_not_import_torch_or_transformers():
    proc = subprocess.run([sys.executable, "-c", HELP], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    *help_lines, last = proc.stdout.strip().splitlines()
    assert json.loads(last) == {"code": 0, "heavy": []}
    assert "Usage: tuneyard" in "\n".join(help_lines)


RUNS_LIST = """
import json, sys
sys.argv = ["tuneyard", "--registry", sys.argv[1], "runs", "list"]
from tuneyard.core.cli import main
try:
    main()
except SystemExit as exc:
    code = exc.code
loaded = sorted(m for m in ("tuneyard.core.plugins", "pydantic", "pandas", "numpy", "torch")
                if m in sys.modules)
print(json.dumps({"code": code, "loaded": loaded}))
"""


def test_runs_list_loads_no_plugin_and_neither_pandas_nor_numpy(tmp_path):
    """A command of tuneyard's own starts without the plugins (``--help`` and a plugin's
    command load them), and the registry without what sqlite-utils imports when installed."""
    from tuneyard.core.registry import Registry

    Registry(tmp_path / "registry.db").create_run({"name": "listed"})
    proc = subprocess.run([sys.executable, "-c", RUNS_LIST, str(tmp_path / "registry.db")],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    *table, last = proc.stdout.strip().splitlines()
    assert json.loads(last) == {"code": 0, "loaded": []}
    assert "listed" in "\n".join(table)


SLOW_PLUGIN = """
import pathlib, time
pathlib.Path(__file__).with_name("imported").write_text("yes")
time.sleep(3)  # a plugin whose import is slow
"""


def test_version_answers_without_importing_a_slow_plugin(tmp_path):
    """A plugin whose import took 3 s made ``tuneyard --version`` take 3.4 s (simonw/llm
    #732): the version is read before any plugin loads."""
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "slow.py").write_text(SLOW_PLUGIN)
    proc = subprocess.run([sys.executable, "-m", "tuneyard.core.cli", "--plugins-dir",
                           str(plugins), "--version"], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("tuneyard, version ")
    assert not (plugins / "imported").exists()  # the slow plugin was never imported
    listed = subprocess.run([sys.executable, "-m", "tuneyard.core.cli", "--plugins-dir",
                             str(plugins), "--help"], capture_output=True, text=True,
                            timeout=60)
    assert listed.returncode == 0 and (plugins / "imported").exists()  # --help loads them
