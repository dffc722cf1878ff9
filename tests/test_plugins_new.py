"""``tuneyard plugins new`` (:mod:`tuneyard.core.scaffold`): its validation messages, the
files it writes for each kind, and the acceptance test: the generated package installs into a
fresh environment, tuneyard sees its entry point, and its own tests pass there. The last test
installs the four kinds together, runs their tests, and makes a tuneyard run of them."""

from __future__ import annotations

import ast
import importlib.util
import json
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

from tuneyard.core.errors import TuneyardError
from tuneyard.core.plugins import Plugins
from tuneyard.core.scaffold import SCAFFOLD_KINDS, new_plugin

#: kind → a plugin name to generate it under
NAMES = {"evaluator": "answer-f1", "dataset-source": "capitals",
         "model-provider": "local-folder", "strategy": "bitfit"}
#: kinds whose package gets the acceptance test of its own; every kind installs and passes its
#: tests in test_generated_components_make_a_run (each separate install + pytest takes 8-19 s).
ACCEPTANCE_KINDS = ("evaluator",)
HOOKS = {"evaluator": "register_evaluators", "dataset-source": "register_dataset_sources",
         "model-provider": "register_model_providers",
         "strategy": "register_training_strategies"}


def import_generated(pkg: Path, module_name: str):
    """Import ``src/<module_name>/__init__.py`` of a generated package by path."""
    init = pkg / "src" / module_name / "__init__.py"
    spec = importlib.util.spec_from_file_location(f"_scaffold_{module_name}", init)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run(argv: list, cwd: Path | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in argv], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)


def install_and_test(python: Path, pkgs: list[Path], names: list[str]) -> None:
    """pip-install ``pkgs`` into the environment of ``python`` (one pip call), then
    :func:`check_installed`."""
    installed = run([python, "-m", "pip", "install", *pkgs])
    assert installed.returncode == 0, installed.stdout + installed.stderr
    check_installed(python, pkgs, names)


def check_installed(python: Path, pkgs: list[Path], names: list[str]) -> None:
    """In the environment of ``python``, where ``pkgs`` are installed: their entry points
    ``names`` are seen and the packages' own tests pass (one pytest call, in the package folder
    when there is one package)."""
    listed = run([python, "-c", "import importlib.metadata as m; "
                  "print([e.name for e in m.entry_points(group='tuneyard')])"])
    assert listed.returncode == 0, listed.stderr
    assert set(names) <= set(ast.literal_eval(listed.stdout.strip()))
    tested = run([python, "-m", "pytest", *(pkg / "tests" for pkg in pkgs), "-q",
                  "-p", "no:cacheprovider"], cwd=pkgs[0] if len(pkgs) == 1 else pkgs[0].parent)
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert " passed" in tested.stdout and "failed" not in tested.stdout, tested.stdout


# -- validation ------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["", "a", "Metric", "my_metric", "my metric", "-metric",
                                  "metric-", "9metric", "tuneyard-", "tuneyard-X"])
def test_invalid_name_is_refused(tmp_path, name):
    with pytest.raises(TuneyardError) as error:
        new_plugin(name, parent=tmp_path)
    assert str(error.value) == (
        f"invalid plugin name '{name}': use two or more lower-case letters, digits and dashes, "
        "starting with a letter and ending with a letter or digit (e.g. 'token-f1')")
    assert list(tmp_path.iterdir()) == []


def test_tuneyard_itself_is_not_a_plugin_name(tmp_path):
    with pytest.raises(TuneyardError) as error:
        new_plugin("tuneyard", parent=tmp_path)
    assert str(error.value) == ("invalid plugin name 'tuneyard': that is tuneyard itself; "
                                "choose another (e.g. 'token-f1')")


def test_invalid_kind_lists_the_valid_ones(tmp_path):
    with pytest.raises(TuneyardError) as error:
        new_plugin("bleu", kind="evalutor", parent=tmp_path)
    assert str(error.value) == ("unknown plugin kind 'evalutor'; did you mean 'evaluator'? "
                                "(valid: dataset-source, evaluator, model-provider, strategy)")
    with pytest.raises(TuneyardError) as error:
        new_plugin("bleu", kind="device-monitor", parent=tmp_path)
    assert str(error.value) == ("unknown plugin kind 'device-monitor' "
                                "(valid: dataset-source, evaluator, model-provider, strategy)")
    assert list(tmp_path.iterdir()) == []


def test_existing_folder_is_never_overwritten(tmp_path):
    target = tmp_path / "tuneyard-bleu"
    target.mkdir()
    (target / "mine.py").write_text("keep me")
    for name in ("bleu", "tuneyard-bleu"):
        with pytest.raises(TuneyardError) as error:
            new_plugin(name, kind="strategy", parent=tmp_path)
        assert str(error.value) == (f"folder '{target}' already exists; nothing was written "
                                    "(choose another name or parent folder)")
    assert [p.name for p in target.iterdir()] == ["mine.py"]
    assert (target / "mine.py").read_text() == "keep me"


