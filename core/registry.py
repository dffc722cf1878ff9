"""The registry: every run, metric, checkpoint, artifact, evaluation and plugin, in SQLite.

The only module that speaks SQL (through sqlite-utils). WAL mode with a busy timeout, so readers
(the TUI, ``tuneyard runs list``) never block the run process that writes. Schema: see
:mod:`tuneyard.core.migrations`. Default file ``./registry.db``; ``TUNEYARD_REGISTRY`` or
``--registry`` override it.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import sqlite3
import sys
import time
from datetime import UTC, datetime, timedelta
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tuneyard.core.errors import RunNotFound, TuneyardError
from tuneyard.core.migrations import MIGRATIONS


def _import_sqlite_utils() -> type:
    """``sqlite_utils.Database``, imported with pandas and numpy hidden.

    sqlite-utils imports both whenever they are installed (``datasets`` needs them), only to
    map their types when it infers a column's type: ~1.4 s of start-up on the project's
    2-core machine, in every process that opens the registry (``tuneyard runs list``, the TUI),
    for tables whose types the migrations declare. Imported first, they are used as usual;
    hidden here, they stay importable afterwards.
    """
    hidden = [name for name in ("pandas", "numpy") if name not in sys.modules]
    for name in hidden:
        sys.modules[name] = None  # type: ignore[assignment]  # makes `import name` fail
    try:
        from sqlite_utils import Database
    finally:
        for name in hidden:
            del sys.modules[name]
    return Database


Database = _import_sqlite_utils()

BUSY_TIMEOUT_S = 30.0
ACTIVE = ("queued", "running")
#: A run process writes ``runs.heartbeat_at`` this often (seconds).
HEARTBEAT_S = 5.0
#: A running run of another host whose heartbeat is older than this (seconds) is interrupted.
STALE_S = 120.0
#: Optional fields of a device telemetry sample (``system_metrics`` columns).
SAMPLE_FIELDS = ("util_pct", "mem_bytes", "mem_total_bytes", "power_w", "temp_c")


#: what every run records at each logged step (``tuneyard.core.run.train``); a run's other
#: step metrics are its strategy's (:attr:`TrainingStrategy.metrics`, e.g. DPO's rewards), and
#: ``eval_*`` ones come from the trainer's evaluations (``training.eval_steps``)
STEP_METRICS = ("loss", "learning_rate", "grad_norm", "epoch", "tokens_per_s")


def strategy_metrics(names: list[str]) -> list[str]:
    """Of a run's metric names, those its strategy logs per step (not :data:`STEP_METRICS`,
    not an evaluation's ``eval_*``), in order."""
    return [n for n in names if n not in STEP_METRICS and not n.startswith("eval_")]


def now() -> str:
    """Current UTC time as ISO-8601 with microseconds (sorts as text)."""
    return datetime.now(UTC).isoformat(timespec="microseconds")


def default_path() -> Path:
    """``$TUNEYARD_REGISTRY`` if set, else ``./registry.db``."""
    return Path(os.environ.get("TUNEYARD_REGISTRY") or "registry.db")


