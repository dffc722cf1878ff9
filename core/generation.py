"""Batched greedy decoding for decoder-only (causal LM) models.

The one place tuneyard generates text; the generation evaluators (``exact-match``, ``rouge``)
and anything else that needs completions call :func:`generate`. torch is imported inside the
function so importing this module stays cheap.

Batched generation for decoder-only models needs *left* padding: the model continues the last
position of each row, so every prompt must end at the same column. With right padding the pad
tokens would sit between a short prompt and its continuation (see the transformers guide
"Generation with LLMs", section "Wrong padding side").
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from tuneyard.core.errors import DataError

if TYPE_CHECKING:
    from tuneyard.core.components import EvalContext, Example


class GenerationOptions(BaseModel):
    """Options of an evaluator that generates: the built-in ``exact-match`` and ``rouge``, and
    third-party ones (subclass it to add fields)."""

    model_config = ConfigDict(extra="forbid")

    max_new_tokens: int = Field(
        default=64, ge=1, description="Most tokens generated per example (greedy decoding).",
    )
    limit: int | None = Field(
        default=None, ge=1,
        description="Evaluate only the first N held-out examples (default: all of them).",
    )
    batch_size: int | None = Field(
        default=None, ge=1,
        description="Prompts per generate call (default: the run's evaluation batch size).",
    )

    def examples(self, ctx: EvalContext, evaluator: str) -> list[Example]:
        """The first ``limit`` held-out examples of ``ctx``, each with a prompt to complete.

        Raises:
            DataError: there is none (``dataset.eval_split`` is 0), or one has an empty prompt
                (``dataset.format: text``); the message starts with ``evaluator``.
        """
        examples = ctx.examples[: self.limit]
        if not examples:
            raise DataError(f"{evaluator}: no held-out examples; set dataset.eval_split above 0")
        for i, example in enumerate(examples):
            if not example.prompt:
                raise DataError(f"{evaluator}: held-out example {i} has an empty prompt; "
                                "generation evaluators need dataset.format 'instruction' or "
                                "'chat'")
        return examples

    def complete(self, ctx: EvalContext, examples: list[Example]) -> list[str]:
        """The model's greedy completion of each example's prompt (:func:`generate` with
        these options; ``batch_size`` defaults to ``ctx.batch_size``)."""
        return generate(ctx.model, ctx.tokenizer, [e.prompt for e in examples],
                        max_new_tokens=self.max_new_tokens, device=ctx.device,
                        batch_size=self.batch_size or ctx.batch_size)


def generate(
    model: Any,
    tokenizer: Any,
    prompts: list[str],
    *,
    max_new_tokens: int,
    batch_size: int,
    device: Any,
    add_special_tokens: bool = False,
) -> list[str]:
    """Greedily continue each prompt, ``batch_size`` prompts per ``model.generate`` call.

    Each micro-batch is tokenized with left padding into ``input_ids`` and ``attention_mask``
    (int64, ``[batch, prompt_len]``, on ``device``; 0 in the mask on padding). ``generate``
    returns ``[batch, prompt_len + new_len]`` token ids; only the last ``new_len`` columns (the
    new tokens, ``new_len <= max_new_tokens``) are decoded. A row stops at the model's EOS token;
    after that it is filled with ``pad_token_id``, and both are dropped by
    ``skip_special_tokens=True``. Position ids are derived from the attention mask by
    transformers, so the result does not depend on ``batch_size`` (up to floating-point ties
    between two tokens' logits).

    The model is put in eval mode for the call (and restored afterwards) and run under
    ``torch.inference_mode``; the tokenizer's ``padding_side`` is restored too.

    Args:
        model: a transformers causal LM (``PreTrainedModel`` or a peft wrapper) on ``device``.
        tokenizer: its tokenizer; ``pad_token_id`` must be set (pad == eos is fine).
        prompts: the prompt texts, already rendered (e.g. with the chat template).
        max_new_tokens: most tokens generated per prompt.
        batch_size: prompts per forward pass.
        device: where the input tensors go (the model's device).
        add_special_tokens: let the tokenizer add BOS/EOS around each prompt. Leave it ``False``
            when the prompts were rendered with a chat template, which already holds them.

    Returns:
        One completion per prompt, in order: the new tokens decoded with
        ``skip_special_tokens=True`` and stripped of surrounding whitespace.

    Raises:
        ValueError: ``batch_size`` or ``max_new_tokens`` is below 1, or a prompt has no tokens.
    """
    import torch

    if batch_size < 1 or max_new_tokens < 1:
        raise ValueError(f"batch_size and max_new_tokens must be >= 1, got {batch_size}, "
                         f"{max_new_tokens}")
    was_training = model.training
    padding_side = tokenizer.padding_side
    model.eval()
    tokenizer.padding_side = "left"
    completions: list[str] = []
    try:
        with torch.inference_mode():
            for start in range(0, len(prompts), batch_size):
                chunk = prompts[start:start + batch_size]
                enc = tokenizer(chunk, return_tensors="pt", padding=True,
                                add_special_tokens=add_special_tokens)
                lengths = enc["attention_mask"].sum(dim=1)  # [batch]
                if int(lengths.min()) == 0:
                    empty = start + int((lengths == 0).nonzero()[0])
                    raise ValueError(f"prompt {empty} has no tokens; generation needs a prompt")
                input_ids = enc["input_ids"].to(device)  # [batch, prompt_len]
                attention_mask = enc["attention_mask"].to(device)  # [batch, prompt_len]
                out = model.generate(
                    input_ids=input_ids, attention_mask=attention_mask,
                    max_new_tokens=max_new_tokens, do_sample=False, num_beams=1,
                    pad_token_id=tokenizer.pad_token_id,
                )  # [batch, prompt_len + new_len]
                new_tokens = out[:, input_ids.shape[1]:]  # [batch, new_len]
                texts = tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
                completions.extend(text.strip() for text in texts)
    finally:
        tokenizer.padding_side = padding_side
        model.train(was_training)
    return completions
