"""Known traps of LM training loops (DESIGN.md), checked on the tiny model."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from tuneyard.core.cli import cli
from tuneyard.core.registry import Registry


def losses_of(tmp_path, make_spec, data, name, **training):
    reg = tmp_path / f"{name}.db"
    spec = make_spec(data, **{"strategy": {"name": "full"}, "evaluators": [],
                              **{f"training.{k}": v for k, v in training.items()}})
    result = CliRunner().invoke(cli, ["--registry", str(reg), "run", str(spec)])
    assert result.exit_code == 0, result.output
    [run] = Registry(reg).list_runs()
    return [v for _, v in Registry(reg).metrics(run["id"], "loss")]


def test_gradient_accumulation_normalises_over_all_tokens(tmp_path, make_spec):
    """4 examples as one micro-batch or as 2 × 2 accumulated must give the same update: the
    loss is summed over every label token of the accumulated batch and divided once (examples
    here have different answer lengths, so averaging per micro-batch would differ)."""
    data = tmp_path / "uneven.jsonl"
    rows = [{"instruction": f"say {w}", "output": " ".join([w] * n)}
            for w, n in [("cat", 1), ("dog", 7), ("tree", 2), ("run", 12)]] * 5
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    one = losses_of(tmp_path, make_spec, data, "one", max_steps=3, micro_batch_size=4,
                    gradient_accumulation_steps=1, learning_rate=1e-2)
    acc = losses_of(tmp_path, make_spec, data, "acc", max_steps=3, micro_batch_size=2,
                    gradient_accumulation_steps=2, learning_rate=1e-2)
    assert acc == pytest.approx(one, rel=1e-4)
    assert one[2] < one[0]
