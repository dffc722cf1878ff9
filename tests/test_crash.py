"""Crashes: ``kill -9`` of a run process at ten moments (loading, training, in the middle of a
checkpoint write) and a checkpoint write that fails (disk full, read-only folder). The registry
stays consistent, the run reads as ``interrupted`` (pid + heartbeat), a half-written
checkpoint is never resumed from, and the resumed run ends with the losses of an uninterrupted
one."""

from __future__ import annotations

import errno
import hashlib
import os
import random
import re
import signal
import sqlite3
import time
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from tuneyard.core.cli import cli
from tuneyard.core.engine import create_run, launch_detached
from tuneyard.core.errors import CheckpointError
from tuneyard.core.hookspecs import hookimpl
from tuneyard.core.registry import Registry
from tuneyard.core.run.checkpoints import resume_point
from tuneyard.core.run.pipeline import execute
from tuneyard.core.spec import load_spec

#: A plugin for the run process: 0.1 s a step, and a 1 s pause in the middle of each
#: checkpoint write (the weights are written, the optimizer not yet), announced by a file.
CRASHY = '''
import os, time
from pathlib import Path

import torch
from tuneyard.core.hookspecs import hookimpl

_save = torch.save


def slow_save(obj, f, *args, **kwargs):
    if str(f).endswith("optimizer.pt"):
        Path(os.environ["CRASH_MARK"]).write_text(str(f))
        time.sleep(1.0)
    return _save(obj, f, *args, **kwargs)


torch.save = slow_save


@hookimpl
def on_step_end(run_id, step):
    time.sleep(0.1)
'''


def wait_for(condition, what: str, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def files_digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_kill_9_at_ten_moments_keeps_the_registry_consistent_and_resume_exact(
        registry_path, qa_jsonl, make_spec, tmp_path, monkeypatch):
    plugins_dir, mark = tmp_path / "plugins", tmp_path / "writing-checkpoint"
    plugins_dir.mkdir()
    (plugins_dir / "crashy.py").write_text(CRASHY)
    monkeypatch.setenv("TUNEYARD_PLUGINS_DIR", str(plugins_dir))  # the run processes' env
    monkeypatch.setenv("CRASH_MARK", str(mark))
    spec = make_spec(qa_jsonl, **{"training.max_steps": 24, "training.save_steps": 4})
    registry = Registry(registry_path)
    run_id, out = create_run(load_spec(spec), registry)
    checkpoints = out / "checkpoints"
    rng = random.Random(0)
    moments = ["step", "checkpoint", "loading", "step", "checkpoint", "step", "loading",
               "checkpoint", "step", "step"]
    for i, moment in enumerate(moments):
        mark.unlink(missing_ok=True)
        pid = launch_detached(run_id, registry, out, resume=i > 0)
        if moment == "loading":
            time.sleep(rng.uniform(0.2, 3.0))
        elif moment == "step":
            start = max([c["step"] for c in registry.checkpoints(run_id)] or [0])
            target = start + rng.randint(1, 6)
            wait_for(lambda: registry.get_run(run_id)["step"] >= target, f"step {target}")
        else:
            wait_for(mark.exists, "a checkpoint write")
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)

        conn = sqlite3.connect(registry_path)
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)], moment
        conn.close()
        run = Registry(registry_path).get_run(run_id)  # a new reader sees the dead process
        assert run["status"] == "interrupted", (i, moment, run["status"])
        if moment == "checkpoint":
            half = Path(mark.read_text()).parent  # .partial-*/checkpoint-N
            assert half.parent.name.startswith(".partial-") and half.parent.parent == checkpoints
            assert not (half / "trainer_state.json").exists()
            assert not (checkpoints / half.name).exists()
            point = resume_point(registry, run)
            step = int(half.name.removeprefix("checkpoint-"))
            assert point.checkpoint == (checkpoints / f"checkpoint-{step - 4}"
                                        if step > 4 else None)
        rows = registry.db.execute("SELECT step, name, count(*) FROM metrics WHERE run_id = ?"
                                   " GROUP BY step, name HAVING count(*) > 1", [run_id])
        assert rows.fetchall() == []  # no step logged twice

    monkeypatch.delenv("TUNEYARD_PLUGINS_DIR")
    assert execute(registry, run_id, resume=True) == "completed"
    assert not list(checkpoints.glob(".partial-*"))  # what the killed processes left is gone
    resumed = registry.metrics(run_id, "loss")
    straight = create_run(load_spec(spec), registry)[0]
    assert execute(registry, straight) == "completed"
    expected = registry.metrics(straight, "loss")
    assert [s for s, _ in resumed] == list(range(1, 25))
    assert [v for _, v in resumed] == pytest.approx([v for _, v in expected], abs=1e-6)


