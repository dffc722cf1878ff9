"""Evaluators that generate a completion per example and compare it with the reference:
``exact-match`` and ``rouge``.

Both share one generation step (:func:`tuneyard.core.generation.generate`, greedy, left
padding) in :class:`GenerationEvaluator`; each only says how one prediction is scored. torch,
transformers and rouge-score are imported inside methods, so registering the plugin stays cheap.
"""

from __future__ import annotations

import string
from collections.abc import Callable

from tuneyard.core.components import EvalContext, EvalResult, Evaluator
from tuneyard.core.generation import GenerationOptions
from tuneyard.core.hookspecs import hookimpl

Scorer = Callable[[str, str], dict[str, float]]
"""``(prediction, reference) -> {metric name: value in [0, 1]}`` for one example."""


class GenerationEvaluator(Evaluator):
    """Base of evaluators that score greedy completions against references.

    Subclasses set ``name``, ``description`` and implement :meth:`scorer`. Each metric is the
    mean of the per-example scores over the evaluated examples.
    """

    Options = GenerationOptions

    def scorer(self) -> Scorer:
        """Return the function that scores one ``(prediction, reference)`` pair."""
        raise NotImplementedError

    def evaluate(self, ctx: EvalContext) -> EvalResult:
        """Generate a completion for the first ``limit`` examples' prompts and score each.

        Returns:
            ``EvalResult`` whose metrics are the per-example scores averaged over examples, and
            whose details hold, per example, ``prompt``, ``reference``, ``prediction`` and the
            example's scores.

        Raises:
            DataError: there is no example to evaluate, or an example has an empty prompt
                (the ``text`` format); use ``dataset.format: instruction`` or ``chat``.
        """
        examples = self.options.examples(ctx, self.name)
        score = self.scorer()
        predictions = self.options.complete(ctx, examples)
        details = [
            {"prompt": e.prompt, "reference": e.completion, "prediction": p,
             **score(p, e.completion)}
            for e, p in zip(examples, predictions)
        ]
        names = [k for k in details[0] if k not in ("prompt", "reference", "prediction")]
        metrics = {k: sum(d[k] for d in details) / len(details) for k in names}
        return EvalResult(metrics=metrics, details=details)


def normalize(text: str) -> str:
    """Normalise an answer for exact match.

    In order: lower-case; split on any whitespace and re-join with single spaces (which also
    strips both ends); remove trailing ASCII punctuation (``string.punctuation``) and then any
    whitespace left before it. Inner punctuation and non-ASCII characters are kept.

    >>> normalize("  A small\\n  animal. ")
    'a small animal'
    >>> normalize("U.S.A !")
    'u.s.a'
    """
    return " ".join(text.lower().split()).rstrip(string.punctuation).rstrip()


class ExactMatch(GenerationEvaluator):
    """Fraction of greedy completions equal to the reference after :func:`normalize`.

    Metric ``exact_match`` in [0, 1]; per example 1.0 or 0.0.
    """

    name = "exact-match"
    description = "Fraction of generated answers equal to the reference (normalised)"

    def scorer(self) -> Scorer:
        return lambda prediction, reference: {
            "exact_match": float(normalize(prediction) == normalize(reference)),
        }


class Rouge(GenerationEvaluator):
    """ROUGE-1, ROUGE-2 and ROUGE-L F-measures of greedy completions against references.

    ROUGE-N counts overlapping n-grams, ROUGE-L uses the longest common subsequence; F is the
    harmonic mean of precision and recall (Lin 2004, "ROUGE: A Package for Automatic Evaluation
    of Summaries"). Computed by Google's ``rouge-score`` package
    (``rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)``: lower-cases,
    keeps ASCII letters and digits, Porter-stems). Metrics ``rouge1``, ``rouge2``, ``rougeL``
    in [0, 1]: the mean F-measure over examples.
    """

    name = "rouge"
    description = "ROUGE-1/2/L F-measure of generated answers (rouge-score, with stemming)"

    def scorer(self) -> Scorer:
        from rouge_score import rouge_scorer

        scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)

        def score(prediction: str, reference: str) -> dict[str, float]:
            # RougeScorer.score takes (target, prediction) in that order.
            return {k: s.fmeasure for k, s in scorer.score(reference, prediction).items()}

        return score


@hookimpl
def register_evaluators(register):
    register(ExactMatch)
    register(Rouge)
