"""The safe defaults of issue #6, one test per point: ``trust_remote_code`` off unless the spec
turns it on (and then recorded), weights written as safetensors only, ``torch.load`` only with
``weights_only=True``, run names and output paths that cannot escape, ``plugins install``
refusing option-like names, and folders that are never world-writable."""

from __future__ import annotations

import ast
import importlib
import json
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from tuneyard.core import plugins as core_plugins
from tuneyard.core.cli import cli
from tuneyard.core.engine import create_run
from tuneyard.core.registry import Registry
from tuneyard.core.run.pipeline import execute
from tuneyard.core.spec import load_spec


def tuneyard_cli(registry: Path, *args: str):
    return CliRunner().invoke(cli, ["--registry", str(registry), *args])


# -- trust_remote_code ---------------------------------------------------------------------
@pytest.fixture
def from_pretrained_calls(monkeypatch) -> list[tuple[str, object]]:
    """Spy on the model's and tokenizer's ``from_pretrained``: each call appends
    ``(class name, trust_remote_code argument)`` and then loads for real."""
    import transformers

    calls = []
    for name in ("AutoModelForCausalLM", "AutoTokenizer"):
        auto = getattr(transformers, name)

        def spy(*args, _real=auto.from_pretrained, _name=name, **kwargs):
            calls.append((_name, kwargs.get("trust_remote_code", "not passed")))
            return _real(*args, **kwargs)

        monkeypatch.setattr(auto, "from_pretrained", spy)
    return calls


def test_trust_remote_code_is_off_by_default(tiny_model_dir, from_pretrained_calls):
    import torch

    from tuneyard.plugins.models.hf import HFModel, HFOptions

    options = HFOptions(path=str(tiny_model_dir))
    assert options.trust_remote_code is False
    HFModel(options).load(task="causal-lm", dtype=torch.float32)
    assert from_pretrained_calls == [("AutoModelForCausalLM", False), ("AutoTokenizer", False)]


def test_trust_remote_code_turned_on_is_recorded_and_logged(
        registry_path, qa_jsonl, make_spec, tiny_model_dir, from_pretrained_calls):
    registry = Registry(registry_path)
    spec = make_spec(qa_jsonl, **{"training.max_steps": 1, "evaluators": [],
                                  "model.options.trust_remote_code": True})
    run_id, out = create_run(load_spec(spec), registry)
    assert execute(registry, run_id) == "completed"
    assert from_pretrained_calls == [("AutoModelForCausalLM", True), ("AutoTokenizer", True)]
    assert registry.get_run(run_id)["spec"]["model"]["options"] == {
        "path": str(tiny_model_dir), "trust_remote_code": True}
    warnings = [line.split(" WARNING ", 1)[1] for line in
                (out / "run.log").read_text().splitlines() if " WARNING " in line]
    assert (f"model.options.trust_remote_code is on: the Python code shipped with "
            f"{tiny_model_dir} (config auto_map) runs in this process") in warnings


# -- safetensors only ----------------------------------------------------------------------
#: What a folder of a run holds that could be weights or other pickled state (by suffix).
STATE_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".pkl")


def state_files(folder: Path) -> list[str]:
    return sorted(f.name for f in folder.iterdir() if f.name.endswith(STATE_SUFFIXES))


@pytest.mark.parametrize("strategy, weights", [("full", "model.safetensors"),
                                               ("lora", "adapter_model.safetensors")])
def test_weights_are_written_as_safetensors_only(tmp_path, qa_jsonl, make_spec, strategy,
                                                 weights):
    """The model's weights (the whole model, or the LoRA adapter) in ``final/`` and in every
    ``checkpoints/checkpoint-N/`` are one ``*.safetensors`` file, never ``pytorch_model.bin``,
    ``adapter_model.bin`` or ``*.pt``. The other files are the Trainer's training state, not
    weights: ``optimizer.pt``, ``scheduler.pt`` and ``rng_state.pth`` (read back with
    ``weights_only=True`` on resume, see below) and ``training_args.bin`` (its arguments)."""
    reg = tmp_path / "registry.db"
    spec = make_spec(qa_jsonl, **{
        "strategy": {"name": strategy, "options": {"r": 4} if strategy == "lora" else {}},
        "training.max_steps": 2, "training.save_steps": 1, "evaluators": []})
    result = tuneyard_cli(reg, "run", str(spec))
    assert result.exit_code == 0, result.output
    [run] = Registry(reg).list_runs()
    out = Path(run["output_dir"])
    checkpoints = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert checkpoints == ["checkpoint-1", "checkpoint-2"]
    for name in checkpoints:
        assert state_files(out / "checkpoints" / name) == sorted([
            weights, "optimizer.pt", "rng_state.pth", "scheduler.pt", "training_args.bin"])
    assert state_files(out / "final") == [weights, "training_args.bin"]