class Snapshot:
    """Lifecycle plugin: the file digests of each checkpoint when it was saved."""

    def __init__(self) -> None:
        self.digests: dict[int, dict[str, str]] = {}

    @hookimpl
    def on_checkpoint_saved(self, step, path):
        self.digests[step] = files_digest(Path(path))


TORCH_FULL_DISK = "[enforce fail at inline_container.cc:672] . unexpected pos 8128 vs 8016"


@pytest.mark.parametrize("error, reason", [
    (OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)), os.strerror(errno.ENOSPC)),
    (OSError(errno.EROFS, os.strerror(errno.EROFS)), os.strerror(errno.EROFS)),
    (RuntimeError(TORCH_FULL_DISK), f"RuntimeError: {TORCH_FULL_DISK}"),  # torch's zip writer
], ids=["disk-full", "read-only", "disk-full-torch"])
def test_checkpoint_write_failure_fails_the_run_and_keeps_the_previous_checkpoint(
        registry_path, qa_jsonl, make_spec, plugin, monkeypatch, error, reason):
    """The second checkpoint's write fails half-way (the optimizer file is cut short, then the
    error as the OS or torch's writer gives it): the run is ``failed`` with that reason and the
    free space left, exit status 1; ``checkpoint-4`` is
    byte-for-byte as saved and nothing of ``checkpoint-8`` is left; resume from it ends with the
    losses of an uninterrupted run."""
    snapshot = Snapshot()
    plugin(snapshot, "snapshot")
    real_save = torch.save

    def failing_save(obj, f, *args, **kwargs):
        if "checkpoint-8" in str(f):
            Path(f).write_bytes(b"PK\x03\x04 half")
            raise error
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", failing_save)
    spec = make_spec(qa_jsonl, **{"training.save_steps": 4})
    result = CliRunner().invoke(cli, ["run", str(spec)])
    registry = Registry(registry_path)
    [run] = registry.list_runs()
    checkpoints = Path(run["output_dir"]) / "checkpoints"
    message = re.escape(f"could not write checkpoint-8 to {checkpoints}: {reason} (") + \
        r"[\d,]+\.\d MiB free there" + re.escape(
            "); the previous checkpoint is intact (free space or fix the folder, then: "
            "tuneyard resume RUN)")
    assert result.exit_code == 1
    assert re.search(f"Error: {message}", result.output)
    assert run["status"] == "failed" and re.fullmatch(message, run["error"])
    assert [c["step"] for c in registry.checkpoints(run["id"])] == [4]
    assert sorted(p.name for p in checkpoints.iterdir()) == ["checkpoint-4"]
    assert files_digest(checkpoints / "checkpoint-4") == snapshot.digests[4]

    monkeypatch.setattr(torch, "save", real_save)
    assert execute(registry, run["id"], resume=True) == "completed"
    straight = create_run(load_spec(spec), registry)[0]
    assert execute(registry, straight) == "completed"
    assert registry.metrics(run["id"], "loss") == pytest.approx(
        registry.metrics(straight, "loss"), abs=1e-6)


def test_a_failing_final_save_keeps_the_last_checkpoint(registry_path, qa_jsonl, make_spec,
                                                        monkeypatch):
    """``final/`` is written like a checkpoint: a failure (here the disk fills while the
    tokenizer is written, after the weights) leaves no ``final`` folder (a half-written one
    would read as a finished run) and resume continues from the last checkpoint."""
    from transformers import PreTrainedTokenizerBase

    real = PreTrainedTokenizerBase.save_pretrained

    def full_disk(self, save_directory, *args, **kwargs):
        if Path(save_directory).name == "final":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(self, save_directory, *args, **kwargs)

    monkeypatch.setattr(PreTrainedTokenizerBase, "save_pretrained", full_disk)
    registry = Registry(registry_path)
    run_id, out = create_run(load_spec(make_spec(qa_jsonl, **{"training.save_steps": 4})),
                             registry)
    with pytest.raises(CheckpointError, match="^could not write final to "):
        execute(registry, run_id)
    assert not (out / "final").exists()
    assert resume_point(registry, registry.get_run(run_id)).checkpoint == \
        out / "checkpoints" / "checkpoint-12"
