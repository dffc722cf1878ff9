"""Model provider ``scratch``: a randomly initialised model for pre-training.

The architecture's config is built from small defaults (:data:`DEFAULTS`) updated with
``options.config``; the vocabulary size and the pad/bos/eos ids come from the tokenizer. The
weights are initialised by transformers' own ``_init_weights`` (normal, std
``initializer_range`` = 0.02) under ``torch.manual_seed(options.seed)``, so the same options give
the same weights; the global RNG state is left as it was.

The tokenizer is either loaded (``options.tokenizer``) or trained on the run's training texts
(``options.train_tokenizer``, see :func:`train_bpe`): a byte-level BPE as GPT-2's.
"""

from __future__ import annotations

import difflib
import logging
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, Literal

from pydantic import (
    BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator,
)

from tuneyard.core.components import ModelProvider, Task
from tuneyard.core.errors import TuneyardError
from tuneyard.core.hookspecs import hookimpl
from tuneyard.core.models import ensure_pad_token, locate

if TYPE_CHECKING:
    import torch

#: architecture → (task it trains, transformers config class, model class).
ARCHITECTURES = {
    "llama": ("causal-lm", "LlamaConfig", "LlamaForCausalLM"),
    "bert": ("masked-lm", "BertConfig", "BertForMaskedLM"),
}

#: Small defaults, overridden key by key by ``options.config``. bert is BERT-Mini (L=4, H=256,
#: 4 heads, FFN 4H; Turc et al. 2019, "Well-Read Students Learn Better"); llama uses the same
#: shape with a SwiGLU FFN of 3H (LLaMA, Touvron et al. 2023, uses ~8/3 H) and tied embeddings.
DEFAULTS: dict[str, dict[str, Any]] = {
    "llama": {"hidden_size": 256, "intermediate_size": 768, "num_hidden_layers": 4,
              "num_attention_heads": 4, "max_position_embeddings": 512,
              "tie_word_embeddings": True},
    "bert": {"hidden_size": 256, "intermediate_size": 1024, "num_hidden_layers": 4,
             "num_attention_heads": 4, "max_position_embeddings": 512},
}

#: Config keys taken from the tokenizer; setting them in ``options.config`` is an error.
FROM_TOKENIZER = ("vocab_size", "pad_token_id", "bos_token_id", "eos_token_id")

#: Special tokens of a trained tokenizer, per architecture (``PreTrainedTokenizerFast``
#: keyword → token); they take ids 0, 1, … in this order, before the 256 byte symbols.
#: llama: GPT-2's single ``<|endoftext|>`` (Radford et al. 2019) as bos, eos and pad (pad == eos;
#: the data pipeline builds labels from positions, see :mod:`tuneyard.core.formats`). No unk:
#: byte-level BPE encodes any text from its 256 byte symbols, so an unk row would never be used.
#: bert: BERT's ``[PAD] [UNK] [CLS] [SEP] [MASK]`` (Devlin et al. 2019); texts are wrapped as
#: ``[CLS] A [SEP]`` (pairs ``[CLS] A [SEP] B [SEP]``) and ``[MASK]`` is what masked-LM
#: pre-training substitutes. ``[UNK]`` is kept for tools that expect BERT's set; it is never
#: produced.
SPECIAL_TOKENS: dict[str, dict[str, str]] = {
    "llama": {"bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>",
              "pad_token": "<|endoftext|>"},
    "bert": {"pad_token": "[PAD]", "unk_token": "[UNK]", "cls_token": "[CLS]",
             "sep_token": "[SEP]", "mask_token": "[MASK]"},
}

#: Symbols of the byte-level alphabet, one per byte value (GPT-2's ``bytes_to_unicode``).
BYTE_ALPHABET = 256

log = logging.getLogger(__name__)


#: Config keys that must be positive integers (sizes and counts).
SIZE_KEYS = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
             "num_key_value_heads", "max_position_embeddings")


def _check_shape(config: dict[str, Any]) -> None:
    """Sizes are positive integers; attention heads split the hidden size, and key/value heads
    the attention heads.

    Raises:
        ValueError: naming the config key to change.
    """
    for key in SIZE_KEYS:
        value = config.get(key)
        if key in config and (type(value) is not int or value <= 0):
            raise ValueError(f"{key}: expected a positive integer, got {value!r}")
    hidden, heads = config["hidden_size"], config["num_attention_heads"]
    kv = config.get("num_key_value_heads") or heads
    if hidden % heads:
        raise ValueError(f"num_attention_heads: {heads} does not divide hidden_size {hidden}")
    if heads % kv:
        raise ValueError(f"num_key_value_heads: {kv} does not divide num_attention_heads {heads}")


def _specials(architecture: str) -> list[str]:
    """The distinct special tokens of ``architecture``, in id order."""
    return list(dict.fromkeys(SPECIAL_TOKENS[architecture].values()))


