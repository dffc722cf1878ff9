"""Registry schema, as numbered migrations. Append-only: never edit a released migration.

Schema (units in column names; times are ISO-8601 UTC strings):

- ``runs``: id, name, status (queued/running/completed/failed/stopped/interrupted), spec (JSON),
  plugin_versions (JSON), dataset_source, dataset_fingerprint, train_rows, eval_rows,
  base_model, strategy, host, device, pid, output_dir, max_steps, step, created_at, started_at,
  heartbeat_at, ended_at, error, stop_requested_at (set by ``tuneyard stop``: the run
  checkpoints and stops at its next step), resumed_at (the last ``tuneyard resume``;
  ``started_at`` stays the first start).
- ``metrics``: id (increasing, never reused), run_id, step, name, value, at — training curves
  (``loss``, ``learning_rate``, ``grad_norm``, ``tokens_per_s``, ``epoch``).
- ``system_metrics``: run_id, device, util_pct, mem_bytes, mem_total_bytes, power_w, temp_c,
  at — device telemetry sampled by the run process (default 1 Hz); for ``cpu``, ``mem_bytes`` is
  the run process's RSS and ``mem_total_bytes`` the machine's RAM.
- ``checkpoints``: run_id, step, path, created_at.
- ``artifacts``: run_id, kind (adapter, model, tokenizer, spec), path, created_at.
- ``evaluations``: run_id, checkpoint (``base``/``final``/folder name), evaluator, metric,
  value, details (JSON list of per-example dicts, on the first metric row of an evaluator), at.
- ``plugins``: name, version, source (builtin/package/file), hooks (JSON), components (JSON),
  error, loaded_at, package (the distribution; NULL for a file), path (module or file),
  status (ok/failed/disabled) — what ``tuneyard plugins list --all`` prints.
- ``components``: kind, name, plugin, description, options_schema (JSON schema).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sqlite_utils import Database  # imported by the registry (without pandas, numpy)


def _create(db: Database, table: str, columns: dict, **kwargs) -> None:
    """CREATE TABLE inside the caller's transaction (sqlite-utils' ``create`` would commit)."""
    db.conn.execute(db.create_table_sql(table, columns, **kwargs))


def _index(db: Database, table: str, columns: list[str]) -> None:
    name = f"idx_{table}_{'_'.join(columns)}"
    db.conn.execute(f"CREATE INDEX {name} ON {table} ({', '.join(columns)})")


def _m001_initial(db: Database) -> None:
    _create(db, "runs", 
        {
            "id": str, "name": str, "status": str, "spec": str, "plugin_versions": str,
            "dataset_source": str, "dataset_fingerprint": str, "train_rows": int,
            "eval_rows": int, "base_model": str, "strategy": str, "host": str, "device": str,
            "pid": int, "output_dir": str, "max_steps": int, "step": int, "created_at": str,
            "started_at": str, "heartbeat_at": str, "ended_at": str, "error": str,
        },
        pk="id",
    )
    _index(db, "runs", ["created_at"])
    _index(db, "runs", ["status"])
    _create(db, "metrics", 
        {"run_id": str, "step": int, "name": str, "value": float, "at": str},
        foreign_keys=[("run_id", "runs", "id")],
    )
    _index(db, "metrics", ["run_id", "name", "step"])
    _create(db, "system_metrics", 
        {"run_id": str, "device": str, "util_pct": float, "mem_bytes": int,
         "power_w": float, "temp_c": float, "at": str},
        foreign_keys=[("run_id", "runs", "id")],
    )
    _index(db, "system_metrics", ["run_id", "at"])
    _create(db, "checkpoints", 
        {"run_id": str, "step": int, "path": str, "created_at": str},
        foreign_keys=[("run_id", "runs", "id")],
    )
    _index(db, "checkpoints", ["run_id", "step"])
    _create(db, "artifacts", 
        {"run_id": str, "kind": str, "path": str, "created_at": str},
        foreign_keys=[("run_id", "runs", "id")],
    )
    _index(db, "artifacts", ["run_id"])
    _create(db, "evaluations", 
        {"run_id": str, "checkpoint": str, "evaluator": str, "metric": str, "value": float,
         "details": str, "at": str},
        foreign_keys=[("run_id", "runs", "id")],
    )
    _index(db, "evaluations", ["run_id", "checkpoint"])
    _create(db, "plugins", 
        {"name": str, "version": str, "source": str, "hooks": str, "components": str,
         "error": str, "loaded_at": str},
        pk="name",
    )
    _create(db, "components", 
        {"kind": str, "name": str, "plugin": str, "description": str, "options_schema": str},
        pk=("kind", "name"),
    )


def _m002_live_monitoring(db: Database) -> None:
    """Stop and resume times, total device memory, and indexes for incremental (``rowid >``)
    polling."""
    db.conn.execute("ALTER TABLE runs ADD COLUMN stop_requested_at TEXT")
    db.conn.execute("ALTER TABLE runs ADD COLUMN resumed_at TEXT")
    db.conn.execute("ALTER TABLE system_metrics ADD COLUMN mem_total_bytes INTEGER")
    # metrics get an AUTOINCREMENT id: a resumed run deletes the rows after its checkpoint, and
    # a plain rowid would be handed out again, hiding the new rows from a poller that reads
    # "after the last id seen"
    db.conn.execute(
        "CREATE TABLE metrics_v2 (id INTEGER PRIMARY KEY AUTOINCREMENT, "
        "run_id TEXT REFERENCES runs(id), step INTEGER, name TEXT, value FLOAT, at TEXT)")
    db.conn.execute("INSERT INTO metrics_v2 (id, run_id, step, name, value, at) "
                    "SELECT rowid, run_id, step, name, value, at FROM metrics")
    db.conn.execute("DROP TABLE metrics")
    db.conn.execute("ALTER TABLE metrics_v2 RENAME TO metrics")
    _index(db, "metrics", ["run_id", "name", "step"])
    _index(db, "metrics", ["run_id", "id"])
    _index(db, "system_metrics", ["run_id"])


def _m003_plugin_sources(db: Database) -> None:
    """Where each plugin comes from (distribution or file) and whether it loaded."""
    db.conn.execute("ALTER TABLE plugins ADD COLUMN package TEXT")
    db.conn.execute("ALTER TABLE plugins ADD COLUMN path TEXT")
    db.conn.execute("ALTER TABLE plugins ADD COLUMN status TEXT")


def _m004_world_size(db: Database) -> None:
    """How many processes trained the run (torchrun's ``WORLD_SIZE``; 1 without it)."""
    db.conn.execute("ALTER TABLE runs ADD COLUMN world_size INTEGER")


#: (version, migration) in order; the registry records the highest applied version.
MIGRATIONS: list[tuple[int, Callable[[Database], None]]] = [
    (1, _m001_initial),
    (2, _m002_live_monitoring),
    (3, _m003_plugin_sources),
    (4, _m004_world_size),
]