def test_leading_tuneyard_is_dropped_and_parent_created(tmp_path):
    pkg = new_plugin("tuneyard-bleu-2", parent=tmp_path / "new" / "parent")
    assert pkg == tmp_path / "new" / "parent" / "tuneyard-bleu-2"
    project = tomllib.loads((pkg / "pyproject.toml").read_text())["project"]
    assert project["name"] == "tuneyard-bleu-2"
    assert project["entry-points"]["tuneyard"] == {"bleu-2": "tuneyard_bleu_2"}
    assert 'name = "bleu-2"' in (pkg / "src" / "tuneyard_bleu_2" / "__init__.py").read_text()


# -- the files written -----------------------------------------------------------------------
@pytest.mark.parametrize("kind", SCAFFOLD_KINDS)
def test_files_written(tmp_path, kind):
    name = NAMES[kind]
    pkg_name = name.replace("-", "_")
    pkg = new_plugin(name, kind=kind, parent=tmp_path)
    assert pkg == tmp_path / f"tuneyard-{name}"
    files = sorted(str(p.relative_to(pkg)) for p in pkg.rglob("*") if p.is_file())
    assert files == ["README.md", "pyproject.toml", f"src/tuneyard_{pkg_name}/__init__.py",
                     f"tests/test_{pkg_name}.py"]

    pyproject = tomllib.loads((pkg / "pyproject.toml").read_text())
    assert pyproject["build-system"]["build-backend"] == "setuptools.build_meta"
    project = pyproject["project"]
    assert (project["name"], project["version"]) == (f"tuneyard-{name}", "0.1.0")
    assert project["dependencies"] == ["tuneyard"]
    assert project["optional-dependencies"] == {"test": ["pytest"]}
    assert project["entry-points"] == {"tuneyard": {name: f"tuneyard_{pkg_name}"}}
    assert pyproject["tool"]["setuptools"]["packages"]["find"] == {"where": ["src"]}

    for path in (pkg / "src" / f"tuneyard_{pkg_name}" / "__init__.py",
                 pkg / "tests" / f"test_{pkg_name}.py"):
        text = path.read_text()
        tree = ast.parse(text)  # valid Python
        assert ast.get_docstring(tree), path
        assert "{{" not in text and "torch_dtype" not in text
        assert max(len(line) for line in text.splitlines()) <= 100, path
    module = (pkg / "src" / f"tuneyard_{pkg_name}" / "__init__.py").read_text()
    assert f"@hookimpl\ndef {HOOKS[kind]}(register):" in module
    assert f'name = "{name}"' in module and "# Change:" in module

    readme = (pkg / "README.md").read_text()
    assert f"tuneyard plugins install ./tuneyard-{name}" in readme
    assert f"tuneyard plugins install --editable ./tuneyard-{name}" in readme
    assert "python -m pytest" in readme
    spec_yaml = readme.split("```yaml\n")[1].split("```")[0]
    spec = yaml.safe_load(spec_yaml)  # the run-spec excerpt is valid YAML naming the component
    assert name in json.dumps(spec)


@pytest.mark.parametrize("kind", SCAFFOLD_KINDS)
def test_generated_module_registers(tmp_path, kind):
    name = NAMES[kind]
    module = import_generated(new_plugin(name, kind=kind, parent=tmp_path),
                              f"tuneyard_{name.replace('-', '_')}")
    pm = Plugins()
    pm.register_plugin(module, name)
    pm.collect_components()
    assert pm.infos[name].errors == []
    assert pm.infos[name].hooks == [HOOKS[kind]]
    assert pm.infos[name].components == [f"{kind}:{name}"]
    cls = pm.get(kind, name).cls
    assert cls.name == name
    assert cls.description and "\n" not in cls.description
    assert cls.Options.model_config["extra"] == "forbid"
    fields = cls.Options.model_fields
    assert fields and all(f.description for f in fields.values())


@pytest.mark.parametrize("name,kind", [("dataset", "dataset-source"),
                                       ("model", "model-provider"),
                                       ("training", "strategy")])
def test_class_named_like_its_base_still_registers(tmp_path, name, kind):
    """``dataset`` + ``Source`` is ``DatasetSource``, the base class's own name."""
    module = import_generated(new_plugin(name, kind=kind, parent=tmp_path), f"tuneyard_{name}")
    pm = Plugins()
    pm.register_plugin(module, name)
    pm.collect_components()
    assert pm.infos[name].errors == [] and pm.get(kind, name).cls.name == name


