"""Evaluator ``squad``: the official SQuAD v1.1 normalisation, exact match and token F1."""

from __future__ import annotations


import pytest

from tuneyard.core.components import EvalContext, Example
from tuneyard.plugins.evaluators.squad import exact_match, normalize_answer, token_f1


@pytest.mark.parametrize("text, expected", [
    ("The  Cat!", "cat"),  # lower, "!" removed, article removed, spaces collapsed
    ("U.S.A. and an apple", "usa and apple"),  # punctuation inside words goes too
    ("Theater of the Absurd", "theater of absurd"),  # articles only as whole words
    ("  a\tdog-house ", "doghouse"),
    ("", ""),
])
def test_normalize_answer(text, expected):
    assert normalize_answer(text) == expected


@pytest.mark.parametrize("prediction, reference, em, f1", [
    # [cat, sat] vs [cat, sat, down]: overlap 2 → P=2/2, R=2/3, F1=2·(2/3)/(5/3)=4/5
    ("the cat sat", "a cat sat down", 0.0, 4 / 5),
    ("The Cat.", "cat", 1.0, 1.0),
    # multiset overlap: [cat cat cat] vs [cat cat dog] share cat twice → P=R=2/3, F1=2/3
    ("cat cat cat", "cat cat dog", 0.0, 2 / 3),
    ("dog", "cat", 0.0, 0.0),
    # both normalise to "": equal, so EM 1, but the script's num_same == 0 guard gives F1 0
    ("the", "a!", 1.0, 0.0),
    # [paris] vs [in, paris, france]: P=1, R=1/3, F1=2·(1/3)/(4/3)=1/2
    ("Paris", "in Paris, France", 0.0, 1 / 2),
])
def test_exact_match_and_f1_by_hand(prediction, reference, em, f1):
    assert exact_match(prediction, reference) == em
    assert token_f1(prediction, reference) == pytest.approx(f1)


@pytest.fixture
def fake_generate(monkeypatch):
    """Replace the generation step by fixed predictions; records each call's prompts."""
    import tuneyard.core.generation

    calls: list[list[str]] = []
    predictions: list[str] = []

    def generate(model, tokenizer, prompts, **kwargs):
        calls.append(list(prompts))
        return predictions[: len(prompts)]

    monkeypatch.setattr(tuneyard.core.generation, "generate", generate)
    return calls, predictions


def test_squad_evaluator_averages_over_examples(fake_generate):
    """Per example (EM, F1): (0, 4/5), (1, 1), (0, 0) → exact_match 1/3, f1 (4/5 + 1) / 3 = 3/5.
    The official script would print 33.3 and 60.0."""
    from tuneyard.plugins.evaluators.squad import Squad

    calls, predictions = fake_generate
    predictions += ["the cat sat", "The Cat.", "dog"]
    examples = [Example("q1", "a cat sat down"), Example("q2", "cat"), Example("q3", "cat")]
    ctx = EvalContext(model=None, tokenizer=None, examples=examples, eval_dataset=[],
                      collator=None, device="cpu", batch_size=2)
    result = Squad(Squad.Options(limit=3)).evaluate(ctx)
    assert result.metrics == {"exact_match": pytest.approx(1 / 3), "f1": pytest.approx(3 / 5)}
    assert result.details[0] == {"prompt": "q1", "reference": "a cat sat down",
                                 "prediction": "the cat sat", "exact_match": 0.0,
                                 "f1": pytest.approx(4 / 5)}
    assert calls == [["q1", "q2", "q3"]]
