"""Evaluators ``accuracy`` (sequence classification) and ``seqeval`` (token classification).

Exact metric values come from fake models whose predictions the test sets (one-hot logits), each
checked against arithmetic written out in the test; tiny random BERT models check the batching,
padding and first-sub-token plumbing against a plain one-example-at-a-time loop.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from tuneyard.core.components import EvalContext
from tuneyard.core.errors import DataError
from tuneyard.core.formats import PadCollator

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "cat", "dog", "sat", "on", "mat",
         "john", "mary", "lives", "in", "paris", "new", "york", "walk", "good", "bad", "film",
         "was", "##s", "##ing", "##ed"]


def tiny_bert_config(num_labels: int):
    from transformers import BertConfig

    return BertConfig(vocab_size=len(VOCAB), hidden_size=32, num_hidden_layers=2,
                      num_attention_heads=2, intermediate_size=64, max_position_embeddings=64,
                      num_labels=num_labels)


def collate_labels(rows):
    """Sequence classification batches: ``input_ids``/``attention_mask`` ``[batch, seq_len]``
    right-padded with 0, ``labels`` ``[batch]`` (one class id per row)."""
    width = max(len(r["input_ids"]) for r in rows)
    pad = [width - len(r["input_ids"]) for r in rows]
    return {
        "input_ids": torch.tensor([r["input_ids"] + [0] * n for r, n in zip(rows, pad)]),
        "attention_mask": torch.tensor([[1] * len(r["input_ids"]) + [0] * n
                                        for r, n in zip(rows, pad)]),
        "labels": torch.tensor([r["labels"] for r in rows]),
    }


class OneHot(torch.nn.Module):
    """Fake model: the logits are one-hot of a class read from ``input_ids``, so the
    prediction is whatever the test wrote there. ``per_row``: class ``input_ids[:, 0]``,
    logits ``[batch, num_labels]``; else class ``input_ids`` at each position, logits
    ``[batch, seq_len, num_labels]``."""

    def __init__(self, num_labels: int, per_row: bool):
        super().__init__()
        self.num_labels, self.per_row = num_labels, per_row
        self.batch_shapes: list[tuple[int, ...]] = []

    def forward(self, input_ids, attention_mask):
        self.batch_shapes.append(tuple(input_ids.shape))
        classes = input_ids[:, 0] if self.per_row else input_ids
        return SimpleNamespace(logits=F.one_hot(classes, self.num_labels).float())


def make_ctx(model, rows, names, collator, batch_size, task):
    return EvalContext(model=model, tokenizer=None, examples=[], eval_dataset=rows,
                       collator=collator, device="cpu", batch_size=batch_size, task=task,
                       label_names=names)


def accuracy(**options):
    from tuneyard.plugins.evaluators.classification import Accuracy

    return Accuracy(Accuracy.Options(**options))


def seqeval(**options):
    from tuneyard.plugins.evaluators.classification import Seqeval

    return Seqeval(Seqeval.Options(**options))


# -- accuracy -----------------------------------------------------------------------------------
SENTIMENT = ["neg", "neu", "pos", "mixed"]
GOLD = [0, 0, 0, 1, 2, 2]
PREDICTED = [0, 0, 1, 1, 2, 1]


def sentiment_rows(gold=GOLD, predicted=PREDICTED):
    """Rows of different lengths; the fake model reads the prediction from the first id."""
    return [{"input_ids": [p] + [7] * i, "labels": g}
            for i, (g, p) in enumerate(zip(gold, predicted))]


@pytest.mark.parametrize("batch_size", [1, 4, 6])
def test_accuracy_with_hand_computed_scores(batch_size):
    """gold      neg neg neg neu pos pos
    predicted neg neg neu neu pos neu   → correct at 1, 2, 4, 5: accuracy 4/6.

    neg: predicted twice, both right, 3 gold → P=1,   R=2/3, F1=2·(2/3)/(5/3)=4/5
    neu: predicted 3×, 1 right, 1 gold      → P=1/3, R=1,   F1=2·(1/3)/(4/3)=1/2
    pos: predicted once, right, 2 gold      → P=1,   R=1/2, F1=2/3
    "mixed" occurs nowhere: not a class of the macro mean, no details row.
    macro F1 = (4/5 + 1/2 + 2/3) / 3 = (24 + 15 + 20) / 90 = 59/90.
    majority: "neg" is 3 of 6 gold labels → 1/2.
    """
    model = OneHot(len(SENTIMENT), per_row=True)
    result = accuracy().evaluate(
        make_ctx(model, sentiment_rows(), SENTIMENT, collate_labels, batch_size,
                 "sequence-classification"))
    assert result.metrics == {
        "accuracy": pytest.approx(4 / 6), "macro_f1": pytest.approx(59 / 90),
        "majority_accuracy": pytest.approx(1 / 2), "eval_examples": 6.0,
    }
    assert result.details == [
        {"label": "neg", "precision": pytest.approx(1.0), "recall": pytest.approx(2 / 3),
         "f1": pytest.approx(4 / 5), "support": 3, "predicted": {"neg": 2, "neu": 1, "pos": 0}},
        {"label": "neu", "precision": pytest.approx(1 / 3), "recall": pytest.approx(1.0),
         "f1": pytest.approx(1 / 2), "support": 1, "predicted": {"neg": 0, "neu": 1, "pos": 0}},
        {"label": "pos", "precision": pytest.approx(1.0), "recall": pytest.approx(1 / 2),
         "f1": pytest.approx(2 / 3), "support": 2, "predicted": {"neg": 0, "neu": 1, "pos": 1}},
    ]
    assert all(shape[0] <= batch_size for shape in model.batch_shapes)


def test_accuracy_counts_a_class_that_is_only_predicted():
    """gold a a, predicted a b: classes {a, b} (c occurs nowhere).
    a: P=1, R=1/2, F1=2/3; b: never gold, predicted once → P=0, R=0 (0/0 → 0), F1=0.
    macro F1 = (2/3 + 0) / 2 = 1/3; accuracy 1/2; majority ("a", 2 of 2) 1.
    """
    rows = sentiment_rows(gold=[0, 0], predicted=[0, 1])
    result = accuracy().evaluate(make_ctx(OneHot(3, per_row=True), rows, ["a", "b", "c"],
                                          collate_labels, 2, "sequence-classification"))
    assert result.metrics["macro_f1"] == pytest.approx(1 / 3)
    assert result.metrics["accuracy"] == pytest.approx(1 / 2)
    assert result.metrics["majority_accuracy"] == 1.0
    assert [(d["label"], d["support"], d["f1"]) for d in result.details] == [
        ("a", 2, pytest.approx(2 / 3)), ("b", 0, 0.0)]
    assert result.details[0]["predicted"] == {"a": 1, "b": 1}


def test_accuracy_limit_takes_the_first_examples():
    """The first 3 examples: gold neg neg neg, predicted neg neg neu → 2/3; only neg and neu."""
    result = accuracy(limit=3).evaluate(
        make_ctx(OneHot(4, per_row=True), sentiment_rows(), SENTIMENT, collate_labels, 2,
                 "sequence-classification"))
    assert result.metrics["accuracy"] == pytest.approx(2 / 3)
    assert result.metrics["eval_examples"] == 3.0
    assert [d["label"] for d in result.details] == ["neg", "neu"]


def test_accuracy_without_examples_is_a_data_error():
    with pytest.raises(DataError, match="eval_split"):
        accuracy().evaluate(make_ctx(OneHot(4, per_row=True), [], SENTIMENT, collate_labels, 2,
                                     "sequence-classification"))


def test_accuracy_on_tiny_bert_matches_one_example_at_a_time(wordpiece):
    """Padded batches of a real classifier give the predictions of unpadded single examples."""
    from transformers import BertForSequenceClassification

    tokenizer = wordpiece(VOCAB)
    texts = [("the film was good", 2), ("the film was bad", 0), ("a cat sat on the mat", 1),
             ("john walked", 1), ("mary lives in new york", 2)]
    rows = [{"input_ids": tokenizer(t)["input_ids"], "labels": c} for t, c in texts]
    torch.manual_seed(0)
    model = BertForSequenceClassification(tiny_bert_config(3)).eval()
    with torch.no_grad():
        hand = [int(model(input_ids=torch.tensor([r["input_ids"]])).logits[0].argmax())
                for r in rows]
    gold = [c for _, c in texts]
    result = accuracy().evaluate(make_ctx(model, rows, ["neg", "neu", "pos"], collate_labels, 2,
                                          "sequence-classification"))
    assert result.metrics["accuracy"] == pytest.approx(
        sum(h == g for h, g in zip(hand, gold)) / len(gold))
    assert result.metrics["majority_accuracy"] == pytest.approx(2 / 5)  # neu and pos 2 each
    assert sum(d["support"] for d in result.details) == 5
    for d in result.details:  # the confusion rows add up to each class's gold count
        assert sum(d["predicted"].values()) == d["support"]


# -- seqeval ------------------------------------------------------------------------------------
NER = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
O, B_PER, I_PER, B_LOC, I_LOC = range(5)
X = -100  # not a word start: special token or a later sub-token

# The fake tagger predicts class input_ids[t] at position t. Special tokens and later
# sub-tokens hold B-PER / B-LOC ids: counted by mistake, they would add entities.
NER_ROWS = [
    # gold B-PER I-PER O B-LOC, predicted B-PER I-PER O O; "I-PER" word has a 2nd sub-token
    {"input_ids": [B_PER, B_PER, I_PER, B_LOC, O, O, B_PER],
     "labels": [X, B_PER, I_PER, X, O, B_LOC, X]},
    # gold O B-LOC I-LOC O, predicted O B-LOC O O
    {"input_ids": [B_PER, O, B_LOC, O, O, B_PER], "labels": [X, O, B_LOC, I_LOC, O, X]},
    # gold B-PER I-PER, predicted I-PER I-PER
    {"input_ids": [B_PER, I_PER, I_PER, B_PER], "labels": [X, B_PER, I_PER, X]},
]


@pytest.mark.filterwarnings("error")
@pytest.mark.parametrize("batch_size", [1, 2, 3])
def test_seqeval_with_hand_computed_scores(batch_size):
    """Gold entities: PER(ex1 words 0-1), LOC(ex1 3), LOC(ex2 1-2), PER(ex3 0-1) → 4.
    Predicted (strict IOB2): PER(ex1 0-1), LOC(ex2 1-1); ex3's "I-PER I-PER" has no B- and is
    no entity → 2. Correct: PER(ex1) only → 1.
    P = 1/2, R = 1/4, F1 = 2·(1/2)(1/4) / (3/4) = 1/3.
    (conlleval's lenient mode would read PER(ex3 0-1) too: P=2/3, R=1/2, F1=4/7.)
    Words tagged right: ex1 3 of 4, ex2 3 of 4, ex3 1 of 2 (I-PER) → accuracy 7/10.
    Per type: PER gold 2, predicted 1, correct 1 → P=1, R=1/2, F1=2/3;
              LOC gold 2, predicted 1, correct 0 → 0, 0, 0.
    Most frequent gold tag: O (3 words; B-PER, I-PER, B-LOC 2 each) → no entity → F1 0.
    """
    result = seqeval().evaluate(make_ctx(OneHot(5, per_row=False), NER_ROWS, NER,
                                         PadCollator(pad_token_id=B_PER), batch_size,
                                         "token-classification"))
    assert result.metrics == {
        "precision": pytest.approx(1 / 2), "recall": pytest.approx(1 / 4),
        "f1": pytest.approx(1 / 3), "accuracy": pytest.approx(7 / 10), "majority_f1": 0.0,
        "eval_examples": 3.0,
    }
    assert result.details == [
        {"type": "LOC", "precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 2},
        {"type": "PER", "precision": 1.0, "recall": pytest.approx(1 / 2),
         "f1": pytest.approx(2 / 3), "support": 2},
    ]


@pytest.mark.filterwarnings("error")
def test_seqeval_majority_baseline_and_zero_division():
    """Gold B-LOC O B-LOC | B-LOC: the most frequent tag is B-LOC (3 of 4); tagging every word
    B-LOC predicts 4 one-word LOC entities, 3 of them gold → P=3/4, R=1, F1=2·(3/4)/(7/4)=6/7.
    The model tags everything O: no entity predicted, P = 0/0 → 0 quietly, R=0, F1=0;
    accuracy 1/4 (the one O word)."""
    rows = [{"input_ids": [O, O, O], "labels": [B_LOC, O, B_LOC]},
            {"input_ids": [O], "labels": [B_LOC]}]
    result = seqeval().evaluate(make_ctx(OneHot(5, per_row=False), rows, NER,
                                         PadCollator(pad_token_id=O), 2,
                                         "token-classification"))
    assert result.metrics["majority_f1"] == pytest.approx(6 / 7)
    assert result.metrics["precision"] == result.metrics["f1"] == 0.0
    assert result.metrics["accuracy"] == pytest.approx(1 / 4)
    assert result.details == [
        {"type": "LOC", "precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 3}]


def test_seqeval_limit_takes_the_first_examples():
    """Only ex1: gold PER, LOC; predicted PER → P=1, R=1/2, F1=2/3; words 3 of 4."""
    result = seqeval(limit=1).evaluate(make_ctx(OneHot(5, per_row=False), NER_ROWS, NER,
                                                PadCollator(pad_token_id=0), 8,
                                                "token-classification"))
    assert result.metrics["f1"] == pytest.approx(2 / 3)
    assert result.metrics["accuracy"] == pytest.approx(3 / 4)
    assert result.metrics["eval_examples"] == 1.0


def test_seqeval_errors():
    tagger = OneHot(5, per_row=False)
    with pytest.raises(DataError, match="'NOUN', 'VERB' are not IOB2"):
        seqeval().evaluate(make_ctx(tagger, NER_ROWS, ["O", "NOUN", "VERB", "B-X", "I-X"],
                                    PadCollator(0), 2, "token-classification"))
    unlabelled = [{"input_ids": [1, 2], "labels": [X, X]}]
    with pytest.raises(DataError, match="no labelled word"):
        seqeval().evaluate(make_ctx(tagger, unlabelled, NER, PadCollator(0), 2,
                                    "token-classification"))
    with pytest.raises(DataError, match="eval_split"):
        seqeval().evaluate(make_ctx(tagger, [], NER, PadCollator(0), 2, "token-classification"))


def test_seqeval_on_tiny_bert_matches_one_example_at_a_time(wordpiece):
    """A real token classifier on WordPiece rows (labels on each word's first sub-token): the
    padded batches give the word tags of unpadded single examples; token accuracy counted by
    hand, entity scores from seqeval on those hand-collected tags."""
    from seqeval.metrics import f1_score, precision_score, recall_score
    from seqeval.scheme import IOB2
    from transformers import BertForTokenClassification

    tokenizer = wordpiece(VOCAB)
    sentences = [
        (["john", "lives", "in", "paris"], ["B-PER", "O", "O", "B-LOC"]),
        (["the", "cats", "walking", "in", "new", "york"], ["O", "O", "O", "O", "B-LOC", "I-LOC"]),
        (["mary", "walked"], ["B-PER", "O"]),
    ]
    rows = []
    for words, tags in sentences:
        enc = tokenizer(words, is_split_into_words=True)
        ids = enc.word_ids()
        labels = [X if w is None or w == ids[i - 1] else NER.index(tags[w])
                  for i, w in enumerate(ids)]
        rows.append({"input_ids": enc["input_ids"], "labels": labels})
    assert len(rows[1]["input_ids"]) == 8 + 2  # "cats" and "walking" are two sub-tokens each
    torch.manual_seed(0)
    model = BertForTokenClassification(tiny_bert_config(len(NER))).eval()
    hand = []
    with torch.no_grad():
        for row in rows:
            classes = model(input_ids=torch.tensor([row["input_ids"]])).logits[0].argmax(-1)
            hand.append([NER[int(c)] for c, label in zip(classes, row["labels"]) if label != X])
    gold = [tags for _, tags in sentences]

    result = seqeval().evaluate(make_ctx(model, rows, NER, PadCollator(0), 2,
                                         "token-classification"))
    right = sum(h == g for hs, gs in zip(hand, gold) for h, g in zip(hs, gs))
    assert result.metrics["accuracy"] == pytest.approx(right / 12)  # 12 words
    strict = {"mode": "strict", "scheme": IOB2, "zero_division": 0}
    assert result.metrics["f1"] == pytest.approx(f1_score(gold, hand, **strict))
    assert result.metrics["precision"] == pytest.approx(precision_score(gold, hand, **strict))
    assert result.metrics["recall"] == pytest.approx(recall_score(gold, hand, **strict))
    assert result.metrics["majority_f1"] == 0.0  # O: 7 of 12 words
    assert [d["support"] for d in result.details] == [2, 2]  # LOC, PER


# -- registration -------------------------------------------------------------------------------
