"""Fill a registry with synthetic finished runs, fast, for the benchmarks (not a test fixture);
and the machine they ran on, for their tables.

The rows go straight into the registry's own tables (a :class:`~tuneyard.core.registry.Registry`
is opened first, so the schema is the migrations'), with ``executemany`` in a few large
transactions: a million metric rows in 8 to 13 s on the project's 2-core machine, so the
benchmarks' 10 million take about two minutes, not the hours real training would. Each run
looks like one the runner records: the spec of ``examples/smollm2-wordnet-lora.yaml`` as the CLI
stores it, five metrics per logged step (:data:`METRICS`, as ``RegistryCallback`` writes them)
and a perplexity evaluation of its final checkpoint.
"""

from __future__ import annotations

import json
import math
import os
import platform
import socket
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

from tuneyard.core.registry import Registry

STATUSES = ("completed", "completed", "completed", "failed", "stopped", "interrupted")
#: what the runner logs per step (core/run/train.py, RegistryCallback)
METRICS = ("loss", "learning_rate", "grad_norm", "epoch", "tokens_per_s")
ROWS_PER_TRANSACTION = 1_000_000
START = datetime(2026, 1, 1, tzinfo=UTC)
SPEC_FILE = Path(__file__).resolve().parent.parent / "examples" / "smollm2-wordnet-lora.yaml"


def run_spec() -> dict:
    """The example spec as ``tuneyard run`` stores it (every default filled in)."""
    from tuneyard.core.spec import load_spec

    return load_spec(SPEC_FILE).model_dump(mode="json")


def step_metrics(step: int, steps: int) -> tuple[float, ...]:
    """Plausible values of :data:`METRICS` at ``step`` of ``steps``."""
    return (2 + 3 * math.exp(-step / (steps / 5 + 1)) + 0.05 * math.sin(step),
            1e-3 * (1 - step / (steps + 1)), 1.0 + 0.5 * math.cos(step / 7), step / steps,
            2000.0 + step % 17)


def seed(path: Path, n_runs: int, steps: int = 100, long_steps: int = 0) -> Registry:
    """Add ``n_runs`` finished runs of ``steps`` logged steps each to the registry at ``path``
    (created if missing); with ``long_steps``, the newest run has that many steps instead (the
    one long curve). Returns the registry."""
    registry = Registry(path)
    spec = json.dumps(run_spec())
    host = socket.gethostname()
    runs, evals, lengths = [], [], []
    for i in range(n_runs):
        t0 = START + timedelta(minutes=10 * i)
        rid = t0.strftime("%Y%m%d-%H%M%S-") + f"{i % 65536:04x}"
        n = long_steps if long_steps and i == n_runs - 1 else steps
        runs.append((rid, f"bench-run-{i}", STATUSES[i % len(STATUSES)], spec,
                     json.dumps({"dataset-wordnet": "0.1.0", "strategy-lora": "0.1.0"}),
                     "wordnet", "lora", "SmolLM2-135M-Instruct.Q4_1.gguf", host, "cpu", 1,
                     f"runs/{rid}", n, n, t0.isoformat(), t0.isoformat(),
                     (t0 + timedelta(seconds=3 * n)).isoformat()))
        evals.append((rid, "final", "perplexity", "perplexity", 10.0 + i % 7, None,
                      (t0 + timedelta(seconds=3 * n)).isoformat()))
        lengths.append((rid, t0, n))
    conn = registry.db.conn
    conn.execute("PRAGMA synchronous = OFF")  # this connection only: a scratch file
    conn.execute("PRAGMA foreign_keys = OFF")  # every run_id is one of the runs above
    conn.execute("PRAGMA cache_size = -262144")  # KiB: the indexes' pages stay in memory
    with registry.transaction():
        conn.executemany(
            "INSERT INTO runs (id, name, status, spec, plugin_versions, dataset_source, "
            "strategy, base_model, host, device, pid, output_dir, max_steps, step, created_at, "
            "started_at, ended_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            runs)
        conn.executemany("INSERT INTO evaluations (run_id, checkpoint, evaluator, metric, value,"
                         " details, at) VALUES (?, ?, ?, ?, ?, ?, ?)", evals)
    rows = metric_rows(lengths)
    written = ROWS_PER_TRANSACTION
    while written == ROWS_PER_TRANSACTION:
        with registry.transaction():
            written = conn.executemany(
                "INSERT INTO metrics (run_id, step, name, value, at) VALUES (?, ?, ?, ?, ?)",
                _take(rows, ROWS_PER_TRANSACTION)).rowcount
    return registry


def metric_rows(lengths: list[tuple[str, datetime, int]]) -> Iterator[tuple]:
    """``(run_id, step, name, value, at)`` of every run's steps, a step every 3 s."""
    for rid, t0, n in lengths:
        base = t0.timestamp()
        for step in range(1, n + 1):
            at = datetime.fromtimestamp(base + 3 * step, UTC).isoformat(timespec="microseconds")
            for name, value in zip(METRICS, step_metrics(step, n), strict=True):
                yield rid, step, name, value, at


def _take(rows: Iterator[tuple], n: int) -> Iterator[tuple]:
    for _, row in zip(range(n), rows):
        yield row


def size(path: Path) -> str:
    """The registry file's size (with its write-ahead log), in MiB."""
    total = sum(os.path.getsize(p) for p in (path, Path(f"{path}-wal")) if p.exists())
    return f"{total / 2**20:,.0f} MiB"


def machine() -> str:
    """The CPU, cores, load and versions a benchmark ran with, in one line."""
    model = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                  if line.startswith("model name")), platform.processor() or "?")
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return (f"{model}, {os.cpu_count()} CPUs, load average {load}; Python "
            f"{platform.python_version()}, SQLite {sqlite3.sqlite_version}")
