"""Preference tuning on TRL's trainers: strategies ``dpo`` (Direct Preference Optimization,
Rafailov et al. 2023, arXiv:2305.18290) and ``orpo`` (Odds Ratio Preference Optimization, Hong
et al. 2024, arXiv:2403.07691), each on LoRA adapters or on every weight.

Rows are of format ``preference`` (a prompt, a chosen and a rejected answer); the prompt is
rendered as the run renders it (the chat template), and TRL tokenizes the pairs, adds EOS to
each answer, and cuts a pair longer than ``training.max_seq_len`` at its end (TRL's
``truncation_mode="keep_start"``; a pair whose prompt alone fills it is dropped). Nothing here
imports torch or TRL at module level.
"""

from __future__ import annotations

import copy
import functools
import logging
from typing import Any, Literal

from pydantic import Field

from tuneyard.core.components import Example, TrainingStrategy
from tuneyard.core.errors import DataError, SpecError
from tuneyard.core.hookspecs import hookimpl
from tuneyard.plugins.strategies.lora import LoraOptions, add_adapter, check_adapter, load_adapter

log = logging.getLogger(__name__)

#: what TRL's preference trainers log per step, besides the loss (``eval_``-prefixed after an
#: evaluation): the implicit rewards β·log(π/π_ref) of the chosen and rejected answers (ORPO:
#: β·log p), their difference, and the share of pairs where the chosen one's is higher
REWARDS = ("rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies")


class PreferenceOptions(LoraOptions):
    """Options of a preference strategy: which weights train, then LoRA's (used with
    ``weights: lora``), then the method's own."""

    weights: Literal["lora", "full"] = Field(
        "lora", description="lora: train LoRA adapters, the base frozen (the options below); "
        "full: train every weight")
    beta: float = Field(0.1, gt=0, description="β: DPO's KL strength (higher keeps the model "
                        "closer to the reference); ORPO's weight λ of the odds-ratio term")


class DPOOptions(PreferenceOptions):
    loss_type: Literal["sigmoid", "ipo", "hinge", "robust", "apo_zero", "apo_down",
                       "sppo_hard", "nca_pair", "bco_pair", "exo_pair", "discopop",
                       "sigmoid_norm"] = Field(
        "sigmoid", description="TRL DPOConfig.loss_type: sigmoid = DPO's −log σ(β·margin); "
        "ipo (Azar et al. 2023), hinge (SLiC), robust (cDPO, with label_smoothing), …")
    label_smoothing: float = Field(
        0.0, ge=0, lt=0.5, description="probability a preference label is flipped (robust, "
        "exo_pair losses)")


class PreferenceStrategy(TrainingStrategy):
    """What DPO and ORPO share: rows of format ``preference`` laid out as TRL's
    ``prompt``/``chosen``/``rejected`` dataset, TRL's collator, the tokenizer as TRL's
    ``processing_class``, and LoRA or full weights (``weights``)."""

    task = "causal-lm"
    formats = ("preference",)
    Options = PreferenceOptions

    @property
    def saves(self) -> str:  # type: ignore[override]
        return "adapter" if self.options.weights == "lora" else "model"

    def check(self, device: str) -> None:
        if self.options.weights == "lora":
            check_adapter(self.options, device)
        elif self.options.qlora:
            raise SpecError("strategy.options.qlora: trains adapters on a 4-bit base, and "
                            "weights: full trains every weight; set weights: lora")

    def prepare(self, model: Any) -> Any:
        return add_adapter(model, self.options) if self.options.weights == "lora" else model

    def load_checkpoint(self, model: Any, path: str) -> Any:
        if self.options.weights == "lora":
            return load_adapter(model, path, self.options)
        return super().load_checkpoint(model, path)

    def dataset(self, examples: list[Example], rows: list[dict[str, Any]], tokenizer: Any,
                max_seq_len: int) -> Any:
        """The pairs as TRL's ``prompt``/``chosen``/``rejected`` texts. TRL drops a pair whose
        prompt alone fills ``max_seq_len`` tokens: how many is logged here.

        Raises:
            DataError: no pair's prompt fits (TRL would train on nothing), naming
                ``training.max_seq_len``.
        """
        from datasets import Dataset

        too_long = sum(len(tokenizer(e.prompt)["input_ids"]) >= max_seq_len for e in examples)
        if too_long == len(examples):
            raise DataError(f"training.max_seq_len: the prompts of all {too_long} pairs fill "
                            f"{max_seq_len} tokens, leaving no room for an answer; raise "
                            "training.max_seq_len")
        if too_long:
            log.warning("%d of %d pairs are dropped: their prompt fills training.max_seq_len "
                        "(%d tokens); raise it to keep them", too_long, len(examples),
                        max_seq_len)
        return Dataset.from_dict({"prompt": [e.prompt for e in examples],
                                  "chosen": [e.completion for e in examples],
                                  "rejected": [e.rejected for e in examples]})

    def collator(self, tokenizer: Any, padding: Any) -> Any:
        return None  # TRL's: prompt + chosen and prompt + rejected rows in one batch

    def trainer_kwargs(self, model: Any, tokenizer: Any) -> dict[str, Any]:
        return {"processing_class": tokenizer}


