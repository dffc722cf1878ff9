"""Evaluator ``samples``: the model's greedy continuation of fixed prompts, to read how a
(pre-)trained model writes, and its distinct-2 ratio.

Unlike the other generation evaluators it needs no held-out answers, so it also judges
pre-training runs (format ``text``), where there is no prompt to complete.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from tuneyard.core.components import EvalContext, EvalResult, Evaluator
from tuneyard.core import generation
from tuneyard.core.hookspecs import hookimpl


class SamplesOptions(BaseModel):
    """Options of the ``samples`` evaluator."""

    model_config = ConfigDict(extra="forbid")

    prompts: list[str] = Field(default=["\n"], min_length=1, description=(
        "Texts to continue, e.g. the start of a line of dialogue ('ROMEO:')."))
    max_new_tokens: int = Field(default=48, ge=1, description="Tokens generated per prompt.")


def distinct_2(texts: list[str]) -> float:
    """Distinct bigrams over all bigrams of whitespace words in ``texts`` (Li et al. 2016, "A
    Diversity-Promoting Objective Function for Neural Conversation Models"): 1.0 when no word
    pair repeats, near 0 for a model stuck in a loop; 0.0 when there is no bigram.

    >>> distinct_2(["a b a b", "c d"])
    0.75
    """
    bigrams = [pair for text in texts for pair in zip(text.split(), text.split()[1:])]
    return len(set(bigrams)) / len(bigrams) if bigrams else 0.0


class Samples(Evaluator):
    """Greedy continuation (``max_new_tokens``) of each of ``prompts``.

    Returns metric ``distinct_2`` (:func:`distinct_2` of the continuations) and one detail per
    prompt: ``prompt`` and ``sample`` (the continuation).
    """

    name = "samples"
    description = "Greedy continuations of fixed prompts (a before/after sample), distinct-2"
    Options = SamplesOptions
    tasks = ("causal-lm",)

    def evaluate(self, ctx: EvalContext) -> EvalResult:
        o = self.options
        samples = generation.generate(ctx.model, ctx.tokenizer, o.prompts,
                                      max_new_tokens=o.max_new_tokens,
                                      batch_size=ctx.batch_size, device=ctx.device)
        return EvalResult(metrics={"distinct_2": distinct_2(samples)},
                          details=[{"prompt": p, "sample": s} for p, s in zip(o.prompts, samples)])


@hookimpl
def register_evaluators(register):
    register(Samples)
