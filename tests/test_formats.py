"""Row formats, labels and packing (core/formats.py) on the tiny tokenizer (pad == eos)."""

from __future__ import annotations

import pytest
from transformers import AutoTokenizer

from tuneyard.core.components import Example
from tuneyard.core.errors import DataError
from tuneyard.core.formats import (ALPACA_PROMPT, IGNORE_INDEX, PadCollator, label_names, pack,
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


QUESTION = [299, 72, 75, 80, 71, 264, 290, 287]  # "de" "f" "i" "n" "e" " the" " word" " cat"
ANSWER = [67, 286, 79, 268, 78, 223, 275, 79, 268]  # "a small animal"; EOS is 2


def test_examples_longer_than_max_seq_len_are_truncated_in_the_prompt_only(tok):
    ex = Example("define the word cat", "a small animal")
    assert (ids(tok, ex.prompt), ids(tok, ex.completion), tok.eos_token_id) == (QUESTION, ANSWER, 2)
    assert tokenize(ex, tok, 18) == {"input_ids": QUESTION + ANSWER + [2],
                                     "labels": [IGNORE_INDEX] * 8 + ANSWER + [2]}  # just fits
    row = tokenize(ex, tok, 13)  # 18 tokens: the prompt loses its first 5
    assert row == {"input_ids": [264, 290, 287] + ANSWER + [2],
                   "labels": [IGNORE_INDEX] * 3 + ANSWER + [2]}
    assert tok.decode(row["input_ids"]) == " the word cata small animal<|im_end|>"
    assert tokenize(ex, tok, 11) == {"input_ids": [287] + ANSWER + [2],
                                     "labels": [IGNORE_INDEX] + ANSWER + [2]}


def test_example_whose_answer_does_not_fit_is_dropped_not_nan(tok):
    ex = Example("define the word cat", "a small animal")
    # answer + EOS = 10 tokens leave no room for a prompt token: no label at all
    assert tokenize(ex, tok, 10) == {"input_ids": QUESTION + ANSWER[:2],
                                     "labels": [IGNORE_INDEX] * 10}
    rows, dropped = tokenize_all([ex, Example("cat", "dog")], tok, max_seq_len=10)
    assert dropped == 1
    assert rows == [{"input_ids": [269, 70, 81, 73, 2], "labels": [IGNORE_INDEX, 70, 81, 73, 2]}]


def test_text_without_prompt_keeps_its_first_tokens(tok):
    row = tokenize(Example("", "the quick brown fox"), tok, 5)
    assert row == {"input_ids": [284, 223, 83, 87, 75], "labels": [284, 223, 83, 87, 75]}
    assert tok.decode(row["input_ids"]) == "the qui"


def test_empty_column_is_named(tok):
    rows = [{"instruction": "define cat", "output": None}, {"instruction": "x", "output": " "}]
    with pytest.raises(DataError) as err:
        to_examples(rows, "instruction", {}, tok)
    assert str(err.value) == (
        "dataset: column 'output' is empty in all 2 rows; format 'instruction' reads the output "
        "from it (fill it, or map another column with dataset.columns.output: COLUMN)")


def test_empty_cells_read_as_empty_text_not_none(tok):
    rows = [{"text": None}, {"text": float("nan")}, {"text": "the cat"}]
    assert [e.completion for e in to_examples(rows, "text", {}, tok)] == ["", "", "the cat"]
    [ex] = to_examples([{"instruction": "define cat", "input": None, "output": "a small animal"}],
                       "alpaca", {}, tok)
    assert ex == Example(ALPACA_PROMPT.format(instruction="define cat"), "a small animal")


def test_pack_concatenates_with_eos_and_drops_the_tail(tok):
    rows = [tokenize(Example("", t), tok, 512) for t in ["the cat sat", "on the mat", "a dog"]]
    stream = [t for r in rows for t in r["input_ids"]]
    blocks = pack(rows, 4)
    assert [b["input_ids"] for b in blocks] == [stream[i:i + 4] for i in
                                                range(0, len(stream) // 4 * 4, 4)]
    assert stream.count(tok.eos_token_id) == 3
    # each document's first token is no label and restarts the positions; so does a block
    starts = {0, len(rows[0]["input_ids"]), len(rows[0]["input_ids"]) + len(rows[1]["input_ids"])}
    for b, block in enumerate(blocks):
        expected_labels, expected_positions, p = [], [], 0
        for j, token in enumerate(block["input_ids"]):
            first = 4 * b + j in starts
            expected_labels.append(IGNORE_INDEX if first else token)
            p = 0 if first or j == 0 else p + 1
            expected_positions.append(p)
        assert block["labels"] == expected_labels
        assert block["position_ids"] == expected_positions
    # masked LM: the rows' labels are kept as they are, no positions (the collator masks)
    labels = [t for r in rows for t in r["labels"]]
    assert pack(rows, 4, documents=False) == [
        {"input_ids": b["input_ids"], "labels": labels[4 * i:4 * i + 4]}
        for i, b in enumerate(blocks)]


# -- alpaca, sharegpt ----------------------------------------------------------------------
def test_alpaca_format_uses_the_alpaca_template_although_a_chat_template_exists(tok):
    assert tok.chat_template  # instruction rows would use it; alpaca rows must not
    rows = [{"instruction": "define cat", "input": "", "output": "a small animal"},
            {"instruction": "define cat", "input": "in one word", "output": "feline"}]
    plain, with_input = to_examples(rows, "alpaca", {}, tok)
    assert plain == Example(
        "Below is an instruction that describes a task. Write a response that appropriately "
        "completes the request.\n\n### Instruction:\ndefine cat\n\n### Response:\n",
        "a small animal")
    assert with_input == Example(
        "Below is an instruction that describes a task, paired with an input that provides "
        "further context. Write a response that appropriately completes the request.\n\n"
        "### Instruction:\ndefine cat\n\n### Input:\nin one word\n\n### Response:\n", "feline")


def test_sharegpt_maps_human_gpt_system_to_a_chat_example(tok):
    turns = [{"from": "system", "value": "be brief"}, {"from": "human", "value": "hi"},
             {"from": "gpt", "value": "hello"}, {"from": "human", "value": "define cat"},
             {"from": "gpt", "value": "a small animal"}]
    [ex] = to_examples([{"conversations": turns}], "sharegpt", {}, tok)
    assert ex == Example(
        "<|im_start|>system\nbe brief<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n"
        "<|im_start|>assistant\nhello<|im_end|>\n<|im_start|>user\ndefine cat<|im_end|>\n"
        "<|im_start|>assistant\n", "a small animal")


def test_sharegpt_unknown_from_names_the_row_and_turn(tok):
    good = {"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "yo"}]}
    bad = {"conversations": [{"from": "human", "value": "hi"}, {"from": "bot", "value": "yo"}]}
    with pytest.raises(DataError) as err:
        to_examples([good, bad], "sharegpt", {}, tok)
    assert str(err.value) == ("dataset row 2: sharegpt turn 2 is from 'bot'; expected one of "
                              "system, human, user, gpt, assistant")


def test_a_chat_row_with_only_the_answer_or_that_the_template_refuses_names_the_row(
        tiny_model_dir):
    """Found by tests/test_property.py: a lone assistant message reached
    ``apply_chat_template([])``, whose ValueError escaped as a crash."""
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)  # its template is changed below
    alone = {"conversations": [{"from": "gpt", "value": "yo"}]}
    with pytest.raises(DataError) as err:
        to_examples([alone], "sharegpt", {}, tok)
    assert str(err.value) == ("dataset row 1: a chat example needs a message before the "
                              "assistant's answer")
    tok.chat_template = ("{% for m in messages %}{% if m['role'] == 'system' %}"
                         "{{ raise_exception('no system role') }}{% endif %}{% endfor %}")
    row = {"messages": [{"role": "system", "content": "be brief"},
                        {"role": "assistant", "content": "yo"}]}
    with pytest.raises(DataError) as err:
        to_examples([row], "chat", {}, tok)
    assert str(err.value) == ("dataset row 1: the chat template cannot render the messages: "
                              "no system role")


#: a well-formed row of each format, put before the malformed one
GOOD_ROWS = {
    "sharegpt": {"conversations": [{"from": "human", "value": "hi"},
                                   {"from": "gpt", "value": "yo"}]},
    "chat": {"messages": [{"role": "user", "content": "hi"},
                          {"role": "assistant", "content": "yo"}]},
    "tokens": {"tokens": ["john"], "tags": ["B-per"]},
    "label": {"text": "a film", "label": "pos"},
}


@pytest.mark.parametrize("fmt, row, message", [
    ("sharegpt", {"conversations": ["hi", "yo"]},
     "dataset row 2: sharegpt turn 1 is not a {from, value} object"),
    ("sharegpt", {"conversations": "hi"},
     "dataset row 2: sharegpt conversations are a list of {from, value} turns"),
    ("chat", {"messages": ["hi"]},
     "dataset row 2: a chat example is a list of {role, content} messages"),
    ("tokens", {"tokens": ["a", "b"], "tags": None},
     "dataset row 2: tags must be a list of strings, got None"),
    ("tokens", {"tokens": "john met", "tags": ["B-per", "O"]},
     "dataset row 2: tokens must be a list of strings, got 'john met'"),
    ("label", {"text": "a film", "label": None},
     "dataset row 2: column 'label' is empty; a label row needs a text and its class"),
])
def test_malformed_rows_are_data_errors_naming_the_row(tok, fmt, row, message):
    with pytest.raises(DataError) as err:
        to_examples([GOOD_ROWS[fmt], row], fmt, {}, tok)
    assert str(err.value) == message


def test_integer_class_names_sort_as_numbers():
    examples = [Example(str(i), label) for i, label in enumerate(["10", "2", "0", "1", "2"])]
    assert label_names(examples, "sequence-classification") == ["0", "1", "2", "10"]
    mixed = [Example("a", "10"), Example("b", "2"), Example("c", "x")]
    assert label_names(mixed, "sequence-classification") == ["10", "2", "x"]


# -- tokens, label (a tiny BERT WordPiece tokenizer) ---------------------------------------
WORDPIECE = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "john", "met", "new", "##york",
             "##ers", "in", "paris", "good", "bad", "film", "the", "cat", "sat"]
PAD, CLS, SEP = 0, 2, 3


@pytest.fixture(scope="module")
def bert_tok(wordpiece):
    """Splits "newyorkers" into ``new ##york ##ers``."""
    return wordpiece(WORDPIECE)


def test_tokens_label_goes_on_the_first_sub_token_only(bert_tok):
    row = {"tokens": ["John", "met", "newyorkers", "in", "Paris"],
           "tags": ["B-per", "O", "B-misc", "O", "B-loc"]}
    [ex] = to_examples([row], "tokens", {}, bert_tok)
    assert (ex.words, ex.tags) == (row["tokens"], row["tags"])
    assert ex.prompt == "John met newyorkers in Paris"
    names = label_names([ex], "token-classification")
    assert names == ["B-loc", "B-misc", "B-per", "O"]
    out = tokenize(ex, bert_tok, 32, "token-classification",
                   {name: i for i, name in enumerate(names)})
    assert bert_tok.convert_ids_to_tokens(out["input_ids"]) == [
        "[CLS]", "john", "met", "new", "##york", "##ers", "in", "paris", "[SEP]"]
    #                   [CLS] john met  new ##york ##ers in paris [SEP]
    assert out["labels"] == [-100, 2, 3, 1, -100, -100, 3, 0, -100]


def test_tokens_row_with_more_words_than_tags_is_refused(bert_tok):
    rows = [{"tokens": ["john"], "tags": ["B-per"]},
            {"tokens": ["john", "met", "mary"], "tags": ["B-per", "O"]}]
    with pytest.raises(DataError) as err:
        to_examples(rows, "tokens", {}, bert_tok)
    assert str(err.value) == ("dataset row 2: 3 tokens but 2 tags; a tokens row has one tag "
                              "per word")


def test_label_names_are_sorted_and_only_for_label_tasks():
    tagged = [Example("", "", words=["a", "b"], tags=["O", "I-per"]),
              Example("", "", words=["c"], tags=["B-per"])]
    assert label_names(tagged, "token-classification") == ["B-per", "I-per", "O"]
    texts = [Example("x", "pos"), Example("y", "neg"), Example("z", "neutral"),
             Example("w", "neg")]
    assert label_names(texts, "sequence-classification") == ["neg", "neutral", "pos"]
    assert label_names(texts, "causal-lm") is None


def test_label_format_gives_one_int_label_and_a_batch_of_them(bert_tok):
    rows = [{"text": "good film", "label": "pos"}, {"sentence": "the cat", "label": 1}]
    good, cat = to_examples(rows[:1], "label", {}, None) + to_examples(
        rows[1:], "label", {"text": "sentence"}, None)
    assert good == Example("good film", "pos") and cat == Example("the cat", "1")
    label_ids = {"1": 0, "pos": 1}
    a = tokenize(good, bert_tok, 32, "sequence-classification", label_ids)
    b = tokenize(Example("bad film the cat sat", "1"), bert_tok, 32,
                 "sequence-classification", label_ids)
    assert a == {"input_ids": [CLS, 12, 14, SEP], "labels": 1}
    assert b["labels"] == 0 and len(b["input_ids"]) == 7
    batch = PadCollator(PAD)([a, b])
    assert batch["labels"].shape == (2,) and batch["labels"].tolist() == [1, 0]
    assert batch["input_ids"].tolist() == [[CLS, 12, 14, SEP, PAD, PAD, PAD], b["input_ids"]]
    assert batch["attention_mask"].tolist() == [[1] * 4 + [0] * 3, [1] * 7]


def test_masked_lm_labels_every_token_but_the_special_ones(bert_tok):
    row = tokenize(Example("", "the cat sat"), bert_tok, 32, "masked-lm")
    assert row == {"input_ids": [CLS, 15, 16, 17, SEP], "labels": [-100, 15, 16, 17, -100]}
    cut = tokenize(Example("", "the cat sat"), bert_tok, 4, "masked-lm")
    assert cut == {"input_ids": [CLS, 15, 16, SEP], "labels": [-100, 15, 16, -100]}
