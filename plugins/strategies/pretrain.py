"""Strategy ``pretrain-clm``: causal language modelling on raw text (next-token prediction)."""

from __future__ import annotations

from tuneyard.core.components import TrainingStrategy
from tuneyard.core.hookspecs import hookimpl


class PretrainCLM(TrainingStrategy):
    """Trains every weight to predict the next token of raw text.

    Rows (format ``text``) are tokenized, each followed by EOS, concatenated and cut into blocks
    of ``training.max_seq_len`` tokens (as transformers' ``run_clm.py``); every token is a target.
    Use it from scratch (model provider ``scratch``) or to continue pre-training a model.
    """

    name = "pretrain-clm"
    description = "Causal-LM pre-training on raw text, packed into max_seq_len blocks"
    pack = True
    formats = ("text",)


@hookimpl
def register_training_strategies(register):
    register(PretrainCLM)
