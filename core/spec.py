"""The run spec: the YAML a run is composed from, validated with pydantic.

Each component's ``options`` are validated by that component's own ``Options`` model once the
component is resolved (:func:`resolve`). Errors name the dotted key (``strategy.options.r``) and,
for a YAML file, its line.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import Any, Literal, get_args

import yaml
from pydantic import (BaseModel, ConfigDict, Field, PrivateAttr, ValidationError,
                      field_validator, model_serializer, model_validator)

from tuneyard.core.errors import SpecError
from tuneyard.core.formats import FIELDS, FORMAT_TASKS


#: ``training.optim``: the optimizers of transformers' ``OptimizerNames`` (5.x) that take no
#: other argument than TrainingArguments' usual ones (no GaLore/APOLLO target modules) and run
#: on any CUDA or CPU machine (no XLA, NPU or Apex); :data:`OPTIMIZER_PACKAGES` lists what the
#: others need installed.
OPTIMIZERS = (
    "adamw_torch", "adamw_torch_fused", "adafactor", "sgd", "adagrad", "rmsprop",
    "adamw_bnb_8bit", "adamw_8bit", "paged_adamw_32bit", "paged_adamw_8bit", "lion_32bit",
    "lion_8bit", "paged_lion_32bit", "paged_lion_8bit", "ademamix", "ademamix_8bit",
    "paged_ademamix_32bit", "paged_ademamix_8bit", "rmsprop_bnb", "rmsprop_bnb_8bit",
    "rmsprop_bnb_32bit", "adamw_torch_4bit", "adamw_torch_8bit", "schedule_free_adamw",
    "schedule_free_radam", "schedule_free_sgd",
)

#: ``training.optim`` → the package it needs (its import name too), when not torch's own
OPTIMIZER_PACKAGES = {name: "torchao" if name.startswith("adamw_torch_")
                      else "schedulefree" if name.startswith("schedule_free")
                      else "bitsandbytes" for name in OPTIMIZERS[6:]}

#: a run name: ASCII letters, digits, ``.``, ``_``, ``-``; not starting with ``.``, no ``..``
SAFE_NAME = re.compile(r"(?!\.)(?!.*\.\.)[A-Za-z0-9._-]+")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class EvalDatasetSpec(_Strict):
    """``dataset.eval:`` — a held-out set from a source of its own, instead of a share of the
    training rows (``dataset.eval_split``). Its rows are read in the same ``format``, with the
    same ``columns`` and ``chat_template``."""

    source: str
    options: dict[str, Any] = {}


class DatasetSpec(_Strict):
    """``dataset:`` — where rows come from and how a row becomes model input."""

    source: str
    options: dict[str, Any] = {}
    format: Literal[tuple(FORMAT_TASKS)] = Field(  # type: ignore[valid-type]
        "instruction",
        description="text: train on all tokens; instruction/alpaca: prompt/completion columns; "
        "chat/sharegpt: a list of messages rendered with the tokenizer's chat template; "
        "tokens: words with a tag each (NER); label: text with a class; preference: a prompt "
        "with a chosen and a rejected answer (dpo, orpo)",
    )
    columns: dict[str, str] = Field(
        {}, description="format field → dataset column, e.g. {output: gloss}"
    )
    eval_split: float = Field(
        0.05, gt=0, lt=1, description="fraction of rows held out for evaluation (without "
        "dataset.eval)"
    )
    eval: EvalDatasetSpec | None = Field(
        None, description="a held-out set of its own, {source, options}: every row of "
        "dataset.source trains, and these rows are the held-out set (instead of eval_split)",
    )
    chat_template: str | None = Field(
        None, description="chat template for formats chat, sharegpt, instruction and "
        "preference, replacing "
        "the tokenizer's: 'chatml' (adds <|im_start|>/<|im_end|> to the vocabulary if missing) "
        "or a Jinja template; None = the tokenizer's own",
    )

    @field_validator("chat_template")
    @classmethod
    def _chatml_or_jinja(cls, template: str | None) -> str | None:
        if template is None or template == "chatml":
            return template
        if "{{" not in template and "{%" not in template:
            raise ValueError(f"{template[:40]!r} is neither 'chatml' nor a Jinja chat template "
                             "(one with {{ ... }} or {% ... %})")
        return template  # its syntax is checked when the run sets it (set_chat_template)

    @model_serializer(mode="wrap")
    def _no_split_with_eval(self, handler: Any) -> dict[str, Any]:
        # eval_split means nothing beside a held-out set of its own: a stored spec leaves it
        # out, so it validates again (eval_split and eval given together are refused)
        data = handler(self)
        if self.eval is not None:
            data.pop("eval_split", None)
        return data

    @model_validator(mode="after")
    def _columns_fit_format(self) -> DatasetSpec:
        for name in self.columns:
            if name not in FIELDS[self.format]:
                close = difflib.get_close_matches(name, list(FIELDS[self.format]), n=1)
                hint = f"; did you mean '{close[0]}'?" if close else ""
                raise ValueError(f"columns.{name}: not a field of format '{self.format}'{hint} "
                                 f"(valid: {', '.join(FIELDS[self.format])})")
        if self.eval is not None and "eval_split" in self.model_fields_set:
            raise ValueError("eval: give either eval_split (a share of the rows held out) or "
                             "eval (a held-out set of its own), not both")
        chats = ("chat", "sharegpt", "instruction", "preference")  # rendered with a template
        if self.chat_template is not None and self.format not in chats:
            raise ValueError(f"chat_template: format '{self.format}' renders no chat; it is "
                             f"used by formats {', '.join(chats)}")
        return self
    eval_limit: int | None = Field(
        None, gt=0, description="at most this many held-out rows (None = all)"
    )


class ModelSpec(_Strict):
    """``model:`` — which pretrained (or scratch) model to start from."""

    provider: str
    options: dict[str, Any] = {}


class StrategySpec(_Strict):
    """``strategy:`` — how the model is trained."""

    name: str
    options: dict[str, Any] = {}


class EvaluatorSpec(_Strict):
    """One entry of ``evaluators:``."""

    name: str
    options: dict[str, Any] = {}


class TrainingSpec(_Strict):
    """``training:`` — the loop's hyper-parameters (passed to transformers ``TrainingArguments``).

    Defaults follow transformers' ``TrainingArguments`` except ``learning_rate`` (2e-4, the
    usual LoRA rate from the QLoRA paper, Dettmers et al. 2023) and ``max_steps``.
    """

    max_steps: int = Field(100, gt=0, description="optimizer steps")
    micro_batch_size: int = Field(4, gt=0, description="examples per forward pass")
    gradient_accumulation_steps: int = Field(1, gt=0, description="micro-batches per step")
    learning_rate: float = Field(2e-4, gt=0)
    lr_scheduler: Literal[
        "linear", "cosine", "cosine_with_restarts", "polynomial", "constant",
        "constant_with_warmup", "inverse_sqrt",
    ] = Field("linear", description="transformers scheduler (SchedulerType) that needs no "
              "extra arguments")
    warmup_steps: int = Field(0, ge=0)
    weight_decay: float = Field(0.0, ge=0)
    max_grad_norm: float = Field(1.0, gt=0)
    optim: Literal[OPTIMIZERS] | None = Field(  # type: ignore[valid-type]
        None, description="optimizer, named as transformers' TrainingArguments.optim; None = "
        "adamw_torch_fused on CUDA, adamw_torch on CPU. The 8-bit, paged, lion, ademamix and "
        "*_bnb ones need bitsandbytes (paged ones a CUDA GPU too), adamw_torch_4bit/8bit "
        "torchao, schedule_free_* schedulefree",
    )
    max_seq_len: int = Field(512, gt=1, description="tokens; longer rows are truncated; the "
                             "block length of a packing strategy and the row length of "
                             "training.packing")
    packing: bool = Field(
        False, description="causal-LM fine-tuning: pack the training examples, best-fit "
        "decreasing, into rows of at most max_seq_len tokens, each example attending only to "
        "itself with its own position ids; a micro-batch is micro_batch_size such rows (fewer, "
        "fuller steps; each example's loss unchanged; held-out data is never packed)",
    )
    seed: int = 0
    precision: Literal["fp32", "bf16", "fp16"] = Field(
        "fp32", description="mixed precision; fp16 needs CUDA, bf16 a GPU or CPU with bf16"
    )
    device: Literal["auto", "cpu", "cuda"] = "auto"
    logging_steps: int = Field(1, gt=0, description="optimizer steps between metric rows")
    save_steps: int | None = Field(
        None, gt=0, description="checkpoint every N steps (None = only at the end)"
    )
    eval_batch_size: int = Field(8, gt=0)
    eval_steps: int | None = Field(
        None, gt=0, description="every N steps, the Trainer's loss on the held-out set is "
        "recorded as metric eval_loss (a validation curve; None = only the evaluators at the "
        "start and end)",
    )
    telemetry_interval_s: float = Field(
        1.0, ge=0, description="seconds between device telemetry samples (0 = off)"
    )
    gradient_checkpointing: bool = Field(
        False, description="recompute activations in the backward pass instead of keeping "
        "them: less memory, about a third more compute (non-reentrant torch.utils.checkpoint, "
        "transformers gradient_checkpointing)",
    )
    torch_compile: bool = Field(
        False, description="compile the model with torch.compile (inductor backend); the first "
        "steps are slow while it compiles",
    )
    fsdp: str = Field(
        "", description="runs on several GPUs: shard weights, gradients and optimizer state "
        "with FSDP, transformers TrainingArguments.fsdp, e.g. 'full_shard auto_wrap' (empty "
        "= DDP: a full copy per GPU)",
    )
    fsdp_config: dict[str, Any] = Field(
        default_factory=dict, description="transformers TrainingArguments.fsdp_config, e.g. "
        "{transformer_layer_cls_to_wrap: [LlamaDecoderLayer]}",
    )

    @model_validator(mode="after")
    def _warmup_ends_before_the_run(self) -> TrainingSpec:
        # transformers' schedulers with warm-up raise the rate by learning_rate / warmup_steps
        # a step (get_linear_schedule_with_warmup, lr_lambda = step / warmup_steps), so a
        # warm-up as long as the run never reaches learning_rate: refused, not run quietly
        if self.lr_scheduler != "constant" and self.warmup_steps >= self.max_steps:
            peak = self.learning_rate * (self.max_steps - 1) / self.warmup_steps
            raise ValueError(
                f"warmup_steps {self.warmup_steps} is not below max_steps {self.max_steps}: the "
                f"learning rate would rise for the whole run and peak at {peak:.3g}, "
                f"{peak / self.learning_rate:.0%} of learning_rate {self.learning_rate:g}; "
                "lower training.warmup_steps or raise training.max_steps")
        return self


@dataclass
class SpecOrigin:
    """Where a spec came from, to point errors at the right place.

    Attributes:
        path: the YAML file (or ``spec`` for a dict built in code).
        text: the file's text, to find a key's line.
        overrides: the ``--set KEY=VALUE`` items applied on top.
    """

    path: str = "spec"
    text: str | None = None
    overrides: list[str] = field(default_factory=list)

    def where(self, dotted: str) -> str:
        """``--set ITEM`` when an override set ``dotted`` (or a parent or child of it), else
        ``FILE:LINE`` of the key in the YAML, else ``FILE``."""
        for item in reversed(self.overrides):
            key = item.partition("=")[0]
            if dotted == key or dotted.startswith(key + ".") or key.startswith(dotted + "."):
                return f"--set {item}"
        line = _line_of(self.text, dotted.split(".")) if self.text else None
        return f"{self.path}:{line}" if line else self.path


class RunSpec(_Strict):
    """A whole run. See ``examples/`` for complete specs."""

    _origin: SpecOrigin = PrivateAttr(default_factory=SpecOrigin)

    name: str | None = None
    dataset: DatasetSpec
    model: ModelSpec
    strategy: StrategySpec
    training: TrainingSpec = TrainingSpec()
    evaluators: list[EvaluatorSpec] = []
    output_dir: str = Field("runs", description="runs are written to <output_dir>/<run-id>/")

    @field_validator("name")
    @classmethod
    def _safe_name(cls, name: str | None) -> str | None:
        # the name becomes part of file names (the TUI saves <output_dir>/specs/<name>-….yaml)
        if name is not None and not SAFE_NAME.fullmatch(name):
            raise ValueError(f"{name!r} is not a safe name: use ASCII letters, digits, '.', '_' "
                             "and '-', not starting with '.' and without '..' (no '/')")
        return name

    @field_validator("output_dir")
    @classmethod
    def _no_parent_folder(cls, output_dir: str) -> str:
        if ".." in PurePath(output_dir).parts:
            raise ValueError(f"{output_dir!r} has a '..' component; give a folder without '..' "
                             "(absolute, or relative to the working directory)")
        return output_dir

    @field_validator("evaluators")
    @classmethod
    def _unique_evaluators(cls, evaluators: list[EvaluatorSpec]) -> list[EvaluatorSpec]:
        names = [e.name for e in evaluators]
        for i, name in enumerate(names):
            if name in names[:i]:
                raise ValueError(f"'{name}' is listed twice (entries {names.index(name)} and "
                                 f"{i}); results are stored by evaluator name")
        return evaluators


def load_spec(path: str | Path, overrides: list[str] = ()) -> RunSpec:
    """Read and validate a YAML run spec, applying ``--set dotted.key=value`` overrides.

    Raises:
        SpecError: unreadable file, YAML syntax error, invalid override or invalid field; the
            message names the file, line and dotted key.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SpecError(f"{path}: cannot read run spec: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise SpecError(f"{path}: not UTF-8 text (byte {exc.start}); save the spec as "
                        "UTF-8") from None
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 (a SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise SpecError(f"{where}: invalid YAML: {getattr(exc, 'problem', exc)}") from None
    if not isinstance(data, dict):
        raise SpecError(f"{path}: a run spec is a mapping with keys dataset, model, strategy")
    for item in overrides:
        apply_override(data, item)
    return validate_spec(data, SpecOrigin(str(path), text, list(overrides)))


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping (PyYAML keeps the last)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key '{key}'", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def apply_override(data: dict[str, Any], item: str) -> None:
    """Apply one ``dotted.key=value`` override in place; the value is parsed as YAML. A
    number indexes a list (``evaluators.0.options.limit=8``).

    Raises:
        SpecError: the override has no ``=``, walks through a scalar, indexes past a list's
            end, or its value is not valid YAML.
    """
    key, sep, raw = item.partition("=")
    if not sep or not key:
        raise SpecError(f"--set {item!r}: expected dotted.key=value, e.g. training.seed=1")
    node: Any = data
    *parents, last = key.split(".")
    for part in parents:
        node = _child(node, part, item)
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        raise SpecError(f"--set {item!r}: invalid YAML value: "
                        f"{getattr(exc, 'problem', None) or exc}") from None
    if isinstance(node, list):
        node[_index(node, last, item)] = value
    else:
        node[last] = value


def _child(node: Any, part: str, item: str) -> Any:
    if isinstance(node, list):
        return node[_index(node, part, item)]
    if not isinstance(node, dict):
        raise SpecError(f"--set {item!r}: '{part}' is inside a value that is not a mapping")
    child = node.setdefault(part, {})
    if not isinstance(child, dict | list):
        raise SpecError(f"--set {item!r}: '{part}' is not a mapping")
    return child


def _index(node: list, part: str, item: str) -> int:
    if not part.isdigit() or int(part) >= len(node):
        raise SpecError(f"--set {item!r}: '{part}' is not an index of a list of {len(node)}")
    return int(part)


def validate_spec(data: dict[str, Any], origin: SpecOrigin | None = None) -> RunSpec:
    """Validate a spec dict; see :func:`load_spec` for the errors. The spec remembers
    ``origin`` so later errors (component options) point at the same file and overrides."""
    origin = origin or SpecOrigin()
    try:
        spec = RunSpec.model_validate(data)
    except ValidationError as exc:
        raise SpecError(format_validation_error(exc, origin)) from None
    spec._origin = origin
    return spec


def validate_options(
    model: type[BaseModel], options: dict[str, Any], prefix: str,
    origin: SpecOrigin | None = None,
) -> BaseModel:
    """Validate a component's ``options`` with its ``Options`` model.

    Raises:
        SpecError: naming ``prefix.<field>`` (e.g. ``strategy.options.r``).
    """
    try:
        return model.model_validate(options)
    except ValidationError as exc:
        raise SpecError(
            format_validation_error(exc, origin or SpecOrigin(), prefix, model)) from None


def format_validation_error(
    exc: ValidationError, origin: SpecOrigin, prefix: str = "",
    model: type[BaseModel] = None,  # type: ignore[assignment]
) -> str:
    """One line per pydantic error: ``file:line: dotted.key: message`` (or ``--set ITEM: …``
    for a key that came from an override). An unknown key lists the valid ones of ``model``
    (default :class:`RunSpec`)."""
    model = model or RunSpec
    lines = []
    for err in exc.errors():
        loc = [str(p) for p in err["loc"]]
        dotted = ".".join(([prefix] if prefix else []) + loc)
        where = origin.where(dotted)
        msg = err["msg"]
        if err["type"] == "value_error":
            msg = str(err["ctx"]["error"])
        elif err["type"] == "extra_forbidden":
            msg = "unknown key" + _valid_keys_hint(model, loc)
        lines.append(f"{where}: {dotted}: {msg}")
    return "\n".join(lines)


def _valid_keys_hint(model: type[BaseModel], loc: list[str]) -> str:
    """``; did you mean 'x'? (valid: …)`` for an unknown key at ``loc`` in ``model``."""
    for part in loc[:-1]:
        if part.isdigit():
            continue
        field = model.model_fields.get(part)
        inner = field and (get_args(field.annotation) or (field.annotation,))[0]
        if not (isinstance(inner, type) and issubclass(inner, BaseModel)):
            return ""
        model = inner
    valid = list(model.model_fields)
    if not valid:
        return " (this component takes no options)"
    close = difflib.get_close_matches(loc[-1], valid, n=1)
    return (f"; did you mean '{close[0]}'?" if close else "") + f" (valid: {', '.join(valid)})"


def _line_of(text: str, path: list[str]) -> int | None:
    """1-based line of the YAML node at ``path`` (or of its deepest existing parent)."""
    try:
        node = yaml.compose(text)
    except yaml.YAMLError:
        return None
    line = None
    for part in path:
        if isinstance(node, yaml.MappingNode):
            match = next((v for k, v in node.value if k.value == part), None)
            key = next((k for k, v in node.value if k.value == part), None)
            if match is None:
                break
            line, node = key.start_mark.line + 1, match
        elif isinstance(node, yaml.SequenceNode) and part.isdigit() and int(part) < len(node.value):
            node = node.value[int(part)]
            line = node.start_mark.line + 1
        else:
            break
    return line
