"""Concurrency (issue #6): three runs write metrics at full speed while the TUI and
``tuneyard runs list`` read the same registry. Nothing may fail with ``database is locked``
and no metric row may be lost.

Each process runs for ``TUNEYARD_CONCURRENCY_S`` seconds (default 15); ``bench/registry_write.py
--minutes N`` runs this test for minutes and reports the writers' latencies. When
``TUNEYARD_CONCURRENCY_REPORT`` names a file, the test writes what it measured there as JSON.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from tuneyard.core.registry import Registry, now

SECONDS = float(os.environ.get("TUNEYARD_CONCURRENCY_S", "15"))
WRITERS = 3

#: A run process without the training: the runner's own ``RegistryCallback`` driven in a tight
#: loop, as the Trainer calls it each step (``on_step_end``, then ``on_log`` with the five
#: metrics a run logs), so its writes are batched as in a run (``train.FLUSH_S``) and it
#: reads the stop request with each write. Prints what it logged and the per-step time.
WRITER = textwrap.dedent("""
    import json, os, sys, time
    from types import SimpleNamespace
    from tuneyard.core.plugins import Plugins
    from tuneyard.core.registry import Registry, now
    from tuneyard.core.run.lifecycle import StopRequest
    from tuneyard.core.run.train import RegistryCallback

    class Quiet:
        def phase(self, text): pass
        def step(self, step, total, metrics): pass

    path, seconds = sys.argv[1], float(sys.argv[2])
    registry = Registry(path, create=False)
    run_id = registry.create_run({"name": f"writer-{os.getpid()}",
                                  "training": {"max_steps": 10**9}})
    registry.update_run(run_id, status="running", pid=os.getpid(), started_at=now())
    stop = StopRequest(registry, run_id)
    callback = RegistryCallback(registry, Plugins(), run_id, Quiet(), stop)
    state = SimpleNamespace(global_step=0, max_steps=10**9, num_input_tokens_seen=0)
    control = SimpleNamespace(should_save=False, should_training_stop=False)
    callback.on_train_begin(None, state, control)
    step, rows, took = 0, 0, []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        step += 1
        state.global_step, state.num_input_tokens_seen = step, step * 256
        logs = {"loss": 2.0 + 1.0 / step, "learning_rate": 1e-3, "grad_norm": 0.5,
                "epoch": step / 1e4}
        t = time.perf_counter()
        callback.on_step_end(None, state, control)
        callback.on_log(None, state, control, logs=logs)
        took.append(time.perf_counter() - t)
        rows += 5  # the four logged, and tokens_per_s
        assert not stop
    callback.flush()  # as the runner does when training ends
    registry.update_run(run_id, status="completed", ended_at=now())
    took.sort()
    print(json.dumps({"run_id": run_id, "steps": step, "rows": rows,
                      "p50_us": took[len(took) // 2] * 1e6,
                      "p99_us": took[int(len(took) * 0.99)] * 1e6,
                      "max_us": took[-1] * 1e6, "mean_us": sum(took) / len(took) * 1e6}))
""")

#: The TUI, headless, as the CLI builds it (poll every 0.1 s): it waits for the three runs on
#: the Runs screen, then opens the newest run's live monitor for 2 s and goes back to the list
#: for 1 s, over and over. A poll that fails is shown as a notification: they are printed.
TUI = textwrap.dedent("""
    import asyncio, json, sys, time
    from pathlib import Path
    from tuneyard.tui.app import make_app
    from tuneyard.tui.screens.run import RunScreen

    async def main(path, seconds, writers):
        app = make_app(Path(path), poll_interval_s=0.1)
        notes = []
        app.notify = lambda message, **kw: notes.append(str(message))
        run_polls, opened = 0, 0
        async with app.run_test(size=(120, 40)) as pilot:
            runs = app.screen
            end = time.monotonic() + seconds
            while len(runs.runs or []) < writers and time.monotonic() < end:
                await pilot.pause(0.1)
            seen = len(runs.runs or [])
            while time.monotonic() < end:
                app.open_run(runs.runs[0]["id"])
                await pilot.pause(2.0)
                assert isinstance(app.screen, RunScreen)
                run_polls += app.screen.polls
                opened += 1
                await pilot.press("escape")
                await pilot.pause(1.0)
            print(json.dumps({"notes": notes, "runs_seen": seen, "runs_polls": runs.polls,
                              "run_polls": run_polls, "opened": opened}))

    asyncio.run(main(sys.argv[1], float(sys.argv[2]), int(sys.argv[3])))
""")


def spawn(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def test_three_writers_and_readers_lose_no_metric_rows_and_never_lock(tmp_path):
    """Every process exits 0 with nothing on stderr, no TUI poll fails, each run holds exactly
    the rows its writer says it wrote (five per step, every step), and the file is intact."""
    path = tmp_path / "registry.db"
    Registry(path)  # created first: racing creation is test_registry's
    writers = [spawn("-c", WRITER, str(path), str(SECONDS)) for _ in range(WRITERS)]
    tui = spawn("-c", TUI, str(path), str(SECONDS), str(WRITERS))
    listed = []  # (exit code, stderr, runs listed) of each `tuneyard runs list --json`
    wal = path.with_name(path.name + "-wal")
    wal_bytes = 0  # the largest the write-ahead log was seen (reported, not asserted)
    while any(w.poll() is None for w in writers):
        wal_bytes = max(wal_bytes, wal.stat().st_size if wal.exists() else 0)
        done = subprocess.run([sys.executable, "-m", "tuneyard.core.cli", "--registry",
                               str(path), "runs", "list", "--json"],
                              capture_output=True, text=True, timeout=120)
        listed.append((done.returncode, done.stderr,
                       len(json.loads(done.stdout)) if done.returncode == 0 else None))
    ran = [(w, *w.communicate(timeout=60)) for w in writers] + [(tui, *tui.communicate(
        timeout=120))]
    conn = sqlite3.connect(path)
    wrote = [json.loads(out) for w, out, _ in ran[:-1] if w.returncode == 0]
    for w in wrote:
        w["counted"] = conn.execute("SELECT count(*) FROM metrics WHERE run_id = ?",
                                    [w["run_id"]]).fetchone()[0]
    shown = json.loads(ran[-1][1]) if tui.returncode == 0 else {"notes": []}
    errors = [e for _, _, e in ran] + [e for _, e, _ in listed] + shown["notes"]
    if report := os.environ.get("TUNEYARD_CONCURRENCY_REPORT"):
        Path(report).write_text(json.dumps(
            {"seconds": SECONDS, "writers": wrote, "cli_calls": len(listed), "tui": shown,
             "lock_errors": sum("locked" in e for e in errors), "wal_bytes": wal_bytes}))

    for p, out, err in ran:
        assert (p.returncode, err) == (0, ""), err
    assert len(listed) >= 2
    assert [(rc, err) for rc, err, _ in listed] == [(0, "")] * len(listed)
    assert max(n for _, _, n in listed) == WRITERS
    assert shown["notes"] == []  # no poll failed
    assert shown["runs_seen"] == WRITERS
    assert shown["opened"] >= 1 and shown["run_polls"] >= shown["opened"]
    assert shown["runs_polls"] >= 1

    for w in wrote:
        assert w["steps"] > 0 and w["rows"] == 5 * w["steps"] == w["counted"]
        steps, last = conn.execute(
            "SELECT count(DISTINCT step), max(step) FROM metrics WHERE run_id = ?",
            [w["run_id"]]).fetchone()
        assert (steps, last) == (w["steps"], w["steps"])
        assert conn.execute("SELECT status, step FROM runs WHERE id = ?",
                            [w["run_id"]]).fetchone() == ("completed", w["steps"])
    assert conn.execute("SELECT count(*) FROM metrics").fetchone()[0] == sum(
        w["rows"] for w in wrote)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    conn.close()


def test_crashed_runs_are_reconciled_while_a_run_writes(tmp_path):
    """Ten runs whose process died (still ``running`` in the registry) are marked
    ``interrupted`` by the next reader while another run writes at full speed: the reader's
    check-and-mark must not fail with ``database is locked`` (it must not write while its own
    read of the active runs is still open: SQLite cannot upgrade a read of an older snapshot
    to a write, and answers at once without waiting on the busy timeout)."""
    path = tmp_path / "registry.db"
    registry = Registry(path)
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    crashed = [registry.create_run({"name": f"crashed-{i}"}, status="running", pid=gone.pid,
                                   heartbeat_at=now()) for i in range(10)]
    writer = spawn("-c", WRITER, str(path), "6")
    conn = sqlite3.connect(path)
    try:
        deadline = time.monotonic() + 30
        while conn.execute("SELECT count(*) FROM metrics").fetchone()[0] < 1000:  # writing
            assert time.monotonic() < deadline and writer.poll() is None
            time.sleep(0.01)
        statuses = [{r["id"]: r["status"] for r in Registry(path, create=False).list_runs()}
                    for _ in range(3)]
    finally:
        out, err = writer.communicate(timeout=60)
    assert (writer.returncode, err) == (0, ""), err
    live = json.loads(out)["run_id"]
    assert statuses[0] == {**dict.fromkeys(crashed, "interrupted"), live: "running"}
    assert statuses[1:] == statuses[:1] * 2
    conn.close()


def test_opening_a_registry_does_not_queue_for_the_write_lock(tmp_path, monkeypatch):
    """Readers (each ``tuneyard runs list``, each TUI screen shown) open the registry; an
    up-to-date one is only read, so opening it while a run holds the write lock neither
    waits for nor takes that lock (with a 0.2 s busy timeout it would fail otherwise)."""
    from tuneyard.core import registry as registry_module

    path = tmp_path / "registry.db"
    run_id = Registry(path).create_run({"name": "writing"})
    writer = sqlite3.connect(path, isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")  # a run in the middle of writing a step
    monkeypatch.setattr(registry_module, "BUSY_TIMEOUT_S", 0.2)
    try:
        reader = Registry(path, create=False)
        assert reader.get_run(run_id)["name"] == "writing"
        assert reader.schema_version() == registry_module.MIGRATIONS[-1][0]
    finally:
        writer.execute("ROLLBACK")
        writer.close()