class DPO(PreferenceStrategy):
    """Direct Preference Optimization with TRL's ``DPOTrainer``: the loss
    ``−log σ(β·[(log π(y_w|x) − log π_ref(y_w|x)) − (log π(y_l|x) − log π_ref(y_l|x))])``
    (``loss_type: sigmoid``) raises the chosen answer's likelihood relative to the rejected
    one's, measured against the reference model π_ref: the model as it was before training.
    With ``weights: lora`` the reference is the base model under TRL's frozen copy of the
    freshly initialised adapter (no second model in memory); with ``weights: full`` it is a
    frozen copy of the whole model. Logs the implicit rewards per step (:data:`REWARDS`)."""

    name = "dpo"
    description = "DPO (TRL): prefer the chosen answer over the rejected one, against a reference"
    Options = DPOOptions
    metrics = REWARDS

    def trainer_class(self) -> type:
        from trl import DPOTrainer

        return DPOTrainer

    def training_arguments(self, training: Any, **kwargs: Any) -> Any:
        from trl import DPOConfig

        o = self.options
        return DPOConfig(**kwargs, beta=o.beta, loss_type=[o.loss_type],
                         label_smoothing=o.label_smoothing, max_length=training.max_seq_len)

    def trainer_kwargs(self, model: Any, tokenizer: Any) -> dict[str, Any]:
        extra = super().trainer_kwargs(model, tokenizer)
        if self.options.weights == "full":
            reference = copy.deepcopy(model).eval()
            reference.requires_grad_(False)
            extra["ref_model"] = reference
        else:  # TRL adds adapter "ref", a frozen copy of the fresh one: not saved, made anew
            model.save_pretrained = functools.partial(  # on resume as at the start
                model.save_pretrained, selected_adapters=[self.options.adapter_name])
        return extra


class ORPO(PreferenceStrategy):
    """Odds Ratio Preference Optimization with TRL's ``ORPOTrainer`` (``trl.experimental``): the
    supervised loss on the chosen answer plus ``β · −log σ(log odds(y_w|x) − log odds(y_l|x))``,
    no reference model. Logs the rewards (β·mean log p of each answer, :data:`REWARDS`), the
    ``nll_loss`` of the chosen answers and the ``log_odds_ratio``."""

    name = "orpo"
    description = "ORPO (TRL): supervised loss on the chosen answer plus an odds-ratio penalty"
    metrics = (*REWARDS, "nll_loss", "log_odds_ratio")

    def trainer_class(self) -> type:
        from trl.experimental.orpo import ORPOTrainer

        return ORPOTrainer

    def training_arguments(self, training: Any, **kwargs: Any) -> Any:
        from trl.experimental.orpo import ORPOConfig

        return ORPOConfig(**kwargs, beta=self.options.beta, max_length=training.max_seq_len)


@hookimpl
def register_training_strategies(register):
    register(DPO)
    register(ORPO)