class Registry:
    """A connection to one registry file, created and migrated on first use.

    Args:
        path: the SQLite file; default :func:`default_path`.
        create: create the file when missing (else a missing file is an error).

    Raises:
        TuneyardError: the file is missing (and ``create`` is false), its folder is missing,
            or it cannot be opened or is not a tuneyard registry.
    """

    def __init__(self, path: str | Path | None = None, create: bool = True) -> None:
        self.path = Path(path) if path else default_path()
        if not self.path.exists():
            if not create:
                raise TuneyardError(
                    f"no registry at {self.path} (the first `tuneyard run` creates one; choose "
                    "another with --registry or TUNEYARD_REGISTRY)")
            if not self.path.parent.is_dir():
                raise TuneyardError(f"{self.path}: cannot create registry: folder "
                                    f"{self.path.parent} does not exist")
        try:
            conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
            conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
            _set_wal(conn)
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute("PRAGMA foreign_keys = ON")
        except sqlite3.Error as exc:
            raise TuneyardError(f"{self.path}: cannot open registry: {exc}") from None
        self.db = Database(conn, execute_plugins=False)  # no sqlite-utils plugin (its CLI's)
        self._migrate()

    def _migrate(self) -> None:
        """Apply pending migrations in one IMMEDIATE transaction (race-safe across processes).
        An up-to-date registry is only read: opening one (each ``tuneyard runs list``, each
        TUI screen shown) does not queue for the write lock behind running runs."""
        conn = self.db.conn
        try:
            applied = conn.execute("SELECT max(version) FROM migrations").fetchone()[0]
        except sqlite3.DatabaseError:  # a new file (no table yet); a bad one fails below
            applied = None
        if applied is not None and applied >= MIGRATIONS[-1][0]:
            return
        try:
            with self.transaction():
                conn.execute("CREATE TABLE IF NOT EXISTS migrations "
                             "(version INTEGER PRIMARY KEY, applied_at TEXT)")
                done = {row[0] for row in conn.execute("SELECT version FROM migrations")}
                for version, migrate in MIGRATIONS:
                    if version not in done:
                        migrate(self.db)
                        conn.execute("INSERT INTO migrations VALUES (?, ?)", (version, now()))
        except sqlite3.DatabaseError as exc:
            raise TuneyardError(f"{self.path}: not a usable tuneyard registry: {exc}") from None

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """One write transaction (BEGIN IMMEDIATE … COMMIT, rolled back on error)."""
        conn = self.db.conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    @contextmanager
    def snapshot(self) -> Iterator[None]:
        """Reads inside see one state of the registry, whatever is written meanwhile (a read
        transaction, BEGIN … COMMIT; in WAL mode it never blocks a writer). Only reads:
        a write inside could fail at once with "database is locked"."""
        conn = self.db.conn
        conn.execute("BEGIN")
        try:
            yield
        finally:
            conn.execute("COMMIT")

    def _insert_many(self, table: str, rows: list[dict[str, Any]]) -> None:
        """INSERT rows (all with the same keys) with executemany; call inside a transaction."""
        if rows:
            cols = list(rows[0])
            self.db.conn.executemany(
                f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
                [[r[c] for c in cols] for r in rows],
            )

    def schema_version(self) -> int:
        return self.db.execute("SELECT max(version) FROM migrations").fetchone()[0] or 0

    # -- runs ------------------------------------------------------------------------------
    def create_run(self, spec: dict[str, Any], **fields: Any) -> str:
        """Insert a ``queued`` run and return its id (``YYYYmmdd-HHMMSS-xxxx``, sortable)."""
        run_id = datetime.now(UTC).strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(2)
        self.db["runs"].insert(
            {"id": run_id, "name": spec.get("name") or run_id, "status": "queued",
             "spec": json.dumps(spec), "host": socket.gethostname(), "step": 0,
             "max_steps": spec.get("training", {}).get("max_steps"), "created_at": now(),
             **fields}
        )
        return run_id

    def update_run(self, run_id: str, **fields: Any) -> None:
        """Set columns of a run (JSON-encodes dicts and lists)."""
        fields = {k: json.dumps(v) if isinstance(v, dict | list) else v for k, v in fields.items()}
        self.db["runs"].update(run_id, fields)

    def get_run(self, ref: str) -> dict[str, Any]:
        """A run by ``ref``, looked up in this order (every command that takes a run): its full
        id; else its exact name (the latest run of that name); else a unique id prefix. So a
        run named like the start of another run's id is the named run, never the other one.

        Raises:
            RunNotFound: no run matches, or the id prefix matches several runs (the message
                lists them); naming ``ref``.
        """
        self.reconcile()
        rows = list(self.db.query("SELECT * FROM runs WHERE id = ?", [ref]))
        rows = rows or list(self.db.query(
            "SELECT * FROM runs WHERE name = ? ORDER BY created_at DESC", [ref]))
        if not rows and ref:
            rows = list(self.db.query(
                "SELECT * FROM runs WHERE substr(id, 1, ?) = ?", [len(ref), ref]))
            if len(rows) > 1:
                more = f" and {len(rows) - 5} more" if len(rows) > 5 else ""
                raise RunNotFound(f"run id prefix '{ref}' is ambiguous: "
                                  f"{', '.join(r['id'] for r in rows[:5])}{more}")
        if not rows:
            raise RunNotFound(f"no run '{ref}' in {self.path} (see: tuneyard runs list)")
        return _decode_run(rows[0])

    def list_runs(self, limit: int | None = None) -> list[dict[str, Any]]:
        """Runs, newest first (the newest ``limit`` of them; ``None``: all), each with its
        latest ``last_loss`` and ``tokens_per_s``, and its headline evaluation
        ``eval_evaluator``/``eval_metric``/``eval_value``: the first metric recorded at the
        run's latest evaluated checkpoint other than ``base`` (``None`` when it has none).

        One query: the newest runs by the ``runs.created_at`` index, then per run an index
        seek for each latest metric and one for its headline evaluation row, so its cost
        grows with ``limit``, not with the runs or metric rows in the registry (on 10,000
        runs and 10 million metric rows, see ``bench/registry_scale.py``)."""
        self.reconcile()
        last = ("(SELECT value FROM metrics m WHERE m.run_id = r.id AND m.name = '{}'"
                " ORDER BY step DESC LIMIT 1)")
        newest = "SELECT * FROM runs ORDER BY created_at DESC" + (
            f" LIMIT {int(limit)}" if limit else "")
        sql = (f"SELECT r.*, {last.format('loss')} AS last_loss, "
               f"{last.format('tokens_per_s')} AS tokens_per_s, e.evaluator AS eval_evaluator,"
               " e.metric AS eval_metric, e.value AS eval_value "
               f"FROM ({newest}) r LEFT JOIN evaluations e ON e.rowid = ("
               "SELECT rowid FROM evaluations WHERE run_id = r.id AND checkpoint != 'base'"
               " ORDER BY at DESC, rowid ASC LIMIT 1) ORDER BY r.created_at DESC")
        return [_decode_run(r) for r in self.db.query(sql)]

    def count_runs(self) -> int:
        """How many runs the registry holds."""
        return self.db.execute("SELECT count(*) FROM runs").fetchone()[0]

    def reconcile(self) -> None:
        """Mark the runs whose process is gone (pid + heartbeat).

        A ``running`` run becomes ``interrupted`` (resumable from its last checkpoint) when, on
        this host, its pid is dead or belongs to a process started after the run's last
        heartbeat (the pid was reused), or, on another host, when its heartbeat is older than
        :data:`STALE_S`. A ``queued`` run of this host whose detached process died before it
        started becomes ``failed``. A live process that is slow is never marked: its pid is
        checked, not a timeout.
        """
        host = socket.gethostname()
        stale_before = (datetime.now(UTC) - timedelta(seconds=STALE_S)).isoformat()
        # read them all first: an UPDATE while this SELECT is open could not upgrade its read
        # snapshot to a write, and SQLite answers "database is locked" at once, busy timeout or
        # not, whenever a run has written since
        for row in list(self.db.query(
            "SELECT id, pid, status, host, heartbeat_at, output_dir FROM runs "
            "WHERE status IN (?, ?)", list(ACTIVE),
        )):
            beat = row["heartbeat_at"]
            if row["host"] != host:
                if row["status"] != "running" or not beat or beat >= stale_before:
                    continue
                status, error = "interrupted", (f"no heartbeat from host {row['host']} since "
                                                f"{beat}")
            elif not row["pid"] or _same_process(row["pid"], beat):
                continue
            elif row["status"] == "running":
                status, error = "interrupted", f"run process {row['pid']} is gone"
            else:
                status, error = "failed", (f"run process {row['pid']} exited before it "
                                           f"started; see {row['output_dir']}/console.log")
            self.db.execute(
                "UPDATE runs SET status = ?, ended_at = ?, error = ?, stop_requested_at = NULL "
                "WHERE id = ? AND status = ?",
                [status, now(), error, row["id"], row["status"]],
            )

    def heartbeat(self, run_id: str) -> None:
        """Record that the run's process is alive (``runs.heartbeat_at``, now)."""
        self.db.execute("UPDATE runs SET heartbeat_at = ? WHERE id = ?", [now(), run_id])

    def request_stop(self, run_id: str) -> bool:
        """Ask a queued or running run to stop: it saves a checkpoint at its next step and
        ends ``stopped``. Returns False when the run is not active (nothing to stop)."""
        cur = self.db.execute(
            "UPDATE runs SET stop_requested_at = ? WHERE id = ? AND status IN (?, ?)",
            [now(), run_id, *ACTIVE])
        return cur.rowcount == 1

    def stop_requested(self, run_id: str) -> bool:
        row = self.db.execute("SELECT stop_requested_at FROM runs WHERE id = ?",
                              [run_id]).fetchone()
        return bool(row and row[0])

    # -- metrics, checkpoints, artifacts, evaluations --------------------------------------
    def add_metrics(self, run_id: str, step: int, metrics: dict[str, float]) -> None:
        """Write one step's metrics, stamped now (see :meth:`add_steps`)."""
        self.add_steps(run_id, [(step, metrics, now())])

    def add_steps(self, run_id: str, steps: list[tuple[int, dict[str, float], str]]) -> None:
        """Write logged steps' metrics, ``(step, {name: value}, at)`` oldest first, and the
        run's latest step and heartbeat, in one transaction."""
        if not steps:
            return
        with self.transaction():
            self._insert_many("metrics", [
                {"run_id": run_id, "step": step, "name": k, "value": float(v), "at": at}
                for step, metrics, at in steps for k, v in metrics.items()
            ])
            self.db.conn.execute("UPDATE runs SET step = ?, heartbeat_at = ? WHERE id = ?",
                                 [steps[-1][0], now(), run_id])

    def metrics(self, run_id: str, name: str) -> list[tuple[int, float]]:
        """``(step, value)`` of one metric of a run, by step."""
        return [tuple(r) for r in self.db.execute(
            "SELECT step, value FROM metrics WHERE run_id = ? AND name = ? ORDER BY step",
            [run_id, name])]

    def metric_curve(self, run_id: str, name: str, points: int = 1000
                     ) -> list[tuple[int, float]]:
        """``(step, value)`` of one metric of a run, by step, downsampled to at most ``points``
        points for a chart: every point when there are that few, else the first point logged
        at or after each of ``points`` evenly spaced steps from the first logged step to the
        last (both kept), one index seek each, so the cost does not grow with the curve's
        length (~25 ms for 1,000 points of a million-step curve, ``bench/registry_scale.py``).

        A sample, as other trackers chart long curves: MLflow's UI reads a metric's history at
        evenly spaced steps, the last one kept (``get_metric_history_bulk_interval``), and
        TensorBoard keeps 1,000 scalars per tag (a reservoir sample,
        ``DEFAULT_TENSOR_SIZE_GUIDANCE``). A spike between two samples is not shown: min/max
        decimation per bucket (Chart.js's ``min-max``; M4, Jugel et al., VLDB 2014) keeps
        spikes but must read every row (~2 s for a million on the project's 2-core machine).

        Args:
            run_id: the run.
            name: the metric (``loss``, ``learning_rate``…).
            points: at most this many points come back (2 or more).

        Raises:
            ValueError: ``points`` is below 2.
        """
        if points < 2:
            raise ValueError(f"points: at least 2 (the first and last step), not {points}")
        first = self.db.execute(
            "SELECT step, value FROM metrics WHERE run_id = ? AND name = ? ORDER BY step"
            " LIMIT ?", [run_id, name, points + 1]).fetchall()
        if len(first) <= points:
            return [tuple(r) for r in first]
        last_step = self.db.execute("SELECT max(step) FROM metrics WHERE run_id = ? AND"
                                    " name = ?", [run_id, name]).fetchone()[0]
        # target k of 0 … points-1 is step first + (last - first) * k // (points - 1)
        return [tuple(r) for r in self.db.execute(
            "WITH RECURSIVE k(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM k WHERE i + 1 < :n) "
            "SELECT DISTINCT m.step, m.value FROM k JOIN metrics m ON m.id = ("
            "SELECT id FROM metrics WHERE run_id = :run AND name = :name AND"
            " step >= :lo + (:hi - :lo) * i / (:n - 1) ORDER BY step LIMIT 1) ORDER BY m.step",
            {"n": points, "run": run_id, "name": name, "lo": first[0][0], "hi": last_step})]

    def metric_names(self, run_id: str) -> list[str]:
        """The names of a run's metrics, sorted: one index seek per name (a skip scan of
        ``metrics(run_id, name, step)``), so a run of a million steps costs what a short one
        does."""
        return [r[0] for r in self.db.execute(
            "WITH RECURSIVE n(name) AS (SELECT min(name) FROM metrics WHERE run_id = :run "
            "UNION ALL SELECT (SELECT min(name) FROM metrics WHERE run_id = :run AND "
            "name > n.name) FROM n WHERE n.name IS NOT NULL) "
            "SELECT name FROM n WHERE name IS NOT NULL", {"run": run_id})]

    def latest_metrics(self, run_id: str, rows: int) -> list[dict[str, Any]]:
        """The newest ``rows`` metric rows of a run (``id``, ``step``, ``name``, ``value``,
        ``at``), oldest first."""
        return list(self.db.query(
            "SELECT * FROM (SELECT id, step, name, value, at FROM metrics WHERE run_id = ?"
            " ORDER BY id DESC LIMIT ?) ORDER BY id", [run_id, rows]))

    def metrics_since(self, run_id: str, after: int = 0) -> list[dict[str, Any]]:
        """Metric rows of a run written after row id ``after`` (``id``, ``step``, ``name``,
        ``value``, ``at``), oldest first: a poller passes the last ``id`` it saw to read only
        what is new."""
        return list(self.db.query(
            "SELECT id, step, name, value, at FROM metrics WHERE run_id = ? AND id > ?"
            " ORDER BY id", [run_id, after]))

    def delete_metrics_after(self, run_id: str, step: int) -> None:
        """Drop a run's metric rows after ``step`` (a resumed run logs those steps again)."""
        self.db.execute("DELETE FROM metrics WHERE run_id = ? AND step > ?", [run_id, step])

    def system_metrics_since(self, run_id: str, after: int = 0) -> list[dict[str, Any]]:
        """Telemetry rows of a run written after row id ``after``, oldest first (``id``,
        ``device``, ``util_pct``, ``mem_bytes``, ``mem_total_bytes``, ``power_w``,
        ``temp_c``, ``at``)."""
        return list(self.db.query(
            "SELECT rowid AS id, device, util_pct, mem_bytes, mem_total_bytes, power_w, temp_c,"
            " at FROM system_metrics WHERE run_id = ? AND rowid > ? ORDER BY rowid",
            [run_id, after]))

    def add_system_metrics(self, run_id: str, samples: list[dict[str, Any]]) -> None:
        """Write one telemetry reading per device (``device`` and any of the
        :data:`SAMPLE_FIELDS`; a missing field is stored as NULL), stamped now."""
        at = now()
        with self.transaction():
            self._insert_many("system_metrics", [
                {"run_id": run_id, "at": at, "device": s["device"],
                 **{k: s.get(k) for k in SAMPLE_FIELDS}} for s in samples])

    def add_checkpoint(self, run_id: str, step: int, path: str) -> None:
        self.db["checkpoints"].insert(
            {"run_id": run_id, "step": step, "path": path, "created_at": now()})

    def checkpoints(self, run_id: str) -> list[dict[str, Any]]:
        return list(self.db.query(
            "SELECT * FROM checkpoints WHERE run_id = ? ORDER BY step", [run_id]))

    def add_artifact(self, run_id: str, kind: str, path: str) -> None:
        self.db["artifacts"].insert(
            {"run_id": run_id, "kind": kind, "path": path, "created_at": now()})

    def artifacts(self, run_id: str) -> list[dict[str, Any]]:
        return list(self.db.query("SELECT * FROM artifacts WHERE run_id = ?", [run_id]))

    def add_evaluation(
        self, run_id: str, checkpoint: str, evaluator: str, metrics: dict[str, float],
        details: list[dict[str, Any]] | None = None,
    ) -> None:
        """Store an evaluator's metrics (one row each); details go on the first row."""
        at = now()
        with self.transaction():
            self._insert_many("evaluations", [
                {"run_id": run_id, "checkpoint": checkpoint, "evaluator": evaluator,
                 "metric": k, "value": float(v),
                 "details": json.dumps(details) if details and i == 0 else None, "at": at}
                for i, (k, v) in enumerate(metrics.items())
            ])

    def evaluations(self, run_id: str) -> list[dict[str, Any]]:
        return list(self.db.query(
            "SELECT checkpoint, evaluator, metric, value, at FROM evaluations WHERE run_id = ?"
            " ORDER BY rowid", [run_id]))

    def all_artifacts(self) -> list[dict[str, Any]]:
        """Every artifact, and every checkpoint that is not also one (kind ``checkpoint``),
        with its run's name and status, newest first."""
        return list(self.db.query(
            "SELECT a.run_id, r.name AS run_name, r.status, a.kind, a.path, a.created_at "
            "FROM artifacts a JOIN runs r ON r.id = a.run_id UNION ALL "
            "SELECT c.run_id, r.name, r.status, 'checkpoint', c.path, c.created_at "
            "FROM checkpoints c JOIN runs r ON r.id = c.run_id "
            "WHERE c.path NOT IN (SELECT path FROM artifacts) ORDER BY 6 DESC"))  # created_at

    def datasets(self) -> list[dict[str, Any]]:
        """Datasets runs were trained on, one row per (source, fingerprint): ``train_rows``,
        ``eval_rows``, ``runs`` (how many used it) and ``last_used``, newest first."""
        return list(self.db.query(
            "SELECT dataset_source AS source, dataset_fingerprint AS fingerprint, "
            "max(train_rows) AS train_rows, max(eval_rows) AS eval_rows, count(*) AS runs, "
            "max(created_at) AS last_used FROM runs WHERE dataset_fingerprint IS NOT NULL "
            "GROUP BY dataset_source, dataset_fingerprint ORDER BY last_used DESC"))

    # -- plugins ---------------------------------------------------------------------------
    def sync_plugins(self, plugins: Any) -> None:
        """Replace the ``plugins`` and ``components`` tables with what ``plugins`` loaded."""
        at = now()
        with self.transaction():
            self.db.conn.execute("DELETE FROM plugins")
            self.db.conn.execute("DELETE FROM components")
            self._insert_many("plugins", [
                {"name": i.name, "version": i.version, "source": i.source,
                 "hooks": json.dumps(i.hooks), "components": json.dumps(i.components),
                 "error": "; ".join(i.errors) or None, "loaded_at": at, "package": i.package,
                 "path": i.path, "status": i.status}
                for i in plugins.infos.values()
            ])
            self._insert_many("components", [
                {"kind": kind, "name": name, "plugin": c.plugin, "description": c.cls.description,
                 "options_schema": json.dumps(c.cls.Options.model_json_schema())}
                for kind, items in plugins.components.items() for name, c in items.items()
            ])


