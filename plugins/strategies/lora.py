"""Strategy ``lora``: low-rank adapters through peft (Hu et al. 2021, arXiv:2106.09685)."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from tuneyard.core.components import TrainingStrategy
from tuneyard.core.errors import TuneyardError
from tuneyard.core.hookspecs import hookimpl
from tuneyard.core.models import added_token_ids


class LoraOptions(BaseModel):
    """LoRA hyper-parameters; names and defaults follow ``peft.LoraConfig``."""

    model_config = ConfigDict(extra="forbid")

    r: int = Field(8, gt=0, description="rank of the update matrices")
    alpha: int = Field(16, gt=0, description="scaling: the update is multiplied by alpha / r")
    dropout: float = Field(0.05, ge=0, lt=1, description="dropout on the LoRA input")
    target_modules: list[str] | str = Field(
        "all-linear", description="module names to adapt, or 'all-linear'"
    )
    adapter_name: str = Field("default", description="peft adapter name")


#: model class name suffix → peft task type; a classifier's new head is then trained in full
#: and saved with the adapter (peft's ``modules_to_save`` for ``TOKEN_CLS``/``SEQ_CLS``).
PEFT_TASK_TYPES = {"ForCausalLM": "CAUSAL_LM", "ForTokenClassification": "TOKEN_CLS",
                   "ForSequenceClassification": "SEQ_CLS"}


class LoRA(TrainingStrategy):
    """Freezes the base model and trains rank-``r`` adapters on ``target_modules``.

    Checkpoints are peft adapter folders (``adapter_config.json`` + ``adapter_model.safetensors``);
    for a classifier they also hold its head. When tokens were added to the vocabulary
    (:func:`tuneyard.core.models.added_token_ids`, e.g. ``dataset.chat_template: chatml``),
    their rows of the input embeddings and of the output head are trained too (peft's
    ``trainable_token_indices``; a tied head shares them), and the resized embeddings are
    saved with the adapter (peft's ``save_embedding_layers``), so it loads onto the base model
    given the same tokens.
    """

    name = "lora"
    description = "LoRA adapters (peft): train a small rank-r update, base weights frozen"
    Options = LoraOptions
    saves = "adapter"

    def prepare(self, model: Any) -> Any:
        import torch
        from peft import LoraConfig, get_peft_model

        o = self.options
        model_class = type(model).__name__
        task_type = next((t for suffix, t in PEFT_TASK_TYPES.items()
                          if model_class.endswith(suffix)), None)
        new_ids = added_token_ids(model)
        config = LoraConfig(
            r=o.r, lora_alpha=o.alpha, lora_dropout=o.dropout, target_modules=o.target_modules,
            task_type=task_type, trainable_token_indices={
                name: new_ids for name in embedding_names(model)} if new_ids else None,
        )
        try:
            peft_model = get_peft_model(model, config, adapter_name=o.adapter_name)
        except ValueError as exc:
            if "target_modules" not in str(exc) and "Target modules" not in str(exc):
                raise
            linear = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules()
                             if isinstance(m, torch.nn.Linear)})
            raise TuneyardError(
                f"strategy.options.target_modules: {o.target_modules} not found in the model; "
                f"its linear layers are: {', '.join(linear)} (or use 'all-linear')") from None
        if new_ids:  # the Trainer calls save_pretrained, whose default ('auto') spots a resize
            # only by reading the base model's config.json from disk (none for a scratch model)
            peft_model.save_pretrained = functools.partial(peft_model.save_pretrained,
                                                           save_embedding_layers=True)
        return peft_model

    def load_checkpoint(self, model: Any, path: str) -> Any:
        """The adapter saved at ``path`` on the base ``model``. peft saves an adapter named
        other than ``default`` in a sub-folder named after it (``PeftModel.save_pretrained``,
        which the Trainer's ``save_model`` and checkpoints call), so that is where it is read."""
        from peft import PeftModel

        name = self.options.adapter_name
        folder = Path(path, name) if name != "default" else Path(path)
        return PeftModel.from_pretrained(model, str(folder), adapter_name=name)


def embedding_names(model: Any) -> list[str]:
    """Module names of ``model``'s input embeddings and output head (a classifier has none)."""
    layers = [model.get_input_embeddings(), model.get_output_embeddings()]
    return [name for name, module in model.named_modules()
            if any(module is layer for layer in layers)]


@hookimpl
def register_training_strategies(register):
    register(LoRA)
