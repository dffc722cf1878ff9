"""Property-based test (hypothesis): random run specs and random data rows, driven through the
real path (YAML file → ``load_spec`` → ``compose`` → ``create_run`` → ``execute``) on the tiny
model, either complete or raise a :class:`TuneyardError` with a message; never another
exception, and never a built-in component's crash (a :class:`PluginFailed`, which wraps one).

The examples are derandomized, so CI sees the same ones on every run."""

from __future__ import annotations

import itertools
import json
import math
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from tuneyard.core.engine import compose, create_run
from tuneyard.core.errors import PluginFailed, TuneyardError
from tuneyard.core.formats import FIELDS, FORMAT_TASKS
from tuneyard.core.plugins import get_plugins
from tuneyard.core.registry import Registry
from tuneyard.core.run.pipeline import execute
from tuneyard.core.spec import load_spec

#: the formats that train the tiny causal LM
FORMATS = sorted(f for f, task in FORMAT_TASKS.items() if task == "causal-lm")
#: the evaluators of causal-LM models, and their options
EVALUATOR_OPTIONS = {"perplexity": ["limit"], "samples": ["prompts", "max_new_tokens"],
                     **{name: ["limit", "max_new_tokens", "batch_size"]
                        for name in ("exact-match", "rouge", "bleu", "squad")}}
#: every column a format reads, and a few it does not
COLUMNS = sorted({c for fields in FIELDS.values() for cols in fields.values() for c in cols}
                 | {"id", "role", "content", "from", "value", ""})

texts = st.one_of(st.just(""), st.text(max_size=20), st.sampled_from(["define cat", "é ✓ 字 🙂"]),
                  st.text(alphabet="ab ", min_size=1000, max_size=3000))
scalars = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70),
                    st.floats(allow_nan=True, allow_infinity=True), texts)
#: any JSON value
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3)
                      | st.dictionaries(st.sampled_from(COLUMNS), inner, max_size=3),
                      max_leaves=8)

#: what a case may break (at most one thing each), and the values that break it: out of range,
#: of the wrong type, unknown
FAULTS: dict[str, list[Any]] = {
    "rows": [],  # the rows are any JSON values (see ``cases``)
    "row": [1, "x", None, [], {"x": []}],
    "cell": [None, 1.5, ["x"], {"a": "b"}, True],
    "column": [],  # rows may lack the format's columns (see ``cases``)
    "turn.role": ["", "bot", 3, None],
    "turn.content": [None, 7, ["x"], {"a": 1}],
    "dataset.eval_split": [0, 1, -0.1, 0.001],
    "dataset.eval_limit": [0],
    "dataset.columns": [{"bogus": "text"}, {"output": "missing"}, {"text": "messages"}],
    "full.options": [{"bogus": 1}],
    "lora.r": [0, -1, "x"],
    "lora.alpha": [0],
    "lora.dropout": [1.0, -0.1],
    "lora.target_modules": [["no_such"], [], 3],
    "training.max_steps": [0, -1, 2.5, "two"],
    "training.micro_batch_size": [0, -2],
    "training.max_seq_len": [1, 0, -1],
    "training.learning_rate": [0, -1e-3, math.inf, math.nan],
    "training.gradient_accumulation_steps": [0],
    "training.warmup_steps": [-1],
    "training.lr_scheduler": ["nope"],
    "evaluator.limit": [0, -1],
    "evaluator.max_new_tokens": [0],
    "evaluator.prompts": [[], "hi"],
    "evaluator.options": [["limit", "prompts"]],  # an option it does not have
}


