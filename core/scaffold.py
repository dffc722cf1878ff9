"""``tuneyard plugins new``: write a ready-to-install plugin package.

:func:`new_plugin` writes ``tuneyard-<name>/`` with a ``pyproject.toml`` (setuptools, src layout,
entry point ``<name>`` in group ``tuneyard``), a module holding one working component of the
chosen kind, a test that registers it through the real plugin manager and exercises it on data
or a tiny model built in the test (nothing is downloaded), and a README. What each kind provides:

- ``evaluator``: token-overlap F1 (SQuAD v1.1) of greedy answers from
  :func:`tuneyard.core.generation.generate`;
- ``dataset-source``: prompt/completion rows, a few built in or read from a JSONL file;
- ``model-provider``: a transformers model and tokenizer from a local Hugging Face folder;
- ``strategy``: BitFit (Ben Zaken et al. 2021), bias terms and the LM head trained.

The files come from the templates below: plain text where ``{{key}}`` marks a value (the
placeholder never occurs in generated code otherwise). Nothing here imports torch.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from tuneyard.core.errors import TuneyardError, unknown_name

#: The component kinds a scaffold can provide (``--kind``); the first is the default.
SCAFFOLD_KINDS = ("evaluator", "dataset-source", "model-provider", "strategy")

#: A valid plugin name (after a leading ``tuneyard-`` is stripped): lower-case words joined by
#: dashes, as a distribution name ``tuneyard-<name>`` and a component name.
NAME_PATTERN = re.compile(r"^[a-z][a-z0-9-]*[a-z0-9]$")

PLACEHOLDER = re.compile(r"\{\{(\w+)\}\}")


@dataclass(frozen=True)
class KindTemplate:
    """What the scaffold writes for one component kind.

    Attributes:
        hook: the registration hook the module implements.
        suffix: appended to the CamelCase name to make the component's class name.
        summary: one line for the README, after "provides the <kind> `<name>`: ".
        module: the template of ``src/tuneyard_<pkg>/__init__.py``.
        test: the template of ``tests/test_<pkg>.py``.
        usage: the run-spec excerpt shown in the README.
    """

    hook: str
    suffix: str
    summary: str
    module: str
    test: str
    usage: str


def new_plugin(name: str, kind: str = "evaluator", parent: Path = Path(".")) -> Path:
    """Write a ready plugin package ``tuneyard-<name>/`` under ``parent``; return its path.

    The package (distribution ``tuneyard-<name>``, import package ``tuneyard_<pkg>`` where
    ``<pkg>`` is ``name`` with dashes as underscores) holds::

        pyproject.toml                 setuptools, src layout, entry point <name> in group tuneyard
        README.md                      install, test, use in a run spec
        src/tuneyard_<pkg>/__init__.py one working <kind> component named <name>, and its hook
        tests/test_<pkg>.py            registers it through tuneyard's plugin manager and runs it

    Nothing is overwritten: the folder must not exist yet. ``parent`` is created if missing.

    Args:
        name: the plugin's name, also its component's name; a leading ``tuneyard-`` is dropped,
            so ``tuneyard-token-f1`` and ``token-f1`` give the same package.
        kind: the component it provides, one of :data:`SCAFFOLD_KINDS`.
        parent: the folder to create the package folder in.

    Returns:
        ``parent / "tuneyard-<name>"``.

    Raises:
        TuneyardError: ``name`` does not match :data:`NAME_PATTERN` (lower-case letters, digits
            and dashes, starting with a letter, ending with a letter or digit); ``kind`` is not
            one of :data:`SCAFFOLD_KINDS` (the message lists them); the folder already exists
            (the message names it) or cannot be created.
    """
    short = name.removeprefix("tuneyard-")
    if short == "tuneyard":
        raise TuneyardError("invalid plugin name 'tuneyard': that is tuneyard itself; choose "
                            "another (e.g. 'token-f1')")
    if not NAME_PATTERN.match(short):
        raise TuneyardError(
            f"invalid plugin name '{name}': use two or more lower-case letters, digits and "
            "dashes, starting with a letter and ending with a letter or digit (e.g. 'token-f1')"
        )
    if kind not in SCAFFOLD_KINDS:
        raise TuneyardError(unknown_name("plugin kind", kind, list(SCAFFOLD_KINDS)))
    target = Path(parent) / f"tuneyard-{short}"
    try:
        target.mkdir(parents=True)
    except FileExistsError:
        raise TuneyardError(f"folder '{target}' already exists; nothing was written (choose "
                            "another name or parent folder)") from None
    except OSError as exc:
        raise TuneyardError(f"cannot create folder '{target}': {exc.strerror}") from None
    for relative, text in render(short, kind).items():
        path = target / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return target


def render(name: str, kind: str) -> dict[str, str]:
    """The files of the package for a valid ``name`` (without ``tuneyard-``) and ``kind``.

    Returns:
        Path relative to the package folder → file content.
    """
    template = KIND_TEMPLATES[kind]
    pkg = name.replace("-", "_")
    cls = "".join(part.capitalize() for part in name.split("-")) + template.suffix
    values = {
        "name": name, "kind": kind, "pkg": pkg, "dist": f"tuneyard-{name}", "cls": cls,
        "hook": template.hook, "summary": template.summary,
    }
    values["usage"] = fill(template.usage, values)
    values["registers_test"] = fill(REGISTERS_TEST, values)
    values["register_hook"] = fill(REGISTER_HOOK, values)
    values["tiny_tokenizer"] = TINY_TOKENIZER
    return {
        "pyproject.toml": fill(PYPROJECT, values),
        "README.md": fill(README, values),
        f"src/tuneyard_{pkg}/__init__.py": fill(template.module, values),
        f"tests/test_{pkg}.py": fill(template.test, values),
    }


def fill(template: str, values: dict[str, str]) -> str:
    """``template`` with each ``{{key}}`` replaced by ``values[key]`` (KeyError if missing)."""
    return PLACEHOLDER.sub(lambda m: values[m.group(1)], template)


# -- templates shared by every kind ---------------------------------------------------------
PYPROJECT = '''\
[build-system]
requires = ["setuptools>=69"]
build-backend = "setuptools.build_meta"

[project]
name = "{{dist}}"
version = "0.1.0"
description = "tuneyard plugin: the {{kind}} {{name}}"
readme = "README.md"
requires-python = ">=3.11"
dependencies = ["tuneyard"]

[project.optional-dependencies]
test = ["pytest"]

# tuneyard imports the module named here when it starts; the key is the plugin's name.
[project.entry-points.tuneyard]
{{name}} = "tuneyard_{{pkg}}"

[tool.setuptools.packages.find]
where = ["src"]

[tool.pytest.ini_options]
testpaths = ["tests"]
'''

README = '''\
# {{dist}}

A tuneyard plugin that provides the {{kind}} `{{name}}`: {{summary}}.

It was generated by `tuneyard plugins new`; make it yours in
`src/tuneyard_{{pkg}}/__init__.py` (the comments say what to change) and keep
`tests/test_{{pkg}}.py` passing.

## Install

Into the environment tuneyard runs in, from the folder that holds `{{dist}}/`, either as a
copy (reinstall it after each change) or, while you develop it, editable (changes apply at once):

```sh
tuneyard plugins install ./{{dist}}
tuneyard plugins install --editable ./{{dist}}
```

`tuneyard plugins list` should then show the plugin `{{name}}` with status ok.
(`python -m pip install ./{{dist}}`, run with tuneyard's own Python, does the same.)

## Test

With tuneyard's own Python:

```sh
cd {{dist}}
python -m pip install -e '.[test]'
python -m pytest
```

The tests build what they need (data, a tiny model) in memory or in a temporary folder;
nothing is downloaded.

## Use it in a run spec

```yaml
{{usage}}
```

Then `tuneyard run spec.yaml`. `tuneyard plugins list --json` shows the options and their
descriptions.
'''

#: Shared by the generated tests that need a tokenizer; built in memory, no files.
TINY_TOKENIZER = '''\
def tiny_tokenizer(words, pad=True):
    """A word-level tokenizer over ``words`` (split on whitespace), with ``[UNK]`` and ``[EOS]``
    tokens, and ``[PAD]`` as pad token when ``pad`` is true."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["[UNK]", "[EOS]"] + (["[PAD]"] if pad else [])
    vocab = {word: i for i, word in enumerate(specials + list(words))}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, unk_token="[UNK]", eos_token="[EOS]",
        pad_token="[PAD]" if pad else None,
    )