def baseline_and_final(evaluations: list[dict[str, Any]]
                       ) -> dict[tuple[str, str], tuple[float | None, float | None]]:
    """``(evaluator, metric)`` → ``(baseline, final)`` from a run's :meth:`Registry.evaluations`
    rows (oldest first): the baseline is checkpoint ``base``, the final the latest other
    checkpoint evaluated (``None`` where there is none)."""
    by: dict[tuple[str, str], dict[str, float]] = {}
    for e in evaluations:
        by.setdefault((e["evaluator"], e["metric"]), {})[
            "base" if e["checkpoint"] == "base" else "final"] = e["value"]
    return {key: (v.get("base"), v.get("final")) for key, v in by.items()}


def _set_wal(conn: sqlite3.Connection) -> None:
    """Switch to WAL. Switching can answer SQLITE_BUSY without waiting on the busy handler
    while another process creates the same file, so retry until the busy timeout."""
    deadline = time.monotonic() + BUSY_TIMEOUT_S
    while True:
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _decode_run(row: dict[str, Any]) -> dict[str, Any]:
    for key in ("spec", "plugin_versions"):
        if row.get(key):
            row[key] = json.loads(row[key])
    return row


def _same_process(pid: int, heartbeat_at: str | None) -> bool:
    """Whether ``pid`` is alive and is the process that wrote ``heartbeat_at``. A zombie (a
    dead run process its launcher has not reaped yet) is dead; a process created after that
    heartbeat got a reused pid (``psutil.Process.create_time``)."""
    import psutil

    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        created = proc.create_time()
    except psutil.NoSuchProcess:
        return False
    except psutil.Error:  # e.g. access denied: alive, and not ours to judge
        return True
    return not heartbeat_at or created <= datetime.fromisoformat(heartbeat_at).timestamp()
