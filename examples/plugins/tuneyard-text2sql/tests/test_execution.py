"""Execution match on a hand-made table whose answers are computed by hand: row order, ORDER
BY, duplicates, NULLs, column order, errors, and the guards on predicted SQL."""

from __future__ import annotations

import sqlite3

import pytest

from tuneyard_text2sql.database import connect_readonly
from tuneyard_text2sql.execution import (QueryError, Runner, extract_sql,
                                         has_top_level_order_by, judge, results_match)

# name, n, x: 'a' appears twice (duplicate rows), x is NULL twice.
PEOPLE = [("a", 1, None), ("b", 2, 10), ("a", 1, None), ("c", 3, 30)]


@pytest.fixture
def runner(tmp_path):
    path = tmp_path / "t.sqlite"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE t (name TEXT, n INTEGER, x INTEGER)")
    conn.executemany("INSERT INTO t VALUES (?, ?, ?)", PEOPLE)
    conn.commit()
    conn.close()
    ro = connect_readonly(path)
    yield Runner(ro, timeout_s=0.5, max_rows=100)
    ro.close()


def verdict(runner, gold, prediction):
    return judge(runner, gold, runner.run(gold), prediction)


def test_same_rows_other_order_is_correct_without_order_by(runner):
    assert runner.run("SELECT name FROM t WHERE n > 1 ORDER BY n DESC") == [("c",), ("b",)]
    v = verdict(runner, "SELECT name FROM t WHERE n > 1", "SELECT name FROM t WHERE n > 1 "
                "ORDER BY n DESC")
    assert (v.correct, v.error) == (True, None)


def test_order_matters_when_the_gold_query_has_order_by(runner):
    gold = "SELECT name FROM t WHERE n > 1 ORDER BY n"  # b, c
    assert verdict(runner, gold, "SELECT name FROM t WHERE n > 1 ORDER BY n DESC").correct is False
    assert verdict(runner, gold, "SELECT name FROM t WHERE n >= 2 ORDER BY x").correct is True


def test_order_by_inside_a_subquery_does_not_make_order_matter(runner):
    gold = "SELECT name FROM (SELECT name, n FROM t ORDER BY n) WHERE n > 1"
    assert verdict(runner, gold, "SELECT name FROM t WHERE n > 1 ORDER BY n DESC").correct


def test_different_values_are_wrong(runner):
    v = verdict(runner, "SELECT COUNT(*) FROM t", "SELECT COUNT(DISTINCT name) FROM t")  # 4 vs 3
    assert (v.correct, v.error) == (False, None)


def test_syntax_error_is_wrong_and_keeps_the_error(runner):
    v = verdict(runner, "SELECT name FROM t", "SELEC name FROM t")
    assert v.correct is False
    assert "syntax error" in v.error
    v = verdict(runner, "SELECT name FROM t", "SELECT nme FROM t")
    assert "no such column: nme" in v.error


def test_duplicates_count_as_a_multiset(runner):
    gold = "SELECT name FROM t"  # a, b, a, c
    assert verdict(runner, gold, "SELECT DISTINCT name FROM t").correct is False  # a, b, c
    # Same length and same set {a, b, c}, different multiset: a, b, c, c.
    assert verdict(runner, gold, "SELECT name FROM t WHERE name != 'a' UNION ALL "
                                 "SELECT 'a' UNION ALL SELECT 'c'").correct is False
    assert verdict(runner, gold, "SELECT name FROM t ORDER BY name DESC").correct is True


def test_nulls_compare_equal_to_nulls_only(runner):
    gold = "SELECT x FROM t WHERE name = 'a'"  # NULL, NULL
    assert runner.run(gold) == [(None,), (None,)]
    assert verdict(runner, gold, "SELECT x FROM t WHERE x IS NULL").correct is True
    assert verdict(runner, gold, "SELECT COALESCE(x, 0) FROM t WHERE name = 'a'").correct is False


def test_columns_may_come_in_any_order(runner):
    gold = "SELECT name, n FROM t"
    assert verdict(runner, gold, "SELECT n, name FROM t").correct is True
    assert verdict(runner, gold, "SELECT name, n, x FROM t").correct is False


