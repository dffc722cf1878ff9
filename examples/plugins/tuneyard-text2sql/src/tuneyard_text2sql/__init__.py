"""tuneyard-text2sql: a text-to-SQL task for tuneyard, as a third-party plugin.

Registers the dataset source ``text2sql`` (question → SQL pairs over a SQLite database the
package builds from code, schema in the prompt) and the evaluator ``sql-execution`` (execution
accuracy). Importing this module is cheap: sqlite3 and pydantic only; ``datasets`` and torch
are imported when a run loads data or generates.
"""

from __future__ import annotations

from tuneyard.core.hookspecs import hookimpl
from tuneyard_text2sql.evaluator import SqlExecution
from tuneyard_text2sql.source import Text2SqlSource

__all__ = ["SqlExecution", "Text2SqlSource"]


@hookimpl
def register_dataset_sources(register):
    register(Text2SqlSource)


@hookimpl
def register_evaluators(register):
    register(SqlExecution)
