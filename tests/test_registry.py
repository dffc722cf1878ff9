"""The registry: schema, migrations (also racing processes), runs, metrics, evaluations,
reconciliation of dead runs, corrupt files and the plugins/components tables."""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import subprocess
import sys
import textwrap
import time
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import BaseModel

from tuneyard.core.components import DatasetSource, Evaluator
from tuneyard.core.errors import RunNotFound, TuneyardError
from tuneyard.core.hookspecs import hookimpl
from tuneyard.core.migrations import MIGRATIONS
from tuneyard.core.plugins import Plugins
from tuneyard.core.registry import STALE_S, Registry, now

#: The schema documented in tuneyard.core.migrations' docstring, column for column.
SCHEMA = {
    "runs": ["id", "name", "status", "spec", "plugin_versions", "dataset_source",
             "dataset_fingerprint", "train_rows", "eval_rows", "base_model", "strategy", "host",
             "device", "pid", "output_dir", "max_steps", "step", "created_at", "started_at",
             "heartbeat_at", "ended_at", "error", "stop_requested_at", "resumed_at",
             "world_size"],
    "metrics": ["id", "run_id", "step", "name", "value", "at"],
    "system_metrics": ["run_id", "device", "util_pct", "mem_bytes", "power_w", "temp_c", "at",
                       "mem_total_bytes"],
    "checkpoints": ["run_id", "step", "path", "created_at"],
    "artifacts": ["run_id", "kind", "path", "created_at"],
    "evaluations": ["run_id", "checkpoint", "evaluator", "metric", "value", "details", "at"],
    "plugins": ["name", "version", "source", "hooks", "components", "error", "loaded_at",
                "package", "path", "status"],
    "components": ["kind", "name", "plugin", "description", "options_schema"],
}

SPEC = {"name": "demo", "training": {"max_steps": 7}}


def columns(reg: Registry, table: str) -> list[str]:
    return [row[1] for row in reg.db.execute(f"PRAGMA table_info({table})")]


