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

Task = Literal["causal-lm", "masked-lm"]


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
    """Where a model and its tokenizer come from."""

    kind = "model-provider"

    def load(self, *, task: Task, dtype: torch.dtype) -> tuple[Any, Any]:
        """Load the model for ``task`` in ``dtype`` on CPU, and its tokenizer.

        Returns:
            ``(model, tokenizer)``: a transformers ``PreTrainedModel`` (``AutoModelForCausalLM``
            for ``causal-lm``, ``AutoModelForMaskedLM`` for ``masked-lm``) and a tokenizer with
            ``pad_token`` set (to ``eos_token`` when the model has none).

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
        task: the model head the strategy trains (passed to :meth:`ModelProvider.load`).
        pack: concatenate tokenized rows into blocks of ``training.max_seq_len`` tokens
            (pre-training) instead of one padded row per example.
        formats: row formats the strategy accepts (``None`` = any).
        saves: what its checkpoints hold, the registry's ``artifacts.kind``: ``model`` (a whole
            Hugging Face model folder) or ``adapter`` (adapter weights only).
    """

    kind = "strategy"
    task: ClassVar[Task] = "causal-lm"
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
    """One held-out example as text: the model is given ``prompt`` and should produce
    ``completion`` (for the ``text`` format ``prompt`` is empty)."""

    prompt: str
    completion: str


@dataclass
class EvalContext:
    """What an evaluator gets.

    Attributes:
        model: the model under evaluation, in eval mode, on ``device``.
        tokenizer: its tokenizer.
        examples: held-out examples as text (prompt, reference completion).
        eval_dataset: the same examples tokenized: ``input_ids`` and ``labels`` lists of ints,
            ``labels`` = -100 where no loss is taken (prompt tokens, padding).
        collator: pads a list of ``eval_dataset`` rows into a batch of ``[batch, seq_len]``
            int64 tensors (right padding).
        device: where the model lives.
        batch_size: examples per forward pass.
    """

    model: Any
    tokenizer: Any
    examples: list[Example]
    eval_dataset: Any
    collator: Any
    device: Any
    batch_size: int = 8


@dataclass
class EvalResult:
    """Metrics (name → value, floats) and optional per-example details (JSON-able dicts)."""

    metrics: dict[str, float]
    details: list[dict[str, Any]] = field(default_factory=list)


class Evaluator(Component):
    """Judges a model on the held-out examples."""

    kind = "evaluator"

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
