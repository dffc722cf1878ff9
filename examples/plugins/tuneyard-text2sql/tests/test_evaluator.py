"""The ``sql-execution`` evaluator with generation faked: exact accuracies and details."""

from __future__ import annotations

import pytest

import tuneyard.core.generation
from tuneyard.core.components import EvalContext, Example
from tuneyard.core.errors import DataError
from tuneyard_text2sql.database import connect_readonly, default_path
from tuneyard_text2sql.evaluator import SqlExecution
from tuneyard_text2sql.source import Text2SqlSource

CHAT = "<|im_start|>user\n{}<|im_end|>\n<|im_start|>assistant\n"


@pytest.fixture
def fake_generate(monkeypatch):
    """Replace generation: returns the queued predictions and records each call."""
    calls: list[dict] = []
    queue: list[str] = []

    def generate(model, tokenizer, prompts, **kwargs):
        calls.append({"prompts": list(prompts), **kwargs})
        return [queue.pop(0) for _ in prompts]

    monkeypatch.setattr(tuneyard.core.generation, "generate", generate)
    return queue, calls


def examples(*questions):
    """Held-out examples of the given questions, as the instruction format renders them
    with a chat template."""
    rows = {r["question"]: r for r in Text2SqlSource(Text2SqlSource.Options()).rows()}
    return [Example(CHAT.format(rows[q]["prompt"]), rows[q]["completion"]) for q in questions]


def ctx(examples, batch_size=2):
    return EvalContext(model=None, tokenizer=None, examples=list(examples), eval_dataset=[],
                       collator=None, device="cpu", batch_size=batch_size)


SALES = "Count the employees of the Sales department."
TOP3 = "Who are the 3 highest-paid employees in the Sales department?"
NO_END = "Which projects have not ended yet?"


def test_rewritten_fenced_and_reordered_predictions_are_right(fake_generate):
    queue, calls = fake_generate
    queue += [
        # Right, written differently, inside a code fence with chatter after it.
        "```sql\nSELECT COUNT(id) FROM employees WHERE department_id = "
        "(SELECT id FROM departments WHERE name = 'Sales');\n```\nThis counts them.",
        # The gold query's rows in the gold order (it has ORDER BY), other column expression.
        "SELECT name FROM employees WHERE department_id = 2 ORDER BY salary DESC LIMIT 3",
        # The gold rows in another order: right, the gold query has no ORDER BY.
        "SELECT name FROM projects WHERE status = 'active' ORDER BY name DESC;",
    ]
    ev = SqlExecution(SqlExecution.Options(max_new_tokens=40, batch_size=3))
    result = ev.evaluate(ctx(examples(SALES, TOP3, NO_END)))
    assert result.metrics == {"execution_accuracy": 1.0, "valid_sql": 1.0}
    assert result.details[0]["predicted_sql"] == (
        "SELECT COUNT(id) FROM employees WHERE department_id = "
        "(SELECT id FROM departments WHERE name = 'Sales')")
    assert len(calls) == 1
    assert calls[0]["max_new_tokens"] == 40 and calls[0]["batch_size"] == 3
    assert calls[0]["prompts"] == [e.prompt for e in examples(SALES, TOP3, NO_END)]
    assert "CREATE TABLE assignments" in calls[0]["prompts"][0]


def test_wrong_order_and_syntax_error_are_wrong(fake_generate):
    queue, _ = fake_generate
    reversed_top3 = ("SELECT name FROM (SELECT name, salary FROM employees WHERE "
                     "department_id = 2 ORDER BY salary DESC LIMIT 3) ORDER BY salary ASC")
    queue += ["SELECT COUNT(*) FROM employees WHERE department_id = 2",  # Sales is id 2
              reversed_top3,  # the right 3 people, lowest paid first: the gold has ORDER BY
              "SELEC name FROM projects"]
    result = SqlExecution(SqlExecution.Options()).evaluate(ctx(examples(SALES, TOP3, NO_END)))
    assert result.metrics == {"execution_accuracy": pytest.approx(1 / 3),
                              "valid_sql": pytest.approx(2 / 3)}
    d = result.details
    assert [x["question"] for x in d] == [SALES, TOP3, NO_END]
    assert [x["correct"] for x in d] == [True, False, False]
    assert d[0]["gold"] == ("SELECT COUNT(*) FROM employees AS e JOIN departments AS d ON "
                            "e.department_id = d.id WHERE d.name = 'Sales';")
    assert d[0]["prediction"] == d[0]["predicted_sql"]
    assert [d[0]["error"], d[1]["error"]] == [None, None]
    assert d[2]["predicted_sql"] == "SELEC name FROM projects"
    assert d[2]["error"] == 'OperationalError: near "SELEC": syntax error'
    conn = connect_readonly(default_path())
    gold_rows, pred_rows = (conn.execute(sql).fetchall() for sql in (d[1]["gold"], reversed_top3))
    conn.close()
    assert pred_rows == gold_rows[::-1] and len(set(gold_rows)) == 3


