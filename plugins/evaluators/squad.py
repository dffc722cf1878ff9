"""Evaluator ``squad``: exact match and token F1 of generated answers, as in SQuAD v1.1.

Normalisation and both metrics follow the official ``evaluate-v1.1.py`` script of SQuAD
(Rajpurkar et al. 2016, "SQuAD: 100,000+ Questions for Machine Comprehension of Text"). The
generation step is the shared one of :class:`GenerationEvaluator`; this module only scores.
"""

from __future__ import annotations

import re
import string
from collections import Counter

from tuneyard.core.hookspecs import hookimpl
from tuneyard.plugins.evaluators.generation import GenerationEvaluator, Scorer

_PUNCTUATION = set(string.punctuation)


def normalize_answer(text: str) -> str:
    """Normalise an answer as the official SQuAD v1.1 script does (``normalize_answer``).

    In order: lower-case; remove every ASCII punctuation character (``string.punctuation``,
    also inside words); replace the articles ``a``, ``an``, ``the`` by a space where they are
    whole words (regex ``\\b(a|an|the)\\b``); split on whitespace and re-join with single spaces.

    >>> normalize_answer("The  Cat!")
    'cat'
    >>> normalize_answer("U.S.A. and an apple")
    'usa and apple'
    """
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def exact_match(prediction: str, reference: str) -> float:
    """1.0 if both answers are equal after :func:`normalize_answer`, else 0.0 (official v1.1
    ``exact_match_score``). Two answers that normalise to empty strings match."""
    return float(normalize_answer(prediction) == normalize_answer(reference))


def token_f1(prediction: str, reference: str) -> float:
    """Harmonic mean of token precision and recall of the normalised answers (official v1.1
    ``f1_score``), in [0, 1].

    Tokens are the whitespace-separated words of :func:`normalize_answer`; the overlap is the
    multiset intersection (``Counter(prediction) & Counter(reference)``), so a repeated word
    counts as often as it occurs in both. ``precision = overlap / prediction tokens``, ``recall
    = overlap / reference tokens``. With no overlap the score is 0, which the script also
    returns when both answers normalise to nothing (its ``num_same == 0`` guard comes before
    any division): an empty prediction of an empty reference scores exact match 1 but F1 0.
    """
    prediction_tokens = normalize_answer(prediction).split()
    reference_tokens = normalize_answer(reference).split()
    overlap = sum((Counter(prediction_tokens) & Counter(reference_tokens)).values())
    if overlap == 0:
        return 0.0
    precision = overlap / len(prediction_tokens)
    recall = overlap / len(reference_tokens)
    return 2 * precision * recall / (precision + recall)


class Squad(GenerationEvaluator):
    """SQuAD v1.1 exact match and token F1 of greedy completions against references.

    One reference per example (the example's completion), so the script's maximum over
    several ground truths is a maximum over one and is left out. Metrics ``exact_match`` and
    ``f1`` are means over examples in [0, 1]; the official script reports the same numbers
    multiplied by 100.
    """

    name = "squad"
    description = "SQuAD v1.1 exact match and token F1 of generated answers (official script)"

    def scorer(self) -> Scorer:
        return lambda prediction, reference: {
            "exact_match": exact_match(prediction, reference),
            "f1": token_f1(prediction, reference),
        }


@hookimpl
def register_evaluators(register):
    register(Squad)
