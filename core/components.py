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
    """How the model is trained: which weights change, on which targets, with which loss.

    A strategy owns its method: the trainer (a ``transformers.Trainer`` subclass: its own, or
    one of TRL's), that trainer's arguments and its own options, the dataset layout and
    collator, the formats and tasks it accepts, and the metrics it logs per step. Core owns
    what every run needs, whatever the strategy, and applies it to the strategy's trainer
    (:mod:`tuneyard.core.run.train`): the arguments of ``training:``, registry recording and
    lifecycle hooks (a callback), stop and resume, atomic checkpoints with the tokenizer,
    evaluation under a forked RNG, telemetry and the launch on several processes.

    Attributes:
        task: the model head the strategy trains (passed to :meth:`ModelProvider.load`);
            ``None`` = the task of the run's ``dataset.format`` (e.g. ``full`` and ``lora``
            train a causal LM on ``instruction`` rows and a token classifier on ``tokens``
            rows).
        tasks: the tasks it can train (``None`` = any); a run whose format needs another is
            refused before anything loads.
        pack: concatenate tokenized rows into blocks of ``training.max_seq_len`` tokens
            (pre-training) instead of one padded row per example; the held-out rows the
            evaluators get are cut into blocks too.
        formats: row formats the strategy accepts (``None`` = any).
        saves: what its checkpoints hold, the registry's ``artifacts.kind``: ``model`` (a whole
            Hugging Face model folder) or ``adapter`` (adapter weights only).
        metrics: what its trainer logs per step besides ``loss``, ``learning_rate``,
            ``grad_norm`` and ``epoch`` (names as the trainer logs them, e.g. DPO's
            ``rewards/accuracies``): recorded in the registry's ``metrics`` table at each
            logged step (and ``eval_<name>`` after each ``training.eval_steps`` evaluation),
            drawn on the TUI's Run screen.
    """

    kind = "strategy"
    task: ClassVar[Task | None] = None
    tasks: ClassVar[tuple[Task, ...] | None] = None
    pack: ClassVar[bool] = False
    formats: ClassVar[tuple[str, ...] | None] = None
    saves: ClassVar[str] = "model"
    metrics: ClassVar[tuple[str, ...]] = ()

    def check(self, device: str) -> None:
        """Refuse a run this strategy cannot train, when the run is composed (before anything
        loads); ``device`` is the run's, ``cpu`` or ``cuda``. Default: accept every run.

        Raises:
            SpecError: the message starts with the option at fault
                (``strategy.options.qlora: …``) and says what would work.
        """

    def prepare(self, model: Any) -> Any:
        """Return the model to train: ``model`` itself, or a wrapper (e.g. a peft model).
        Called once, with torch's RNG seeded with ``training.seed``, before the model moves to
        its device and before the ``base`` evaluation."""
        return model

    def load_checkpoint(self, model: Any, path: str) -> Any:
        """Return the trained model saved at ``path`` by this strategy, given the base ``model``
        from the run's model provider. Default: a whole Hugging Face model folder."""
        return type(model).from_pretrained(path, dtype=model.dtype)

    def trainer_class(self) -> type:
        """The trainer: a ``transformers.Trainer`` subclass (default: ``Trainer`` itself). Core
        subclasses it once more (checkpoints, evaluation RNG) and builds it with ``model``,
        ``args`` (:meth:`training_arguments`), ``train_dataset`` and ``eval_dataset``
        (:meth:`dataset`), ``data_collator`` (:meth:`collator`), ``callbacks`` and
        :meth:`trainer_kwargs`. Import heavy modules here, not at module level."""
        from transformers import Trainer

        return Trainer

    def training_arguments(self, training: Any, **kwargs: Any) -> Any:
        """The trainer's arguments, given ``training:`` as ``TrainingArguments`` keywords
        (``output_dir``, ``max_steps``, ``learning_rate``, …; ``training`` is the run's
        :class:`~tuneyard.core.spec.TrainingSpec`, for values a strategy derives, e.g. TRL's
        ``max_length`` from ``max_seq_len``): an instance of the class the trainer expects,
        with the strategy's own options added (e.g. TRL's ``DPOConfig`` with ``beta``).
        Default: ``transformers.TrainingArguments(**kwargs)``."""
        from transformers import TrainingArguments

        return TrainingArguments(**kwargs)

    def trainer_kwargs(self, model: Any, tokenizer: Any) -> dict[str, Any]:
        """Keyword arguments of the trainer's constructor beyond core's, given the model to
        train (on its device) and the tokenizer (e.g. TRL's ``processing_class=tokenizer``, a
        frozen reference model). Default: none."""
        return {}

    def dataset(self, examples: list[Example], rows: list[dict[str, Any]], tokenizer: Any,
                max_seq_len: int) -> Any:
        """The dataset the trainer gets, called once for the training set and once for the
        held-out set (evaluated by the trainer every ``training.eval_steps``).

        Args:
            examples: the set's examples as text (all of them, in order).
            rows: the same tokenized for the run's task (see :class:`EvalContext`;
                examples that do not fit in ``max_seq_len`` dropped; blocks for ``pack``;
                several examples a row with ``training.packing``).
            tokenizer: the run's tokenizer.
            max_seq_len: ``training.max_seq_len``, tokens.

        Returns:
            What the trainer's ``train_dataset``/``eval_dataset`` takes (a list of rows or a
            ``datasets.Dataset``). Default: ``rows``.
        """
        return rows

    def collator(self, tokenizer: Any, padding: Any) -> Any:
        """The ``data_collator`` that makes training batches; ``padding`` is core's
        (:class:`~tuneyard.core.formats.PadCollator`: right padding, labels -100 on padding;
        rows with ``position_ids`` keep their documents apart). Default: ``padding``;
        ``None`` lets the trainer choose its own."""
        return padding


@dataclass
class Example:
    """One example as text: the model is given ``prompt`` and should produce ``completion``.

    For the ``text`` format ``prompt`` is empty. For ``label`` (sequence classification)
    ``prompt`` is the text and ``completion`` its label name. For ``tokens`` (token
    classification) ``words`` and ``tags`` are the row's words and their labels (same length);
    ``prompt`` and ``completion`` are the same joined by spaces, for display. For
    ``preference`` ``completion`` is the chosen answer and ``rejected`` the rejected one.
    """

    prompt: str
    completion: str
    words: list[str] | None = None
    tags: list[str] | None = None
    rejected: str | None = None


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
        max_seq_len: ``training.max_seq_len`` (tokens), for an evaluator that tokenizes
            examples itself as the run does (:func:`~tuneyard.core.formats.tokenize`).
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
    max_seq_len: int | None = None


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
        formats: the ``dataset.format``s whose examples it judges (``None`` = any), e.g. the
            ``preference`` evaluator needs rejected answers; another is refused likewise.
    """

    kind = "evaluator"
    tasks: ClassVar[tuple[Task, ...] | None] = None
    formats: ClassVar[tuple[str, ...] | None] = None

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