class TrainTokenizerOptions(BaseModel):
    """How to train the tokenizer on the corpus (``model.options.train_tokenizer``)."""

    model_config = ConfigDict(extra="forbid")

    vocab_size: int = Field(description=(
        "Tokens in the trained vocabulary, special tokens and the 256 byte symbols included "
        "(GPT-2: 50257). Fewer when the corpus runs out of pairs seen min_frequency times."
    ))
    min_frequency: int = Field(default=2, ge=1, description=(
        "Times a pair of symbols must occur in the corpus to be merged into a token."
    ))


class ScratchOptions(BaseModel):
    """Options of the ``scratch`` model provider."""

    model_config = ConfigDict(extra="forbid")

    architecture: Literal["llama", "bert"] = Field(default="llama", description=(
        "llama: decoder-only causal LM (LlamaForCausalLM, strategy pretrain-clm); "
        "bert: encoder masked LM (BertForMaskedLM), for a masked-LM strategy (issue #5)."
    ))
    config: dict[str, Any] = Field(default_factory=dict, description=(
        "transformers config keys overriding the defaults: hidden_size 256, "
        "num_hidden_layers 4, num_attention_heads 4, max_position_embeddings 512 (tokens), "
        "intermediate_size 768 (llama) / 1024 (bert); llama also tie_word_embeddings true "
        "(num_key_value_heads defaults to num_attention_heads). vocab_size and the "
        "pad/bos/eos ids come from the tokenizer."
    ))
    tokenizer: str | None = Field(default=None, description=(
        "Tokenizer folder, 'package:NAME/sub/folder', or a hub id already in the local HF "
        "cache; its length sets vocab_size. masked-lm needs a mask token. "
        "Set this or train_tokenizer."
    ))
    train_tokenizer: TrainTokenizerOptions | None = Field(default=None, description=(
        "Train a byte-level BPE tokenizer (as GPT-2's) on the run's training texts instead; "
        "its length sets vocab_size. Set this or tokenizer."
    ))
    seed: int = Field(default=0, description="torch.manual_seed for the weight init.")

    @field_validator("config")
    @classmethod
    def _valid_config(cls, config: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        """Checked with the spec, before a run exists: known keys, sizes, head shapes."""
        import transformers

        arch = info.data.get("architecture", "llama")
        _check_keys(config, getattr(transformers, ARCHITECTURES[arch][1])())
        _check_shape({**DEFAULTS[arch], **config})
        return config

    @model_validator(mode="after")
    def _one_tokenizer(self) -> ScratchOptions:
        """Exactly one tokenizer source; a trained vocabulary has room for merges."""
        if (self.tokenizer is None) == (self.train_tokenizer is None):
            raise ValueError(
                "set exactly one of tokenizer (a tokenizer to load) and train_tokenizer "
                "(train one on the corpus)"
            )
        if self.train_tokenizer is not None:
            floor = BYTE_ALPHABET + len(_specials(self.architecture))
            size = self.train_tokenizer.vocab_size
            if size <= floor:
                raise ValueError(
                    f"train_tokenizer.vocab_size: {size} leaves no room for merges; it must "
                    f"exceed {floor} ({BYTE_ALPHABET} byte symbols and {self.architecture}'s "
                    f"special tokens: {', '.join(_specials(self.architecture))})"
                )
        return self


class ScratchModel(ModelProvider):
    """A model with random weights, shaped by a config, for pre-training."""

    name = "scratch"
    description = "random init from a small config (llama or bert), for pre-training"
    Options = ScratchOptions
    wants_corpus = True  # read only with ``train_tokenizer``

    def load(self, *, task: Task, dtype: torch.dtype,
             corpus: Callable[[], Iterator[str]] | None = None, **kwargs: Any) -> tuple[Any, Any]:
        """Build the model for ``task`` in ``dtype`` on CPU, and load or train the tokenizer.

        Args:
            task: ``causal-lm`` (llama) or ``masked-lm`` (bert).
            dtype: parameter dtype, e.g. ``torch.float32``.
            corpus: returns a fresh iterator over the run's training texts; read (once) only
                when ``train_tokenizer`` is set.

        Raises:
            TuneyardError: ``model.options.architecture`` does not train ``task``,
                ``model.options.config`` has an unknown or tokenizer-owned key,
                ``model.options.tokenizer`` cannot be found offline or lacks a needed token, or
                ``model.options.train_tokenizer`` is set and no ``corpus`` was given.
        """
        import torch
        import transformers

        arch = self.options.architecture
        arch_task, config_name, model_name = ARCHITECTURES[arch]
        if arch_task != task:
            valid = next(a for a, (t, _, _) in ARCHITECTURES.items() if t == task)
            raise TuneyardError(
                f"model.options.architecture: '{arch}' builds a {arch_task} model but the "
                f"strategy trains {task}; set architecture: {valid}"
            )
        config_cls = getattr(transformers, config_name)
        kwargs = {**DEFAULTS[arch], **self.options.config}
        train = self.options.train_tokenizer
        if train is None:
            tokenizer = self.load_tokenizer(task)
        elif corpus is None:
            raise TuneyardError(
                "model.options.train_tokenizer: training a tokenizer needs the run's training "
                "texts, but load() was given no corpus"
            )
        else:
            tokenizer = train_bpe(corpus(), arch, train.vocab_size, train.min_frequency)
        config = config_cls(
            **kwargs, vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id,
            bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        )
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.options.seed)
            try:
                model = getattr(transformers, model_name)(config)
            except (ValueError, TypeError) as exc:  # e.g. hidden_size not divisible by heads
                raise TuneyardError(f"model.options.config: {exc}") from exc
        return model.to(dtype), tokenizer

    def load_tokenizer(self, task: Task) -> Any:
        """The tokenizer of ``options.tokenizer``, with a pad token (pad == eos when none).

        Raises:
            TuneyardError: it cannot be found offline, or ``task`` is ``masked-lm`` and it has no
                mask token.
        """
        from transformers import AutoTokenizer

        field = "model.options.tokenizer"
        source = locate(self.options.tokenizer, field)
        try:
            tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=True)
        except (OSError, ValueError) as exc:
            raise TuneyardError(f"{field}: cannot load a tokenizer from '{source}': {exc}") from exc
        if task == "masked-lm" and tokenizer.mask_token is None:
            raise TuneyardError(
                f"{field}: '{source}' has no mask token, which masked-lm pre-training needs "
                "(use a BERT-style tokenizer with [MASK])"
            )
        return ensure_pad_token(tokenizer)

    def model_id(self) -> str:
        """``scratch-<architecture>-<layers>x<hidden>``, e.g. ``scratch-llama-4x256``."""
        config = {**DEFAULTS[self.options.architecture], **self.options.config}
        return (f"scratch-{self.options.architecture}-"
                f"{config['num_hidden_layers']}x{config['hidden_size']}")


