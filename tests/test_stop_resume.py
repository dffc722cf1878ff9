"""Graceful stop (``tuneyard stop``, a registry request, SIGTERM, Ctrl-C: checkpoint, then
``stopped``, exit 0; during loading or an evaluation: at once), resume from the checkpoint (or
from step 0, or only the missing final evaluations), ``tuneyard stop`` / ``resume``, and device
telemetry sampled into the registry by the run process (a fake monitor plugin reports two
GPUs)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import types
from datetime import datetime
from pathlib import Path

import pytest
from click.testing import CliRunner

from tuneyard.core.cli import cli
from tuneyard.core.run import lifecycle, train
from tuneyard.core.components import DeviceMonitor, DeviceSample, EvalResult, Evaluator
from tuneyard.core.hookspecs import hookimpl
from tuneyard.core.plugins import ComponentInfo, get_plugins
from tuneyard.core.registry import Registry
from tuneyard.core.run.pipeline import execute
from tuneyard.core.spec import load_spec
from tuneyard.core.engine import create_run
from tuneyard.core.errors import DataChanged


class TwoGPUs(DeviceMonitor):
    name = "fake-gpus"
    description = "two fake GPUs"

    def sample(self) -> list[DeviceSample]:
        return [DeviceSample(device=f"cuda:{i}", util_pct=90.0 + i, mem_bytes=(i + 1) * 2**30,
                             mem_total_bytes=80 * 2**30, power_w=300.0 + i, temp_c=60.0 + i)
                for i in range(2)]


class StopAt:
    """Lifecycle plugin: at ``step``, call ``action(run_id)``."""

    def __init__(self, step: int, action) -> None:
        self.step, self.action = step, action

    @hookimpl
    def on_step_end(self, run_id, step):
        if step == self.step:
            self.action(run_id)


def new_run(registry: Registry, spec_path: Path) -> str:
    run_id, _ = create_run(load_spec(spec_path), registry)
    return run_id


def losses(registry: Registry, run_id: str) -> list[tuple[int, float]]:
    return registry.metrics(run_id, "loss")


def evaluated(registry: Registry, run_id: str) -> list[tuple[str, str]]:
    """``(checkpoint, evaluator)`` pairs with results, in the order they were recorded."""
    return list(dict.fromkeys((e["checkpoint"], e["evaluator"])
                              for e in registry.evaluations(run_id)))


def test_stop_request_checkpoints_then_resume_completes_with_the_same_losses(
        registry_path, qa_jsonl, make_spec, plugin):
    registry = Registry(registry_path)
    spec = make_spec(qa_jsonl, **{"training.max_steps": 12})
    run_id = new_run(registry, spec)
    plugin(StopAt(5, lambda rid: rid == run_id and registry.request_stop(rid)), "stop-at-5")
    assert execute(registry, run_id) == "stopped"

    run = registry.get_run(run_id)
    [ckpt] = registry.checkpoints(run_id)
    stopped_at = ckpt["step"]
    assert run["status"] == "stopped" and run["error"] is None and run["ended_at"]
    assert 5 <= stopped_at < 12
    assert Path(ckpt["path"]).name == f"checkpoint-{stopped_at}"
    assert (Path(ckpt["path"]) / "trainer_state.json").is_file()
    assert {e["checkpoint"] for e in registry.evaluations(run_id)} == {"base"}
    assert [s for s, _ in losses(registry, run_id)] == list(range(1, stopped_at + 1))
    log = (Path(run["output_dir"]) / "run.log").read_text()
    assert f"stopped at step {stopped_at} (checkpoint saved)" in log

    assert execute(registry, run_id, resume=True) == "completed"
    run = registry.get_run(run_id)
    assert run["status"] == "completed" and run["stop_requested_at"] is None
    resumed = losses(registry, run_id)
    assert [s for s, _ in resumed] == list(range(1, 13))  # no step twice
    assert sorted({e["checkpoint"] for e in registry.evaluations(run_id)}) == ["base", "final"]
    rows = [(e["checkpoint"], e["metric"]) for e in registry.evaluations(run_id)]
    assert len(rows) == len(set(rows))  # the baseline was not evaluated again

    straight = new_run(registry, spec)
    assert execute(registry, straight) == "completed"
    assert [v for _, v in resumed] == pytest.approx([v for _, v in losses(registry, straight)],
                                                    rel=1e-4)


def test_sigterm_stops_after_the_next_step_with_a_checkpoint(registry_path, qa_jsonl, make_spec,
                                                      plugin):
    registry = Registry(registry_path)
    spec = make_spec(qa_jsonl, **{"training.max_steps": 12})
    plugin(StopAt(3, lambda _: os.kill(os.getpid(), signal.SIGTERM)), "sigterm-at-3")
    run_id = new_run(registry, spec)
    assert execute(registry, run_id) == "stopped"
    # SIGTERM arrives while step 3 is logged; the Trainer checks at the end of step 4
    assert [c["step"] for c in registry.checkpoints(run_id)] == [4]
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # handler restored


def test_cli_stop_and_resume_refuse_what_cannot_be_done(registry_path, qa_jsonl, make_spec):
    registry = Registry(registry_path)
    run_id = new_run(registry, make_spec(qa_jsonl, **{"training.max_steps": 2}))
    registry.update_run(run_id, status="completed")
    runner = CliRunner()
    result = runner.invoke(cli, ["runs", "stop", run_id])
    assert result.exit_code == 2
    assert f"run {run_id} is completed; only a queued or running run can be stopped" in \
        result.output
    result = runner.invoke(cli, ["resume", run_id])
    assert result.exit_code == 2
    assert f"run {run_id} is completed; only a stopped, interrupted or failed run can be " \
        "resumed" in result.output
    registry.update_run(run_id, status="running", pid=os.getpid())
    result = runner.invoke(cli, ["runs", "stop", run_id])
    assert result.exit_code == 0, result.output
    assert registry.get_run(run_id)["stop_requested_at"]


def test_telemetry_samples_every_monitor_during_the_run(registry_path, qa_jsonl, make_spec,
                                                        monkeypatch):
    monitors = get_plugins().components["device-monitor"]
    monkeypatch.setitem(monitors, "fake-gpus", ComponentInfo(TwoGPUs, "fake-gpus"))
    registry = Registry(registry_path)
    run_id = new_run(registry, make_spec(qa_jsonl, **{"training.max_steps": 4,
                                                      "training.telemetry_interval_s": 0.05}))
    assert execute(registry, run_id) == "completed"
    rows = registry.system_metrics_since(run_id)
    by_device = {r["device"]: r for r in rows}
    assert {"cpu", "cuda:0", "cuda:1"} <= set(by_device)
    assert (by_device["cuda:1"]["util_pct"], by_device["cuda:1"]["mem_bytes"],
            by_device["cuda:1"]["mem_total_bytes"], by_device["cuda:1"]["power_w"],
            by_device["cuda:1"]["temp_c"]) == (91.0, 2 * 2**30, 80 * 2**30, 301.0, 61.0)
    assert by_device["cpu"]["mem_bytes"] > 50 * 2**20  # this process's RSS, torch loaded
    assert sum(r["device"] == "cuda:0" for r in rows) >= 2  # sampled more than once


class Sleepy(Evaluator):
    """An evaluator that, on its ``at``-th call, asks for a stop with ``action()`` and then
    works for up to 30 s in small slices (as a real evaluator computes batch after batch)."""

    name = "sleepy"
    description = "stops the run while it evaluates"
    calls = 0
    at = 1
    action = staticmethod(lambda: None)

    def evaluate(self, ctx):
        type(self).calls += 1
        if type(self).calls == type(self).at:
            type(self).action()
            for _ in range(3000):
                time.sleep(0.01)
        return EvalResult({"score": 1.0})


@pytest.fixture
def sleepy(monkeypatch):
    """Register :class:`Sleepy` as evaluator ``sleepy`` for one test; heartbeats every 0.05 s."""
    monkeypatch.setitem(get_plugins().components["evaluator"], "sleepy",
                        ComponentInfo(Sleepy, "sleepy-plugin"))
    monkeypatch.setattr(Sleepy, "calls", 0)
    monkeypatch.setattr(lifecycle, "HEARTBEAT_S", 0.05)
    return Sleepy


def sleepy_spec(make_spec, qa_jsonl) -> Path:
    return make_spec(qa_jsonl, **{"training.max_steps": 6, "evaluators": [
        {"name": "perplexity"}, {"name": "sleepy"}]})


@pytest.mark.parametrize("how", ["tuneyard stop", "SIGTERM"])
def test_stop_during_the_baseline_evaluation_ends_at_once_then_resume_trains(
        registry_path, qa_jsonl, make_spec, sleepy, monkeypatch, how):
    """No step to finish and nothing trained: the run ends ``stopped`` within a heartbeat,
    without a checkpoint; resume trains from step 0 and evaluates the baseline it lacks."""
    registry = Registry(registry_path)
    spec = sleepy_spec(make_spec, qa_jsonl)
    run_id = new_run(registry, spec)
    monkeypatch.setattr(sleepy, "action", staticmethod(
        (lambda: registry.request_stop(run_id)) if how == "tuneyard stop"
        else (lambda: os.kill(os.getpid(), signal.SIGTERM))))
    started = time.monotonic()
    assert execute(registry, run_id) == "stopped"
    assert time.monotonic() - started < 20  # not the evaluator's 30 s
    run = registry.get_run(run_id)
    assert (run["status"], run["error"], run["step"]) == ("stopped", None, 0)
    assert registry.checkpoints(run_id) == []
    assert evaluated(registry, run_id) == [
        ("base", "perplexity")]  # the interrupted evaluator wrote nothing

    assert execute(registry, run_id, resume=True) == "completed"
    assert evaluated(registry, run_id) == [("base", "perplexity"), ("base", "sleepy"),
                                           ("final", "perplexity"), ("final", "sleepy")]
    straight = new_run(registry, make_spec(qa_jsonl, **{"training.max_steps": 6}))
    assert execute(registry, straight) == "completed"
    assert losses(registry, run_id) == losses(registry, straight)


def test_stop_during_the_final_evaluation_then_resume_only_evaluates(
        registry_path, qa_jsonl, make_spec, sleepy, monkeypatch):
    """Training is done and ``final/`` saved: the stop ends the final evaluation at once
    (``stopped``); resume trains nothing and runs only the evaluator that did not finish."""
    registry = Registry(registry_path)
    run_id = new_run(registry, sleepy_spec(make_spec, qa_jsonl))
    monkeypatch.setattr(sleepy, "at", 2)  # the final evaluation
    monkeypatch.setattr(sleepy, "action", staticmethod(
        lambda: os.kill(os.getpid(), signal.SIGINT)))  # Ctrl-C
    assert execute(registry, run_id) == "stopped"
    run = registry.get_run(run_id)
    assert (Path(run["output_dir"]) / "final" / "adapter_model.safetensors").is_file()
    before = losses(registry, run_id)
    assert [s for s, _ in before] == list(range(1, 7))
    assert evaluated(registry, run_id) == [
        ("base", "perplexity"), ("base", "sleepy"), ("final", "perplexity")]

    result = CliRunner().invoke(cli, ["resume", run_id])
    assert result.exit_code == 0, result.output
    assert "its training finished; it runs the final evaluations it lacks" in " ".join(
        result.output.split())
    assert registry.get_run(run_id)["status"] == "completed"
    assert losses(registry, run_id) == before  # nothing trained again
    assert evaluated(registry, run_id) == [
        ("base", "perplexity"), ("base", "sleepy"), ("final", "perplexity"),
        ("final", "sleepy")]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_ctrl_c_and_sigterm_during_tuneyard_run_checkpoint_and_exit_0(
        registry_path, qa_jsonl, make_spec, plugin, sig):
    plugin(StopAt(3, lambda _: os.kill(os.getpid(), sig)), "signal-at-3")
    result = CliRunner().invoke(cli, ["run", str(make_spec(qa_jsonl))])
    assert result.exit_code == 0, result.output
    [run] = Registry(registry_path).list_runs()
    assert (run["status"], run["step"]) == ("stopped", 4)
    assert [c["step"] for c in Registry(registry_path).checkpoints(run["id"])] == [4]
    name = "Ctrl-C" if sig == signal.SIGINT else "SIGTERM"
    log = (Path(run["output_dir"]) / "run.log").read_text()
    assert f"stop requested ({name}): the run saves a checkpoint at its next step (or ends " \
        "now if it is loading or evaluating)" in log


def test_a_second_ctrl_c_aborts_without_a_checkpoint(registry_path, qa_jsonl, make_spec,
                                                     plugin):
    def twice(_):
        os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGINT)

    plugin(StopAt(3, twice), "ctrl-c-twice")
    registry = Registry(registry_path)
    run_id = new_run(registry, make_spec(qa_jsonl))
    with pytest.raises(KeyboardInterrupt):
        execute(registry, run_id)
    run = registry.get_run(run_id)
    assert (run["status"], run["error"]) == (
        "interrupted", "aborted by a second Ctrl-C (no checkpoint saved)")
    assert registry.checkpoints(run_id) == []


def test_tuneyard_stop_checkpoints_a_detached_run_which_exits_0(registry_path, qa_jsonl,
                                                               make_spec, tmp_path):
    """The run is its own process (``python -m tuneyard.core.run``), slowed to 0.2 s a step
    by a plugin; ``tuneyard stop`` from another process: checkpoint, ``stopped``, exit 0."""
    plugins_dir = tmp_path / "plugins"
    plugins_dir.mkdir()
    (plugins_dir / "slow.py").write_text(
        "import time\nfrom tuneyard.core.hookspecs import hookimpl\n\n"
        "@hookimpl\ndef on_step_end(run_id, step):\n    time.sleep(0.2)\n")
    registry = Registry(registry_path)
    run_id = new_run(registry, make_spec(qa_jsonl, **{"training.max_steps": 200}))
    env = {**os.environ, "TUNEYARD_PLUGINS_DIR": str(plugins_dir)}
    proc = subprocess.Popen([sys.executable, "-m", "tuneyard.core.run", run_id,
                             "--registry", str(registry_path)], env=env)
    try:
        deadline = time.monotonic() + 120
        while registry.get_run(run_id)["step"] < 2:
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.1)
        stop = subprocess.run([sys.executable, "-m", "tuneyard.core.cli", "stop", run_id],
                              env=env, capture_output=True, text=True)
        assert stop.returncode == 0, stop.stderr
        assert proc.wait(timeout=120) == 0
    finally:
        proc.kill()
    run = registry.get_run(run_id)
    [ckpt] = registry.checkpoints(run_id)
    assert run["status"] == "stopped" and 2 < ckpt["step"] == run["step"] < 200


def test_resume_without_a_checkpoint_trains_from_step_0(registry_path, qa_jsonl, make_spec):
    """A run killed before its first checkpoint: resume starts training again (the metrics it
    had logged are replaced) and ends with the losses of an uninterrupted run."""
    registry = Registry(registry_path)
    spec = make_spec(qa_jsonl, **{"training.max_steps": 4})
    run_id = new_run(registry, spec)
    registry.update_run(run_id, status="interrupted")
    for step in (1, 2):
        registry.add_metrics(run_id, step, {"loss": 99.0})
    result = CliRunner().invoke(cli, ["resume", run_id])
    assert result.exit_code == 0, result.output
    assert "it saved no checkpoint; training starts again from step 0" in " ".join(
        result.output.split())
    straight = new_run(registry, spec)
    assert execute(registry, straight) == "completed"
    assert losses(registry, run_id) == losses(registry, straight)


def test_heartbeat_advances_while_the_run_loads_and_evaluates(registry_path, qa_jsonl,
                                                             make_spec, sleepy, monkeypatch):
    """Between steps nothing else writes the run's row: the heartbeat thread does, so a
    reader can tell a live run from a dead one (here every 0.05 s)."""
    registry = Registry(registry_path)
    run_id = new_run(registry, sleepy_spec(make_spec, qa_jsonl))
    beats = []

    def watch() -> None:
        for _ in range(3):
            beats.append(Registry(registry_path).get_run(run_id)["heartbeat_at"])
            time.sleep(0.3)
        os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(sleepy, "action", staticmethod(watch))
    assert execute(registry, run_id) == "stopped"
    assert beats[0] < beats[1] < beats[2]


def test_logged_steps_are_written_in_batches_and_none_is_lost(registry_path, qa_jsonl,
                                                              make_spec, plugin, monkeypatch):
    """Steps of at least 0.05 s (a slow collator), written every ``FLUSH_S`` (1 s here; 0.25 s
    in use): at most one transaction per ``FLUSH_S`` of training (plus the checkpoint's and
    the end's), several steps in one, every step's five metrics recorded with its own time;
    ``on_step_end`` of a step finds its rows written, and a stop request it makes through the
    registry ends the run within a flush. Bounds are in time, not steps, so a busy machine
    cannot break them."""
    from tuneyard.core.formats import PadCollator

    monkeypatch.setattr(train, "FLUSH_S", 1.0)
    pad = PadCollator.__call__
    monkeypatch.setattr(PadCollator, "__call__", lambda self, rows: (time.sleep(0.05),
                                                                    pad(self, rows))[1])
    registry = Registry(registry_path)
    writes = []
    add_steps = Registry.add_steps
    monkeypatch.setattr(Registry, "add_steps", lambda self, run_id, steps: (
        writes.append(len(steps)), add_steps(self, run_id, steps))[1])
    run_id = new_run(registry, make_spec(qa_jsonl, **{"training.max_steps": 200}))
    seen = {}

    @hookimpl
    def on_step_end(run_id, step, metrics):
        seen[step] = ({r["name"]: r["value"] for r in registry.db.query(
            "SELECT name, value FROM metrics WHERE run_id = ? AND step = ?", [run_id, step])},
            metrics)

    plugin(StopAt(3, lambda rid: registry.request_stop(rid)), "stop-at-3")
    plugin(types.SimpleNamespace(on_step_end=on_step_end), "reads-the-registry")
    assert execute(registry, run_id) == "stopped"
    stopped_at = registry.get_run(run_id)["step"]
    rows = registry.db.execute("SELECT step, count(*), count(DISTINCT at), min(at) FROM metrics"
                               " WHERE run_id = ? GROUP BY step", [run_id]).fetchall()
    assert [r[:3] for r in rows] == [(s, 5, 1) for s in range(1, stopped_at + 1)]
    assert sorted(seen) == list(range(1, stopped_at + 1))
    assert all(in_registry == metrics for in_registry, metrics in seen.values())
    times = [datetime.fromisoformat(r[3]).timestamp() for r in rows]
    assert times == sorted(times) and len(set(times)) == stopped_at  # stamped per step
    assert sum(writes) == stopped_at and max(writes) > 1
    assert len([w for w in writes if w]) <= (times[-1] - times[0]) / train.FLUSH_S + 2
    assert 3 < stopped_at and times[-1] - times[2] < 2 * train.FLUSH_S + 1.0


def test_a_stop_asked_for_while_the_run_is_queued_is_not_lost(registry_path, qa_jsonl,
                                                              make_spec):
    """``tuneyard stop`` right after ``run --detach``, before the run process is up: the run
    ends ``stopped`` as soon as it starts, before anything loads, and the request is used up."""
    registry = Registry(registry_path)
    run_id = new_run(registry, make_spec(qa_jsonl))
    assert registry.request_stop(run_id)  # still queued
    assert execute(registry, run_id) == "stopped"
    run = registry.get_run(run_id)
    assert (run["status"], run["step"], run["stop_requested_at"]) == ("stopped", 0, None)
    assert registry.evaluations(run_id) == [] and registry.checkpoints(run_id) == []
    assert execute(registry, run_id, resume=True) == "completed"


def test_a_resume_refused_because_the_data_changed_leaves_the_run_as_it_was(
        registry_path, qa_jsonl, make_spec, stop_at):
    registry = Registry(registry_path)
    run_id = new_run(registry, make_spec(qa_jsonl))
    stop_at(registry, run_id, 3)
    assert execute(registry, run_id) == "stopped"
    before = registry.get_run(run_id)
    qa_jsonl.write_text(qa_jsonl.read_text().replace("small animal", "tiny animal"))
    with pytest.raises(DataChanged, match=f"^run {run_id}: its dataset changed since it "):
        execute(registry, run_id, resume=True)
    after = registry.get_run(run_id)
    assert [after[k] for k in ("status", "error", "ended_at", "step")] == [
        before[k] for k in ("status", "error", "ended_at", "step")]
