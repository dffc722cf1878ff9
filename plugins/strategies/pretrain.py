"""Pre-training strategies on raw text: ``pretrain-clm`` (next-token prediction, GPT-style)
and ``pretrain-mlm`` (masked tokens, BERT-style)."""

from __future__ import annotations

from typing import Any

from tuneyard.core.components import TrainingStrategy
from tuneyard.core.hookspecs import hookimpl


class PretrainCLM(TrainingStrategy):
    """Trains every weight to predict the next token of raw text (Radford et al. 2018/2019).

    Rows (format ``text``; each a document) are tokenized, each followed by EOS, concatenated
    and cut into blocks of ``training.max_seq_len`` tokens (as transformers' ``run_clm.py``);
    every token is a target except each document's first, and position ids restart at every
    document so documents in one block do not attend to each other
    (:func:`tuneyard.core.formats.pack`). Use it from scratch (model provider ``scratch``) or
    to continue pre-training a model.
    """

    name = "pretrain-clm"
    description = "Causal-LM pre-training on raw text, packed into max_seq_len blocks"
    task = "causal-lm"
    pack = True
    formats = ("text",)


class PretrainMLM(TrainingStrategy):
    """Trains every weight of an encoder to predict masked tokens (BERT, Devlin et al. 2019).

    Rows (format ``text``) are tokenized with the tokenizer's special tokens
    (``[CLS] … [SEP]``), concatenated and cut into ``training.max_seq_len`` blocks (as
    transformers' ``run_mlm.py``). Each batch masks 15% of the non-special tokens, 80% of those
    replaced by [MASK], 10% by a random token, 10% left as they are; the loss is on those 15%
    only (transformers ``DataCollatorForLanguageModeling``), and a block in which none was
    chosen gets one (:func:`at_least_one_masked`). From scratch (``scratch`` with
    ``architecture: bert``) or continued from an encoder checkpoint (``hf``, e.g.
    all-MiniLM-L6-v2).
    """

    name = "pretrain-mlm"
    description = "Masked-LM pre-training (BERT-style 15% masking, 80/10/10) on raw text"
    task = "masked-lm"
    pack = True
    formats = ("text",)

    def collator(self, tokenizer: Any, padding: Any) -> Any:
        """transformers ``DataCollatorForLanguageModeling`` (15% of tokens chosen, of which 80%
        become [MASK], 10% a random token, 10% stay; Devlin et al. 2019, section 3.1),
        drawing from torch's global RNG, which the Trainer seeds and restores on resume; a
        row in which the draw chose no token gets one (:func:`at_least_one_masked`)."""
        from transformers import DataCollatorForLanguageModeling

        class Collator(DataCollatorForLanguageModeling):
            def torch_mask_tokens(self, inputs: Any, special_tokens_mask: Any = None,
                                  offset_mapping: Any = None) -> tuple[Any, Any]:
                inputs, labels = super().torch_mask_tokens(inputs, special_tokens_mask,
                                                           offset_mapping)
                return at_least_one_masked(self, inputs, labels)

        return Collator(tokenizer, mlm_probability=0.15)


def at_least_one_masked(collator: Any, inputs: Any, labels: Any) -> tuple[Any, Any]:
    """Give each row of a masked batch in which no token was chosen one chosen token: a
    non-special token drawn uniformly, replaced as the others are (80% [MASK], 10% a random
    token, 10% kept). BERT's data pipeline chooses ``max(1, round(0.15 × n))`` tokens a
    sequence for the same reason (google-research/bert ``create_pretraining_data.py``): a
    micro-batch with no label has no loss to learn from, and was logged as loss 0.0.

    Args:
        collator: the ``DataCollatorForLanguageModeling`` (its tokenizer, probabilities and
            generator; ``None`` = torch's global RNG).
        inputs: ``[batch, seq_len]`` int64 token ids after masking, changed in place.
        labels: ``[batch, seq_len]`` int64, the original id where a token was chosen, -100
            elsewhere; changed in place.

    Returns:
        ``(inputs, labels)``.
    """
    import torch

    tokenizer, rng = collator.tokenizer, collator.generator
    for row in torch.nonzero((labels == -100).all(dim=1)).flatten().tolist():
        ids = inputs[row].tolist()
        special = tokenizer.get_special_tokens_mask(ids, already_has_special_tokens=True)
        candidates = [i for i, s in enumerate(special) if not s]
        if not candidates:  # nothing but special tokens and padding
            continue
        pos = candidates[int(torch.randint(len(candidates), (1,), generator=rng))]
        labels[row, pos] = inputs[row, pos]
        draw = float(torch.rand((), generator=rng))
        if draw < collator.mask_replace_prob:
            inputs[row, pos] = tokenizer.mask_token_id
        elif draw < collator.mask_replace_prob + collator.random_replace_prob:
            inputs[row, pos] = int(torch.randint(len(tokenizer), (1,), generator=rng))
    return inputs, labels


@hookimpl
def register_training_strategies(register):
    register(PretrainCLM)
    register(PretrainMLM)
