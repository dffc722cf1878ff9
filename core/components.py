"""Base types of the components plugins provide.

A plugin registers component *classes* (not instances) through a registration hook; the core
validates each one as it arrives (see :mod:`tuneyard.core.plugins`) and instantiates it with its
validated options when a run needs it. Nothing here imports torch: heavy imports happen inside
methods, so ``tuneyard --help`` stays fast.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict

if TYPE_CHECKING:
    import datasets
    import torch

#: The kinds of component, in the order a run uses them; also the registry's ``components.kind``.
KINDS = ("dataset-source", "model-provider", "strategy", "evaluator", "device-monitor")

Task = Literal["causal-lm", "masked-lm", "token-classification", "sequence-classification"]
"""What a model is trained to predict, which sets its head (transformers auto class):
``causal-lm`` the next token, ``masked-lm`` masked tokens, ``token-classification`` one label
per word (NER), ``sequence-classification`` one label per text."""

#: Tasks whose model head needs the run's label names (``labels=`` of :meth:`ModelProvider.load`).
LABEL_TASKS = ("token-classification", "sequence-classification")


class NoOptions(BaseModel):
    """Options model of a component that takes none."""

    model_config = ConfigDict(extra="forbid")


class Component:
    """Common part of every component.

    Subclasses set ``name`` (unique within their kind, lower-case with dashes), ``description``
    (one line, shown by ``tuneyard plugins list`` and the TUI) and ``Options`` (a pydantic model
    with ``extra="forbid"``; its fields are the keys of ``options:`` in the run spec).
    """

    kind: ClassVar[str]
    name: ClassVar[str]
    description: ClassVar[str] = ""
    Options: ClassVar[type[BaseModel]] = NoOptions

    def __init__(self, options: BaseModel) -> None:
        self.options = options


class DatasetSource(Component):
    """Where rows come from (local files, a hub cache, a corpus shipped by a package)."""

    kind = "dataset-source"

    def load(self) -> datasets.Dataset:
        """Return every row as a ``datasets.Dataset`` (one column per field, strings or lists).

        Raises:
            DataError: the data is missing or malformed; the message names the file and line.
        """
        raise NotImplementedError


class ModelProvider(Component):
    """Where a model and its tokenizer come from.

    Attributes:
        tasks: the tasks it can build a model for; a run whose strategy and format need another
            task is refused before anything loads.
        wants_corpus: :meth:`load` is also given ``corpus=``, the training texts (e.g. to train
            a tokenizer on them).
    """

    kind = "model-provider"
    tasks: ClassVar[tuple[Task, ...]] = ("causal-lm", "masked-lm")
    wants_corpus: ClassVar[bool] = False

    def load(self, *, task: Task, dtype: torch.dtype, **kwargs: Any) -> tuple[Any, Any]:
        """Load the model for ``task`` in ``dtype`` on CPU, and its tokenizer.

        Keyword arguments given only to providers that ask for them:
            labels (list[str]): for a task of :data:`LABEL_TASKS`, the label names; class id
                ``i`` is ``labels[i]`` (set ``num_labels``, ``id2label`` and ``label2id`` of the
                model config from it).
            corpus (Callable[[], Iterator[str]]): with ``wants_corpus``, a function returning a
                fresh iterator over the training texts (held-out rows excluded).

        Returns:
            ``(model, tokenizer)``: a transformers ``PreTrainedModel`` (``AutoModelForCausalLM``
            for ``causal-lm``, ``AutoModelForMaskedLM`` for ``masked-lm``,
            ``AutoModelForTokenClassification`` / ``AutoModelForSequenceClassification`` for the
            label tasks) and a tokenizer with ``pad_token`` set (to ``eos_token`` when the model
            has none).

        Raises:
            TuneyardError: the model cannot be found offline; the message says where it looked.
        """
        raise NotImplementedError

    def model_id(self) -> str:
        """A short human name of the base model, stored as ``runs.base_model``."""
        raise NotImplementedError


class TrainingStrategy(Component):
    """How the model is trained: which weights change, and on which targets.

    Attributes:
        task: the model head the strategy trains (passed to :meth:`ModelProvider.load`);
            ``None`` = the task of the run's ``dataset.format`` (e.g. ``full`` and ``lora``
            train a causal LM on ``instruction`` rows and a token classifier on ``tokens``
            rows).
        pack: concatenate tokenized rows into blocks of ``training.max_seq_len`` tokens
            (pre-training) instead of one padded row per example.
        formats: row formats the strategy accepts (``None`` = any).
        saves: what its checkpoints hold, the registry's ``artifacts.kind``: ``model`` (a whole
            Hugging Face model folder) or ``adapter`` (adapter weights only).
    """

    kind = "strategy"
    task: ClassVar[Task | None] = None
    pack: ClassVar[bool] = False
    formats: ClassVar[tuple[str, ...] | None] = None
    saves: ClassVar[str] = "model"

    def prepare(self, model: Any) -> Any:
        """Return the model to train: ``model`` itself, or a wrapper (e.g. a peft model)."""
        return model

    def load_checkpoint(self, model: Any, path: str) -> Any:
        """Return the trained model saved at ``path`` by this strategy, given the base ``model``
        from the run's model provider. Default: a whole Hugging Face model folder."""
        return type(model).from_pretrained(path, dtype=model.dtype)


