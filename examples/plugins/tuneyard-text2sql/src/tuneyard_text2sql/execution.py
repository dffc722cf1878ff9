"""Run SQL safely and compare result sets: the pieces of execution accuracy.

A query counts as correct when it returns the same result as the gold query on the same
database (execution accuracy, Yu et al. 2018, "Spider: A Large-Scale Human-Labeled Dataset for
Complex and Cross-Domain Semantic Parsing and Text-to-SQL Task", EMNLP). Results are compared
as in test-suite-sql-eval (Zhong, Yu & Klein 2020, "Semantic Evaluation for Text-to-SQL with
Distilled Test Suites", EMNLP, function ``result_eq``): as multisets of rows, unless the gold
query has an ``ORDER BY``, in which case row order matters too; columns may come in any order.

Predicted SQL comes from a model, so it runs on a read-only connection that also refuses
anything but reading (an authorizer), under a time limit (a progress handler) and a cap on the
rows fetched.
"""

from __future__ import annotations

import itertools
import re
import sqlite3
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

Row = tuple
FENCE = re.compile(r"```[ \t]*(?:sqlite|sql)?[ \t]*\n?(.*?)(?:```|$)", re.IGNORECASE | re.DOTALL)
START = re.compile(r"\b(SELECT|WITH)\b", re.IGNORECASE)
ORDER_BY = re.compile(r"\bORDER\s+BY\b", re.IGNORECASE)
#: authorizer actions a query may perform: read tables and columns, call functions, recurse
READ_ACTIONS = frozenset({sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_FUNCTION,
                          sqlite3.SQLITE_RECURSIVE})
#: most column orders :func:`results_match` tries (columns holding identical values multiply them)
MAX_COLUMN_ORDERS = 1_000
#: SQLite VM instructions between two checks of the time limit
CHECK_EVERY = 10_000


def extract_sql(text: str) -> str:
    """The query in a model's answer.

    In order: keep the inside of the first code fence (```` ```sql ... ``` ````, closed or
    not) when there is one; start at the first ``SELECT`` or ``WITH`` keyword when the text
    does not already (drops a lead-in like "Here is the query:"); cut at the first ``;`` that
    is outside a quoted string; strip whitespace.

    >>> extract_sql("```sql\\nSELECT 1;\\n```\\nThis selects one.")
    'SELECT 1'
    >>> extract_sql("Query: SELECT name FROM t WHERE x = 'a;b'; SELECT 2")
    "SELECT name FROM t WHERE x = 'a;b'"
    """
    fence = FENCE.search(text)
    if fence:
        text = fence.group(1)
    start = START.search(text)
    if start and not text.lstrip().upper().startswith(("SELECT", "WITH")):
        text = text[start.start():]
    cut = _blank_quoted(text).find(";")
    return (text if cut < 0 else text[:cut]).strip()


def _blank_quoted(sql: str) -> str:
    """``sql`` with the inside of each single- or double-quoted string, and its closing quote,
    blanked to spaces: the same length, so a position in it is a position in ``sql``."""
    out, quote = [], None
    for ch in sql:
        if quote:
            if ch == quote:
                quote = None  # a doubled quote re-opens at once
            out.append(" ")
            continue
        if ch in "'\"":
            quote = ch
        out.append(ch)
    return "".join(out)


def has_top_level_order_by(sql: str) -> bool:
    """Whether ``sql`` has an ``ORDER BY`` outside parentheses (so not in a subquery nor a
    window's ``OVER (...)``) and outside quoted strings.

    >>> has_top_level_order_by("SELECT a FROM (SELECT a FROM t ORDER BY a) LIMIT 2")
    False
    >>> has_top_level_order_by("SELECT a FROM t WHERE b = 'order by' ORDER BY a DESC")
    True
    """
    depth, top = 0, []
    for ch in _blank_quoted(sql):
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        top.append(ch if depth == 0 and ch not in "()" else " ")
    return bool(ORDER_BY.search("".join(top)))


class QueryError(Exception):
    """A query failed: SQLite's error, the time limit or the row cap."""


