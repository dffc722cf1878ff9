"""Acceptance of the plugin ecosystem with the example third-party package: install
``examples/plugins/tuneyard-text2sql`` into a fresh virtual environment with
``tuneyard plugins install``, see it in ``plugins list``, run a tiny run with its dataset source
and evaluator, then ``plugins uninstall`` it."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import yaml

from tuneyard.core.registry import Registry

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "examples/plugins/tuneyard-text2sql"


def tuneyard(python: Path, *args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([str(python), "-m", "tuneyard.core.cli", *args], capture_output=True,
                          text=True, cwd=cwd, timeout=600)


def test_install_list_run_and_uninstall_the_text2sql_plugin(fresh_venv, tmp_path,
                                                            tiny_model_dir, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # where it builds its db
    installed = tuneyard(fresh_venv, "plugins", "install", f"./{PACKAGE}")
    assert installed.returncode == 0, installed.stdout + installed.stderr
    assert "Successfully installed tuneyard-text2sql-0.1.0" in installed.stdout
    assert " ".join(installed.stdout.split()).endswith(
        "plugin text2sql 0.1.0 (tuneyard-text2sql): dataset-source text2sql, evaluator "
        "sql-execution — ok")

    listed = tuneyard(fresh_venv, "plugins", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    [plugin] = json.loads(listed.stdout)
    assert {k: plugin[k] for k in ("name", "version", "source", "package", "status", "hooks",
                                   "components")} == {
        "name": "text2sql", "version": "0.1.0", "source": "package",
        "package": "tuneyard-text2sql", "status": "ok",
        "hooks": ["register_dataset_sources", "register_evaluators"],
        "components": ["dataset-source:text2sql", "evaluator:sql-execution"]}
    # the package's own tests pass where it is installed
    own = subprocess.run([str(fresh_venv), "-m", "pytest", "-q", "-p", "no:cacheprovider",
                          "tests"], cwd=ROOT / PACKAGE, capture_output=True, text=True,
                         timeout=600)
    assert own.returncode == 0, own.stdout[-3000:]

    spec = {
        "name": "tiny-text2sql",
        "dataset": {"source": "text2sql", "options": {"limit": 40}, "format": "instruction",
                    "eval_split": 0.1},
        "model": {"provider": "scratch", "options": {
            "tokenizer": str(tiny_model_dir),
            "config": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                       "num_attention_heads": 2, "max_position_embeddings": 2048}}},
        "strategy": {"name": "full"},
        "training": {"max_steps": 3, "micro_batch_size": 2, "max_seq_len": 2048, "seed": 0},
        "evaluators": [{"name": "sql-execution", "options": {"limit": 3, "max_new_tokens": 8}}],
        "output_dir": str(tmp_path / "runs"),
    }
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    registry = tmp_path / "registry.db"
    ran = tuneyard(fresh_venv, "--registry", str(registry), "run", str(tmp_path / "spec.yaml"),
                   cwd=tmp_path)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    reg = Registry(registry)
    [run] = reg.list_runs()
    record = reg.get_run(run["id"])
    assert (record["status"], record["dataset_source"], record["train_rows"],
            record["eval_rows"]) == ("completed", "text2sql", 36, 4)
    assert record["plugin_versions"]["text2sql"] == "0.1.0"
    rows = {(e["checkpoint"], e["metric"]): e["value"] for e in reg.evaluations(run["id"])}
    assert set(rows) == {(c, m) for c in ("base", "final")
                         for m in ("execution_accuracy", "valid_sql")}
    assert all(0.0 <= v <= 1.0 for v in rows.values())
    [details] = [json.loads(r["details"]) for r in reg.db.query(
        "SELECT details FROM evaluations WHERE run_id = ? AND checkpoint = 'final' AND "
        "details IS NOT NULL", [run["id"]])]
    assert len(details) == 3
    assert sum(d["correct"] for d in details) / 3 == rows[("final", "execution_accuracy")]

    removed = tuneyard(fresh_venv, "plugins", "uninstall", "text2sql")
    assert removed.returncode == 0, removed.stdout + removed.stderr
    assert "Successfully uninstalled tuneyard-text2sql-0.1.0" in removed.stdout
    assert removed.stdout.endswith("uninstalled tuneyard-text2sql\n")
    after = tuneyard(fresh_venv, "plugins", "list", "--json")
    assert json.loads(after.stdout) == []
    gone = tuneyard(fresh_venv, "--registry", str(registry), "run", str(tmp_path / "spec.yaml"),
                    cwd=tmp_path)
    assert gone.returncode == 2
    assert "dataset.source: unknown dataset-source 'text2sql'" in " ".join(gone.stderr.split())
