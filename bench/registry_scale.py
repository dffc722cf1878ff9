"""Benchmark 5 (issue #7): the registry at scale, 10,000 runs and 10 million metric rows. Targets:
the runs list ≤ 50 ms, one run's loss curve downsampled to 1,000 points ≤ 50 ms; and the insert
cost per step.

    python bench/registry_scale.py [--runs 10000] [--rows 10000000] [--steps 100] [--repeat 7]
                                   [--keep PATH]

The registry (``bench/seed.py``, in the registry's own schema) holds ``--runs`` finished runs of
``--steps`` logged steps of the runner's five metrics each, and the newest run holds the rest of
the ``--rows``: with the defaults, 9,999 runs of 100 steps and one of 1,000,100 steps (its loss
curve has a million points). It is built in a temporary folder (1.7 GB, about two minutes), or
at ``--keep PATH`` and reused from there.

Measured in this process, on one connection (as the TUI's poll keeps one), median and slowest
of ``--repeat``:

- ``Registry.list_runs(50)``: ``tuneyard runs list`` (its default ``--limit``);
- ``Registry.list_runs(RUNS_SHOWN)`` and ``count_runs()``: the TUI's Runs screen poll;
- ``Registry.metric_curve(run, "loss", 1000)``: the long run's loss curve, and a short one's;
- for reference, what the CLI and the TUI read before issue #7 (every run; every row of the
  long curve), once each;
- ``Registry.add_steps``: 2,000 steps of five metrics into a new run, in batches of 1 and of
  10 steps (the runner writes every 0.25 s: one step a batch for a model at 4 steps/s or
  slower), into this registry and into an empty one; in µs per step. The rows are deleted
  afterwards.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import table  # noqa: E402
from seed import METRICS, machine, seed, size, step_metrics  # noqa: E402

from tuneyard.core.registry import Registry, now  # noqa: E402
from tuneyard.tui.screens.runs import RUNS_SHOWN  # noqa: E402

TARGET_MS = 50.0
INSERT_STEPS = 2000


def timed(fn: Callable[[], Any], repeat: int) -> tuple[list[float], Any]:
    """Milliseconds of ``repeat`` calls of ``fn``, and what the last returned."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        out = fn()
        times.append((time.perf_counter() - start) * 1000)
    return times, out


def insert_us_per_step(registry: Registry, batch: int) -> float:
    """µs per step of :meth:`Registry.add_steps` writing ``INSERT_STEPS`` steps of the five
    metrics into a new run, ``batch`` steps a call; the run is deleted afterwards."""
    run_id = registry.create_run({"name": "insert-bench"})
    steps = [(s, dict(zip(METRICS, step_metrics(s, INSERT_STEPS), strict=True)), now())
             for s in range(1, INSERT_STEPS + 1)]
    start = time.perf_counter()
    for i in range(0, INSERT_STEPS, batch):
        registry.add_steps(run_id, steps[i:i + batch])
    us = (time.perf_counter() - start) / INSERT_STEPS * 1e6
    with registry.transaction():
        registry.db.conn.execute("DELETE FROM metrics WHERE run_id = ?", [run_id])
        registry.db.conn.execute("DELETE FROM runs WHERE id = ?", [run_id])
    return us


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--rows", type=int, default=10_000_000, help="metric rows in all")
    parser.add_argument("--steps", type=int, default=100, help="logged steps of each run "
                        "but the newest, which holds the rest of the rows")
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--keep", type=Path, help="build the registry at this path, or reuse it")
    a = parser.parse_args()
    long_steps = a.rows // len(METRICS) - (a.runs - 1) * a.steps
    if long_steps < a.steps:
        parser.error(f"--rows {a.rows:,} is too few for {a.runs:,} runs of {a.steps} steps")
    with tempfile.TemporaryDirectory() as tmp:
        path = a.keep or Path(tmp) / "registry.db"
        print(f"machine: {machine()}")
        if not path.exists():
            start = time.perf_counter()
            seed(path, a.runs, a.steps, long_steps).db.conn.close()
            print(f"built {path} in {time.perf_counter() - start:.0f} s")
        registry = Registry(path, create=False)
        rows = registry.db.execute("SELECT count(*) FROM metrics").fetchone()[0]
        print(f"registry: {registry.count_runs():,} runs, {rows:,} metric rows ({size(path)})\n")
        newest = registry.list_runs(limit=1)[0]
        long_id, short_id = newest["id"], registry.list_runs(limit=2)[1]["id"]
        table_rows = []

        def add(what: str, times: list[float], target: float | None, note: str = "") -> None:
            median = statistics.median(times)
            met = "" if target is None else "yes" if median <= target else "**no**"
            table_rows.append([what, f"{median:.1f} ms", f"{max(times):.1f} ms",
                               f"≤ {target:.0f} ms" if target else "", met, note])

        times, runs = timed(lambda: registry.list_runs(50), a.repeat)
        add("runs list: `list_runs(50)` (CLI)", times, TARGET_MS, f"{len(runs)} runs")
        times, runs = timed(lambda: (registry.list_runs(RUNS_SHOWN), registry.count_runs()),
                            a.repeat)
        add(f"runs list: `list_runs({RUNS_SHOWN})` + `count_runs()` (TUI poll)", times,
            TARGET_MS, f"{len(runs[0])} runs")
        times, curve = timed(lambda: registry.metric_curve(long_id, "loss", 1000), a.repeat)
        add("loss curve, 1,000 points: `metric_curve` of the long run", times, TARGET_MS,
            f"{len(curve)} of {newest['step']:,} steps")
        times, curve = timed(lambda: registry.metric_curve(short_id, "loss", 1000), a.repeat)
        add("loss curve: `metric_curve` of a short run", times, TARGET_MS,
            f"{len(curve)} of {a.steps} steps")
        times, runs = timed(registry.list_runs, 1)
        add("before: `list_runs()`, every run (the TUI's poll)", times, None, f"{len(runs):,}")
        times, loss = timed(lambda: registry.metrics(long_id, "loss"), 1)
        add("before: `metrics(run, 'loss')`, every row (the CLI's chart)", times, None,
            f"{len(loss):,} points")
        print(table(["read", "median", "max", "target", "met", ""], table_rows))

        with tempfile.TemporaryDirectory() as empty_dir:
            empty = Registry(Path(empty_dir) / "registry.db")
            inserts = []
            for batch in (1, 10):
                inserts.append([f"{batch} step{'s' if batch > 1 else ''}",
                                f"{insert_us_per_step(empty, batch):.0f}",
                                f"{insert_us_per_step(registry, batch):.0f}"])
        print(f"\n`add_steps`, {INSERT_STEPS:,} steps × {len(METRICS)} metrics, µs per step:\n")
        print(table(["steps per transaction", "empty registry", f"{rows:,} rows"], inserts))


if __name__ == "__main__":
    main()
