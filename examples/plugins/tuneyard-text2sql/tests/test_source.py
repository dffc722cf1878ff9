"""The ``text2sql`` dataset source: schema in the prompt, gold SQL as the completion."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from tuneyard.core.errors import DataError
from tuneyard.core.formats import to_examples
from tuneyard_text2sql.database import connect_readonly, default_path, schema_sql
from tuneyard_text2sql.prompt import INSTRUCTION
from tuneyard_text2sql.source import Text2SqlSource


def source(**options):
    return Text2SqlSource(Text2SqlSource.Options(**options))


def test_rows_hold_the_schema_in_the_prompt(cache_home):
    rows = source().rows()
    assert len(rows) == 486
    path = default_path()
    assert path.is_relative_to(cache_home) and path.is_file()
    conn = connect_readonly(path)
    schema = schema_sql(conn)
    conn.close()
    assert schema.count("CREATE TABLE") == 4
    for row in rows:
        assert row["prompt"] == f"{schema}\n\nQuestion: {row['question']}\n{INSTRUCTION}"
        assert row["completion"] == row["query"]
    first = rows[0]
    assert first["question"] == "Count the employees of the Engineering department."
    assert first["completion"] == ("SELECT COUNT(*) FROM employees AS e JOIN departments AS d ON "
                                   "e.department_id = d.id WHERE d.name = 'Engineering';")


def test_limit_takes_a_seeded_sample():
    rows = source(limit=20, seed=3).rows()
    assert len(rows) == 20
    assert [r["question"] for r in rows] == [r["question"] for r in source(limit=20, seed=3).rows()]
    assert [r["question"] for r in rows] != [r["question"] for r in source(limit=20).rows()]
    assert len(source(limit=10_000).rows()) == 486


def test_load_gives_a_dataset_the_instruction_format_reads():
    ds = source(limit=3).load()
    assert ds.column_names == ["prompt", "completion", "question", "query"]
    no_template = type("Tok", (), {"chat_template": None})()
    examples = to_examples(ds, "instruction", {}, no_template)
    assert [e.completion for e in examples] == ds["completion"]
    assert all("CREATE TABLE employees" in e.prompt and "### Response:" in e.prompt
               for e in examples)


def test_database_option(tmp_path):
    mine = tmp_path / "mine.sqlite"
    rows = source(database=str(mine), limit=2).rows()
    assert mine.is_file() and not default_path().exists()
    assert rows == source(limit=2).rows()  # the same content as the default database
    not_company = tmp_path / "empty.sqlite"
    not_company.write_bytes(b"")
    with pytest.raises(DataError, match="text2sql: .*empty.sqlite is not a text2sql 'company' "
                                        "database"):
        source(database=str(not_company)).rows()


def test_options_are_strict():
    with pytest.raises(ValidationError, match="extra_forbidden"):
        Text2SqlSource.Options(limt=3)
    with pytest.raises(ValidationError):
        Text2SqlSource.Options(limit=0)
    assert all(f.description for f in Text2SqlSource.Options.model_fields.values())
