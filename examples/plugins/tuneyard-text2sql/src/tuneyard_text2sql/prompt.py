"""The text-to-SQL prompt format: the database schema, then the question, then the instruction.

Row formats are not pluggable in tuneyard (``dataset.format`` is one of ``text``,
``instruction``, ``chat``), so the ``text2sql`` dataset source renders this prompt itself into
its ``prompt`` column and the run uses the built-in ``instruction`` format, which reads
``prompt`` as the instruction and ``completion`` as the answer, wraps the prompt in the model's
chat template (or the Alpaca template when the tokenizer has none) and takes the loss on the
answer only. Putting the ``CREATE TABLE`` statements in the prompt is the usual way to give a
model the schema: the "Create Table" prompt of Rajkumar, Li & Bahdanau 2022, "Evaluating the
Text-to-SQL Capabilities of Large Language Models" (arXiv:2204.00498).
"""

from __future__ import annotations

INSTRUCTION = "Answer with one SQLite query."
QUESTION_PREFIX = "Question: "


def render_prompt(schema: str, question: str) -> str:
    """The prompt for one question.

    Args:
        schema: the ``CREATE TABLE`` statements, one per line
            (:func:`tuneyard_text2sql.database.schema_sql`).
        question: the question in English.

    >>> print(render_prompt("CREATE TABLE t (x INTEGER);", "How many rows are there?"))
    CREATE TABLE t (x INTEGER);
    <BLANKLINE>
    Question: How many rows are there?
    Answer with one SQLite query.
    """
    return f"{schema}\n\n{QUESTION_PREFIX}{question}\n{INSTRUCTION}"


def question_of(prompt: str) -> str | None:
    """The question inside a prompt rendered by :func:`render_prompt`, even after a chat
    template wrapped it; ``None`` when there is none.

    >>> question_of("<|im_start|>user\\nCREATE TABLE t (x);\\n\\nQuestion: Why?\\nAnswer...")
    'Why?'
    """
    for line in prompt.splitlines():
        if line.startswith(QUESTION_PREFIX):
            return line[len(QUESTION_PREFIX):]
    return None