def test_two_of_three_exactly(fake_generate):
    queue, _ = fake_generate
    queue += ["SELECT COUNT(*) FROM employees AS e JOIN departments AS d ON "
              "e.department_id = d.id WHERE d.name = 'Sales';",
              "SELECT name FROM employees ORDER BY salary DESC LIMIT 3",  # company-wide: wrong
              "SELECT name FROM projects WHERE end_year IS NULL"]
    result = SqlExecution(SqlExecution.Options()).evaluate(ctx(examples(SALES, TOP3, NO_END)))
    assert result.metrics["execution_accuracy"] == pytest.approx(2 / 3)
    assert result.metrics["valid_sql"] == 1.0
    assert [x["correct"] for x in result.details] == [True, False, True]
    assert [x["error"] for x in result.details] == [None, None, None]


def test_limit_and_default_batch_size(fake_generate):
    queue, calls = fake_generate
    queue += ["SELECT 1"]
    result = SqlExecution(SqlExecution.Options(limit=1)).evaluate(
        ctx(examples(SALES, TOP3), batch_size=5))
    assert len(result.details) == 1 and result.metrics["execution_accuracy"] == 0.0
    assert calls[0]["batch_size"] == 5 and len(calls[0]["prompts"]) == 1


def test_no_examples_or_no_database_is_a_data_error(fake_generate, tmp_path):
    with pytest.raises(DataError, match="sql-execution: no held-out examples"):
        SqlExecution(SqlExecution.Options()).evaluate(ctx([]))
    with pytest.raises(DataError, match="empty prompt"):
        SqlExecution(SqlExecution.Options()).evaluate(ctx([Example("", "SELECT 1")]))
    missing = SqlExecution(SqlExecution.Options(database=str(tmp_path / "gone.sqlite")))
    with pytest.raises(DataError, match=r"database .*gone.sqlite not found \(option 'database'\)"):
        missing.evaluate(ctx(examples(SALES)))
    assert fake_generate[1] == []  # failed before generating


def test_gold_query_failing_names_the_database(fake_generate, tmp_path):
    ev = SqlExecution(SqlExecution.Options())
    bad = [Example("Question: ?", "SELECT salary FROM staff;")]
    with pytest.raises(DataError, match="gold query of held-out example 0 fails on .*company-v1"
                                        ".sqlite: OperationalError: no such table: staff"):
        ev.evaluate(ctx(bad))
    assert fake_generate[1] == []


def test_the_default_database_is_the_sources(fake_generate, cache_home):
    queue, _ = fake_generate
    queue += ["SELECT COUNT(*) FROM employees WHERE department_id = 2"]
    result = SqlExecution(SqlExecution.Options()).evaluate(ctx(examples(SALES)))
    assert result.metrics["execution_accuracy"] == 1.0
    assert [p.name for p in (cache_home / "tuneyard-text2sql").iterdir()] == ["company-v1.sqlite"]


def test_runaway_prediction_counts_as_wrong(fake_generate):
    queue, _ = fake_generate
    queue += ["WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c) "
              "SELECT COUNT(*) FROM c"]
    result = SqlExecution(SqlExecution.Options(timeout_s=0.2)).evaluate(ctx(examples(SALES)))
    assert result.metrics == {"execution_accuracy": 0.0, "valid_sql": 0.0}
    assert "longer than 0.2 s" in result.details[0]["error"]


def test_real_generation_with_a_tiny_model(tmp_path):
    """The evaluator with tuneyard's real ``generate`` on a tiny random Llama (hidden 64, 2
    layers) and a byte-level BPE tokenizer trained here: nothing downloaded. A random model
    writes no valid SQL, so both metrics are 0; the point is that the pieces fit."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    rows = Text2SqlSource(Text2SqlSource.Options(limit=4)).rows()
    bpe = Tokenizer(models.BPE(unk_token="<unk>"))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator([r["prompt"] + r["completion"] for r in rows], trainers.BpeTrainer(
        vocab_size=400, special_tokens=["<unk>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, unk_token="<unk>",
                                        eos_token="<|im_end|>", pad_token="<|im_end|>")
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id))
    examples = [Example(r["prompt"], r["completion"]) for r in rows]
    result = SqlExecution(SqlExecution.Options(max_new_tokens=8)).evaluate(
        EvalContext(model=model, tokenizer=tokenizer, examples=examples, eval_dataset=[],
                    collator=None, device="cpu", batch_size=2))
    assert result.metrics == {"execution_accuracy": 0.0, "valid_sql": 0.0}
    assert [d["question"] for d in result.details] == [r["question"] for r in rows]
    assert all(d["error"] and not d["correct"] for d in result.details)
