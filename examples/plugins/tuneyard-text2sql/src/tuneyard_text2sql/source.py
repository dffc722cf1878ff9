"""Dataset source ``text2sql``: question → SQL pairs over the generated ``company`` database."""

from __future__ import annotations

import random
import sqlite3
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field

from tuneyard.core.components import DatasetSource
from tuneyard.core.errors import DataError
from tuneyard_text2sql.database import open_database, schema_sql
from tuneyard_text2sql.prompt import render_prompt
from tuneyard_text2sql.questions import generate_pairs

if TYPE_CHECKING:
    import datasets

COLUMNS = ("prompt", "completion", "question", "query")


class Text2SqlOptions(BaseModel):
    """Options of the ``text2sql`` source."""

    model_config = ConfigDict(extra="forbid")

    database: str | None = Field(
        default=None,
        description="SQLite file of the company database; built there if missing "
        "(default: $XDG_CACHE_HOME or ~/.cache, then tuneyard-text2sql/company-v1.sqlite)",
    )
    limit: int | None = Field(
        default=None, ge=1, description="random sample of N pairs, seeded by 'seed' (None = all)",
    )
    seed: int = Field(default=0, description="seed of the random sample taken when 'limit' is set")


class Text2SqlSource(DatasetSource):
    """One row per question → SQL pair over the ``company`` database: 486 rows on the
    default database.

    Columns (all str): ``prompt`` (the database's ``CREATE TABLE`` statements, the question
    and "Answer with one SQLite query.", see :mod:`tuneyard_text2sql.prompt`), ``completion``
    (the gold SQL), ``question`` and ``query`` (= ``completion``). Use it with
    ``dataset.format: instruction``; evaluate with ``sql-execution`` on the same ``database``.
    The database's path is not a column: the rows, and so the run's dataset fingerprint, are
    the same wherever the cache is.

    Rows follow the templates' order unless ``limit`` is set: then a seeded random sample of
    ``limit`` rows is taken, in random order, so a small dataset still mixes the templates.

    Raises:
        DataError: the database cannot be built or opened, or is not a ``company`` database
            (option ``database``).
    """

    name = "text2sql"
    description = "Question → SQL pairs over a generated company database (schema in prompt)"
    Options = Text2SqlOptions

    def load(self) -> datasets.Dataset:
        import datasets

        rows = self.rows()
        return datasets.Dataset.from_dict({c: [r[c] for r in rows] for c in COLUMNS})

    def rows(self) -> list[dict[str, str]]:
        """Every selected row as a dict (see the class docstring for the columns)."""
        path, conn = open_database(self.options.database, who=self.name, build=True)
        try:
            schema = schema_sql(conn)
            pairs = generate_pairs(conn)
        except sqlite3.Error as exc:
            raise DataError(f"{self.name}: {path} does not fit the question templates "
                            f"(option 'database'): {exc}") from None
        finally:
            conn.close()
        limit = self.options.limit
        if limit is not None and limit < len(pairs):
            pairs = random.Random(self.options.seed).sample(pairs, limit)
        return [{"prompt": render_prompt(schema, question), "completion": sql,
                 "question": question, "query": sql} for question, sql in pairs]