# -- torch.load ----------------------------------------------------------------------------
def torch_load_calls(tree: ast.AST) -> list[ast.Call]:
    """Calls of ``torch.load(...)`` and of ``load(...)`` imported with ``from torch import
    load``."""
    imported = {alias.asname or alias.name for node in ast.walk(tree)
                if isinstance(node, ast.ImportFrom) and node.module == "torch"
                for alias in node.names if alias.name == "load"}
    return [node for node in ast.walk(tree) if isinstance(node, ast.Call) and (
        (isinstance(node.func, ast.Attribute) and node.func.attr == "load"
         and isinstance(node.func.value, ast.Name) and node.func.value.id == "torch")
        or (isinstance(node.func, ast.Name) and node.func.id in imported))]


def test_torch_load_passes_weights_only_true_in_the_source():
    folders = [Path(importlib.import_module(f"tuneyard.{name}").__file__).parent
               for name in ("core", "plugins", "tui")]
    files = [f for folder in folders for f in sorted(folder.rglob("*.py"))]
    assert len(files) > 40  # the whole installed source was read
    unsafe = []
    for file in files:
        for call in torch_load_calls(ast.parse(file.read_text(), str(file))):
            weights_only = next((k.value for k in call.keywords if k.arg == "weights_only"),
                                None)
            if not (isinstance(weights_only, ast.Constant) and weights_only.value is True):
                unsafe.append(f"{file}:{call.lineno}")
    assert unsafe == []


def test_torch_load_check_finds_an_unsafe_call():
    tree = ast.parse("import torch\nfrom torch import load as L\n"
                     "torch.load(f, weights_only=True)\ntorch.load(f)\nL(f, weights_only=False)")
    assert [(c.lineno, [k.arg for k in c.keywords]) for c in torch_load_calls(tree)] == [
        (3, ["weights_only"]), (4, []), (5, ["weights_only"])]


