"""Loading transformers models and tokenizers offline: shared by model providers.

Nothing is ever downloaded: a hub id is loaded only when it is already in the local Hugging Face
cache (``HF_HOME``, default ``~/.cache/huggingface``), with ``local_files_only=True``.
Third-party model providers may use these helpers too.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from tuneyard.core.components import Task
from tuneyard.core.errors import SpecError, TuneyardError
from tuneyard.core.paths import resolve_path

if TYPE_CHECKING:
    import torch

#: transformers auto class per task.
AUTO_CLASSES = {"causal-lm": "AutoModelForCausalLM", "masked-lm": "AutoModelForMaskedLM",
                "token-classification": "AutoModelForTokenClassification",
                "sequence-classification": "AutoModelForSequenceClassification"}


def locate(value: str, field: str, revision: str | None = None) -> str:
    """Find ``value`` offline: a folder (plain or ``package:`` path) or a cached hub id.

    A value that exists on disk is a folder. A ``package:`` path, an absolute or ``~``/``.``
    path, or anything that is not a valid hub id must be an existing folder. Otherwise it is
    a hub id (``org/name``) that must already hold a ``config.json`` or ``tokenizer_config.json``
    in the local HF cache (checked with ``huggingface_hub.try_to_load_from_cache``).

    Args:
        value: what the user wrote.
        field: the spec key that holds it, named in errors (e.g. ``model.options.path``).
        revision: hub revision (branch, tag or commit) for a hub id; ``None`` = ``main``.

    Returns:
        The folder as a string, or the hub id unchanged.

    Raises:
        TuneyardError: the folder does not exist, the package is not installed, or the id is
            not in the local HF cache.
    """
    path = resolve_path(value, field)
    if path.exists():
        if not path.is_dir():
            raise TuneyardError(f"{field}: '{path}' is a file, not a model folder")
        return str(path)
    if looks_like_path(value):
        raise TuneyardError(f"{field}: folder '{path}' does not exist")
    from huggingface_hub import try_to_load_from_cache

    for filename in ("config.json", "tokenizer_config.json"):
        if isinstance(try_to_load_from_cache(value, filename, revision=revision), str):
            return value
    raise TuneyardError(
        f"{field}: '{value}' is neither an existing folder nor a model in the local HF cache "
        "(tuneyard works offline and never downloads; give a folder, or fetch it once with "
        f"`hf download {value}`)"
    )


def looks_like_path(value: str) -> bool:
    """Whether ``value`` can only be a filesystem path (not a hub id like ``org/name``)."""
    if value.startswith(("package:", "/", "~", ".")) or "\\" in value or value.count("/") > 1:
        return True
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(value)
    except HFValidationError:
        return True
    return False


def ensure_pad_token(tokenizer: Any) -> Any:
    """Give ``tokenizer`` a pad token: its own, else its EOS token (pad == eos then).

    With pad == eos the data pipeline must build labels from the attention mask, not from
    ``input_ids == pad_token_id``, so the real EOS label is kept (a known trap; see DESIGN.md).

    Raises:
        TuneyardError: the tokenizer has neither a pad nor an EOS token.
    """
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise TuneyardError(
                f"tokenizer {tokenizer.name_or_path!r} has neither a pad nor an eos token"
            )
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


#: ``dataset.chat_template: chatml``: the ChatML layout (OpenAI; the example template of the
#: transformers chat-templating guide, as SmolLM2's and Qwen's tokenizers use), without a
#: default system message.
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
CHATML_TOKENS = ("<|im_start|>", "<|im_end|>")
_ADDED_TOKENS = "tuneyard_added_token_ids"  # attribute of a model whose vocabulary grew


def set_chat_template(model: Any, tokenizer: Any, template: str | None) -> None:
    """Apply ``dataset.chat_template`` to a freshly loaded ``(model, tokenizer)``: nothing for
    ``None``; ``chatml`` sets :data:`CHATML_TEMPLATE` and adds the tokens of
    :data:`CHATML_TOKENS` the tokenizer lacks (see :func:`add_special_tokens`); any other
    value is a Jinja chat template, set as it is.

    Deterministic given torch's RNG state (the new embedding rows are drawn from it), and the
    same tokens get the same ids every time, so a run's checkpoint loads onto a base model
    given the same treatment.

    Raises:
        SpecError: the template does not render a user message (Jinja syntax or runtime
            error), naming ``dataset.chat_template``.
    """
    import jinja2

    if template is None:
        return
    if template == "chatml":
        add_special_tokens(model, tokenizer, [t for t in CHATML_TOKENS
                                              if t not in tokenizer.get_vocab()])
        template = CHATML_TEMPLATE
    tokenizer.chat_template = template
    try:
        tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False,
                                      add_generation_prompt=True)
    except jinja2.TemplateError as exc:
        raise SpecError(f"dataset.chat_template: the Jinja template does not render a user "
                        f"message: {type(exc).__name__}: {exc}") from None


def add_special_tokens(model: Any, tokenizer: Any, tokens: list[str]) -> list[int]:
    """Add ``tokens`` to ``tokenizer`` as special tokens (never split; dropped by
    ``decode(skip_special_tokens=True)``) and grow ``model``'s input and output embeddings to
    ``len(tokenizer)`` rows (``resize_token_embeddings``; new rows drawn around the mean of
    the old ones, transformers' ``mean_resizing``, Hewitt 2021). The new ids are remembered on
    the model for :func:`added_token_ids`.

    Returns:
        The ids of the added tokens (empty when ``tokens`` is).
    """
    if not tokens:
        return []
    tokenizer.add_tokens(list(tokens), special_tokens=True)
    model.resize_token_embeddings(len(tokenizer))
    ids = added_token_ids(model) + tokenizer.convert_tokens_to_ids(list(tokens))
    setattr(model, _ADDED_TOKENS, ids)
    return ids


def keep_added_tokens(source: Any, target: Any) -> None:
    """Remember on ``target`` (``source`` reloaded, e.g. quantised) the ids
    :func:`add_special_tokens` added to ``source``'s vocabulary."""
    if added_token_ids(source):
        setattr(target, _ADDED_TOKENS, added_token_ids(source))


def added_token_ids(model: Any) -> list[int]:
    """Ids of the tokens :func:`add_special_tokens` added to ``model``'s vocabulary: embedding
    rows no base checkpoint holds, which a strategy that freezes the base model must train and
    save (the ``lora`` strategy does)."""
    return list(getattr(model, _ADDED_TOKENS, []))


def load_pretrained(
    source: str, *, task: Task, dtype: torch.dtype, field: str, revision: str | None = None,
    trust_remote_code: bool = False, labels: list[str] | None = None,
) -> tuple[Any, Any]:
    """Load model and tokenizer from a folder or cached hub id, offline, on CPU.

    Args:
        source: a folder or hub id, as returned by :func:`locate`.
        task: the head, see :data:`AUTO_CLASSES`.
        dtype: parameter dtype, e.g. ``torch.float32``.
        field: the spec key named in errors.
        revision: hub revision; ignored for folders.
        trust_remote_code: allow the model's own Python code (``auto_map``) to run.
        labels: class names of a label task: the head gets ``len(labels)`` outputs and the
            config ``id2label``/``label2id``; a head of another size in the folder is replaced
            by a new one (``ignore_mismatched_sizes``).

    Returns:
        ``(model, tokenizer)``; the tokenizer has a pad token (see :func:`ensure_pad_token`).

    Raises:
        TuneyardError: the folder has no ``config.json`` or no loadable weights/tokenizer, or
            the architecture has no head for ``task``.
    """
    import transformers

    if Path(source).is_dir() and not (Path(source) / "config.json").is_file():
        raise TuneyardError(
            f"{field}: folder '{source}' has no config.json (not a transformers model folder)"
        )
    auto = getattr(transformers, AUTO_CLASSES[task])
    kwargs = {"revision": revision, "trust_remote_code": trust_remote_code,
              "local_files_only": True}
    head = {} if labels is None else {
        "num_labels": len(labels), "id2label": dict(enumerate(labels)),
        "label2id": {name: i for i, name in enumerate(labels)}, "ignore_mismatched_sizes": True}
    try:
        model = auto.from_pretrained(source, dtype=dtype, **head, **kwargs)
        tokenizer = transformers.AutoTokenizer.from_pretrained(source, **kwargs)
    except ValueError as exc:
        if "Unrecognized configuration class" not in str(exc):
            raise TuneyardError(f"{field}: cannot load '{source}': {exc}") from exc
        kind = transformers.AutoConfig.from_pretrained(source, **kwargs).model_type
        raise TuneyardError(
            f"{field}: '{source}' is a {kind} model, which has no {task} head "
            f"({AUTO_CLASSES[task]}); choose a {task} model or a strategy for this one"
        ) from None
    except OSError as exc:  # missing config.json / weights / tokenizer files
        raise TuneyardError(f"{field}: cannot load '{source}': {exc}") from exc
    tokenizer = ensure_pad_token(tokenizer)
    if task == "sequence-classification" and model.config.pad_token_id is None:
        # decoder sequence classifiers (e.g. LlamaForSequenceClassification) find each row's
        # last real token by the pad id
        model.config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer
