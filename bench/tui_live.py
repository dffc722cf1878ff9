"""Benchmark: the live monitor under load (issue #3: keys answer < 100 ms, memory flat).

    python bench/tui_live.py [--minutes 5] [--steps-per-s 50]

A writer process logs a fake run into a fresh registry at ``--steps-per-s`` steps per second
(5 metrics a step, one transaction each, as the runner does) plus 1 Hz telemetry of two GPUs
and the CPU. The TUI (headless, in this process) shows that run's live monitor; once a second
a key event is sent as the terminal driver would (right/left on the monitor's tabs) and the
time until the app has handled it (the active tab changed) is measured. The TUI process's RSS
is read every 10 s.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import socket
import statistics
import tempfile
import time
from pathlib import Path

import psutil


def writer(path: str, run_id: str, steps_per_s: float) -> None:
    from tuneyard.core.registry import Registry

    registry = Registry(path, create=False)
    registry.update_run(run_id, pid=os.getpid())
    step, t0, last_sample = 0, time.monotonic(), 0.0
    while True:
        step += 1
        registry.add_metrics(run_id, step, {"loss": 2 + 1 / step, "learning_rate": 1e-3,
                                            "grad_norm": 1.0, "epoch": step / 1e4,
                                            "tokens_per_s": 5e4})
        now = time.monotonic()
        if now - last_sample >= 1:
            last_sample = now
            registry.add_system_metrics(run_id, [
                {"device": f"cuda:{i}", "util_pct": 95.0, "mem_bytes": 40 * 2**30,
                 "mem_total_bytes": 141 * 2**30, "power_w": 500.0, "temp_c": 60.0}
                for i in range(2)] + [{"device": "cpu", "util_pct": 10.0, "mem_bytes": 2**31,
                                       "mem_total_bytes": 2**34}])
        time.sleep(max(0.0, t0 + step / steps_per_s - time.monotonic()))


async def watch(path: Path, run_id: str, seconds: float) -> tuple[list[float], list[int]]:
    from textual import events
    from textual.widgets import TabbedContent, Tabs

    from tuneyard.tui.app import make_app

    app = make_app(path)
    latencies, rss = [], []
    proc = psutil.Process()
    async with app.run_test(size=(120, 40)) as pilot:
        app.open_run(run_id)
        await pilot.pause(2)
        tabbed = app.screen.query_one(TabbedContent)
        app.screen.query_one(Tabs).focus()
        end = time.monotonic() + seconds
        i = 0
        while time.monotonic() < end:
            key = "right" if i % 8 < 4 else "left"
            before = tabbed.active
            t = time.perf_counter()
            app._driver.send_message(events.Key(key, None))  # as a terminal key press
            while tabbed.active == before:  # handled: the tab changed
                await asyncio.sleep(0.001)
            latencies.append(time.perf_counter() - t)
            if i % 10 == 0:
                rss.append(proc.memory_info().rss)
            i += 1
            await asyncio.sleep(max(0.0, 1 - (time.perf_counter() - t)))
    return latencies, rss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=5)
    parser.add_argument("--steps-per-s", type=float, default=50)
    a = parser.parse_args()
    from tuneyard.core.registry import Registry

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "registry.db"
        registry = Registry(path)
        run_id = registry.create_run({"name": "live-bench", "training": {"max_steps": 10**7}})
        registry.update_run(run_id, status="running", host=socket.gethostname(),
                            started_at=registry.get_run(run_id)["created_at"],
                            output_dir=tmp, strategy="lora", dataset_source="synthetic")
        proc = multiprocessing.Process(target=writer, args=(str(path), run_id, a.steps_per_s),
                                       daemon=True)
        proc.start()
        try:
            latencies, rss = asyncio.run(watch(path, run_id, a.minutes * 60))
        finally:
            proc.terminate()
        steps = registry.get_run(run_id)["step"]
    ms = sorted(x * 1000 for x in latencies)
    print(f"{a.minutes:g} min at {a.steps_per_s:g} steps/s: writer logged {steps} steps "
          f"({steps / (a.minutes * 60):.1f}/s)")
    print(f"key latency over {len(ms)} presses: median {statistics.median(ms):.1f} ms, "
          f"p99 {ms[int(0.99 * (len(ms) - 1))]:.1f} ms, max {ms[-1]:.1f} ms")
    mib = [r / 2**20 for r in rss]
    print(f"TUI RSS: first {mib[0]:.1f} MiB, after 1 min {mib[min(6, len(mib) - 1)]:.1f} MiB, "
          f"last {mib[-1]:.1f} MiB, max {max(mib):.1f} MiB")


if __name__ == "__main__":
    main()