'''

#: The end of every generated module.
REGISTER_HOOK = '''\
# tuneyard calls this hook when it loads the plugin; `register` checks the class.
@hookimpl
def {{hook}}(register):
    register({{cls}})
'''

REGISTERS_TEST = '''\
def make(**options):
    """The component with ``options`` validated as tuneyard validates a run spec's."""
    return {{cls}}({{cls}}.Options.model_validate(options))


def test_registers_through_tuneyard():
    pm = Plugins()
    pm.register_plugin(plugin, "{{name}}")
    pm.collect_components()
    assert pm.infos["{{name}}"].errors == []
    assert pm.get("{{kind}}", "{{name}}").cls is {{cls}}
'''

# -- evaluator ------------------------------------------------------------------------------
EVALUATOR_MODULE = r'''"""tuneyard plugin {{dist}}: the evaluator ``{{name}}``.

It greedily generates an answer to each held-out prompt (through its options,
:class:`tuneyard.core.generation.GenerationOptions`) and scores it against the reference answer with
token-overlap F1. To measure something else, change :func:`score` and the metric's name in
:meth:`{{cls}}.evaluate`.

Import heavy modules (torch, transformers) inside methods, as here, so that loading the plugin
stays cheap.
"""

from __future__ import annotations

import re
import string
from collections import Counter

from tuneyard.core.components import EvalContext, EvalResult, Evaluator
from tuneyard.core.generation import GenerationOptions
from tuneyard.core.hookspecs import hookimpl

ARTICLES = re.compile(r"\b(a|an|the)\b")


class {{cls}}Options(GenerationOptions):
    """Options of the ``{{name}}`` evaluator: the keys of ``options:`` in its entry of a run
    spec's ``evaluators:`` list. From tuneyard's GenerationOptions it has ``max_new_tokens``,
    ``limit`` and ``batch_size``; unknown keys are an error (``extra="forbid"``), so a typo in
    the run spec is reported instead of ignored."""

    # Change: add your options here, each with a default and a description (the description is
    # shown by `tuneyard plugins list --json` and in the TUI's options form), e.g.
    # lowercase: bool = Field(default=True, description="Compare answers lower-cased.")


def normalize(text: str) -> list[str]:
    """The words of ``text`` as SQuAD v1.1's evaluation script compares them: lower-cased, ASCII
    punctuation and the articles a/an/the removed, split on whitespace.

    >>> normalize("The cat, sat.")
    ['cat', 'sat']
    """
    text = "".join(c for c in text.lower() if c not in string.punctuation)
    return ARTICLES.sub(" ", text).split()


def score(prediction: str, reference: str) -> float:
    """Token-overlap F1 of one answer, in [0, 1] (Rajpurkar et al. 2016, "SQuAD: 100,000+
    Questions for Machine Comprehension of Text", v1.1 evaluation script).

    precision = shared words / words of the prediction and recall = shared words / words of the
    reference, after :func:`normalize` (a word present twice in both counts twice); F1 is their
    harmonic mean. When either side has no words: 1.0 if both have none, else 0.0.
    """
    # Change: put your own per-example metric here.
    pred, ref = normalize(prediction), normalize(reference)
    if not pred or not ref:
        return float(pred == ref)
    shared = sum((Counter(pred) & Counter(ref)).values())
    if shared == 0:
        return 0.0
    precision, recall = shared / len(pred), shared / len(ref)
    return 2 * precision * recall / (precision + recall)


class {{cls}}(Evaluator):
    """Mean token-overlap F1 of greedy answers to the held-out prompts (metric ``token_f1``)."""

    # The name a run spec uses (evaluators: [{name: {{name}}}]); unique among evaluators.
    name = "{{name}}"
    # One line, shown by `tuneyard plugins list` and the TUI.
    description = "Token-overlap F1 (SQuAD v1.1) of generated answers against the references"
    Options = {{cls}}Options

    def evaluate(self, ctx: EvalContext) -> EvalResult:
        """Generate an answer for the first ``limit`` held-out examples and score each one.

        Returns:
            ``EvalResult`` with metric ``token_f1`` (mean over examples, in [0, 1]) and, per
            example, ``prompt``, ``reference``, ``prediction`` and ``token_f1``.

        Raises:
            DataError: there is no held-out example (set ``dataset.eval_split`` above 0), or one
                has an empty prompt (``dataset.format: text``; use ``instruction`` or ``chat``).
        """
        examples = self.options.examples(ctx, self.name)  # the first `limit`, checked
        predictions = self.options.complete(ctx, examples)  # greedy, batched
        details = [
            {"prompt": e.prompt, "reference": e.completion, "prediction": p,
             "token_f1": score(p, e.completion)}
            for e, p in zip(examples, predictions)
        ]
        # Metrics are floats; tuneyard stores them in the registry's evaluations table.
        mean = sum(d["token_f1"] for d in details) / len(details)
        return EvalResult(metrics={"token_f1": mean}, details=details)


{{register_hook}}'''

EVALUATOR_TEST = '''"""Tests of {{dist}}: the evaluator registers through tuneyard's plugin
manager and scores the answers of a stand-in model through the real generation path
(tokenizer, left padding, decoding). Nothing is downloaded."""

import pytest

import tuneyard_{{pkg}} as plugin
from tuneyard.core.components import EvalContext, Example
from tuneyard.core.plugins import Plugins
from tuneyard_{{pkg}} import {{cls}}, score


{{tiny_tokenizer}}

class CannedModel:
    """Stands in for a causal LM: answers every prompt with the same tokens (``answer_ids``),
    as ``model.generate`` would: the prompt's columns, then the new tokens."""

    training = False

    def __init__(self, answer_ids):
        self.answer_ids = answer_ids

    def eval(self):
        self.training = False

    def train(self, mode=True):
        self.training = mode

    def generate(self, input_ids, max_new_tokens, **kwargs):
        import torch

        answer = torch.tensor([self.answer_ids[:max_new_tokens]] * len(input_ids))
        return torch.cat([input_ids, answer], dim=1)  # [batch, prompt_len + new_len]


{{registers_test}}

def test_score():
    assert score("The cat sat.", "the cat  sat") == 1.0
    assert score("small cat", "a small dog") == pytest.approx(0.5)  # P = R = 1/2
    assert score("cat cat", "cat") == pytest.approx(2 / 3)  # P = 1/2, R = 1
    assert score("", "") == 1.0
    assert score("dog", "cat") == 0.0


def test_evaluates_generated_answers():
    tokenizer = tiny_tokenizer("what is a small cat dog ?".split())
    model = CannedModel(tokenizer("a small cat", add_special_tokens=False)["input_ids"])
    examples = [Example("what is a cat ?", "a small cat"),
                Example("what is a small dog ?", "a small dog")]
    ctx = EvalContext(model=model, tokenizer=tokenizer, examples=examples, eval_dataset=None,
                      collator=None, device="cpu", batch_size=2)
    result = make().evaluate(ctx)
    assert [d["prediction"] for d in result.details] == ["a small cat", "a small cat"]
    assert [d["token_f1"] for d in result.details] == [1.0, 0.5]
    assert result.metrics == {"token_f1": 0.75}
    short = make(max_new_tokens=1, limit=1).evaluate(ctx)
    assert short.details[0]["prediction"] == "a"  # only the article: no word left to score
    assert short.metrics == {"token_f1": 0.0}
'''

EVALUATOR_USAGE = '''\
evaluators:
  - name: perplexity
  - name: {{name}}
    options: {max_new_tokens: 32}'''

# -- dataset source -------------------------------------------------------------------------
DATASET_MODULE = r'''"""tuneyard plugin {{dist}}: the dataset source ``{{name}}``.

It serves prompt/completion rows: the examples in :data:`ROWS`, or the rows of a JSONL file
named by the ``path`` option, for a run spec with ``dataset.format: instruction`` (which reads
the columns ``prompt`` and ``completion``). To serve your own data, change :data:`ROWS` or
:meth:`{{cls}}.rows`.

Import heavy modules (datasets, torch) inside methods, as here, so that loading the plugin
stays cheap.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field

from tuneyard.core.components import DatasetSource
from tuneyard.core.errors import DataError
from tuneyard.core.hookspecs import hookimpl

if TYPE_CHECKING:
    import datasets

#: The columns of every row (strings).
COLUMNS = ("prompt", "completion")

# Change: the rows served when the `path` option is not set.
ROWS = [
    {"prompt": "What is the capital of France?", "completion": "Paris"},
    {"prompt": "What is the capital of Japan?", "completion": "Tokyo"},
    {"prompt": "What is the capital of Italy?", "completion": "Rome"},
    {"prompt": "What is the capital of Egypt?", "completion": "Cairo"},
    {"prompt": "What is the capital of Canada?", "completion": "Ottawa"},
    {"prompt": "What is the capital of Kenya?", "completion": "Nairobi"},
    {"prompt": "What is the capital of Peru?", "completion": "Lima"},
    {"prompt": "What is the capital of Norway?", "completion": "Oslo"},
    {"prompt": "What is the capital of Spain?", "completion": "Madrid"},
    {"prompt": "What is the capital of India?", "completion": "New Delhi"},
]


class {{cls}}Options(BaseModel):
    """Options of the ``{{name}}`` dataset source: the keys of ``dataset.options`` in a run
    spec."""

    # An unknown key is an error, so a typo in the run spec is reported instead of ignored.
    model_config = ConfigDict(extra="forbid")

    # Change: add your options here, each with a default and a description (the description is
    # shown by `tuneyard plugins list --json` and in the TUI's options form).
    path: str | None = Field(default=None, description=(
        'JSONL file, one {"prompt": ..., "completion": ...} object per line '
        "(default: the example rows built into the plugin)."
    ))
    limit: int | None = Field(default=None, ge=1,
                              description="Only the first N rows (default: all of them).")


class {{cls}}(DatasetSource):
    """Prompt/completion rows: the built-in :data:`ROWS`, or a JSONL file (option ``path``)."""

    # The name a run spec uses (dataset: {source: {{name}}}); unique among dataset sources.
    name = "{{name}}"
    # One line, shown by `tuneyard plugins list` and the TUI.
    description = "Prompt/completion rows: built-in examples, or a JSONL file (option path)"
    Options = {{cls}}Options

    def load(self) -> datasets.Dataset:
        """Every selected row, as a ``datasets.Dataset`` with string columns ``prompt`` and
        ``completion``.

        Raises:
            DataError: see :meth:`rows`.
        """
        import datasets

        rows = self.rows()
        return datasets.Dataset.from_dict({c: [row[c] for row in rows] for c in COLUMNS})

    def rows(self) -> list[dict[str, str]]:
        """The first ``limit`` rows of the file (or of :data:`ROWS`), in order.

        Raises:
            DataError: the file is missing or malformed (see :func:`read_jsonl`), or it has no
                rows.
        """
        if self.options.path is None:
            rows = ROWS
        else:
            rows = read_jsonl(Path(self.options.path).expanduser())
        if not rows:
            source = self.options.path or "the plugin's ROWS"
            raise DataError(f"{self.name}: no rows in {source} (dataset.options.path)")
        return rows[: self.options.limit]


def read_jsonl(file: Path) -> list[dict[str, str]]:
    """The rows of a JSONL file, skipping blank lines.

    Raises:
        DataError: the file does not exist, or ``FILE:LINE`` is not a JSON object with string
            fields ``prompt`` and ``completion`` (lines count from 1).
    """
    if not file.is_file():
        raise DataError(f"dataset.options.path: file {file} not found")
    rows = []
    with file.open(encoding="utf-8") as lines:
        for lineno, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{file}:{lineno}: not valid JSON ({exc.msg})") from None
            if not (isinstance(row, dict) and all(isinstance(row.get(c), str) for c in COLUMNS)):
                raise DataError(f"{file}:{lineno}: expected a JSON object with string fields "
                                "'prompt' and 'completion'")
            rows.append({c: row[c] for c in COLUMNS})
    return rows


{{register_hook}}'''

DATASET_TEST = '''"""Tests of {{dist}}: the dataset source registers through tuneyard's plugin
manager and serves its built-in rows and a JSONL file's rows; a malformed line names its file
and line."""

import pytest

import tuneyard_{{pkg}} as plugin
from tuneyard.core.errors import DataError
from tuneyard.core.plugins import Plugins
from tuneyard_{{pkg}} import ROWS, {{cls}}


{{registers_test}}

def test_builtin_rows():
    dataset = make().load()
    assert dataset.column_names == ["prompt", "completion"]
    assert len(dataset) == len(ROWS) == 10
    assert dataset[0] == {"prompt": "What is the capital of France?", "completion": "Paris"}


def test_jsonl_rows_and_limit(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text('{"prompt": "2 + 2 =", "completion": "4"}\\n\\n'
                    '{"prompt": "3 + 3 =", "completion": "6", "note": "ignored"}\\n')
    assert make(path=str(path)).load().to_list() == [
        {"prompt": "2 + 2 =", "completion": "4"}, {"prompt": "3 + 3 =", "completion": "6"}]
    assert make(path=str(path), limit=1).load().to_list() == [
        {"prompt": "2 + 2 =", "completion": "4"}]


def test_malformed_line_names_file_and_line(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text('{"prompt": "2 + 2 =", "completion": "4"}\\n{"prompt": "3 + 3 ="}\\n')
    with pytest.raises(DataError) as error:
        make(path=str(path)).load()
    assert str(error.value) == (f"{path}:2: expected a JSON object with string fields "
                                "'prompt' and 'completion'")
'''

DATASET_USAGE = '''\
dataset:
  source: {{name}}
  options: {limit: 10}  # or {path: rows.jsonl}: one {"prompt": ..., "completion": ...} a line
  format: instruction
  eval_split: 0.2'''

# -- model provider -------------------------------------------------------------------------
MODEL_MODULE = r'''"""tuneyard plugin {{dist}}: the model provider ``{{name}}``.

It loads a transformers model and its tokenizer from a local Hugging Face folder (``config.json``,
weights, tokenizer files), offline, with the helpers of :mod:`tuneyard.core.models` that the
built-in providers use. To provide another model (built by your own code, with converted
weights, another tokenizer), change :meth:`{{cls}}.load`.

Import heavy modules (torch, transformers) inside methods, as :mod:`tuneyard.core.models` does,
so that loading the plugin stays cheap.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from tuneyard.core.components import ModelProvider, Task
from tuneyard.core.hookspecs import hookimpl
from tuneyard.core.models import load_pretrained, locate

if TYPE_CHECKING:
    import torch


class {{cls}}Options(BaseModel):
    """Options of the ``{{name}}`` model provider: the keys of ``model.options`` in a run
    spec."""

    # An unknown key is an error, so a typo in the run spec is reported instead of ignored.
    model_config = ConfigDict(extra="forbid")

    # Change: add your options here, each with a default (or none: then the run spec must give
    # it) and a description (shown by `tuneyard plugins list --json` and the TUI).
    path: str = Field(description=(
        "Local Hugging Face model folder (config.json, weights, tokenizer files), or a hub "
        "id already in the local HF cache; nothing is downloaded."
    ))


class {{cls}}(ModelProvider):
    """A transformers model and tokenizer from a local folder; nothing is downloaded."""

    # The name a run spec uses (model: {provider: {{name}}}); unique among model providers.
    name = "{{name}}"
    # One line, shown by `tuneyard plugins list` and the TUI.
    description = "transformers model and tokenizer from a local Hugging Face folder"
    Options = {{cls}}Options

    def load(self, *, task: Task, dtype: torch.dtype) -> tuple[Any, Any]:
        """Load the model with a ``task`` head in ``dtype`` on CPU, and its tokenizer.

        A tokenizer without a pad token gets its EOS token as pad token (pad == eos), as
        :func:`tuneyard.core.models.ensure_pad_token` does for the built-in providers.

        Returns:
            ``(model, tokenizer)``: a transformers ``PreTrainedModel`` and its tokenizer.

        Raises:
            TuneyardError: ``model.options.path`` is neither a folder nor in the local HF
                cache, has no ``config.json``, or cannot be loaded (e.g. the architecture has
                no ``task`` head); the message names the key.
        """
        field = "model.options.path"
        return load_pretrained(locate(self.options.path, field), task=task, dtype=dtype,
                               field=field)

    def model_id(self) -> str:
        """The model folder's name, stored as the run's ``base_model``."""
        return Path(self.options.path).expanduser().resolve().name


{{register_hook}}'''

MODEL_TEST = '''"""Tests of {{dist}}: the model provider registers through tuneyard's plugin
manager and loads a tiny Llama saved here (hidden 32, 2 layers), giving its tokenizer a pad token.
Nothing is downloaded."""

import pytest
import torch

import tuneyard_{{pkg}} as plugin
from tuneyard.core.errors import TuneyardError
from tuneyard.core.plugins import Plugins
from tuneyard_{{pkg}} import {{cls}}


{{tiny_tokenizer}}

def save_tiny_llama(folder):
    """Save a seeded random Llama and a tokenizer without pad token in ``folder``."""
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = tiny_tokenizer("the cat sat on mat".split(), pad=False)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
                         num_hidden_layers=2, num_attention_heads=4,
                         eos_token_id=tokenizer.eos_token_id)
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return model


{{registers_test}}

def test_loads_a_local_folder(tmp_path):
    saved = save_tiny_llama(tmp_path / "tiny-llama")
    provider = make(path=str(tmp_path / "tiny-llama"))
    model, tokenizer = provider.load(task="causal-lm", dtype=torch.bfloat16)
    assert type(model).__name__ == "LlamaForCausalLM"
    assert model.dtype == torch.bfloat16
    # embedding and LM head 2 x 7 x 32, per layer 4 x 32 x 32 + 3 x 32 x 64 + 2 x 32, final norm 32
    assert model.num_parameters() == saved.num_parameters() == 2 * 224 + 2 * 10_304 + 32
    assert torch.equal(model.model.embed_tokens.weight,
                       saved.model.embed_tokens.weight.to(torch.bfloat16))
    assert tokenizer.pad_token == tokenizer.eos_token == "[EOS]"  # the saved one had no pad
    assert tokenizer("the cat sat")["input_ids"] == [2, 3, 4]
    assert provider.model_id() == "tiny-llama"


def test_folder_without_config_names_the_key(tmp_path):
    provider = make(path=str(tmp_path))
    with pytest.raises(TuneyardError) as error:
        provider.load(task="causal-lm", dtype=torch.float32)
    assert str(error.value) == (f"model.options.path: folder '{tmp_path}' has no config.json "
                                "(not a transformers model folder)")
'''

MODEL_USAGE = '''\
model:
  provider: {{name}}
  options: {path: /path/to/hf-model-folder}'''

# -- training strategy ----------------------------------------------------------------------
STRATEGY_MODULE = r'''"""tuneyard plugin {{dist}}: the training strategy ``{{name}}``.

BitFit (Ben Zaken et al. 2021, "BitFit: Simple Parameter-efficient Fine-tuning for
Transformer-based Masked Language-models", arXiv:2106.10199): every weight is frozen except the
bias terms and, by default, the output layer (the LM head). Llama-family models have no bias
terms (``attention_bias`` and ``mlp_bias`` are false), so there only the LM head (and, with
``norms``, the normalisation weights) trains. To train other parameters, change
:func:`trainable`; to wrap the model (as the built-in ``lora`` does with peft), change
:meth:`{{cls}}.prepare`.

Import heavy modules (torch, peft) inside methods so that loading the plugin stays cheap.
"""

from __future__ import annotations

import logging
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from tuneyard.core.components import TrainingStrategy
from tuneyard.core.errors import TuneyardError
from tuneyard.core.hookspecs import hookimpl

log = logging.getLogger(__name__)


class {{cls}}Options(BaseModel):
    """Options of the ``{{name}}`` strategy: the keys of ``strategy.options`` in a run spec."""

    # An unknown key is an error, so a typo in the run spec is reported instead of ignored.
    model_config = ConfigDict(extra="forbid")

    # Change: add your options here, each with a default and a description (the description is
    # shown by `tuneyard plugins list --json` and in the TUI's options form).
    lm_head: bool = Field(default=True, description=(
        "Also train the output layer (LM head); with tied embeddings (tie_word_embeddings) that "
        "is the input embedding matrix too."
    ))
    norms: bool = Field(default=False, description=(
        "Also train the normalisation weights (LayerNorm, RMSNorm); for models without bias "
        "terms, such as Llama."
    ))


class {{cls}}(TrainingStrategy):
    """BitFit: bias terms (and the LM head) train, every other weight is frozen.

    Checkpoints are whole Hugging Face model folders, so the default ``load_checkpoint``
    reloads them.
    """

    # The name a run spec uses (strategy: {name: {{name}}}); unique among strategies.
    name = "{{name}}"
    # One line, shown by `tuneyard plugins list` and the TUI.
    description = "BitFit: train only the bias terms (and the LM head); other weights frozen"
    Options = {{cls}}Options
    # What a checkpoint holds: "model" (a whole model folder). A strategy that saves only its
    # own weights says "adapter" and overrides load_checkpoint (see the built-in lora).
    saves = "model"

    def prepare(self, model: Any) -> Any:
        """Freeze ``model`` except the parameters :func:`trainable` picks.

        Returns:
            ``model`` itself, with ``requires_grad`` set on every parameter; the Trainer's
            optimizer updates only the parameters that require a gradient.

        Raises:
            TuneyardError: nothing is left to train (a model without bias terms, with
                ``strategy.options.lm_head`` and ``strategy.options.norms`` false).
        """
        chosen = trainable(model, lm_head=self.options.lm_head, norms=self.options.norms)
        if not chosen:
            raise TuneyardError(
                f"strategy.options: {type(model).__name__} has no bias terms, so {self.name} "
                "would train nothing; set strategy.options.lm_head or strategy.options.norms "
                "to true"
            )
        for param in model.parameters():
            param.requires_grad = id(param) in chosen
        count = sum(p.numel() for p in model.parameters() if p.requires_grad)
        total = sum(p.numel() for p in model.parameters())
        log.info("%s: training %d of %d parameters (%.2f%%)", self.name, count, total,
                 100 * count / total)
        return model


def trainable(model: Any, *, lm_head: bool, norms: bool) -> set[int]:
    """The ``id()`` of each parameter to train: every bias, plus the output embeddings'
    parameters when ``lm_head`` and those of modules whose class name holds ``Norm`` when
    ``norms``. Ids, not names: a tied LM head shares its tensor with the input embeddings,
    under one name only."""
    chosen: set[int] = set()
    for module in model.modules():
        is_norm = norms and "Norm" in type(module).__name__
        for name, param in module.named_parameters(recurse=False):
            if name == "bias" or is_norm:
                chosen.add(id(param))
    head = model.get_output_embeddings() if lm_head else None
    if head is not None:
        chosen.update(id(p) for p in head.parameters())
    return chosen


{{register_hook}}'''

STRATEGY_TEST = '''"""Tests of {{dist}}: the strategy registers through tuneyard's plugin
manager, and on a tiny Llama built here (hidden 32, 2 layers, with bias terms) it trains
exactly the bias terms and the LM head. Nothing is downloaded."""

import pytest
import torch

import tuneyard_{{pkg}} as plugin
from tuneyard.core.errors import TuneyardError
from tuneyard.core.plugins import Plugins
from tuneyard_{{pkg}} import {{cls}}


def tiny_llama(bias=True):
    """A seeded random Llama: vocab 100, hidden 32, FFN 64, 2 layers, 4 heads, untied head."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=100, hidden_size=32, intermediate_size=64,
                         num_hidden_layers=2, num_attention_heads=4, attention_bias=bias,
                         mlp_bias=bias, tie_word_embeddings=False)
    torch.manual_seed(0)
    return LlamaForCausalLM(config)


def trainable_count(model):
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


BIASES = 2 * (4 * 32 + 2 * 64 + 32)  # per layer: q, k, v, o (32 each); gate, up (64); down (32)
LM_HEAD = 100 * 32  # vocab x hidden
NORMS = 2 * 2 * 32 + 32  # two RMSNorms per layer, one final


{{registers_test}}

def test_trains_only_biases_and_lm_head():
    model = make().prepare(tiny_llama())
    assert trainable_count(model) == BIASES + LM_HEAD == 3776
    frozen = model.model.layers[0].self_attn.q_proj.weight.detach().clone()
    bias = model.model.layers[0].self_attn.q_proj.bias.detach().clone()
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    ids = torch.randint(0, 100, (2, 8), generator=torch.Generator().manual_seed(0))  # [batch, seq]
    model(input_ids=ids, labels=ids).loss.backward()
    optimizer.step()
    assert torch.equal(model.model.layers[0].self_attn.q_proj.weight, frozen)
    assert not torch.equal(model.model.layers[0].self_attn.q_proj.bias, bias)


def test_options_choose_head_and_norms():
    model = make(lm_head=False, norms=True).prepare(tiny_llama())
    assert trainable_count(model) == BIASES + NORMS == 736


def test_nothing_to_train_names_the_options():
    with pytest.raises(TuneyardError) as error:
        make(lm_head=False).prepare(tiny_llama(bias=False))
    assert str(error.value) == (
        "strategy.options: LlamaForCausalLM has no bias terms, so {{name}} would train nothing; "
        "set strategy.options.lm_head or strategy.options.norms to true")
'''

STRATEGY_USAGE = '''\
strategy:
  name: {{name}}
  options: {lm_head: true, norms: false}
training:
  learning_rate: 1.0e-3  # few weights train: BitFit used rates of 1e-4 to 1e-3'''

KIND_TEMPLATES: dict[str, KindTemplate] = {
    "evaluator": KindTemplate(
        "register_evaluators", "Evaluator",
        "the token-overlap F1 (SQuAD v1.1) of the model's greedy answers to the held-out "
        "prompts, metric `token_f1`",
        EVALUATOR_MODULE, EVALUATOR_TEST, EVALUATOR_USAGE,
    ),
    "dataset-source": KindTemplate(
        "register_dataset_sources", "Source",
        "prompt/completion rows, ten built-in examples or a JSONL file",
        DATASET_MODULE, DATASET_TEST, DATASET_USAGE,
    ),
    "model-provider": KindTemplate(
        "register_model_providers", "Provider",
        "a transformers model and tokenizer loaded from a local Hugging Face folder, offline",
        MODEL_MODULE, MODEL_TEST, MODEL_USAGE,
    ),
    "strategy": KindTemplate(
        "register_training_strategies", "Strategy",
        "BitFit (Ben Zaken et al. 2021): only the bias terms and the LM head are trained",
        STRATEGY_MODULE, STRATEGY_TEST, STRATEGY_USAGE,
    ),
}
