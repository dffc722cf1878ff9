"""The plugin documentation matches the code (guards docs drift, as datasette does): every hook
spec has a section in docs/plugins.md with its exact signature and a ``test_hook_<name>`` test
in tests/test_hooks.py; the tutorials' plugins (an evaluator, a training strategy), copied from
the page, work in real runs; the README points at the page."""

from __future__ import annotations

import ast
import inspect
import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from tuneyard.core import hookspecs
from tuneyard.core.cli import cli
from tuneyard.core.plugins import get_plugins
from tuneyard.core.registry import Registry

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOC = ROOT / "docs" / "plugins.md"
HOOKSPECS = {name: fn for name, fn in inspect.getmembers(hookspecs, inspect.isfunction)
             if hasattr(fn, "tuneyard_spec")}

#: the tutorial's plugin: the python block right after ``<!-- tutorial-plugin: FILE -->``
TUTORIAL_PLUGIN = re.compile(r"<!-- tutorial-plugin: (\S+) -->\n```python\n(.*?)```", re.S)
#: the strategy tutorial's plugin: the python block right after ``<!-- tutorial-strategy: FILE -->``
TUTORIAL_STRATEGY = re.compile(r"<!-- tutorial-strategy: (\S+) -->\n```python\n(.*?)```", re.S)
#: the ``plugins list`` output the tutorial shows (after its ``$ command`` line)
TUTORIAL_LIST = re.compile(r"<!-- tutorial-plugins-list -->\n```text\n\$ [^\n]*\n(.*?)```", re.S)
#: where the tutorial's plugins directory is in the shown output
SHOWN_DIR = "/home/me/project/plugins"


class Source(str):
    """An annotation's source text, which ``inspect`` shows without quotes. hookspecs.py uses
    ``from __future__ import annotations``, so its annotations are strings, and
    ``str(inspect.signature(fn))`` would quote each one."""

    def __repr__(self) -> str:
        return str(self)


def signature(fn) -> str:
    """``name + str(inspect.signature(fn))`` with the annotations as written in the source:
    ``register_evaluators(register: Callable[[type], None]) -> None``."""
    sig = inspect.signature(fn)
    sig = sig.replace(
        parameters=[p.replace(annotation=Source(p.annotation)) for p in sig.parameters.values()],
        return_annotation=Source(sig.return_annotation))
    return fn.__name__ + str(sig)


def hook_sections() -> dict[str, str]:
    """Heading → body of each ``###`` section of the page's "Hook reference"."""
    part = DOC.read_text().split("\n## Hook reference\n", 1)[1].split("\n## ", 1)[0]
    pieces = re.split(r"^### (.+)$", part, flags=re.M)
    return {title.strip().strip("`"): body for title, body in zip(pieces[1::2], pieces[2::2])}


def test_every_hook_has_a_docs_section_with_its_exact_signature():
    documented = {name: re.search(r"```python\n(.*?)\n```", body, re.S)
                  for name, body in hook_sections().items()}
    assert {name: m and m.group(1) for name, m in documented.items()} == {
        name: signature(fn) for name, fn in HOOKSPECS.items()}


def test_every_hook_has_a_test():
    tree = ast.parse((ROOT / "tests" / "test_hooks.py").read_text())
    tests = {node.name for node in tree.body
             if isinstance(node, ast.FunctionDef) and node.name.startswith("test_hook_")}
    assert tests == {f"test_hook_{name}" for name in HOOKSPECS}


def test_python_blocks_of_the_plugin_docs_compile():
    signatures = {signature(fn) for fn in HOOKSPECS.values()}
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S)
    assert len(blocks) > len(signatures)
    for block in blocks:
        if block.strip() not in signatures:
            compile(block, f"{DOC}: block starting {block.splitlines()[0]!r}", "exec")



def test_tutorial_plugin_runs_and_its_metric_lands_in_the_registry(
        tmp_path, qa_jsonl, make_spec, tiny_model_dir, plugins_dir_env):
    import torch

    from tuneyard.core.generation import generate

    [(filename, code)] = TUTORIAL_PLUGIN.findall(DOC.read_text())
    folder = tmp_path / "plugins"
    folder.mkdir()
    (folder / filename).write_text(code)
    reg = tmp_path / "registry.db"
    spec = make_spec(qa_jsonl, **{"training.max_steps": 3, "evaluators": [
        {"name": "length-ratio", "options": {"max_new_tokens": 8}}]})
    runner = CliRunner()
    result = runner.invoke(cli, ["--plugins-dir", str(folder), "--registry", str(reg), "run",
                                 str(spec)])
    assert result.exit_code == 0, result.output

    registry = Registry(reg)
    [run] = registry.list_runs()
    run = registry.get_run(run["id"])
    assert run["plugin_versions"][Path(filename).stem].startswith("sha256:")
    rows = registry.evaluations(run["id"])
    assert [(r["checkpoint"], r["evaluator"], r["metric"]) for r in rows] == [
        ("base", "length-ratio", "length_ratio"), ("final", "length-ratio", "length_ratio")]
    details = {r["checkpoint"]: r["details"] for r in registry.db.query(
        "SELECT checkpoint, details FROM evaluations WHERE run_id = ?", [run["id"]])}
    answers = {"a small animal", "a domesticated animal", "a tall perennial woody plant",
               "move fast on foot"}  # the outputs of qa_jsonl
    for row in rows:
        shown = json.loads(details[row["checkpoint"]])
        assert len(shown) == run["eval_rows"] == 8
        assert {d["reference"] for d in shown} <= answers
        words = sum(len(d["prediction"].split()) for d in shown)
        assert row["value"] == pytest.approx(
            words / sum(len(d["reference"].split()) for d in shown), rel=1e-12)

    # the base answers are the tiny model's greedy continuations (LoRA starts as a no-op)
    base = json.loads(details["base"])
    provider = get_plugins().get("model-provider", "hf").cls
    model, tokenizer = provider(provider.Options(path=str(tiny_model_dir))).load(
        task="causal-lm", dtype=torch.float32)
    assert generate(model, tokenizer, [d["prompt"] for d in base], max_new_tokens=8,
                    batch_size=8, device="cpu") == [d["prediction"] for d in base]

    # `plugins list` prints what the tutorial shows
    [shown_list] = TUTORIAL_LIST.findall(DOC.read_text())
    listed = runner.invoke(cli, ["--plugins-dir", str(folder), "--registry", str(reg),
                                 "plugins", "list"])
    assert listed.exit_code == 0, listed.output
    assert " ".join(listed.output.split()) == " ".join(
        shown_list.replace(SHOWN_DIR, str(folder)).split())