def test_generated_modules_do_not_import_torch(tmp_path):
    """Loading a plugin must stay cheap: torch, transformers and datasets only inside
    methods."""
    srcs = [new_plugin(NAMES[kind], kind=kind, parent=tmp_path) / "src" for kind in SCAFFOLD_KINDS]
    code = ("import sys; sys.path[:0] = {srcs!r}; "
            "[__import__('tuneyard_' + n) for n in {names!r}]; "
            "print(sorted(m for m in ('torch', 'transformers', 'datasets') if m in sys.modules))"
            ).format(srcs=[str(s) for s in srcs],
                     names=[n.replace("-", "_") for n in NAMES.values()])
    result = run([sys.executable, "-c", code])
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


# -- acceptance: it installs and its test passes -----------------------------------------------
@pytest.mark.parametrize("kind", ACCEPTANCE_KINDS)
def test_generated_package_installs_and_its_test_passes(tmp_path, fresh_venv, kind):
    """`tuneyard plugins new` output installs and its test passes."""
    pkg = new_plugin(NAMES[kind], kind=kind, parent=tmp_path)
    install_and_test(fresh_venv, [pkg], [NAMES[kind]])


@pytest.mark.parametrize("kind", ACCEPTANCE_KINDS)
def test_cli_plugins_new_installs_and_its_test_passes(tmp_path, fresh_venv, kind):
    """The same through the command line: ``tuneyard plugins new NAME --kind K --dir DIR``."""
    name = NAMES[kind]
    made = run([fresh_venv, "-m", "tuneyard.core.cli", "plugins", "new", name, "--kind", kind,
                "--dir", tmp_path / "plugins"])
    assert made.returncode == 0, made.stdout + made.stderr
    pkg = tmp_path / "plugins" / f"tuneyard-{name}"
    assert str(pkg) in made.stdout
    # the editable install through tuneyard: the command's own process sees the new plugin
    installed = run([fresh_venv, "-m", "tuneyard.core.cli", "plugins", "install", "--editable",
                     pkg])
    assert installed.returncode == 0, installed.stdout + installed.stderr
    assert f"plugin {name} 0.1.0 (tuneyard-{name}): {kind} {name} — ok" in installed.stdout
    check_installed(fresh_venv, [pkg], [name])  # its tests pass against the editable install
    again = run([fresh_venv, "-m", "tuneyard.core.cli", "plugins", "new", name, "--kind", kind,
                 "--dir", tmp_path / "plugins"])
    assert again.returncode == 2  # installed now: its name is taken
    assert again.stderr == (f"Error: plugins new: the name '{name}' is taken by plugin "
                            f"'{name}'; choose another (a second one would be skipped when "
                            "loaded)\n")


def test_generated_components_make_a_run(tmp_path, fresh_venv, tiny_model_dir):
    """The four generated packages install together and pass their tests; their components
    compose a real run: rows from the dataset source, the tiny model from the model provider,
    BitFit training, F1 evaluation."""
    pkgs = [new_plugin(NAMES[kind], kind=kind, parent=tmp_path / "plugins")
            for kind in SCAFFOLD_KINDS]
    install_and_test(fresh_venv, pkgs, list(NAMES.values()))
    spec = {
        "name": "scaffolded",
        "dataset": {"source": "capitals", "format": "instruction", "eval_split": 0.2},
        "model": {"provider": "local-folder", "options": {"path": str(tiny_model_dir)}},
        "strategy": {"name": "bitfit", "options": {"norms": True}},
        "training": {"max_steps": 6, "micro_batch_size": 4, "learning_rate": 5e-3, "seed": 0},
        "evaluators": [{"name": "perplexity"},
                       {"name": "answer-f1", "options": {"max_new_tokens": 4}}],
        "output_dir": str(tmp_path / "runs"),
    }
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    registry = tmp_path / "registry.db"
    ran = run([fresh_venv, "-m", "tuneyard.core.cli", "--registry", registry, "run",
               tmp_path / "spec.yaml"], cwd=tmp_path)
    assert ran.returncode == 0, ran.stdout + ran.stderr

    from tuneyard.core.registry import Registry

    reg = Registry(registry)
    (row,) = reg.list_runs()
    assert (row["status"], row["step"], row["base_model"]) == ("completed", 6, tiny_model_dir.name)
    assert (row["train_rows"], row["eval_rows"]) == (8, 2)
    losses = [value for _, value in reg.metrics(row["id"], "loss")]
    assert len(losses) == 6
    evals = {(e["checkpoint"], e["metric"]): e["value"] for e in reg.evaluations(row["id"])}
    assert evals[("final", "eval_loss")] < evals[("base", "eval_loss")]
    for checkpoint in ("base", "final"):
        assert 0.0 <= evals[(checkpoint, "token_f1")] <= 1.0
