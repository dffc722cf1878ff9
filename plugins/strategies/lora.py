"""Strategy ``lora``: low-rank adapters through peft (Hu et al. 2021, arXiv:2106.09685)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from tuneyard.core.components import TrainingStrategy
from tuneyard.core.errors import TuneyardError
from tuneyard.core.hookspecs import hookimpl


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
    for a classifier they also hold its head.
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
        config = LoraConfig(
            r=o.r, lora_alpha=o.alpha, lora_dropout=o.dropout, target_modules=o.target_modules,
            task_type=task_type,
        )
        try:
            return get_peft_model(model, config, adapter_name=o.adapter_name)
        except ValueError as exc:
            if "target_modules" not in str(exc) and "Target modules" not in str(exc):
                raise
            linear = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules()
                             if isinstance(m, torch.nn.Linear)})
            raise TuneyardError(
                f"strategy.options.target_modules: {o.target_modules} not found in the model; "
                f"its linear layers are: {', '.join(linear)} (or use 'all-linear')") from None

    def load_checkpoint(self, model: Any, path: str) -> Any:
        from peft import PeftModel

        return PeftModel.from_pretrained(model, path, adapter_name=self.options.adapter_name)


@hookimpl
def register_training_strategies(register):
    register(LoRA)
