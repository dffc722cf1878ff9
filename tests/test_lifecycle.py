"""Lifecycle hooks fire during a run, with the documented arguments; a hook that raises is
reported and neither stops the other implementations nor the run."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from click.testing import CliRunner

from tuneyard.core.cli import cli
from tuneyard.core.hookspecs import hookimpl
from tuneyard.core.plugins import get_plugins
from tuneyard.core.registry import Registry


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[str, dict]] = []

    @hookimpl
    def on_run_start(self, run_id, spec, output_dir):
        self.calls.append(("start", {"run_id": run_id, "name": spec["name"], "dir": output_dir}))

    @hookimpl
    def on_step_end(self, step, metrics):
        self.calls.append(("step", {"step": step, "keys": sorted(metrics)}))

    @hookimpl
    def on_evaluation(self, checkpoint, evaluator, metrics):
        self.calls.append(("eval", {"checkpoint": checkpoint, "evaluator": evaluator}))

    @hookimpl
    def on_checkpoint_saved(self, step, path):
        self.calls.append(("checkpoint", {"step": step, "path": path}))

    @hookimpl
    def on_run_end(self, run_id, status, error):
        self.calls.append(("end", {"status": status, "error": error}))


class Broken:
    @hookimpl
    def on_step_end(self, step):
        raise RuntimeError("exporter is down")


@pytest.fixture
def plugins():
    p = get_plugins()
    recorder, broken = Recorder(), Broken()
    p.pm.register(broken, name="broken-exporter")
    p.pm.register(recorder, name="recorder")
    yield recorder
    p.pm.unregister(name="recorder")
    p.pm.unregister(name="broken-exporter")


def test_lifecycle_hooks_fire_in_order(tmp_path, qa_jsonl, make_spec, plugins, caplog):
    caplog.set_level(logging.DEBUG, logger="tuneyard.core.plugins")
    reg = tmp_path / "registry.db"
    spec = make_spec(qa_jsonl, **{"training.max_steps": 3})
    result = CliRunner().invoke(cli, ["--registry", str(reg), "run", str(spec)])
    assert result.exit_code == 0, result.output
    [run] = Registry(reg).list_runs()
    out = run["output_dir"]
    assert [c for c, _ in plugins.calls] == [
        "start", "eval", "step", "step", "step", "checkpoint", "eval", "end"]
    assert plugins.calls[0][1] == {"run_id": run["id"], "name": "tiny", "dir": out}
    assert [a["step"] for c, a in plugins.calls if c == "step"] == [1, 2, 3]
    assert plugins.calls[2][1]["keys"] == ["epoch", "grad_norm", "learning_rate", "loss",
                                           "tokens_per_s"]
    assert plugins.calls[5][1] == {"step": 3, "path": str(Path(out) / "final")}
    assert [a["checkpoint"] for c, a in plugins.calls if c == "eval"] == ["base", "final"]
    assert plugins.calls[-1][1] == {"status": "completed", "error": None}
    failures = [(r.levelname, r.getMessage()) for r in caplog.records
                if "exporter is down" in r.getMessage()]
    assert failures == [("WARNING", "plugin broken-exporter: on_step_end raised RuntimeError: "
                         "exporter is down (isolated: the other plugins and the run are not "
                         "affected; repeats are logged at debug level)"),
                        *[("DEBUG", "plugin broken-exporter: on_step_end raised RuntimeError: "
                           "exporter is down")] * 2]
    assert run["status"] == "completed"


def test_run_end_reports_the_failure(tmp_path, qa_jsonl, make_spec, plugins):
    reg = tmp_path / "registry.db"
    spec = make_spec(qa_jsonl, **{"dataset.columns": {"output": "gloss"}})
    assert CliRunner().invoke(cli, ["--registry", str(reg), "run", str(spec)]).exit_code == 2
    [(kind, args)] = plugins.calls
    assert kind == "end" and args["status"] == "failed"
    assert args["error"].startswith("dataset: format 'instruction' needs a column 'gloss'")
