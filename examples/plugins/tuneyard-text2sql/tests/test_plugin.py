"""The package as a tuneyard plugin: registration, cheap import, entry point, example spec."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import tuneyard_text2sql
from tuneyard.core.plugins import Plugins
from tuneyard.core.spec import load_spec
from tuneyard_text2sql.evaluator import SqlExecution
from tuneyard_text2sql.source import Text2SqlSource

ROOT = Path(__file__).resolve().parents[1]


def test_registers_both_components_without_errors():
    pm = Plugins()
    pm.register_plugin(tuneyard_text2sql, "text2sql")
    pm.collect_components()
    assert pm.infos["text2sql"].errors == []
    assert pm.infos["text2sql"].components == ["dataset-source:text2sql", "evaluator:sql-execution"]
    assert pm.get("dataset-source", "text2sql").cls is Text2SqlSource
    assert pm.get("evaluator", "sql-execution").cls is SqlExecution


def test_import_is_cheap():
    code = ("import sys, tuneyard_text2sql; "
            "print(sorted(m for m in ('torch', 'transformers', 'datasets') if m in sys.modules))")
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         check=True)
    assert out.stdout.strip() == "[]"


def test_entry_point():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["entry-points"]["tuneyard"] == {"text2sql": "tuneyard_text2sql"}
    assert project["dependencies"] == ["tuneyard"]


def test_example_spec_validates_with_the_plugins_options():
    spec = load_spec(ROOT / "examples" / "text2sql-lora.yaml")
    assert spec.dataset.source == "text2sql" and spec.dataset.format == "instruction"
    Text2SqlSource.Options(**spec.dataset.options)
    [ev] = [e for e in spec.evaluators if e.name == "sql-execution"]
    assert SqlExecution.Options(**ev.options).limit == 24
