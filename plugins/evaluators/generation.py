"""Evaluators that generate a completion per example and compare it with the reference:
``exact-match``, ``rouge`` and ``bleu``.

They share one generation step (:func:`tuneyard.core.generation.generate`, greedy, left
padding) in :class:`GenerationEvaluator`; each only says how one prediction is scored (and, for
a corpus metric such as BLEU, how the scores are combined). torch, transformers, rouge-score and
sacrebleu are imported inside methods, so registering the plugin stays cheap.
"""

from __future__ import annotations

import string
from collections.abc import Callable
from typing import Any

from tuneyard.core.components import EvalContext, EvalResult, Evaluator
from tuneyard.core.generation import GenerationOptions
from tuneyard.core.hookspecs import hookimpl

Scorer = Callable[[str, str], dict[str, float]]
"""``(prediction, reference) -> {metric name: value}`` for one example (in [0, 1], except
sacrebleu's 0..100 for BLEU)."""


class GenerationEvaluator(Evaluator):
    """Base of evaluators that score greedy completions against references.

    Subclasses set ``name``, ``description`` and implement :meth:`scorer`. Each metric is the
    mean of the per-example scores over the evaluated examples, unless the subclass overrides
    :meth:`aggregate` (a corpus-level metric such as BLEU).
    """

    Options = GenerationOptions
    tasks = ("causal-lm",)  # generate() continues prompts: decoder-only models

    def scorer(self) -> Scorer:
        """Return the function that scores one ``(prediction, reference)`` pair."""
        raise NotImplementedError

    def aggregate(self, details: list[dict[str, Any]]) -> dict[str, float]:
        """The metrics, from the per-example details (each holds ``prompt``, ``reference``,
        ``prediction`` and that example's scores). Default: the mean of each score."""
        names = [k for k in details[0] if k not in ("prompt", "reference", "prediction")]
        return {k: sum(d[k] for d in details) / len(details) for k in names}

    def evaluate(self, ctx: EvalContext) -> EvalResult:
        """Generate a completion for the first ``limit`` examples' prompts and score each.

        Returns:
            ``EvalResult`` whose metrics come from :meth:`aggregate` (by default the per-example
            scores averaged over examples), and whose details hold, per example, ``prompt``,
            ``reference``, ``prediction`` and the example's scores.

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
        return EvalResult(metrics=self.aggregate(details), details=details)


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


class Bleu(GenerationEvaluator):
    """Corpus BLEU of greedy completions against references (one reference each).

    ``BLEU = BP * exp(mean over n = 1..4 of log p_n)``, where ``p_n`` is the clipped n-gram
    precision with the counts summed over the whole corpus before dividing, and the brevity
    penalty ``BP = min(1, exp(1 - reference tokens / predicted tokens))``, also over the corpus
    (Papineni et al. 2002, "BLEU: a Method for Automatic Evaluation of Machine Translation").
    Computed by ``sacrebleu.corpus_bleu(predictions, [references])`` with its defaults (Post
    2018, "A Call for Clarity in Reporting BLEU Scores": ``13a`` tokenizer, case-sensitive,
    ``exp`` smoothing of zero n-gram counts).

    Metric ``bleu`` is on sacrebleu's 0..100 scale, not the [0, 1] of the other generation
    metrics. A corpus metric is not the mean of per-example scores: each example's details hold
    ``sentence_bleu`` (``sacrebleu.sentence_bleu``, same 0..100 scale, effective n-gram order),
    to find the examples that pull the score down.
    """

    name = "bleu"
    description = "Corpus BLEU (0-100) of generated answers (sacrebleu defaults, 13a tokens)"

    def scorer(self) -> Scorer:
        import sacrebleu

        return lambda prediction, reference: {
            "sentence_bleu": sacrebleu.sentence_bleu(prediction, [reference]).score,
        }

    def aggregate(self, details: list[dict[str, Any]]) -> dict[str, float]:
        """``bleu``: corpus BLEU of every prediction against its reference, 0..100."""
        import sacrebleu

        predictions = [d["prediction"] for d in details]
        references = [d["reference"] for d in details]
        return {"bleu": sacrebleu.corpus_bleu(predictions, [references]).score}


@hookimpl
def register_evaluators(register):
    register(ExactMatch)
    register(Rouge)
    register(Bleu)
