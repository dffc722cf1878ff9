"""Strategy ``lora``: low-rank adapters through peft (Hu et al. 2021, arXiv:2106.09685), with
peft's variants: DoRA, rsLoRA, PiSSA/OLoRA initialisation, and QLoRA's 4-bit base.

The adapter helpers (:func:`add_adapter`, :func:`load_adapter`, :func:`check_adapter`) serve
every strategy that trains LoRA adapters (``dpo`` and ``orpo`` with ``weights: lora``)."""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from tuneyard.core.components import TrainingStrategy
from tuneyard.core.errors import SpecError, TuneyardError
from tuneyard.core.hookspecs import hookimpl
from tuneyard.core.models import added_token_ids, keep_added_tokens


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
    use_dora: bool = Field(
        False, description="DoRA (Liu et al. 2024, arXiv:2402.09353): the update is split into "
        "a trained magnitude and a LoRA direction (peft use_dora); slower steps")
    use_rslora: bool = Field(
        False, description="rank-stabilised LoRA (Kalajdzievski 2023, arXiv:2312.03732): scale "
        "by alpha / sqrt(r) instead of alpha / r, for high ranks (peft use_rslora)")
    init: Literal["default", "gaussian", "pissa", "olora"] = Field(
        "default", description="adapter initialisation (peft init_lora_weights): default = A "
        "Kaiming-uniform, B zero; gaussian = A normal, B zero; pissa = the principal singular "
        "directions of each weight (Meng et al. 2024), olora = its QR factors (Büyükakyüz "
        "2024), both taken out of the base weight so the model starts unchanged")
    modules_to_save: list[str] | None = Field(
        None, description="modules trained in full and saved with the adapter, e.g. [lm_head] "
        "(a classifier's head is added already)")
    qlora: bool = Field(
        False, description="QLoRA (Dettmers et al. 2023): the base model in 4-bit NF4 "
        "(bitsandbytes, double quantisation), bf16 compute, adapters on top; needs a CUDA GPU")


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

    def check(self, device: str) -> None:
        check_adapter(self.options, device)

    def prepare(self, model: Any) -> Any:
        return add_adapter(model, self.options)

    def load_checkpoint(self, model: Any, path: str) -> Any:
        return load_adapter(model, path, self.options)


def check_adapter(o: LoraOptions, device: str) -> None:
    """Refuse LoRA options that cannot run on ``device``, before anything loads.

    Raises:
        SpecError: ``qlora`` without a CUDA device or without bitsandbytes, or with an
            ``init`` that rewrites the base weights; naming the option.
    """
    if not o.qlora:
        return
    if device != "cuda":
        raise SpecError(f"strategy.options.qlora: a 4-bit QLoRA base needs a CUDA GPU "
                        f"(bitsandbytes' NF4 kernels); this run's device is {device} (set "
                        "qlora: false, or run where training.device can be cuda)")
    if importlib.util.find_spec("bitsandbytes") is None:
        raise SpecError("strategy.options.qlora: needs the package bitsandbytes, which is not "
                        "installed (pip install 'tuneyard[qlora]' or pip install bitsandbytes)")
    if o.init in ("pissa", "olora"):
        raise SpecError(f"strategy.options.init: {o.init} takes the adapter out of the base "
                        "weights, which a 4-bit base cannot hold; use default or gaussian "
                        "with qlora")


def add_adapter(model: Any, o: LoraOptions) -> Any:
    """``model`` (QLoRA: reloaded in 4-bit, :func:`quantized`) wrapped by peft with a fresh LoRA
    adapter of options ``o``, the base weights frozen.

    Raises:
        TuneyardError: ``target_modules`` names no module of the model (lists its linear
            layers), or an entry of ``modules_to_save`` names none.
    """
    import torch
    from peft import LoraConfig, get_peft_model

    if o.qlora:
        model = quantized(model)
    model_class = type(model).__name__
    task_type = next((t for suffix, t in PEFT_TASK_TYPES.items()
                      if model_class.endswith(suffix)), None)
    new_ids = added_token_ids(model)
    config = LoraConfig(
        r=o.r, lora_alpha=o.alpha, lora_dropout=o.dropout, target_modules=o.target_modules,
        task_type=task_type, use_dora=o.use_dora, use_rslora=o.use_rslora,
        init_lora_weights=True if o.init == "default" else o.init,
        modules_to_save=o.modules_to_save, trainable_token_indices={
            name: new_ids for name in embedding_names(model)} if new_ids else None,
    )
    names = [n for n, _ in model.named_modules()]
    for wanted in o.modules_to_save or ():
        if not any(n == wanted or n.endswith(f".{wanted}") for n in names):
            raise TuneyardError(
                f"strategy.options.modules_to_save: '{wanted}' names no module of the model "
                "(a module's name or its last parts, e.g. norm, lm_head, "
                "model.layers.0.mlp)")
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


def load_adapter(model: Any, path: str, o: LoraOptions) -> Any:
    """The adapter saved at ``path`` on the base ``model``. peft saves an adapter named other
    than ``default`` in a sub-folder named after it (``PeftModel.save_pretrained``, which the
    Trainer's ``save_model`` and checkpoints call), so that is where it is read. A PiSSA or
    OLoRA adapter is relative to the base weights with its initial part taken out: peft takes
    it out again as it loads (the same decomposition of the same weights). A QLoRA adapter
    loads on the full-precision base (what it was trained to correct, dequantised)."""
    from peft import PeftModel

    folder = Path(path, o.adapter_name) if o.adapter_name != "default" else Path(path)
    return PeftModel.from_pretrained(model, str(folder), adapter_name=o.adapter_name)


def quantized(model: Any) -> Any:
    """``model`` reloaded with its linear layers in 4-bit NF4, double-quantised, computing in
    bf16 (QLoRA's recipe, Dettmers et al. 2023, arXiv:2305.14314; transformers'
    ``BitsAndBytesConfig``), on the current CUDA device, its other weights in fp32 and ready for
    adapters (peft ``prepare_model_for_kbit_training``). The model is saved to a temporary
    folder and loaded through transformers' own quantisation path."""
    import tempfile

    import torch
    from peft import prepare_model_for_kbit_training
    from transformers import BitsAndBytesConfig

    config = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                bnb_4bit_use_double_quant=True,
                                bnb_4bit_compute_dtype=torch.bfloat16)
    with tempfile.TemporaryDirectory() as folder:
        model.save_pretrained(folder)
        loaded = type(model).from_pretrained(folder, quantization_config=config,
                                             dtype=torch.bfloat16,
                                             device_map={"": torch.cuda.current_device()})
    keep_added_tokens(model, loaded)
    loaded.config.use_cache = False
    return prepare_model_for_kbit_training(loaded, use_gradient_checkpointing=False)


def embedding_names(model: Any) -> list[str]:
    """Module names of ``model``'s input embeddings and output head (a classifier has none)."""
    layers = [model.get_input_embeddings(), model.get_output_embeddings()]
    return [name for name, module in model.named_modules()
            if any(module is layer for layer in layers)]


@hookimpl
def register_training_strategies(register):
    register(LoRA)