@st.composite
def cases(draw: st.DrawFn) -> dict[str, Any]:
    """Keyword arguments of ``run_spec``: the rows and the spec's sections. A case breaks at
    most one thing (see :data:`FAULTS`), so about half of them train and the others check the
    error of that one thing."""
    broken = draw(st.one_of(st.none(), st.sampled_from(list(FAULTS))))

    def pick(fault: str, valid: st.SearchStrategy) -> st.SearchStrategy:
        return st.sampled_from(FAULTS[fault]) if fault == broken else valid

    def turns(role: str, content: str, asks: list[str], answer: str) -> st.SearchStrategy:
        """Chat turns: some questions, then the answer to learn."""
        def turn(roles: st.SearchStrategy) -> st.SearchStrategy:
            return st.fixed_dictionaries({role: pick("turn.role", roles),
                                          content: pick("turn.content", texts)})

        return st.tuples(st.lists(turn(st.sampled_from(asks)), max_size=3),
                         turn(st.just(answer))).map(lambda t: [*t[0], t[1]])

    fmt = draw(st.sampled_from(FORMATS))
    cells = {"messages": turns("role", "content", ["system", "user"], "assistant"),
             "conversations": turns("from", "value", ["system", "human"], "gpt")}
    columns = {cols[0]: pick("cell", cells.get(field, texts))
               for field, cols in FIELDS[fmt].items()}
    row = st.tuples(
        st.dictionaries(st.sampled_from(COLUMNS), pick("cell", texts), max_size=2),
        st.fixed_dictionaries({}, optional=columns) if broken == "column" else
        st.fixed_dictionaries(columns),
    ).map(lambda parts: {**parts[0], **parts[1]})
    rows = draw(st.lists(values, max_size=3) if broken == "rows" else
                st.lists(st.one_of(row, pick("row", row)), min_size=2, max_size=12))
    dataset = draw(st.fixed_dictionaries({"format": st.just(fmt)}, optional={
        "eval_split": pick("dataset.eval_split", st.sampled_from([0.2, 0.5, 0.9])),
        "eval_limit": pick("dataset.eval_limit", st.integers(1, 3)),
        "columns": pick("dataset.columns", st.just({})),
    }))
    strategy = draw(st.one_of(
        st.fixed_dictionaries({"name": st.just("full"),
                               "options": pick("full.options", st.just({}))}),
        st.fixed_dictionaries({"name": st.just("lora"), "options": st.fixed_dictionaries(
            {}, optional={
                "r": pick("lora.r", st.integers(1, 4)),
                "alpha": pick("lora.alpha", st.integers(1, 16)),
                "dropout": pick("lora.dropout", st.sampled_from([0.0, 0.1])),
                "target_modules": pick("lora.target_modules",
                                       st.sampled_from(["all-linear", ["q_proj"], "q_proj"])),
            })}),
    ))
    training = draw(st.fixed_dictionaries({
        "max_steps": pick("training.max_steps", st.integers(1, 2)),
        "micro_batch_size": pick("training.micro_batch_size", st.integers(1, 3)),
        "max_seq_len": pick("training.max_seq_len", st.sampled_from([2, 3, 8, 32, 64])),
        "learning_rate": pick("training.learning_rate", st.sampled_from([1e-3, 5e-2])),
        "telemetry_interval_s": st.just(0),
    }, optional={
        "gradient_accumulation_steps": pick("training.gradient_accumulation_steps",
                                            st.integers(1, 2)),
        "packing": st.booleans(),
        "eval_steps": st.sampled_from([None, 1]),
        "save_steps": st.sampled_from([None, 1]),
        "warmup_steps": pick("training.warmup_steps", st.integers(0, 2)),
        "lr_scheduler": pick("training.lr_scheduler",
                             st.sampled_from(["linear", "cosine", "constant"])),
    }))
    options = {"limit": pick("evaluator.limit", st.integers(1, 2)),
               "max_new_tokens": pick("evaluator.max_new_tokens", st.integers(1, 3)),
               "batch_size": st.just(1),
               "prompts": pick("evaluator.prompts", st.sampled_from([["hi"], [""]]))}
    evaluators = []
    for name in draw(st.lists(st.sampled_from(list(EVALUATOR_OPTIONS)), max_size=3,
                              unique=True)):
        keys = draw(pick("evaluator.options", st.just(EVALUATOR_OPTIONS[name])))
        evaluators.append(draw(st.fixed_dictionaries({"name": st.just(name)}, optional={
            "options": st.fixed_dictionaries({}, optional={k: options[k] for k in keys})})))
    return {"rows": rows, "dataset": dataset, "strategy": strategy, "training": training,
            "evaluators": evaluators}


@pytest.fixture
def run_spec(tmp_path, tiny_model_dir):
    """``run_spec(rows, dataset, strategy, training, evaluators)``: write the rows (JSONL) and
    the spec (YAML) into a new folder and run it through the real path; returns the status."""
    registry = Registry(tmp_path / "registry.db")
    counter = itertools.count()

    def run(rows: list[Any], dataset: dict, strategy: dict, training: dict,
            evaluators: list[dict]) -> str:
        folder = tmp_path / f"example-{next(counter)}"
        folder.mkdir()
        data = folder / "data.jsonl"
        data.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows),
                        encoding="utf-8")
        spec = {"dataset": {"source": "jsonl", "options": {"path": str(data)}, **dataset},
                "model": {"provider": "hf", "options": {"path": str(tiny_model_dir)}},
                "strategy": strategy, "training": {**training, "seed": 0},
                "evaluators": evaluators, "output_dir": str(folder / "runs")}
        path = folder / "spec.yaml"
        path.write_text(yaml.safe_dump(spec, allow_unicode=True, sort_keys=False),
                        encoding="utf-8")
        loaded = load_spec(path)
        compose(loaded, get_plugins())
        run_id, _ = create_run(loaded, registry)
        return execute(registry, run_id)

    return run


@settings(max_examples=50, deadline=None, derandomize=True, print_blob=True,
          phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink],  # no slow explain
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.data_too_large])
@given(case=cases())
def test_random_specs_and_rows_complete_or_raise_a_tuneyard_error(run_spec, case):
    try:
        status = run_spec(**case)
    except TuneyardError as exc:
        assert str(exc).strip(), f"{type(exc).__name__} with an empty message"
        assert not isinstance(exc, PluginFailed), f"a built-in component crashed: {exc}"
    else:
        assert status == "completed"