def train_bpe(texts: Iterable[str], architecture: str, vocab_size: int,
              min_frequency: int = 2) -> Any:
    """Train a byte-level BPE tokenizer on ``texts``, with the special tokens of
    ``architecture`` (:data:`SPECIAL_TOKENS`).

    BPE (Sennrich et al. 2016, "Neural Machine Translation of Rare Words with Subword Units")
    repeatedly merges the most frequent adjacent pair of symbols; byte-level BPE (GPT-2, Radford
    et al. 2019, "Language Models are Unsupervised Multitask Learners"; also RoBERTa's masked LM,
    Liu et al. 2019) starts from the 256 byte values, so any text is encoded without unknown
    tokens. Texts are split with GPT-2's regex, without a prefix space. Built as in the
    ``tokenizers`` docs ("Training from memory"). The result is deterministic: the trainer
    breaks count ties by pair, so the same texts give the same vocabulary and merges.

    Args:
        texts: training texts (read once).
        architecture: ``llama`` or ``bert``; bert's tokenizer wraps texts in ``[CLS] … [SEP]``.
        vocab_size: tokens in the vocabulary, specials and 256 byte symbols included; fewer
            when no pair left occurs ``min_frequency`` times (logged as a warning).
        min_frequency: occurrences a pair needs to be merged.

    Returns:
        A ``transformers.PreTrainedTokenizerFast`` that survives ``save_pretrained`` +
        ``AutoTokenizer.from_pretrained``.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    specials = _specials(architecture)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    if architecture == "bert":
        ids = [(t, tok.token_to_id(t)) for t in ("[CLS]", "[SEP]")]
        tok.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=ids)
    if tok.get_vocab_size() < vocab_size:
        log.warning("trained tokenizer has %d tokens, fewer than train_tokenizer.vocab_size %d: "
                    "no pair left occurs min_frequency (%d) times in the corpus",
                    tok.get_vocab_size(), vocab_size, min_frequency)
    return PreTrainedTokenizerFast(tokenizer_object=tok, **SPECIAL_TOKENS[architecture])


def _check_keys(overrides: dict[str, Any], default: Any) -> None:
    """Reject keys the config class does not know (transformers would silently keep them).

    Raises:
        ValueError: naming the key, with the closest known one.
    """
    for key in overrides:
        if key in FROM_TOKENIZER:
            raise ValueError(f"{key}: set from the tokenizer (model.options.tokenizer); remove it")
        if not hasattr(default, key):
            known = [k for k in vars(default) if not k.startswith("_")]
            close = difflib.get_close_matches(key, known, n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise ValueError(f"{key}: not a {type(default).__name__} key{hint}")


@hookimpl
def register_model_providers(register):
    register(ScratchModel)
