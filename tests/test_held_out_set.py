"""``dataset.eval``: a held-out set from a source of its own instead of a share of the rows
(``dataset.eval_split``). Every row of ``dataset.source`` trains, the evaluators and the
trainer's evaluation read the other source, and the run's fingerprint covers both."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from tuneyard.core.cli import cli
from tuneyard.core.engine import compose
from tuneyard.core.plugins import get_plugins
from tuneyard.core.registry import Registry
from tuneyard.core.run.data import Rows, fingerprint, load_rows
from tuneyard.core.run.progress import LogProgress
from tuneyard.core.spec import load_spec

HELD_OUT = [{"instruction": f"define the word {w}", "output": d}
            for w, d in [("fox", "a wild animal with a bushy tail"), ("mat", "a small rug"),
                         ("oak", "a tall tree"), ("jog", "run slowly"), ("hat", "a head cover"),
                         ("cup", "a small open bowl")]]


@pytest.fixture
def eval_jsonl(tmp_path) -> Path:
    path = tmp_path / "held_out.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in HELD_OUT))
    return path


def cli_run(reg: Path, spec: Path, *args: str):
    return CliRunner().invoke(cli, ["--registry", str(reg), "run", str(spec), *args])


def held_out_spec(make_spec, qa_jsonl: Path, eval_jsonl: Path, **changes) -> Path:
    """The spec of ``make_spec`` with ``dataset.eval`` reading ``eval_jsonl`` (no eval_split),
    3 steps; ``changes`` as make_spec's."""
    dataset = {"source": "jsonl", "options": {"path": str(qa_jsonl)}, "format": "instruction",
               "eval": {"source": "jsonl", "options": {"path": str(eval_jsonl)}}}
    return make_spec(qa_jsonl, **{"dataset": dataset, "training.max_steps": 3, **changes})


def test_every_source_row_trains_and_the_other_source_is_held_out(
        tmp_path, make_spec, qa_jsonl, eval_jsonl):
    reg = tmp_path / "registry.db"
    spec = held_out_spec(make_spec, qa_jsonl, eval_jsonl, **{
        "training.eval_steps": 3, "evaluators": [{"name": "perplexity"}, {
            "name": "exact-match", "options": {"max_new_tokens": 4}}]})
    result = cli_run(reg, spec)
    assert result.exit_code == 0, result.output
    registry = Registry(reg)
    [run] = registry.list_runs()
    run = registry.get_run(run["id"])
    assert (run["train_rows"], run["eval_rows"]) == (40, 6)  # all of qa.jsonl; all 6 held out
    [row] = registry.db.query("SELECT details FROM evaluations WHERE run_id = ? AND "
                              "evaluator = 'exact-match' AND checkpoint = 'final'", [run["id"]])
    assert sorted(d["reference"] for d in json.loads(row["details"])) == sorted(
        r["output"] for r in HELD_OUT)
    assert [s for s, _ in registry.metrics(run["id"], "eval_loss")] == [3]


def test_eval_limit_samples_the_held_out_source(tmp_path, make_spec, qa_jsonl, eval_jsonl):
    spec = load_spec(held_out_spec(make_spec, qa_jsonl, eval_jsonl,
                                   **{"dataset.eval_limit": 4}))
    rows = load_rows(compose(spec, get_plugins()), LogProgress())
    held, kept = rows.split(spec)
    assert len(held) == 4 and len(set(held)) == 4 and set(held) <= set(range(6))
    assert kept == list(range(40))
    assert rows.split(spec) == (held, kept)  # seeded: the same sample every time


def test_eval_split_and_eval_together_are_refused(tmp_path, make_spec, qa_jsonl, eval_jsonl):
    reg = tmp_path / "registry.db"
    spec = held_out_spec(make_spec, qa_jsonl, eval_jsonl)
    result = cli_run(reg, spec, "--set", "dataset.eval_split=0.1")
    assert result.exit_code == 2 and not reg.exists()
    assert " ".join(result.output.split()) == (
        "Error: --set dataset.eval_split=0.1: dataset: eval: give either eval_split (a share of "
        "the rows held out) or eval (a held-out set of its own), not both")


def test_errors_of_the_held_out_source_name_it(tmp_path, make_spec, qa_jsonl, eval_jsonl):
    reg = tmp_path / "registry.db"
    spec = held_out_spec(make_spec, qa_jsonl, eval_jsonl)
    result = cli_run(reg, spec, "--set", "dataset.eval.source=jsnol")
    assert result.exit_code == 2
    assert "dataset.eval.source: unknown dataset-source 'jsnol'; did you mean 'jsonl'?" in \
        " ".join(result.output.split())
    (tmp_path / "other.jsonl").write_text('{"question": "q", "answer": "a"}\n')
    result = cli_run(reg, spec, "--set", f"dataset.eval.options.path={tmp_path / 'other.jsonl'}")
    assert result.exit_code == 2
    assert result.output.strip().splitlines()[-1] == (
        "Error: dataset.eval: dataset: format 'instruction' needs a column 'instruction' or "
        "'prompt'; columns present: question, answer (map one with "
        "dataset.columns.instruction: COLUMN)")


def test_the_fingerprint_covers_the_held_out_rows_and_is_unchanged_without_them(
        tmp_path, make_spec, qa_jsonl, eval_jsonl):
    plain = load_spec(make_spec(qa_jsonl))
    rows = load_rows(compose(plain, get_plugins()), LogProgress())
    # a run recorded before dataset.eval existed keeps its fingerprint: the same recipe
    digest = hashlib.sha256(json.dumps([plain.dataset.model_dump(
        mode="json", exclude={"eval"}), plain.training.seed], sort_keys=True).encode())
    for batch in rows.rows.iter(batch_size=10_000):
        digest.update(json.dumps(batch, sort_keys=True, default=str).encode())
    assert fingerprint(plain, rows) == digest.hexdigest()[:16]

    spec = load_spec(held_out_spec(make_spec, qa_jsonl, eval_jsonl))
    held = load_rows(compose(spec, get_plugins()), LogProgress())
    before = fingerprint(spec, held)
    eval_jsonl.write_text(eval_jsonl.read_text().replace("a small rug", "a small carpet"))
    changed = load_rows(compose(spec, get_plugins()), LogProgress())
    assert isinstance(changed, Rows) and fingerprint(spec, changed) != before
