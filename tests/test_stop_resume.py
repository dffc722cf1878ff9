"""Graceful stop (a registry request or SIGTERM: checkpoint, then ``stopped``), resume from the
checkpoint, ``tuneyard runs stop`` / ``resume``, and device telemetry sampled into the registry
by the run process (a fake monitor plugin reports two GPUs)."""

from __future__ import annotations

import os
import signal
import types
from pathlib import Path

import pytest
from click.testing import CliRunner

from tuneyard.core.cli import cli
from tuneyard.core.components import DeviceMonitor, DeviceSample
from tuneyard.core.hookspecs import hookimpl
from tuneyard.core.plugins import ComponentInfo, get_plugins
from tuneyard.core.registry import Registry
from tuneyard.core.runner import execute
from tuneyard.core.spec import load_spec
from tuneyard.core.engine import create_run


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


@pytest.fixture
def plugin():
    """Register a lifecycle plugin object for one test (``plugin(obj, name)``)."""
    p, names = get_plugins(), []

    def add(obj, name: str) -> None:
        module = types.ModuleType(name)
        for attr in dir(obj):
            if attr.startswith("on_"):
                setattr(module, attr, getattr(obj, attr))
        p.register_plugin(module, name=name)
        names.append(name)

    yield add
    for name in names:
        p.pm.unregister(name=name)
        p.infos.pop(name, None)


def new_run(registry: Registry, spec_path: Path) -> str:
    run_id, _ = create_run(load_spec(spec_path), registry)
    return run_id


def losses(registry: Registry, run_id: str) -> list[tuple[int, float]]:
    return registry.metrics(run_id, "loss")


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
    registry.update_run(run_id, status="interrupted")
    result = runner.invoke(cli, ["resume", run_id])
    assert result.exit_code == 2
    assert f"run {run_id} has no checkpoint to resume from" in result.output
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