@dataclass
class Runner:
    """Runs queries on one read-only connection with a time limit and a row cap.

    Attributes:
        conn: a read-only connection (:func:`tuneyard_text2sql.database.connect_readonly`).
        timeout_s: wall-clock seconds a query may run before it is interrupted.
        max_rows: most rows fetched; a query returning more fails.
    """

    conn: sqlite3.Connection
    timeout_s: float
    max_rows: int

    def __post_init__(self) -> None:
        self._deadline = float("inf")
        self.conn.set_authorizer(
            lambda action, *_: sqlite3.SQLITE_OK if action in READ_ACTIONS else sqlite3.SQLITE_DENY
        )
        # A non-zero return value interrupts the running statement (OperationalError).
        self.conn.set_progress_handler(lambda: time.monotonic() > self._deadline, CHECK_EVERY)

    def run(self, sql: str) -> list[Row]:
        """The rows of ``sql`` (at most ``max_rows``), as tuples of Python values.

        Raises:
            QueryError: empty query, SQLite error (syntax, unknown column, a write refused),
                more than ``timeout_s`` seconds, or more than ``max_rows`` rows; the message
                says which.
        """
        if not sql.strip():
            raise QueryError("empty query")
        self._deadline = time.monotonic() + self.timeout_s
        try:
            cursor = self.conn.execute(sql)
            rows = cursor.fetchmany(self.max_rows + 1)
        except (sqlite3.Error, sqlite3.Warning, ValueError, OverflowError) as exc:
            if str(exc) == "interrupted" and time.monotonic() > self._deadline:
                raise QueryError(f"query ran longer than {self.timeout_s} s "
                                 "(option 'timeout_s')") from None
            hint = " (queries may only read)" if str(exc) == "not authorized" else ""
            raise QueryError(f"{type(exc).__name__}: {exc}{hint}") from None
        finally:
            self._deadline = float("inf")
        if len(rows) > self.max_rows:
            raise QueryError(f"query returned more than {self.max_rows} rows "
                             "(option 'max_rows')")
        return rows


@dataclass
class Verdict:
    """How one prediction fared: the query extracted from it, whether its result matches the
    gold result, and why it failed to run (``None`` when it ran)."""

    sql: str
    correct: bool
    error: str | None


def judge(runner: Runner, gold_sql: str, gold_rows: Sequence[Row], prediction: str) -> Verdict:
    """Extract the query from ``prediction``, run it and compare its result with
    ``gold_rows`` (the result of ``gold_sql``), in order when ``gold_sql`` has a top-level
    ``ORDER BY``. A query that fails to run is wrong."""
    sql = extract_sql(prediction)
    try:
        rows = runner.run(sql)
    except QueryError as exc:
        return Verdict(sql, False, str(exc))
    return Verdict(sql, results_match(gold_rows, rows, has_top_level_order_by(gold_sql)), None)


def results_match(gold: Sequence[Row], predicted: Sequence[Row], ordered: bool) -> bool:
    """Whether two results are the same, as in test-suite-sql-eval's ``result_eq``.

    Same number of rows and columns; then some order of the predicted columns must make the
    rows equal: as lists when ``ordered`` (the gold query has a top-level ``ORDER BY``), else
    as multisets (duplicates count; ``NULL`` equals ``NULL``; ``1`` equals ``1.0``). A
    column order is only tried when each column holds the same multiset of values as the gold
    column it stands for, and at most :data:`MAX_COLUMN_ORDERS` orders are tried.
    """
    if len(gold) != len(predicted):
        return False
    if not gold:
        return True
    width = len(gold[0])
    if any(len(r) != width for r in predicted):
        return False
    gold_cols = [Counter(r[i] for r in gold) for i in range(width)]
    pred_cols = [Counter(r[j] for r in predicted) for j in range(width)]
    candidates = [[j for j in range(width) if pred_cols[j] == gold_cols[i]] for i in range(width)]
    gold_rows = list(gold) if ordered else Counter(gold)
    for perm in itertools.islice(_injective(candidates), MAX_COLUMN_ORDERS):
        permuted = [tuple(r[j] for j in perm) for r in predicted]
        if (permuted if ordered else Counter(permuted)) == gold_rows:
            return True
    return False


def _injective(candidates: list[list[int]], taken: tuple[int, ...] = ()) -> Iterator[tuple]:
    """Every choice of one distinct index per list of ``candidates``, in lexicographic order
    (so the identity comes first when it is allowed)."""
    if len(taken) == len(candidates):
        yield taken
        return
    for j in candidates[len(taken)]:
        if j not in taken:
            yield from _injective(candidates, (*taken, j))