# -- schema and migrations -----------------------------------------------------------------
def test_schema_matches_documentation(registry_path):
    reg = Registry(registry_path)
    tables = {r[0] for r in reg.db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert tables == set(SCHEMA) | {"migrations", "sqlite_sequence"}  # (AUTOINCREMENT's)
    for table, cols in SCHEMA.items():
        assert columns(reg, table) == cols, table
    assert columns(reg, "migrations") == ["version", "applied_at"]
    assert reg.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert reg.db.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    assert reg.schema_version() == len(MIGRATIONS) == MIGRATIONS[-1][0]
    assert [v for v, _ in MIGRATIONS] == list(range(1, len(MIGRATIONS) + 1))


def test_default_path_from_env(registry_path):
    reg = Registry()
    assert reg.path == registry_path
    assert registry_path.exists()


def test_migrations_are_idempotent(registry_path):
    first = Registry(registry_path)
    run_id = first.create_run(SPEC)
    rows = list(first.db.execute("SELECT version, applied_at FROM migrations"))
    second = Registry(registry_path)
    assert list(second.db.execute("SELECT version, applied_at FROM migrations")) == rows
    assert [v for v, _ in rows] == [v for v, _ in MIGRATIONS]
    assert second.schema_version() == len(MIGRATIONS)
    assert second.get_run(run_id)["name"] == "demo"


RACER = textwrap.dedent("""
    import json, sys, time
    from pathlib import Path
    from tuneyard.core.registry import Registry
    folder, me, rounds = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    for k in range(rounds):
        (folder / f"ready-{k}-{me}").touch()  # waiting for the others
        while not (folder / f"go-{k}").exists():
            time.sleep(0.0005)
        start = time.time()
        reg = Registry(folder / f"registry-{k}.db")
        mode = reg.db.execute("PRAGMA journal_mode").fetchone()[0]
        print(json.dumps([reg.schema_version(), mode, start, time.time()]), flush=True)
""")


def test_processes_creating_the_same_registry_at_once(tmp_path):
    """Each round, 8 processes waiting on a go file open the same new registry at once: all
    succeed, the file is WAL and each migration is recorded once. Each process records when
    it began and finished opening, to check that the opens really overlapped."""
    procs, rounds = 8, 3
    racers = [subprocess.Popen([sys.executable, "-c", RACER, str(tmp_path), str(i), str(rounds)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
              for i in range(procs)]
    for k in range(rounds):
        deadline = time.monotonic() + 60
        while len(list(tmp_path.glob(f"ready-{k}-*"))) < procs and time.monotonic() < deadline:
            time.sleep(0.005)
        (tmp_path / f"go-{k}").touch()
    results = [p.communicate(timeout=60) + (p.returncode,) for p in racers]
    for out, err, rc in results:
        assert (rc, err) == (0, ""), err
    opens = [[json.loads(line) for line in out.splitlines()] for out, _, _ in results]
    for k in range(rounds):
        this_round = [o[k] for o in opens]
        assert [o[:2] for o in this_round] == [[len(MIGRATIONS), "wal"]] * procs
        first_done = min(o[3] for o in this_round)
        assert sum(o[2] < first_done for o in this_round) >= 2  # opens overlapped
        reg = Registry(tmp_path / f"registry-{k}.db")
        versions = [r[0] for r in reg.db.execute("SELECT version FROM migrations ORDER BY version")]
        assert versions == [v for v, _ in MIGRATIONS]
        assert columns(reg, "runs") == SCHEMA["runs"]


# -- runs ----------------------------------------------------------------------------------
def test_create_and_get_run_by_id_prefix_and_name(registry_path):
    reg = Registry(registry_path)
    run_id = reg.create_run(SPEC, strategy="lora")
    assert len(run_id) == len("20240101-120000-abcd")
    assert run_id[8] == "-" and run_id[15] == "-"
    run = reg.get_run(run_id)
    assert run["id"] == run_id
    assert run["name"] == "demo"
    assert run["status"] == "queued"
    assert run["spec"] == SPEC  # decoded from JSON
    assert run["max_steps"] == 7
    assert run["step"] == 0
    assert run["strategy"] == "lora"
    assert run["host"] == socket.gethostname()
    assert reg.get_run(run_id[:17])["id"] == run_id
    assert reg.get_run("demo")["id"] == run_id

    unnamed = reg.create_run({"training": {}})
    assert reg.get_run(unnamed)["name"] == unnamed
    assert reg.get_run(unnamed)["max_steps"] is None

    time.sleep(0.001)
    newer = reg.create_run(SPEC)
    assert reg.get_run("demo")["id"] == newer  # the latest run of that name


def test_update_run_encodes_json(registry_path):
    reg = Registry(registry_path)
    run_id = reg.create_run(SPEC)
    reg.update_run(run_id, status="running", plugin_versions={"model-hf": "0.1.0"}, step=3)
    run = reg.get_run(run_id)
    assert (run["status"], run["step"]) == ("running", 3)
    assert run["plugin_versions"] == {"model-hf": "0.1.0"}


def test_run_not_found_message(registry_path):
    reg = Registry(registry_path)
    reg.create_run(SPEC)
    with pytest.raises(RunNotFound) as exc:
        reg.get_run("nope")
    assert str(exc.value) == f"no run 'nope' in {registry_path} (see: tuneyard runs list)"
    assert isinstance(exc.value, TuneyardError)


# -- metrics, evaluations, checkpoints, artifacts ------------------------------------------
def test_metrics_round_trip_and_last_loss(registry_path):
    reg = Registry(registry_path)
    first = reg.create_run({"name": "a"})
    time.sleep(0.001)
    second = reg.create_run({"name": "b"})
    reg.add_metrics(first, 1, {"loss": 2.5, "learning_rate": 1e-4})
    reg.add_metrics(first, 2, {"loss": 2.0, "learning_rate": 5e-5})
    reg.add_metrics(first, 3, {"loss": 1.25, "grad_norm": 0.5})
    assert reg.metrics(first, "loss") == [(1, 2.5), (2, 2.0), (3, 1.25)]
    assert reg.metrics(first, "learning_rate") == [(1, 1e-4), (2, 5e-5)]
    assert reg.metrics(first, "grad_norm") == [(3, 0.5)]
    assert reg.metrics(second, "loss") == []
    run = reg.get_run(first)
    assert run["step"] == 3
    assert run["heartbeat_at"] is not None

    runs = reg.list_runs()
    assert [(r["id"], r["last_loss"]) for r in runs] == [(second, None), (first, 1.25)]
    assert [r["id"] for r in reg.list_runs(limit=1)] == [second]


def test_list_runs_newest_first_with_the_headline_evaluation(registry_path):
    reg = Registry(registry_path)
    ids = []
    for name in ("none", "base-only", "two-checkpoints", "final"):
        ids.append(reg.create_run({"name": name}))
        time.sleep(0.001)
    none, base_only, two, final = ids
    reg.add_evaluation(base_only, "base", "perplexity", {"perplexity": 30.0})
    reg.add_evaluation(two, "base", "perplexity", {"perplexity": 30.0})
    reg.add_evaluation(two, "checkpoint-10", "rouge", {"rouge1": 0.25, "rougeL": 0.2})
    time.sleep(0.001)
    reg.add_evaluation(two, "checkpoint-20", "rouge", {"rouge1": 0.5, "rougeL": 0.4})
    reg.add_evaluation(final, "final", "perplexity", {"perplexity": 12.5})
    heads = [(r["id"], r["eval_evaluator"], r["eval_metric"], r["eval_value"])
             for r in reg.list_runs()]
    assert heads == [(final, "perplexity", "perplexity", 12.5),
                     (two, "rouge", "rouge1", 0.5),  # the latest checkpoint's first metric
                     (base_only, None, None, None), (none, None, None, None)]
    assert [r["id"] for r in reg.list_runs(limit=2)] == [final, two]
    assert reg.list_runs(limit=2)[1]["eval_value"] == 0.5
    assert reg.count_runs() == 4


def curve_of(reg: Registry, run_id: str, steps: list[int], name: str = "loss") -> None:
    """Log ``name`` = step / 10 at each of ``steps``."""
    reg.add_steps(run_id, [(s, {name: s / 10}, "t") for s in steps])


def test_metric_curve_keeps_every_point_of_a_short_curve(registry_path):
    reg = Registry(registry_path)
    run_id, other = reg.create_run({"name": "a"}), reg.create_run({"name": "b"})
    curve_of(reg, run_id, [1, 2, 5, 9])
    curve_of(reg, run_id, [1, 2, 3], name="learning_rate")
    curve_of(reg, other, list(range(1, 100)))
    assert reg.metric_curve(run_id, "loss", points=4) == [(1, 0.1), (2, 0.2), (5, 0.5), (9, 0.9)]
    assert reg.metric_curve(run_id, "learning_rate") == [(1, 0.1), (2, 0.2), (3, 0.3)]
    assert reg.metric_curve(run_id, "grad_norm") == []


def test_metric_curve_samples_evenly_spaced_steps(registry_path):
    reg = Registry(registry_path)
    regular, gaps, jump = (reg.create_run({"name": n}) for n in ("regular", "gaps", "jump"))
    curve_of(reg, regular, list(range(1, 11)))
    # targets 1 + 9k//3 = 1, 4, 7, 10
    assert reg.metric_curve(regular, "loss", points=4) == [(1, .1), (4, .4), (7, .7), (10, 1.0)]
    curve_of(reg, gaps, [1, 2, 3, 10, 11, 12, 13, 14, 15, 20])
    # targets 1 + 19k//3 = 1, 7, 13, 20: the first step logged at or after each
    assert reg.metric_curve(gaps, "loss", points=4) == [(1, .1), (10, 1.0), (13, 1.3), (20, 2.0)]
    curve_of(reg, jump, [1, 2, 3, 100])
    # targets 1, 1 + 99//2 = 50, 100: 50 and 100 both land on step 100, kept once
    assert reg.metric_curve(jump, "loss", points=3) == [(1, 0.1), (100, 10.0)]
    curve_of(reg, regular, list(range(11, 2001)))
    curve = reg.metric_curve(regular, "loss")
    assert len(curve) == 1000 and curve[0] == (1, 0.1) and curve[-1] == (2000, 200.0)
    assert [s for s, _ in curve[:3]] == [1, 3, 5]  # 1 + 1999k//999
    with pytest.raises(ValueError, match="points: at least 2"):
        reg.metric_curve(regular, "loss", points=1)


def test_latest_metrics_and_a_snapshot_sees_one_state(registry_path):
    reg = Registry(registry_path)
    run_id = reg.create_run({"name": "a"})
    curve_of(reg, run_id, [1, 2, 3])
    newest = reg.latest_metrics(run_id, 2)
    assert [(r["step"], r["name"], r["value"]) for r in newest] == [(2, "loss", .2),
                                                                   (3, "loss", .3)]
    assert newest[0]["id"] < newest[1]["id"] and reg.latest_metrics(run_id, 9)[0]["step"] == 1
    writer = Registry(registry_path)
    with reg.snapshot():
        before = reg.latest_metrics(run_id, 1)
        curve_of(writer, run_id, [4])  # another connection writes meanwhile, unblocked
        assert reg.latest_metrics(run_id, 1) == before
        assert reg.metric_curve(run_id, "loss")[-1] == (3, 0.3)
    assert reg.metric_curve(run_id, "loss")[-1] == (4, 0.4)


def test_opening_a_registry_imports_neither_pandas_nor_numpy(tmp_path):
    code = ("import sys; from tuneyard.core.registry import Registry; Registry(sys.argv[1]); "
            "print(sorted(m for m in ('pandas', 'numpy') if m in sys.modules)); "
            "import numpy; print('numpy' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "r.db")],
                         capture_output=True, text=True, timeout=60)
    assert out.stdout.split("\n")[:2] == ["[]", "True"], out.stderr  # and still importable


def test_evaluation_details_on_first_row_only(registry_path):
    reg = Registry(registry_path)
    run_id = reg.create_run(SPEC)
    details = [{"prompt": "define cat", "prediction": "an animal", "reference": "a small animal"}]
    reg.add_evaluation(run_id, "final", "rouge", {"rouge1": 0.5, "rougeL": 0.25}, details)
    reg.add_evaluation(run_id, "base", "perplexity", {"perplexity": 12})
    rows = list(reg.db.execute(
        "SELECT checkpoint, evaluator, metric, value, details FROM evaluations ORDER BY rowid"))
    assert rows == [
        ("final", "rouge", "rouge1", 0.5, json.dumps(details)),
        ("final", "rouge", "rougeL", 0.25, None),
        ("base", "perplexity", "perplexity", 12.0, None),
    ]
    assert [(e["evaluator"], e["metric"], e["value"]) for e in reg.evaluations(run_id)] == [
        ("rouge", "rouge1", 0.5), ("rouge", "rougeL", 0.25), ("perplexity", "perplexity", 12.0)]


def test_checkpoints_artifacts_and_system_metrics(registry_path):
    reg = Registry(registry_path)
    run_id = reg.create_run(SPEC)
    reg.add_checkpoint(run_id, 20, "/runs/x/checkpoint-20")
    reg.add_checkpoint(run_id, 10, "/runs/x/checkpoint-10")
    assert [(c["step"], c["path"]) for c in reg.checkpoints(run_id)] == [
        (10, "/runs/x/checkpoint-10"), (20, "/runs/x/checkpoint-20")]
    reg.add_artifact(run_id, "adapter", "/runs/x/adapter")
    assert [(a["kind"], a["path"]) for a in reg.artifacts(run_id)] == [
        ("adapter", "/runs/x/adapter")]
    reg.add_system_metrics(run_id, [{"device": "cpu", "util_pct": 50.0, "mem_bytes": 1024}])
    assert list(reg.db.execute("SELECT device, util_pct, mem_bytes FROM system_metrics")) == [
        ("cpu", 50.0, 1024)]


def test_foreign_keys_are_enforced(registry_path):
    reg = Registry(registry_path)
    with pytest.raises(sqlite3.IntegrityError, match="^FOREIGN KEY constraint failed$"):
        reg.add_metrics("no-such-run", 1, {"loss": 1.0})
    assert list(reg.db.execute("SELECT count(*) FROM metrics")) == [(0,)]


# -- reconcile -----------------------------------------------------------------------------
def test_reconcile_marks_dead_running_run_interrupted(registry_path):
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    dead_pid = proc.pid
    reg = Registry(registry_path)
    dead = reg.create_run({"name": "dead"})
    alive = reg.create_run({"name": "alive"})
    other_host = reg.create_run({"name": "elsewhere"}, host="some-other-host")
    reg.update_run(dead, status="running", pid=dead_pid)
    reg.update_run(alive, status="running", pid=os.getpid())
    reg.update_run(other_host, status="running", pid=dead_pid)

    run = reg.get_run(dead)  # get_run reconciles
    assert run["status"] == "interrupted"
    assert run["error"] == f"run process {dead_pid} is gone"
    assert run["ended_at"] is not None
    assert reg.get_run(alive)["status"] == "running"
    assert reg.get_run(other_host)["status"] == "running"  # not ours to judge

    never_started = reg.create_run({"name": "queued"}, output_dir="/runs/q")
    reg.update_run(never_started, pid=dead_pid)
    run = reg.get_run(never_started)
    assert (run["status"], run["error"]) == (
        "failed", f"run process {dead_pid} exited before it started; see /runs/q/console.log")
    waiting = reg.create_run({"name": "no process yet"})
    assert reg.get_run(waiting)["status"] == "queued"


def test_reconcile_uses_the_heartbeat_for_reused_pids_and_other_hosts(registry_path):
    """A pid now held by a process started after the run's last heartbeat is a reused pid: the
    run is interrupted. A zombie (killed, not yet reaped by its launcher) is dead. On another
    host, a heartbeat older than STALE_S means interrupted; a recent one, running."""
    reg = Registry(registry_path)
    reused = reg.create_run({"name": "reused"})
    reg.update_run(reused, status="running", heartbeat_at="2020-01-01T00:00:00+00:00")
    newer = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    zombie = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        reg.update_run(reused, pid=newer.pid)
        zombie_run = reg.create_run({"name": "zombie"})
        time.sleep(0.5)  # the child has exited; nobody waited for it
        reg.update_run(zombie_run, status="running", pid=zombie.pid, heartbeat_at=now())
        assert (reg.get_run(reused)["status"], reg.get_run(reused)["error"]) == (
            "interrupted", f"run process {newer.pid} is gone")
        assert reg.get_run(zombie_run)["status"] == "interrupted"
    finally:
        newer.kill()
        newer.wait()
        zombie.wait()
    old_beat = (datetime.now(UTC) - timedelta(seconds=STALE_S + 5)).isoformat()
    stale = reg.create_run({"name": "stale"}, host="node-7", status="running",
                           heartbeat_at=old_beat)
    fresh = reg.create_run({"name": "fresh"}, host="node-7", status="running",
                           heartbeat_at=now())
    run = reg.get_run(stale)
    assert (run["status"], run["error"]) == (
        "interrupted", f"no heartbeat from host node-7 since {old_beat}")
    assert reg.get_run(fresh)["status"] == "running"


# -- broken files --------------------------------------------------------------------------
def test_corrupt_file_is_a_tuneyard_error(tmp_path):
    path = tmp_path / "registry.db"
    path.write_bytes(bytes(range(256)) * 64)
    with pytest.raises(TuneyardError) as exc:
        Registry(path)
    assert str(exc.value) == f"{path}: cannot open registry: file is not a database"


def test_foreign_sqlite_file_is_a_tuneyard_error(tmp_path):
    """A SQLite file of another tool with a clashing ``runs`` table is refused, not traced."""
    path = tmp_path / "other.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE runs (x)")
    conn.commit()
    conn.close()
    with pytest.raises(TuneyardError) as exc:
        Registry(path)
    assert str(exc.value) == (
        f'{path}: not a usable tuneyard registry: table "runs" already exists')


# -- plugins -------------------------------------------------------------------------------
class _Opts(BaseModel):
    limit: int = 3


class _Source(DatasetSource):
    name = "rows"
    description = "a few rows"
    Options = _Opts


class _Judge(Evaluator):
    name = "judge"
    description = "always right"


class _Good:
    @hookimpl
    def register_dataset_sources(self, register):
        register(_Source)

    @hookimpl
    def register_evaluators(self, register):
        register(_Judge)


class _Broken:
    @hookimpl
    def register_evaluators(self, register):
        raise RuntimeError("boom")


def test_sync_plugins_writes_plugins_and_components(registry_path):
    plugins = Plugins()
    plugins.register_plugin(_Good(), "good")
    plugins.register_plugin(_Broken(), "broken")
    plugins.collect_components()
    reg = Registry(registry_path)
    reg.db.execute("INSERT INTO plugins (name) VALUES ('stale')")
    reg.sync_plugins(plugins)

    rows = {r["name"]: r for r in reg.db.query("SELECT * FROM plugins")}
    assert set(rows) == {"good", "broken"}
    good, broken = rows["good"], rows["broken"]
    assert (good["version"], good["source"], good["error"], good["status"]) == (
        None, "package", None, "ok")
    assert broken["status"] == "failed"
    assert json.loads(good["hooks"]) == ["register_dataset_sources", "register_evaluators"]
    assert json.loads(good["components"]) == ["dataset-source:rows", "evaluator:judge"]
    assert json.loads(broken["hooks"]) == ["register_evaluators"]
    assert json.loads(broken["components"]) == []
    assert broken["error"] == "register_evaluators raised RuntimeError: boom"

    comps = list(reg.db.query("SELECT * FROM components ORDER BY kind, name"))
    assert [(c["kind"], c["name"], c["plugin"], c["description"]) for c in comps] == [
        ("dataset-source", "rows", "good", "a few rows"),
        ("evaluator", "judge", "good", "always right"),
    ]
    assert json.loads(comps[0]["options_schema"]) == _Opts.model_json_schema()
    assert json.loads(comps[0]["options_schema"])["properties"]["limit"]["default"] == 3

    # a second sync replaces, never appends
    reg.sync_plugins(plugins)
    assert reg.db.execute("SELECT count(*) FROM plugins").fetchone()[0] == 2
    assert reg.db.execute("SELECT count(*) FROM components").fetchone()[0] == 2


def test_migration_2_keeps_the_metrics_and_ids_are_never_reused(tmp_path):
    import sqlite3

    from sqlite_utils import Database

    from tuneyard.core.migrations import MIGRATIONS

    path = tmp_path / "v1.db"
    v1 = Database(sqlite3.connect(path, isolation_level=None))
    v1.conn.execute("CREATE TABLE migrations (version INTEGER PRIMARY KEY, applied_at TEXT)")
    MIGRATIONS[0][1](v1)
    v1.conn.execute("INSERT INTO migrations VALUES (1, '2026-11-01')")
    v1["runs"].insert({"id": "r1", "name": "r1", "status": "completed"})
    v1["metrics"].insert_all([{"run_id": "r1", "step": s, "name": "loss", "value": 1.0 / s,
                               "at": "t"} for s in (1, 2, 3)])
    v1.conn.close()

    reg = Registry(path)
    assert reg.schema_version() == len(MIGRATIONS)
    assert [(r["id"], r["step"]) for r in reg.metrics_since("r1")] == [(1, 1), (2, 2), (3, 3)]
    reg.delete_metrics_after("r1", 1)
    reg.add_metrics("r1", 2, {"loss": 0.25})
    assert [(r["id"], r["step"], r["value"]) for r in reg.metrics_since("r1", 3)] == [
        (4, 2, 0.25)]  # a new id, after every id a poller may have seen


def test_a_name_that_looks_like_another_runs_id_selects_its_own_run(tmp_path):
    """A run named with the first 15 characters of another run's id (``20261208-012142``)
    used to select the other run through the prefix: the lookup is full id, then name,
    then a unique id prefix, for every command (here runs show, export, stop)."""
    from click.testing import CliRunner

    from tuneyard.core.cli import cli

    path = tmp_path / "registry.db"
    reg = Registry(path)
    other, named = "20261208-012142-4a32", "20261208-012150-9c1e"
    for run_id, name in ((other, "other"), (named, other[:15])):
        created = reg.create_run({"name": name}, status="completed",
                                 output_dir=str(tmp_path / name))
        reg.db.execute("UPDATE runs SET id = ? WHERE id = ?", [run_id, created])
    runner = CliRunner()

    def tuneyard(*args: str):
        return runner.invoke(cli, ["--registry", str(path), *args])

    assert json.loads(tuneyard("runs", "show", other[:15], "--json").stdout)["id"] == named
    exported = tuneyard("export", other[:15], str(tmp_path / "out"))
    assert exported.exit_code == 2
    assert f"run {named} has no final checkpoint" in " ".join(exported.output.split())
    stopped = tuneyard("stop", other[:15])
    assert f"run {named} is completed" in " ".join(stopped.output.split())
    assert json.loads(tuneyard("runs", "show", other, "--json").stdout)["id"] == other
    assert json.loads(tuneyard("runs", "show", other[:17], "--json").stdout)["id"] == other
    ambiguous = tuneyard("runs", "show", other[:9])  # the date: both ids start with it
    assert ambiguous.exit_code == 2
    assert " ".join(ambiguous.output.split()).startswith(
        f"Error: run id prefix '{other[:9]}' is ambiguous: ")