@dataclass
class Example:
    """One example as text: the model is given ``prompt`` and should produce ``completion``.

    For the ``text`` format ``prompt`` is empty. For ``label`` (sequence classification)
    ``prompt`` is the text and ``completion`` its label name. For ``tokens`` (token
    classification) ``words`` and ``tags`` are the row's words and their labels (same length);
    ``prompt`` and ``completion`` are the same joined by spaces, for display.
    """

    prompt: str
    completion: str
    words: list[str] | None = None
    tags: list[str] | None = None


@dataclass
class EvalContext:
    """What an evaluator gets.

    Attributes:
        model: the model under evaluation, in eval mode, on ``device``; its
            ``config.use_cache`` is off, so blocks' ``position_ids`` keep documents apart.
        tokenizer: its tokenizer.
        examples: held-out examples as text (prompt, reference completion).
        eval_dataset: the same examples tokenized, one row each (for a packing strategy, the
            held-out text cut into blocks as the training text is, causal-LM blocks with
            ``position_ids``): ``input_ids`` (list of int) and ``labels``. By task:
            ``causal-lm`` labels are the ids where the loss is taken and -100 elsewhere (prompt
            tokens); ``masked-lm`` labels are the ids,
            -100 on special tokens (nothing is masked yet); ``token-classification`` labels are
            the class id on the first sub-token of each word and -100 on the rest and on
            special tokens; ``sequence-classification`` ``labels`` is one int, the class id.
        collator: pads a list of ``eval_dataset`` rows into a batch: ``input_ids``,
            ``attention_mask`` and ``labels`` int64 tensors ``[batch, seq_len]`` (right
            padding, labels -100 on padding), except for ``sequence-classification``, whose
            ``labels`` is ``[batch]``, and causal-LM blocks, stacked with ``position_ids``
            instead of ``attention_mask``. Pass the model every key but ``labels``.
        device: where the model lives.
        batch_size: examples per forward pass.
        task: what the model predicts (its head).
        label_names: for the label tasks, class id ``i`` is ``label_names[i]``; else ``None``.
    """

    model: Any
    tokenizer: Any
    examples: list[Example]
    eval_dataset: Any
    collator: Any
    device: Any
    batch_size: int = 8
    task: Task = "causal-lm"
    label_names: list[str] | None = None


@dataclass
class EvalResult:
    """Metrics (name → value, floats) and optional per-example details (JSON-able dicts)."""

    metrics: dict[str, float]
    details: list[dict[str, Any]] = field(default_factory=list)


class Evaluator(Component):
    """Judges a model on the held-out examples.

    Attributes:
        tasks: the tasks it can judge (``None`` = any); a run listing it for another task is
            refused before anything loads.
    """

    kind = "evaluator"
    tasks: ClassVar[tuple[Task, ...] | None] = None

    def evaluate(self, ctx: EvalContext) -> EvalResult:
        """Compute metrics on ``ctx``; must not change the model's weights."""
        raise NotImplementedError


@dataclass
class DeviceSample:
    """One telemetry reading of one device. Units in the names; ``None`` = not available."""

    device: str
    util_pct: float | None = None
    mem_bytes: int | None = None
    mem_total_bytes: int | None = None
    power_w: float | None = None
    temp_c: float | None = None


class DeviceMonitor(Component):
    """Reads utilisation, memory, power and temperature of the devices it knows."""

    kind = "device-monitor"

    def sample(self) -> list[DeviceSample]:
        """One reading per device; an empty list when the device kind is absent."""
        raise NotImplementedError


BASES: dict[str, type[Component]] = {
    "dataset-source": DatasetSource,
    "model-provider": ModelProvider,
    "strategy": TrainingStrategy,
    "evaluator": Evaluator,
    "device-monitor": DeviceMonitor,
}
