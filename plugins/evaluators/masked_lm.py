"""Evaluator ``masked-lm``: masked-token accuracy and pseudo-perplexity of a masked LM.

torch is imported inside :meth:`MaskedLM.evaluate`, so registering the plugin stays cheap.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from tuneyard.core.components import EvalContext, EvalResult, Evaluator
from tuneyard.core.errors import DataError, TuneyardError
from tuneyard.core.hookspecs import hookimpl


class MaskedLMOptions(BaseModel):
    """Options of the ``masked-lm`` evaluator."""

    model_config = ConfigDict(extra="forbid")

    limit: int | None = Field(
        default=32, ge=1,
        description="Evaluate only the first N held-out examples (null: all of them). "
                    "Pseudo-perplexity costs one forward pass per scored token.",
    )
    mask_probability: float = Field(
        default=0.15, gt=0, le=1,
        description="Fraction of each example's tokens masked for masked_accuracy (at least "
                    "one); 0.15 as in BERT pre-training (Devlin et al. 2019).",
    )
    seed: int = Field(default=0, description="Seed of the choice of tokens to mask.")


class MaskedLM(Evaluator):
    """Masked-token accuracy and pseudo-perplexity of a masked language model (BERT-style).

    ``masked_accuracy``: in each example, ``k = max(1, round(n * mask_probability))`` of its
    ``n`` label tokens (special tokens excluded) are drawn without replacement by a
    ``torch.Generator`` seeded with ``seed`` (the count of BERT's ``create_pretraining_data.py``,
    Devlin et al. 2019) and all replaced by the mask token: the 80/10/10 mask/random/keep split
    is a training-time trick, not part of the test. It is the fraction of masked tokens whose
    argmax prediction is the original token, counted over the whole set before dividing. The
    draw depends on the examples and ``seed`` only, not on the batch size.

    ``pseudo_perplexity``: the pseudo-log-likelihood of an example ``W`` is ``PLL(W) = sum over
    t of log P(w_t | W with only position t masked)``, and ``PPPL = exp(-(sum over examples of
    PLL) / N)`` with ``N`` the number of tokens scored (Salazar et al. 2020, "Masked Language
    Model Scoring", ACL). It takes one forward pass per scored token: hence the default
    ``limit`` of 32 examples.
    """

    name = "masked-lm"
    description = "Masked-token accuracy and pseudo-perplexity (Salazar et al. 2020)"
    Options = MaskedLMOptions
    tasks = ("masked-lm",)

    def evaluate(self, ctx: EvalContext) -> EvalResult:
        """Score the first ``limit`` rows of ``ctx.eval_dataset``.

        Each row holds ``input_ids`` with the tokenizer's special tokens (e.g. ``[CLS] ...
        [SEP]``) and ``labels`` = the same ids, -100 on special tokens; ``ctx.collator`` pads
        them into int64 ``[batch, seq_len]`` tensors (labels -100 on padding). Only label
        positions are masked and scored. Log-probabilities are taken in float32.

        Returns:
            ``EvalResult`` with metrics ``masked_accuracy`` (in [0, 1]), ``pseudo_perplexity``
            (unitless, >= 1) and ``eval_tokens`` (tokens scored by the pseudo-perplexity); no
            details.

        Raises:
            TuneyardError: the tokenizer has no mask token; ``model.provider`` must give a
                masked LM's tokenizer (BERT-style, with ``[MASK]``).
            DataError: the evaluated rows have no label token; check ``dataset.eval_split``
                and that ``training.max_seq_len`` leaves room for more than special tokens.
        """
        import math

        import torch

        mask_id = ctx.tokenizer.mask_token_id
        if mask_id is None:
            raise TuneyardError(f"{self.name}: the tokenizer has no mask token; model.provider "
                                "must give a masked LM's tokenizer (BERT-style, with [MASK])")
        count = len(ctx.eval_dataset)
        rows = [ctx.eval_dataset[i] for i in range(min(count, self.options.limit or count))]
        tokens = sum(label != -100 for row in rows for label in row["labels"])
        if tokens == 0:
            raise DataError(f"{self.name}: the {len(rows)} eval example(s) have no label token "
                            "to score; check dataset.eval_split and training.max_seq_len")
        with torch.inference_mode():
            correct, masked = self._masked_accuracy(ctx, rows, mask_id)
            pll = sum(self._pseudo_log_likelihood(ctx, row, mask_id) for row in rows)
        return EvalResult(metrics={
            "masked_accuracy": correct / masked,
            "pseudo_perplexity": math.exp(-pll / tokens),
            "eval_tokens": float(tokens),
        })

    def _masked_accuracy(self, ctx: EvalContext, rows: list[dict[str, Any]],
                         mask_id: int) -> tuple[int, int]:
        """``(correctly predicted, masked)`` token counts over ``rows``, masking
        ``mask_probability`` of each row's label tokens (see the class docstring)."""
        import torch

        generator = torch.Generator().manual_seed(self.options.seed)
        correct = masked_count = 0
        for start in range(0, len(rows), ctx.batch_size):
            batch = ctx.collator(rows[start:start + ctx.batch_size])
            labels = batch["labels"]  # [batch, seq_len]
            masked = torch.zeros_like(labels, dtype=torch.bool)  # [batch, seq_len]
            for i, row_labels in enumerate(labels):
                positions = (row_labels != -100).nonzero().squeeze(-1)  # [n]
                k = max(1, round(len(positions) * self.options.mask_probability))
                # a row without label tokens draws an empty permutation and masks nothing
                chosen = torch.randperm(len(positions), generator=generator)[:k]  # [k]
                masked[i, positions[chosen]] = True
            logits = ctx.model(
                input_ids=batch["input_ids"].masked_fill(masked, mask_id).to(ctx.device),
                attention_mask=batch["attention_mask"].to(ctx.device),
            ).logits  # [batch, seq_len, vocab]
            predictions = logits[masked.to(ctx.device)].argmax(dim=-1).cpu()  # [masked]
            correct += int((predictions == labels[masked]).sum())
            masked_count += int(masked.sum())
        return correct, masked_count

    def _pseudo_log_likelihood(self, ctx: EvalContext, row: dict[str, Any],
                               mask_id: int) -> float:
        """``PLL`` of one row (nats, <= 0): one copy of the row per label position with that
        position masked, ``ctx.batch_size`` copies per forward pass."""
        import torch

        batch = ctx.collator([row])  # one row: no padding
        input_ids = batch["input_ids"][0].to(ctx.device)  # [seq_len]
        attention_mask = batch["attention_mask"].to(ctx.device)  # [1, seq_len]
        labels = batch["labels"][0].to(ctx.device)  # [seq_len]
        pll = 0.0
        for chunk in (labels != -100).nonzero().squeeze(-1).split(ctx.batch_size):  # [c]
            copy = torch.arange(len(chunk), device=ctx.device)  # [c]
            copies = input_ids.repeat(len(chunk), 1)  # [c, seq_len]
            copies[copy, chunk] = mask_id  # copy j masks position chunk[j] only
            logits = ctx.model(
                input_ids=copies, attention_mask=attention_mask.expand(len(chunk), -1),
            ).logits  # [c, seq_len, vocab]
            log_probs = torch.log_softmax(logits[copy, chunk].float(), dim=-1)  # [c, vocab]
            pll += float(log_probs[copy, labels[chunk]].sum())
        return pll


@hookimpl
def register_evaluators(register):
    register(MaskedLM)