def test_torch_load_on_resume_uses_weights_only(registry_path, qa_jsonl, make_spec,
                                                 stop_at, monkeypatch):
    """Resuming loads the Trainer's optimizer, scheduler and RNG state with ``torch.load``;
    every call passes ``weights_only=True``."""
    import torch

    registry = Registry(registry_path)
    spec = make_spec(qa_jsonl, **{"training.max_steps": 4, "evaluators": []})
    run_id, _ = create_run(load_spec(spec), registry)
    stop_at(registry, run_id, 2)
    assert execute(registry, run_id) == "stopped"

    calls, real = [], torch.load

    def spy(f, *args, **kwargs):
        calls.append((Path(f).name, kwargs.get("weights_only", "not passed")))
        return real(f, *args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    assert execute(registry, run_id, resume=True) == "completed"
    assert sorted(calls) == [("optimizer.pt", True), ("rng_state.pth", True),
                             ("scheduler.pt", True)]


# -- run names and output paths ------------------------------------------------------------
@pytest.mark.parametrize("key, value, message", [
    ("name", "../evil", "'../evil' is not a safe name: use ASCII letters, digits, '.', '_' and "
                        "'-', not starting with '.' and without '..' (no '/')"),
    ("name", "a/b", "'a/b' is not a safe name: use ASCII letters, digits, '.', '_' and '-', "
                    "not starting with '.' and without '..' (no '/')"),
    ("name", ".hidden", "'.hidden' is not a safe name: use ASCII letters, digits, '.', '_' and "
                        "'-', not starting with '.' and without '..' (no '/')"),
    ("name", "a..b", "'a..b' is not a safe name: use ASCII letters, digits, '.', '_' and '-', "
                     "not starting with '.' and without '..' (no '/')"),
    ("output_dir", "../runs", "'../runs' has a '..' component; give a folder without '..' "
                              "(absolute, or relative to the working directory)"),
    ("output_dir", "runs/../../x", "'runs/../../x' has a '..' component; give a folder "
                                   "without '..' (absolute, or relative to the working "
                                   "directory)"),
])
def test_run_names_and_output_paths_cannot_escape(tmp_path, qa_jsonl, make_spec, key, value,
                                                  message):
    spec = make_spec(qa_jsonl, **{key: value})
    line = 1 if key == "name" else len(spec.read_text().splitlines())
    reg = tmp_path / "registry.db"
    result = tuneyard_cli(reg, "run", str(spec))
    assert result.exit_code == 2
    assert " ".join(result.output.split()) == f"Error: {spec}:{line}: {key}: {message}"
    assert not reg.exists()
    result = tuneyard_cli(reg, "run", str(make_spec(qa_jsonl)), "--set", f"{key}={value}")
    assert result.exit_code == 2
    assert " ".join(result.output.split()) == f"Error: --set {key}={value}: {key}: {message}"
    assert not reg.exists()


def test_safe_names_and_output_paths_are_accepted(qa_jsonl, make_spec, tmp_path):
    spec = load_spec(make_spec(qa_jsonl, name="smollm2_wordnet-lora.v2",
                               output_dir=str(tmp_path / "my..runs" / "x")))
    assert (spec.name, spec.output_dir) == ("smollm2_wordnet-lora.v2",
                                            str(tmp_path / "my..runs" / "x"))


# -- plugins install / uninstall -----------------------------------------------------------
@pytest.mark.parametrize("args, message", [
    (["install", "--", "--index-url=http://evil"],
     "plugins install: '--index-url=http://evil' looks like an option, not a package name or "
     "path"),
    (["install", "--", "-e"], "plugins install: '-e' looks like an option, not a package name "
                              "or path"),
    (["uninstall", "--", "--yes"], "plugins uninstall: '--yes' looks like an option, not a "
                                   "package name or path"),
])
def test_plugins_install_refuses_option_like_names(args, message, monkeypatch):
    ran = []
    monkeypatch.setattr(core_plugins, "run_pip", ran.append)
    result = CliRunner().invoke(cli, ["plugins", *args])
    assert result.exit_code == 2
    assert " ".join(result.output.split()) == f"Error: {message}"
    assert ran == []


def test_plugins_install_refuses_an_option_given_without_separator(monkeypatch):
    ran = []
    monkeypatch.setattr(core_plugins, "run_pip", ran.append)
    result = CliRunner().invoke(cli, ["plugins", "install", "--index-url=http://evil"])
    assert result.exit_code == 2
    assert result.output.splitlines()[-1] == "Error: No such option '--index-url'."
    assert ran == []


# -- umask ---------------------------------------------------------------------------------
RUN_UNDER_UMASK = textwrap.dedent("""
    import json, os, sys
    from pathlib import Path
    os.umask(int(sys.argv[1], 8))
    from tuneyard.core.cli import main
    from tuneyard.core.registry import Registry
    registry, spec = sys.argv[2], sys.argv[3]
    sys.argv = ["tuneyard", "--registry", registry, "run", spec]
    try:
        main()
    except SystemExit as exc:
        assert exc.code in (0, None), exc.code
    reg = Registry(registry)  # open: the -wal and -shm files exist while it is
    [run] = reg.list_runs()
    out = Path(run["output_dir"])
    paths = [Path(registry + s) for s in ("", "-wal", "-shm")] + [out.parent, out] + sorted(
        p for p in out.rglob("*") if p.is_dir())
    print(json.dumps({str(p): os.stat(p).st_mode for p in paths}))
""")


def modes_after_run(tmp_path: Path, make_spec, qa_jsonl, umask: int) -> dict[str, int]:
    """Run a tiny LoRA run (with a checkpoint) through the CLI in a process with ``umask``;
    the modes of the registry files, the output_dir, the run folder and its subfolders."""
    spec = make_spec(qa_jsonl, **{"training.max_steps": 2, "training.save_steps": 1,
                                  "evaluators": [], "output_dir": str(tmp_path / "a" / "runs")})
    proc = subprocess.run(
        [sys.executable, "-c", RUN_UNDER_UMASK, oct(umask), str(tmp_path / "registry.db"),
         str(spec)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_registry_and_run_folders_are_never_world_writable(tmp_path, make_spec, qa_jsonl):
    modes = modes_after_run(tmp_path, make_spec, qa_jsonl, 0o000)
    names = {Path(p).relative_to(tmp_path).as_posix() for p in modes}
    assert {"registry.db", "registry.db-wal", "registry.db-shm", "a/runs"} <= names
    assert any(n.endswith("/final") for n in names)
    assert any(n.endswith("/checkpoints/checkpoint-1") for n in names)
    assert {p: oct(stat.S_IMODE(m)) for p, m in modes.items() if m & stat.S_IWOTH} == {}


def test_run_folder_follows_a_private_umask(tmp_path, make_spec, qa_jsonl):
    modes = modes_after_run(tmp_path, make_spec, qa_jsonl, 0o077)
    folders = {p: oct(stat.S_IMODE(m)) for p, m in modes.items() if stat.S_ISDIR(m)}
    assert set(folders.values()) == {"0o700"}
    assert len(folders) >= 6  # a, runs, the run, checkpoints, checkpoint-1/2, final
