"""The run spec: loading, exact error messages with file:line and dotted keys, --set overrides,
and per-component options validation."""

from __future__ import annotations

from pathlib import Path
from typing import get_args

import pytest
import yaml
from pydantic import BaseModel, ConfigDict, Field

from tuneyard.core.errors import SpecError, TuneyardError
from tuneyard.core.spec import (RunSpec, TrainingSpec, SpecOrigin, apply_override, load_spec,
                                validate_options, validate_spec)

VALID = """\
name: demo
dataset:
  source: jsonl
  options: {path: data.jsonl}
  format: instruction
  columns: {output: gloss}
model:
  provider: hf
  options:
    path: some/model
strategy:
  name: lora
  options: {r: 8, alpha: 16}
training:
  max_steps: 10
  learning_rate: 2.0e-4
  micro_batch_size: 2
evaluators:
  - name: perplexity
  - name: rouge
    options: {max_new_tokens: 48}
"""


TRAINING_KEYS = (
    "(valid: max_steps, micro_batch_size, gradient_accumulation_s"
    "teps, learning_rate, lr_scheduler, warmup_steps, weight_deca"
    "y, max_grad_norm, optim, max_seq_len, packing, seed, precision, device, logg"
    "ing_steps, save_steps, eval_batch_size, eval_steps, telemetry_interval_s, "
    "gradient_checkpointing, torch_compile, fsdp, fsdp_config)")


def write(tmp_path: Path, text: str, name: str = "spec.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def spec_error(path: Path, overrides: list[str] = ()) -> str:
    with pytest.raises(SpecError) as exc:
        load_spec(path, overrides)
    assert isinstance(exc.value, TuneyardError)
    return str(exc.value)


def test_load_valid_spec(tmp_path):
    spec = load_spec(write(tmp_path, VALID))
    assert isinstance(spec, RunSpec)
    assert spec.name == "demo"
    assert spec.dataset.source == "jsonl"
    assert spec.dataset.options == {"path": "data.jsonl"}
    assert spec.dataset.columns == {"output": "gloss"}
    assert spec.dataset.eval_split == 0.05  # default
    assert spec.model.provider == "hf"
    assert spec.model.options == {"path": "some/model"}
    assert spec.strategy.name == "lora"
    assert spec.strategy.options == {"r": 8, "alpha": 16}
    assert spec.training.max_steps == 10
    assert spec.training.learning_rate == 2e-4
    assert spec.training.micro_batch_size == 2
    assert spec.training.gradient_accumulation_steps == 1  # default
    assert spec.training.precision == "fp32"
    assert [(e.name, e.options) for e in spec.evaluators] == [
        ("perplexity", {}), ("rouge", {"max_new_tokens": 48})]
    assert spec.output_dir == "runs"


def test_minimal_spec_gets_defaults(tmp_path):
    text = "dataset: {source: text}\nmodel: {provider: scratch}\nstrategy: {name: pretrain-clm}\n"
    spec = load_spec(write(tmp_path, text))
    assert spec.name is None
    assert spec.training.max_steps == 100
    assert spec.training.learning_rate == 2e-4
    assert spec.evaluators == []


def test_missing_file(tmp_path):
    path = tmp_path / "nope.yaml"
    assert spec_error(path) == f"{path}: cannot read run spec: No such file or directory"


def test_yaml_syntax_error_names_file_and_line(tmp_path):
    path = write(tmp_path, "name: x\ndataset: [1, 2\nmodel: 3\n")
    assert spec_error(path) == f"{path}:3: invalid YAML: expected ',' or ']', but got ':'"


def test_not_a_mapping(tmp_path):
    path = write(tmp_path, "- a\n- b\n")
    assert spec_error(path) == f"{path}: a run spec is a mapping with keys dataset, model, strategy"


def test_unknown_top_level_key(tmp_path):
    path = write(tmp_path, VALID + "nmae: typo\n")
    assert spec_error(path) == (
        f"{path}:22: nmae: unknown key; did you mean 'name'? (valid: name, dataset, model, "
        "strategy, training, evaluators, output_dir)")


def test_unknown_nested_key(tmp_path):
    path = write(tmp_path, VALID.replace("  max_steps: 10\n", "  max_stepz: 10\n"))
    assert spec_error(path) == (
        f"{path}:15: training.max_stepz: unknown key; did you mean 'max_steps'? " + TRAINING_KEYS)


def test_wrong_type_names_dotted_path_and_line(tmp_path):
    path = write(tmp_path, VALID.replace("max_steps: 10", "max_steps: many"))
    assert spec_error(path) == (
        f"{path}:15: training.max_steps: "
        "Input should be a valid integer, unable to parse string as an integer")


def test_errors_in_list_items_and_several_errors(tmp_path):
    text = VALID.replace("  - name: rouge\n", "  - nam: rouge\n").replace(
        "  format: instruction\n", "  format: prose\n")
    path = write(tmp_path, text)
    assert spec_error(path).splitlines() == [
        f"{path}:5: dataset.format: Input should be 'text', 'instruction', 'alpaca', 'chat', 'sharegpt', 'tokens', 'label' or 'preference'",
        f"{path}:20: evaluators.1.name: Field required",
        f"{path}:20: evaluators.1.nam: unknown key; did you mean 'name'? (valid: name, options)",
    ]


def test_missing_required_section(tmp_path):
    path = write(tmp_path, "dataset: {source: text}\nmodel: {provider: hf}\n")
    assert spec_error(path) == f"{path}: strategy: Field required"


def test_constraint_violation(tmp_path):
    path = write(tmp_path, VALID.replace("micro_batch_size: 2", "micro_batch_size: 0"))
    assert spec_error(path) == (
        f"{path}:17: training.micro_batch_size: Input should be greater than 0")


# -- --set overrides -----------------------------------------------------------------------
def test_overrides_are_typed_via_yaml(tmp_path):
    path = write(tmp_path, VALID)
    spec = load_spec(path, [
        "training.learning_rate=1e-4",
        "training.max_steps=3",
        "strategy.options.r=16",
        "strategy.options.target_modules=[q_proj, v_proj]",
        "dataset.options.limit=null",
        "name=other",
        "evaluators=[{name: exact-match}, {name: rouge, options: {limit: 4}}]",
    ])
    assert spec.training.learning_rate == 1e-4
    assert type(spec.training.learning_rate) is float
    assert spec.training.max_steps == 3
    assert spec.strategy.options == {"r": 16, "alpha": 16, "target_modules": ["q_proj", "v_proj"]}
    assert spec.dataset.options == {"path": "data.jsonl", "limit": None}
    assert spec.name == "other"
    assert [(e.name, e.options) for e in spec.evaluators] == [
        ("exact-match", {}), ("rouge", {"limit": 4})]


def test_column_mapping_and_duplicate_keys_are_checked(tmp_path):
    path = write(tmp_path, VALID)
    assert spec_error(path, ["dataset.columns.outptu=answer"]) == (
        "--set dataset.columns.outptu=answer: dataset: columns.outptu: not a field of format "
        "'instruction'; did you mean 'output'? (valid: instruction, input, output)")
    dup = write(tmp_path, VALID + "name: twice\n", "dup.yaml")
    line = len(VALID.splitlines()) + 1
    assert spec_error(dup) == f"{dup}:{line}: invalid YAML: duplicate key 'name'"


def test_evaluators_are_listed_once(tmp_path):
    path = write(tmp_path, VALID)
    assert spec_error(path, ["evaluators=[{name: rouge}, {name: rouge, options: {limit: 1}}]"]) == (
        "--set evaluators=[{name: rouge}, {name: rouge, options: {limit: 1}}]: evaluators: "
        "'rouge' is listed twice (entries 0 and 1); results are stored by evaluator name")


def test_override_indexes_lists():
    data = {"evaluators": [{"name": "perplexity"}, {"name": "rouge", "options": {}}]}
    apply_override(data, "evaluators.1.options.limit=8")
    apply_override(data, "evaluators.0.name=exact-match")
    assert data == {"evaluators": [{"name": "exact-match"},
                                   {"name": "rouge", "options": {"limit": 8}}]}


def test_override_creates_missing_sections():
    data = {"dataset": {"source": "text"}}
    apply_override(data, "training.seed=7")
    apply_override(data, "model.options.path=a=b")  # only the first '=' splits
    assert data == {"dataset": {"source": "text"}, "training": {"seed": 7},
                    "model": {"options": {"path": "a=b"}}}


@pytest.mark.parametrize("item, message", [
    ("foo", "--set 'foo': expected dotted.key=value, e.g. training.seed=1"),
    ("=3", "--set '=3': expected dotted.key=value, e.g. training.seed=1"),
    ("name.x=1", "--set 'name.x=1': 'name' is not a mapping"),
    ("evaluators.5.name=x", "--set 'evaluators.5.name=x': '5' is not an index of a list of 2"),
])
def test_bad_override(tmp_path, item, message):
    assert spec_error(write(tmp_path, VALID), [item]) == message


def test_override_with_invalid_value_is_validated(tmp_path):
    path = write(tmp_path, VALID)
    assert spec_error(path, ["training.precision=fp8"]) == (
        "--set training.precision=fp8: training.precision: Input should be 'fp32', 'bf16' "
        "or 'fp16'")


def test_override_errors_name_the_override_not_a_file_line(tmp_path):
    path = write(tmp_path, VALID)
    assert spec_error(path, ["training.max_stps=3"]) == (
        "--set training.max_stps=3: training.max_stps: unknown key; did you mean 'max_steps'? "
        + TRAINING_KEYS)
    assert spec_error(path, ["training={max_steps: 0}"]) == (
        "--set training={max_steps: 0}: training.max_steps: Input should be greater than 0")
    assert spec_error(path, ["evaluators=[{name: "]).startswith(
        "--set 'evaluators=[{name: ': invalid YAML value: ")


def test_validate_spec_without_text_has_no_line():
    with pytest.raises(SpecError) as exc:
        validate_spec({"dataset": {"source": "x"}, "model": {"provider": "y"},
                       "strategy": {"name": "z"}, "training": {"max_steps": -1}})
    assert str(exc.value) == "spec: training.max_steps: Input should be greater than 0"


# -- component options ---------------------------------------------------------------------
class LoraOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    r: int = Field(8, gt=0)
    alpha: int = 16


def test_validate_options_names_dotted_key_and_line(tmp_path):
    text = VALID.replace("{r: 8, alpha: 16}", "\n    r: eight\n    alpah: 16")
    spec = validate_spec(yaml.safe_load(text))
    with pytest.raises(SpecError) as exc:
        validate_options(LoraOptions, spec.strategy.options, "strategy.options",
                         SpecOrigin("spec.yaml", text))
    assert str(exc.value).splitlines() == [
        "spec.yaml:14: strategy.options.r: "
        "Input should be a valid integer, unable to parse string as an integer",
        "spec.yaml:15: strategy.options.alpah: unknown key; did you mean 'alpha'? "
        "(valid: r, alpha)",
    ]


def test_validate_options_ok_and_without_text():
    opts = validate_options(LoraOptions, {"r": 4}, "strategy.options")
    assert (opts.r, opts.alpha) == (4, 16)
    with pytest.raises(SpecError) as exc:
        validate_options(LoraOptions, {"r": 0}, "strategy.options")
    assert str(exc.value) == "spec: strategy.options.r: Input should be greater than 0"


def test_every_lr_scheduler_the_spec_allows_is_a_transformers_one(tmp_path):
    from transformers import SchedulerType

    allowed = get_args(TrainingSpec.model_fields["lr_scheduler"].annotation)
    assert set(allowed) <= {s.value for s in SchedulerType}
    path = write(tmp_path, VALID.replace("  max_steps: 10\n",
                                         "  max_steps: 10\n  lr_scheduler: bogus\n"))
    assert spec_error(path).startswith(f"{path}:16: training.lr_scheduler: Input should be "
                                       "'linear', 'cosine'")


def test_a_spec_that_is_not_utf8_is_a_spec_error(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes(b"name: caf\xe9\n")
    assert spec_error(path) == f"{path}: not UTF-8 text (byte 9); save the spec as UTF-8"


EXAMPLES = sorted((Path(__file__).parents[1] / "examples").glob("*.yaml"))


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_every_shipped_example_composes(path):
    """Each spec of examples/ validates and composes (components, options, format, task)
    with the plugins as they are now, as torchtune tests each shipped config."""
    from tuneyard.core.engine import compose
    from tuneyard.core.plugins import get_plugins

    spec = load_spec(path)
    comp = compose(spec, get_plugins())
    assert comp.strategy.name == spec.strategy.name and comp.spec.name == path.stem
