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
    only (transformers ``DataCollatorForLanguageModeling``). From scratch (``scratch`` with
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
        drawing from torch's global RNG, which the Trainer seeds and restores on resume."""
        from transformers import DataCollatorForLanguageModeling

        return DataCollatorForLanguageModeling(tokenizer, mlm_probability=0.15)


@hookimpl
def register_training_strategies(register):
    register(PretrainCLM)
    register(PretrainMLM)
