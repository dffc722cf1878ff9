"""Evaluator ``preference``: how often the model prefers the chosen answer of a held-out
preference pair over the rejected one, by the log-probability it gives each.

torch is imported inside :meth:`Preference.evaluate`, so registering the plugin stays cheap.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from tuneyard.core.components import EvalContext, EvalResult, Evaluator, Example
from tuneyard.core.errors import DataError
from tuneyard.core.formats import PadCollator, tokenize
from tuneyard.core.hookspecs import hookimpl


class PreferenceOptions(BaseModel):
    """Options of the ``preference`` evaluator."""

    model_config = ConfigDict(extra="forbid")

    limit: int | None = Field(
        default=None, ge=1,
        description="Judge only the first N held-out pairs (default: all of them).",
    )


class Preference(Evaluator):
    """Preference accuracy and margin on the held-out pairs (dataset format ``preference``).

    For each pair the model scores both answers given the prompt: ``log p(answer | prompt)``,
    the sum of the log-probabilities of the answer's tokens and its EOS (nats), tokenized as a
    run tokenizes an example (:func:`~tuneyard.core.formats.tokenize`: prompt + answer + EOS, the
    prompt cut from the left to ``training.max_seq_len``). The metrics are those DPO's implicit
    reward is judged by (Rafailov et al. 2023, arXiv:2305.18290, section 6; TRL's
    ``rewards/accuracies``), here with the model alone, no reference:

    - ``accuracy``: the share of pairs with ``log p(chosen) > log p(rejected)`` (ties count as
      not preferred);
    - ``accuracy_normalized``: the same with each sum divided by the answer's token count
      (the mean log-probability per token, so a shorter answer is not favoured for its
      length; SimPO's length-normalised reward, Meng et al. 2024, arXiv:2405.14734);
    - ``margin``: the mean of ``log p(chosen) − log p(rejected)`` (nats);
    - ``pairs``: pairs judged; ``pairs_skipped``: pairs left out because an answer and its EOS
      do not fit in ``training.max_seq_len`` next to a prompt token (as a run drops such an
      example).

    Details: per pair the prompt, both answers, both log-probabilities and token counts.
    """

    name = "preference"
    description = "Share of held-out pairs whose chosen answer the model finds likelier (and margin)"
    Options = PreferenceOptions
    tasks = ("causal-lm",)
    formats = ("preference",)

    def evaluate(self, ctx: EvalContext) -> EvalResult:
        """Score every held-out pair in batches of ``ctx.batch_size`` rows (chosen and rejected
        rows are batched together).

        Raises:
            DataError: the held-out examples have no rejected answer (the run's
                ``dataset.format`` is not ``preference``), or no pair fits in
                ``training.max_seq_len``.
        """
        pairs = ctx.examples[:self.options.limit]
        if not pairs or any(e.rejected is None for e in pairs):
            raise DataError("preference: the held-out examples have no rejected answer; this "
                            "evaluator judges preference pairs (dataset.format: preference)")
        answers = [Example(e.prompt, answer) for e in pairs
                   for answer in (e.completion, e.rejected)]
        rows = [tokenize(a, ctx.tokenizer, ctx.max_seq_len, "causal-lm") for a in answers]
        fits = [any(label != -100 for label in r["labels"]) for r in rows]
        judged = [i for i in range(len(pairs)) if fits[2 * i] and fits[2 * i + 1]]
        if not judged:
            raise DataError(f"preference: none of the {len(pairs)} held-out pairs fits in "
                            f"training.max_seq_len ({ctx.max_seq_len} tokens) with both "
                            "answers and their EOS; raise training.max_seq_len")
        rows = [rows[2 * i + k] for i in judged for k in (0, 1)]
        pairs = [pairs[i] for i in judged]
        scores = sequence_log_probs(ctx, rows)  # [(sum nats, tokens)], chosen then rejected
        details: list[dict[str, Any]] = []
        wins = wins_normalized = 0
        margin = 0.0
        for e, (chosen, n_chosen), (rejected, n_rejected) in zip(pairs, scores[0::2],
                                                                   scores[1::2], strict=True):
            wins += chosen > rejected
            wins_normalized += chosen / n_chosen > rejected / n_rejected
            margin += chosen - rejected
            details.append({"prompt": e.prompt, "chosen": e.completion, "rejected": e.rejected,
                            "logp_chosen": chosen, "logp_rejected": rejected,
                            "tokens_chosen": n_chosen, "tokens_rejected": n_rejected})
        n = len(pairs)
        return EvalResult({"accuracy": wins / n, "accuracy_normalized": wins_normalized / n,
                           "margin": margin / n, "pairs": float(n),
                           "pairs_skipped": float(len(fits) // 2 - n)}, details)


def sequence_log_probs(ctx: EvalContext, rows: list[dict[str, Any]]) -> list[tuple[float, int]]:
    """For each tokenized row, the sum of ``log p`` of its label tokens (nats, float64 on the
    host) and how many there are. Rows are right-padded (:class:`PadCollator`); position ``t``
    of the logits (``[batch, seq_len, vocab]``, float32) predicts the label at ``t + 1``."""
    import torch

    collator = PadCollator(ctx.tokenizer.pad_token_id)
    out = []
    with torch.inference_mode():
        for start in range(0, len(rows), ctx.batch_size):
            batch = collator(rows[start:start + ctx.batch_size])
            labels = batch.pop("labels").to(ctx.device)[:, 1:]  # [batch, seq_len - 1]
            inputs = {k: v.to(ctx.device) for k, v in batch.items()}
            logits = ctx.model(**inputs).logits.float()[:, :-1]  # [batch, seq_len - 1, vocab]
            scored = labels != -100
            log_probs = torch.log_softmax(logits, dim=-1).gather(
                -1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)  # [batch, seq_len - 1]
            sums = (log_probs * scored).sum(dim=-1).double()
            out += [(float(s), int(n)) for s, n in zip(sums, scored.sum(dim=-1), strict=True)]
    return out


@hookimpl
def register_evaluators(register):
    register(Preference)