def test_readme_points_at_the_plugin_docs_and_names_every_hook():
    section = README.read_text().split("\n## Writing a plugin\n", 1)[1].split("\n## ", 1)[0]
    assert "(docs/plugins.md)" in section
    named = set(re.findall(r"`((?:register|on)_\w+)`", section))
    assert named == set(HOOKSPECS)


@pytest.fixture
def focal_plugin(tmp_path, plugins_dir_env) -> Path:
    """The strategy tutorial's plugin, copied from the page into a plugins directory."""
    [(filename, code)] = TUTORIAL_STRATEGY.findall(DOC.read_text())
    assert len(code.splitlines()) <= 60  # "a training strategy in one file", ~60 lines
    folder = tmp_path / "plugins"
    folder.mkdir()
    (folder / filename).write_text(code)
    return folder


def test_tutorial_strategy_trains_with_its_own_loss_and_is_recorded(
        tmp_path, qa_jsonl, make_spec, focal_plugin):
    reg = tmp_path / "registry.db"
    runner = CliRunner()
    spec = make_spec(qa_jsonl, **{"training.max_steps": 6, "training.learning_rate": 3e-3,
                                  "training.gradient_accumulation_steps": 2,
                                  "strategy": {"name": "full"}, "evaluators": []})

    def run(*overrides: str) -> dict:
        result = runner.invoke(cli, ["--plugins-dir", str(focal_plugin), "--registry", str(reg),
                                     "run", str(spec), *overrides])
        assert result.exit_code == 0, result.output
        registry = Registry(reg)
        return registry.get_run(registry.list_runs()[0]["id"])

    full = run()
    plain = run("--set", "strategy.name=focal", "--set", "strategy.options.gamma=0")
    focal = run("--set", "strategy.name=focal", "--set", "strategy.options.gamma=2")
    registry = Registry(reg)
    losses = {r["id"]: [v for _, v in registry.metrics(r["id"], "loss")]
              for r in (full, plain, focal)}
    # γ = 0 is the cross-entropy of the built-in full fine-tune, under gradient accumulation too
    assert losses[plain["id"]] == pytest.approx(losses[full["id"]], abs=1e-5)
    # γ = 2 weights every token by (1 − p)² ≤ 1: a smaller loss from the same start
    assert losses[focal["id"]][0] < losses[full["id"]][0]
    assert losses[focal["id"]][-1] < losses[focal["id"]][0]
    probs = [v for _, v in registry.metrics(focal["id"], "label_prob")]
    assert len(probs) == 6 and all(0 < p < 1 for p in probs) and probs[-1] > probs[0]
    assert focal["strategy"] == "focal" and focal["status"] == "completed"
    assert focal["plugin_versions"]["focal"].startswith("sha256:")
    assert {a["kind"] for a in registry.artifacts(focal["id"])} >= {"model"}
    shown = runner.invoke(cli, ["--registry", str(reg), "runs", "show", focal["id"]])
    assert "label_prob" in shown.output


async def test_tutorial_strategy_is_offered_by_the_compose_screen(tmp_path, tui_app, wait_for,
                                                                  focal_plugin, monkeypatch):
    from textual.widgets import Select

    from tuneyard.tui.screens.compose import ComposeScreen

    monkeypatch.setenv("TUNEYARD_PLUGINS_DIR", str(focal_plugin))
    get_plugins.cache_clear()
    async with tui_app(tmp_path / "registry.db").run_test(size=(100, 30)) as pilot:
        await pilot.press("n")
        screen = pilot.app.screen
        assert isinstance(screen, ComposeScreen)
        await wait_for(pilot, lambda: screen.plugins is not None and screen.query(
            "#training-form"))
        screen.query_one("#strategy", Select).value = "focal"
        await wait_for(pilot, lambda: screen.form("strategy-options").model.__name__
                       == "FocalOptions")
        form = screen.form("strategy-options")
        assert form.field_widget("gamma").placeholder == "2.0"
