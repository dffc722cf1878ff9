"""Row formats, labels and packing (core/formats.py) on the tiny tokenizer (pad == eos)."""

from __future__ import annotations

import pytest
from transformers import AutoTokenizer

from tuneyard.core.components import Example
from tuneyard.core.errors import DataError
from tuneyard.core.formats import (ALPACA_PROMPT, IGNORE_INDEX, PadCollator, pack,
                                   to_examples, tokenize, tokenize_all)


@pytest.fixture(scope="module")
def tok(tiny_model_dir):
    return AutoTokenizer.from_pretrained(tiny_model_dir)


def ids(tok, text):
    return tok(text, add_special_tokens=False)["input_ids"]


def test_instruction_uses_the_chat_template_and_labels_only_the_answer(tok):
    [ex] = to_examples([{"instruction": "define cat", "output": "a small animal"}],
                       "instruction", {}, tok)
    assert ex == Example("<|im_start|>user\ndefine cat<|im_end|>\n<|im_start|>assistant\n",
                         "a small animal")
    row = tokenize(ex, tok, 512)
    prompt, answer = ids(tok, ex.prompt), ids(tok, "a small animal")
    assert row["input_ids"] == prompt + answer + [tok.eos_token_id]
    assert row["labels"] == [IGNORE_INDEX] * len(prompt) + answer + [tok.eos_token_id]


def test_final_eos_stays_a_label_although_pad_equals_eos(tok):
    assert tok.pad_token_id == tok.eos_token_id
    row = tokenize(Example("q", "a"), tok, 512)
    batch = PadCollator(tok.pad_token_id)([row, tokenize(Example("q", "a b c d e"), tok, 512)])
    n = len(row["input_ids"])
    assert batch["labels"][0, n - 1].item() == tok.eos_token_id  # the real EOS is learned
    assert (batch["labels"][0, n:] == IGNORE_INDEX).all()          # padding is not
    assert batch["attention_mask"][0].tolist() == [1] * n + [0] * (batch["labels"].shape[1] - n)


def test_alpaca_template_without_a_chat_template_and_column_mapping(tok):
    plain = AutoTokenizer.from_pretrained(tok.name_or_path)
    plain.chat_template = None
    [ex] = to_examples([{"word": "cat", "gloss": "a small animal"}], "instruction",
                       {"instruction": "word", "output": "gloss"}, plain)
    assert ex == Example(ALPACA_PROMPT.format(instruction="cat"), "a small animal")


def test_chat_format_trains_on_the_last_assistant_turn(tok):
    messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    [ex] = to_examples([{"messages": messages}], "chat", {}, tok)
    assert ex == Example("<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n", "hello")
    with pytest.raises(DataError, match="dataset row 1: a chat example must end with an "
                                        "assistant message"):
        to_examples([{"messages": messages[:1]}], "chat", {}, tok)


def test_missing_column_lists_the_columns_present(tok):
    with pytest.raises(DataError) as err:
        to_examples([{"question": "q", "answer": "a"}], "instruction", {}, tok)
    assert str(err.value) == (
        "dataset: format 'instruction' needs a column 'instruction' or 'prompt'; columns "
        "present: question, answer (map one with dataset.columns.instruction: COLUMN)")


def test_examples_truncated_to_no_label_are_dropped_not_nan(tok):
    long_prompt = Example(" ".join(["cat"] * 50), "dog")
    rows, dropped = tokenize_all([long_prompt, Example("q", "a")], tok, max_seq_len=10)
    assert dropped == 1 and len(rows) == 1
    assert all(len(r["input_ids"]) <= 10 for r in rows)


def test_pack_concatenates_with_eos_and_drops_the_tail(tok):
    rows = [tokenize(Example("", t), tok, 512) for t in ["the cat sat", "on the mat", "a dog"]]
    stream = [t for r in rows for t in r["input_ids"]]
    blocks = pack(rows, 4)
    assert [b["input_ids"] for b in blocks] == [stream[i:i + 4] for i in
                                                range(0, len(stream) // 4 * 4, 4)]
    assert all(b["labels"] == b["input_ids"] for b in blocks)
    assert stream.count(tok.eos_token_id) == 3
