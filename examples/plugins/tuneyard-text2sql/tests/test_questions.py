"""Question → SQL pairs: every gold query runs, returns rows, and the same rows on every
build."""

from __future__ import annotations

from collections import Counter

from tuneyard_text2sql.database import build_database, connect_readonly
from tuneyard_text2sql.execution import has_top_level_order_by
from tuneyard_text2sql.questions import generate_pairs


def results(path):
    conn = connect_readonly(path)
    try:
        pairs = generate_pairs(conn)
        return pairs, [conn.execute(sql).fetchall() for _, sql in pairs]
    finally:
        conn.close()


def test_every_gold_query_runs_and_returns_the_same_rows_on_two_builds(tmp_path):
    build_database(tmp_path / "a.sqlite")
    build_database(tmp_path / "b.sqlite")
    pairs_a, rows_a = results(tmp_path / "a.sqlite")
    pairs_b, rows_b = results(tmp_path / "b.sqlite")
    assert pairs_a == pairs_b
    assert len(pairs_a) == 486
    for (question, sql), a, b in zip(pairs_a, rows_a, rows_b):
        assert a, f"no rows: {question} -> {sql}"
        assert a == b, question


def test_pairs_are_distinct_and_varied(company):
    pairs = generate_pairs(company)
    questions = [q for q, _ in pairs]
    assert len(set(questions)) == len(questions)
    assert len({sql for _, sql in pairs}) > 450
    sql = [s for _, s in pairs]

    def count(word):
        return sum(word in s for s in sql)

    assert all(s.endswith(";") and s.startswith("SELECT ") for s in sql)
    kinds = Counter({"JOIN": count(" JOIN "), "COUNT": count("COUNT("), "GROUP BY": count(
        "GROUP BY"), "HAVING": count("HAVING"), "ORDER BY": count("ORDER BY"), "LIMIT": count(
        "LIMIT"), "IS NULL": count("IS NULL"), "subquery": count("(SELECT"),
        "AVG/SUM/MIN/MAX": sum(count(f) for f in ("AVG(", "SUM(", "MIN(", "MAX("))})
    assert min(kinds.values()) >= 2, kinds
    assert sum(has_top_level_order_by(s) for s in sql) == count("ORDER BY")


def test_a_known_pair_by_hand(company):
    pairs = dict(generate_pairs(company))
    sql = pairs["Which projects have not ended yet?"]
    assert sql == "SELECT name FROM projects WHERE end_year IS NULL;"
    assert len(company.execute(sql).fetchall()) == 15
