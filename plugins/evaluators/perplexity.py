"""Evaluator ``perplexity``: token-weighted cross-entropy of the held-out labels.

torch is imported inside :meth:`Perplexity.evaluate`, so registering the plugin stays cheap.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from tuneyard.core.components import EvalContext, EvalResult, Evaluator
from tuneyard.core.errors import DataError
from tuneyard.core.hookspecs import hookimpl


class PerplexityOptions(BaseModel):
    """Options of the ``perplexity`` evaluator."""

    model_config = ConfigDict(extra="forbid")

    limit: int | None = Field(
        default=None, ge=1,
        description="Evaluate only the first N held-out examples (default: all of them).",
    )


class Perplexity(Evaluator):
    """Mean cross-entropy per label token over the whole eval set, and its exponential.

    ``eval_loss = sum of token NLL / number of label tokens`` (nats/token), summed over every
    example before dividing, so the result does not depend on the batch size or on padding (the
    mean of per-batch means would weight a token by its batch's size). ``perplexity =
    exp(eval_loss)`` (Jelinek et al. 1977; the definition of the Hugging Face guide
    "Perplexity of fixed-length models").
    """

    name = "perplexity"
    description = "Token-weighted cross-entropy (eval_loss, nats/token) and perplexity"
    Options = PerplexityOptions
    tasks = ("causal-lm",)

    def evaluate(self, ctx: EvalContext) -> EvalResult:
        """Run the model over ``ctx.eval_dataset`` in batches of ``ctx.batch_size``.

        Each batch from ``ctx.collator`` holds ``input_ids``, ``attention_mask`` and ``labels``
        (int64, ``[batch, seq_len]``, right padding, ``labels`` = -100 on prompt and padding),
        or, for pre-training blocks, ``position_ids`` instead of the mask (documents apart).
        Logits (``[batch, seq_len, vocab]``) are cast to float32; position ``t`` predicts the
        label at ``t + 1`` (``logits[:, :-1]`` against ``labels[:, 1:]``), so a label in the
        first column is never scored. The NLL is summed (``reduction="sum"``,
        ``ignore_index=-100``) and divided once, at the end, by the number of label tokens.

        Returns:
            ``EvalResult`` with metrics ``eval_loss`` (nats/token), ``perplexity``
            (``exp(eval_loss)``, unitless) and ``eval_tokens`` (label tokens scored); no details.

        Raises:
            DataError: the eval set (after ``limit``) has no label tokens; check
                ``dataset.eval_split`` and that completions are not truncated away by
                ``training.max_seq_len``.
        """
        import math

        import torch
        import torch.nn.functional as F

        rows = len(ctx.eval_dataset)
        if self.options.limit is not None:
            rows = min(rows, self.options.limit)
        nll_sum = 0.0  # nats, float64 on the host
        tokens = 0
        with torch.inference_mode():
            for start in range(0, rows, ctx.batch_size):
                batch = ctx.collator(
                    [ctx.eval_dataset[i] for i in range(start, min(start + ctx.batch_size, rows))]
                )
                labels = batch.pop("labels").to(ctx.device)  # [batch, seq_len]
                inputs = {k: v.to(ctx.device) for k, v in batch.items()}  # ids, mask/positions
                logits = ctx.model(**inputs).logits.float()  # [batch, seq_len, vocab]
                targets = labels[:, 1:]  # [batch, seq_len - 1]
                nll = F.cross_entropy(
                    logits[:, :-1].reshape(-1, logits.shape[-1]),  # [batch * (seq_len - 1), vocab]
                    targets.reshape(-1),  # [batch * (seq_len - 1)]
                    ignore_index=-100, reduction="sum",
                )
                nll_sum += float(nll)
                tokens += int((targets != -100).sum())
        if tokens == 0:
            raise DataError(
                f"perplexity: the {rows} eval example(s) have no label tokens to score; check "
                "dataset.eval_split and that training.max_seq_len leaves room for completions"
            )
        eval_loss = nll_sum / tokens
        return EvalResult(metrics={
            "eval_loss": eval_loss, "perplexity": math.exp(eval_loss), "eval_tokens": float(tokens),
        })


@hookimpl
def register_evaluators(register):
    register(Perplexity)