def test_results_match_by_hand():
    assert results_match([(1, "a"), (2, "b")], [(2, "b"), (1, "a")], ordered=False)
    assert not results_match([(1, "a"), (2, "b")], [(2, "b"), (1, "a")], ordered=True)
    assert results_match([(1, "a"), (2, "b")], [("a", 1), ("b", 2)], ordered=True)
    assert not results_match([(1, "a"), (2, "b")], [("b", 1), ("a", 2)], ordered=False)
    assert results_match([(1,)], [(1.0,)], ordered=False)
    assert results_match([(None, None)], [(None, None)], ordered=False)
    assert not results_match([(1,), (1,)], [(1,)], ordered=False)
    assert results_match([], [], ordered=True)
    assert not results_match([(1,)], [], ordered=False)


@pytest.mark.parametrize(("text", "sql"), [
    ("SELECT a FROM t;", "SELECT a FROM t"),
    ("```sql\nSELECT a\nFROM t;\n```", "SELECT a\nFROM t"),
    ("```\nSELECT a FROM t\n```\nThis query lists a.", "SELECT a FROM t"),
    ("```sqlite\nSELECT a FROM t", "SELECT a FROM t"),
    ("Here is the query: select a from t; -- done", "select a from t"),
    ("SELECT a FROM t WHERE b = 'x;y'; SELECT 2;", "SELECT a FROM t WHERE b = 'x;y'"),
    ("SELECT a FROM t WHERE b = 'it''s;'; DROP TABLE t", "SELECT a FROM t WHERE b = 'it''s;'"),
    ("WITH c AS (SELECT 1) SELECT * FROM c", "WITH c AS (SELECT 1) SELECT * FROM c"),
    ("I don't know.", "I don't know."),
    ("", ""),
])
def test_extract_sql(text, sql):
    assert extract_sql(text) == sql


@pytest.mark.parametrize(("sql", "ordered"), [
    ("SELECT a FROM t ORDER BY a", True),
    ("select a from t order\n  by a desc limit 3", True),
    ("SELECT a FROM t", False),
    ("SELECT a FROM (SELECT a FROM t ORDER BY a LIMIT 2)", False),
    ("SELECT a, RANK() OVER (ORDER BY b) FROM t", False),
    ("SELECT a FROM t WHERE b = 'ORDER BY'", False),
    ("SELECT a FROM t WHERE b IN (SELECT b FROM u) ORDER BY a", True),
    ("SELECT border_by FROM t", False),
])
def test_top_level_order_by(sql, ordered):
    assert has_top_level_order_by(sql) is ordered


def test_runaway_query_is_stopped(runner):
    with pytest.raises(QueryError, match=r"longer than 0.5 s \(option 'timeout_s'\)"):
        runner.run("WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c) "
                   "SELECT COUNT(*) FROM c")
    assert runner.run("SELECT COUNT(*) FROM t") == [(4,)]  # the connection still works


def test_too_many_rows_is_an_error(runner):
    big = "SELECT 1 FROM t AS a, t AS b, t AS c, t AS d"  # 4**4 = 256 rows > 100
    with pytest.raises(QueryError, match=r"more than 100 rows \(option 'max_rows'\)"):
        runner.run(big)
    assert len(runner.run("SELECT 1 FROM t AS a, t AS b, t AS c")) == 64


@pytest.mark.parametrize("sql", [
    "DELETE FROM t", "INSERT INTO t VALUES ('z', 9, 9)", "DROP TABLE t",
    "CREATE TEMP TABLE u (a)", "ATTACH 'other.sqlite' AS o", "PRAGMA writable_schema = 1",
])
def test_only_reading_is_allowed(runner, sql, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(QueryError, match=r"not authorized \(queries may only read\)"):
        runner.run(sql)
    assert runner.run("SELECT COUNT(*) FROM t") == [(4,)]
    assert not (tmp_path / "other.sqlite").exists()


def test_several_statements_or_none_are_errors(runner):
    with pytest.raises(QueryError, match="one statement"):
        runner.run("SELECT 1; SELECT 2")
    with pytest.raises(QueryError, match="empty query"):
        runner.run("  ")
