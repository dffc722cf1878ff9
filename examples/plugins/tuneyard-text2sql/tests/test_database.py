"""The company database: deterministic, atomic to build, in the right cache folder."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from tuneyard.core.errors import DataError
from tuneyard_text2sql.database import (TABLES, build_database, connect_readonly, default_path,
                                        ensure_database, open_database, schema_sql)


def test_same_seed_gives_the_same_file(tmp_path):
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        build_database(tmp_path / f"{name}.sqlite", seed=seed)
    a, b, c = ((tmp_path / f"{n}.sqlite").read_bytes() for n in "abc")
    assert a == b
    assert a != c


def test_content(company):
    def one(sql):
        return company.execute(sql).fetchone()

    assert [one(f"SELECT COUNT(*) FROM {t}")[0] for t in TABLES] == [8, 120, 30, 192]
    assert company.execute("PRAGMA foreign_key_check").fetchall() == []
    assert one("SELECT COUNT(*) FROM employees WHERE manager_id IS NULL") == (8,)
    assert one("SELECT COUNT(*) FROM employees WHERE manager_id IS NULL AND title = 'Director'") \
        == (8,)
    assert one("SELECT COUNT(DISTINCT salary), COUNT(DISTINCT name) FROM employees") == (120, 120)
    assert one("SELECT COUNT(*) FROM projects WHERE (status = 'active') != (end_year IS NULL)") \
        == (0,)
    leads = company.execute("SELECT project_id, COUNT(*) FROM assignments WHERE role = 'lead' "
                            "GROUP BY project_id").fetchall()
    assert len(leads) == 30 and {n for _, n in leads} == {1}
    assert one("SELECT MIN(salary), MAX(salary) FROM employees")[0] >= 40_000


def test_schema_comes_from_sqlite_master(company):
    schema = schema_sql(company)
    lines = schema.splitlines()
    assert [line.split()[2] for line in lines] == list(TABLES)
    assert all(line.startswith("CREATE TABLE ") and line.endswith(");") for line in lines)
    assert "manager_id INTEGER REFERENCES employees(id)" in schema


def test_default_path_follows_xdg_cache_home(cache_home, monkeypatch, tmp_path):
    assert default_path() == cache_home / "tuneyard-text2sql" / "company-v1.sqlite"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_path() == tmp_path / "home" / ".cache" / "tuneyard-text2sql" / \
        "company-v1.sqlite"


def test_built_on_first_use_then_reused(cache_home, company_db):
    path = ensure_database()
    assert path == default_path() and path.is_file()
    assert path.read_bytes() == company_db.read_bytes()
    mtime = path.stat().st_mtime_ns
    assert ensure_database() == path and path.stat().st_mtime_ns == mtime


def test_concurrent_builds_leave_one_complete_file(tmp_path, company_db):
    target = tmp_path / "shared" / "company.sqlite"
    errors: list[BaseException] = []

    def build():
        try:
            ensure_database(target)
        except BaseException as exc:  # noqa: BLE001 (reported below)
            errors.append(exc)

    threads = [threading.Thread(target=build) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert [p.name for p in target.parent.iterdir()] == ["company.sqlite"]  # no temp file left
    assert target.read_bytes() == company_db.read_bytes()


def test_read_only_connection_refuses_writes(company_db):
    conn = connect_readonly(company_db)
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        conn.execute("DELETE FROM employees")
    conn.close()


def test_open_database_errors(tmp_path):
    missing = tmp_path / "nope.sqlite"
    with pytest.raises(DataError, match=r"sql-execution: database .*nope.sqlite not found "
                                        r"\(option 'database'\)"):
        open_database(str(missing), who="sql-execution", build=False)
    assert not missing.exists()
    other = tmp_path / "other.sqlite"
    sqlite3.connect(other).execute("CREATE TABLE departments (id INTEGER)").connection.close()
    with pytest.raises(DataError, match="not a text2sql 'company' database: no table employees, "
                                        "projects, assignments"):
        open_database(str(other), who="text2sql", build=True)
    junk = tmp_path / "junk.sqlite"
    junk.write_text("not a database, just text " * 100)
    with pytest.raises(DataError, match="cannot build or open database .*junk.sqlite"):
        open_database(str(junk), who="text2sql", build=True)


def test_open_database_builds_a_given_path_when_asked(tmp_path, company_db):
    target = tmp_path / "mine" / "db.sqlite"
    path, conn = open_database(str(target), who="text2sql", build=True)
    conn.close()
    assert path == target and Path(target).read_bytes() == company_db.read_bytes()
