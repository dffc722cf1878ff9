"""Evaluator ``sql-execution``: execution accuracy of generated SQL on the ``company`` database.

Execution accuracy is the fraction of examples whose predicted query returns the same result
as the gold query when both run on the database (Yu et al. 2018, "Spider: A Large-Scale
Human-Labeled Dataset for Complex and Cross-Domain Semantic Parsing and Text-to-SQL Task",
EMNLP). Results are compared as multisets of rows unless the gold query has a top-level
``ORDER BY``, in which case order matters (Zhong, Yu & Klein 2020, "Semantic Evaluation for
Text-to-SQL with Distilled Test Suites", EMNLP; their test-suite-sql-eval). This is the
single-database variant: Zhong et al.'s test-suite accuracy also runs both queries on many
distilled databases to catch queries right by accident; here there is one database.
"""

from __future__ import annotations

from pydantic import Field

from tuneyard.core.components import EvalContext, EvalResult, Evaluator
from tuneyard.core.errors import DataError
from tuneyard.core.generation import GenerationOptions
from tuneyard_text2sql.database import open_database
from tuneyard_text2sql.execution import QueryError, Runner, extract_sql, judge
from tuneyard_text2sql.prompt import question_of


class SqlExecutionOptions(GenerationOptions):
    """Options of the ``sql-execution`` evaluator: tuneyard's generation options
    (``max_new_tokens``, ``limit``, ``batch_size``) and where and how the queries run."""

    database: str | None = Field(
        default=None,
        description="SQLite file the queries run on: the text2sql source's 'database' "
        "(default: the same default database as the source)",
    )
    max_new_tokens: int = Field(
        default=128, ge=1, description="Most tokens generated per example (greedy decoding).",
    )
    timeout_s: float = Field(
        default=5.0, gt=0,
        description="Seconds a predicted query may run before it is stopped and counted wrong.",
    )
    max_rows: int = Field(
        default=10_000, ge=1,
        description="Most rows fetched per query; a query returning more is counted wrong.",
    )


class SqlExecution(Evaluator):
    """Execution accuracy of greedy SQL completions.

    For each of the first ``limit`` held-out examples: generate a completion of its prompt
    (:func:`tuneyard.core.generation.generate`, greedy), extract the query
    (:func:`~tuneyard_text2sql.execution.extract_sql`), run it and the gold query on a
    read-only connection to the database (time limit ``timeout_s``, at most ``max_rows``
    rows), and compare the results
    (:func:`~tuneyard_text2sql.execution.results_match`). A predicted query that fails to run
    is wrong; its error is kept.

    Metrics, in [0, 1]: ``execution_accuracy`` (fraction of examples whose result matches) and
    ``valid_sql`` (fraction whose predicted query ran without error).
    """

    name = "sql-execution"
    description = "Execution accuracy of generated SQL on the text2sql database (Spider EX)"
    Options = SqlExecutionOptions

    def evaluate(self, ctx: EvalContext) -> EvalResult:
        """Generate, run and compare; see the class docstring.

        Returns:
            ``EvalResult`` with the metrics above and, per example, ``question`` (or the whole
            prompt when it holds no "Question:" line), ``gold``, ``prediction`` (the generated
            text), ``predicted_sql`` (the extracted query), ``correct`` (bool) and ``error``
            (why the predicted query failed, else ``None``).

        Raises:
            DataError: no held-out example, an example with an empty prompt, a missing
                database (option ``database``), or a gold query that fails on it (the
                database is not the one the dataset was made from).
        """
        examples = self.options.examples(ctx, self.name)
        path, conn = open_database(self.options.database, who=self.name, build=False)
        try:
            runner = Runner(conn, timeout_s=self.options.timeout_s,
                            max_rows=self.options.max_rows)
            gold_results = []  # run first: a wrong database fails before the slow generation
            for i, example in enumerate(examples):
                try:
                    gold_results.append(runner.run(extract_sql(example.completion)))
                except QueryError as exc:
                    raise DataError(
                        f"{self.name}: the gold query of held-out example {i} fails on {path}: "
                        f"{exc}; give option 'database' the file the dataset was made from"
                    ) from None
            predictions = self.options.complete(ctx, examples)
            details = []
            for example, gold_rows, prediction in zip(examples, gold_results, predictions):
                verdict = judge(runner, example.completion, gold_rows, prediction)
                details.append({"question": question_of(example.prompt) or example.prompt,
                                "gold": example.completion, "prediction": prediction,
                                "predicted_sql": verdict.sql, "correct": verdict.correct,
                                "error": verdict.error})
        finally:
            conn.close()
        n = len(details)
        return EvalResult(
            metrics={"execution_accuracy": sum(d["correct"] for d in details) / n,
                     "valid_sql": sum(d["error"] is None for d in details) / n},
            details=details,
        )
