"""Every ``--json`` output is strict JSON (RFC 8259), as JavaScript's ``JSON.parse`` and jq read
it: an evaluator returning an infinite metric used to make ``runs show --json`` print a bare
``Infinity``. Non-finite values are ``null``, with ``<key>_nonfinite`` saying which."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from tuneyard.core.cli import cli, strict_json

UNBOUNDED = '''
from tuneyard.core.components import EvalResult, Evaluator
from tuneyard.core.hookspecs import hookimpl


class Unbounded(Evaluator):
    name = "unbounded"
    description = "an infinite and a negative infinite metric"

    def evaluate(self, ctx):
        return EvalResult({"ratio": float("inf"), "drop": float("-inf"), "score": 0.5})


@hookimpl
def register_evaluators(register):
    register(Unbounded)
'''


def strict_loads(text: str):
    """``json.loads`` that refuses ``NaN``, ``Infinity`` and ``-Infinity``, as strict parsers
    do."""
    def refuse(constant: str):
        raise ValueError(f"not strict JSON: {constant}")

    return json.loads(text, parse_constant=refuse)


def test_every_json_output_parses_strictly(tmp_path, qa_jsonl, make_spec, plugins_dir_env):
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "unbounded.py").write_text(UNBOUNDED)
    reg = tmp_path / "registry.db"
    spec = make_spec(qa_jsonl, **{"training.max_steps": 2, "evaluators": [
        {"name": "unbounded"}]})
    runner = CliRunner()

    def tuneyard(*args: str) -> str:
        result = runner.invoke(cli, ["--plugins-dir", str(plugins), "--registry", str(reg),
                                     *args])
        assert result.exit_code == 0, result.output
        return result.stdout

    tuneyard("run", str(spec))
    [run] = strict_loads(tuneyard("runs", "list", "--json"))
    shown = strict_loads(tuneyard("runs", "show", run["id"], "--json"))
    final = {e["metric"]: e for e in shown["evaluations"] if e["checkpoint"] == "final"}
    assert (final["ratio"]["value"], final["ratio"]["value_nonfinite"]) == (None, "inf")
    assert (final["drop"]["value"], final["drop"]["value_nonfinite"]) == (None, "-inf")
    assert final["score"]["value"] == 0.5 and "value_nonfinite" not in final["score"]
    strict_loads(tuneyard("plugins", "list", "--all", "--json"))
    strict_loads(tuneyard("data", "preview", str(spec), "--json", "--rows", "1"))


def test_strict_json_replaces_every_non_finite_float():
    value = {"a": float("nan"), "b": [1.0, float("inf"), {"c": float("-inf")}], "d": "x"}
    assert strict_json(value) == {"a": None, "a_nonfinite": "nan",
                                  "b": [1.0, None, {"c": None, "c_nonfinite": "-inf"}],
                                  "d": "x"}
