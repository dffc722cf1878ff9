"""Fill a registry with synthetic runs for the TUI benchmarks (not a test fixture)."""

from __future__ import annotations

import math
import os
import socket
from datetime import UTC, datetime, timedelta
from pathlib import Path

from tuneyard.core.registry import Registry

STATUSES = ("completed", "completed", "completed", "failed", "stopped", "interrupted")


def seed(path: Path, n_runs: int, steps: int = 100) -> Registry:
    """``n_runs`` finished runs with ``steps`` steps of loss/learning_rate/tokens_per_s each,
    and a perplexity evaluation; returns the registry."""
    registry = Registry(path)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    runs, metrics, evals = [], [], []
    for i in range(n_runs):
        rid = f"bench-{i:05d}"
        t0 = start + timedelta(minutes=10 * i)
        runs.append({
            "id": rid, "name": f"bench-run-{i}", "status": STATUSES[i % len(STATUSES)],
            "spec": "{}", "strategy": "lora", "dataset_source": "wordnet",
            "base_model": "SmolLM2-135M-Instruct", "host": socket.gethostname(), "pid": 1,
            "max_steps": steps, "step": steps, "created_at": t0.isoformat(),
            "started_at": t0.isoformat(), "ended_at": (t0 + timedelta(minutes=5)).isoformat(),
        })
        for s in range(1, steps + 1):
            at = (t0 + timedelta(seconds=3 * s)).isoformat()
            for name, value in (("loss", 2 + 3 * math.exp(-s / 20)),
                                ("learning_rate", 1e-3 * (1 - s / steps)),
                                ("tokens_per_s", 2000.0)):
                metrics.append({"run_id": rid, "step": s, "name": name, "value": value,
                                "at": at})
        evals.append({"run_id": rid, "checkpoint": "final", "evaluator": "perplexity",
                      "metric": "perplexity", "value": 10.0 + i % 7, "details": None,
                      "at": t0.isoformat()})
    registry.db["runs"].insert_all(runs)
    registry.db["metrics"].insert_all(metrics, batch_size=5000)
    registry.db["evaluations"].insert_all(evals)
    return registry


def size(path: Path) -> str:
    return f"{os.path.getsize(path) / 2**20:.1f} MiB"
