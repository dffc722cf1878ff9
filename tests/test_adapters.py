"""QLoRA: on a CPU the option is refused when the run is composed, before anything loads
(nothing recorded); on a CUDA GPU (with bitsandbytes) the base model trains in 4-bit NF4 under
bf16 LoRA adapters, resumes and exports merged. The other adapter kinds (DoRA, rsLoRA,
PiSSA, OLoRA, modules_to_save) are covered by tests/test_resume.py and tests/test_export.py."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from tuneyard.core.cli import cli
from tuneyard.core.registry import Registry


def tuneyard(reg: Path, *args: str):
    return CliRunner().invoke(cli, ["--registry", str(reg), *args])


@pytest.mark.parametrize(("strategy", "message"), [
    ("lora", "--set strategy.options.qlora=true: strategy.options.qlora: a 4-bit QLoRA base "
             "needs a CUDA GPU (bitsandbytes' NF4 kernels); this run's device is cpu (set "
             "qlora: false, or run where training.device can be cuda)"),
    ("dpo", "--set strategy.options.qlora=true: strategy.options.qlora: a 4-bit QLoRA base "
            "needs a CUDA GPU (bitsandbytes' NF4 kernels); this run's device is cpu (set "
            "qlora: false, or run where training.device can be cuda)"),
])
def test_qlora_is_refused_on_a_cpu_before_anything_loads(tmp_path, make_spec, qa_jsonl,
                                                         strategy, message):
    reg = tmp_path / "registry.db"
    spec = make_spec(qa_jsonl, **{"strategy": {"name": strategy}, "training.device": "cpu",
                                  **({"dataset.format": "preference"} if strategy == "dpo"
                                     else {})})
    result = tuneyard(reg, "run", str(spec), "--set", "strategy.options.qlora=true")
    assert result.exit_code == 2
    assert " ".join(result.output.split()) == f"Error: {message}"
    assert not reg.exists()  # refused before the run was recorded


def test_qlora_with_full_weights_is_refused(tmp_path, make_spec, qa_jsonl):
    spec = make_spec(qa_jsonl, **{"dataset.format": "preference", "strategy": {
        "name": "dpo", "options": {"weights": "full", "qlora": True}}})
    result = tuneyard(tmp_path / "registry.db", "run", str(spec))
    assert result.exit_code == 2
    assert result.output.strip().splitlines()[-1].endswith(
        "strategy.options.qlora: trains adapters on a 4-bit base, and weights: full trains "
        "every weight; set weights: lora")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_on_cuda_qlora_trains_4bit_nf4_resumes_and_merges(tmp_path, make_spec, qa_jsonl,
                                                          tiny_model_dir, stop_at):
    bnb = pytest.importorskip("bitsandbytes", reason="needs bitsandbytes (tuneyard[qlora])")
    from tuneyard.core.engine import create_run
    from tuneyard.core.run.pipeline import execute
    from tuneyard.core.spec import load_spec
    from tuneyard.plugins.models.hf import HFModel
    from tuneyard.plugins.strategies.lora import LoRA

    model, _ = HFModel(HFModel.Options(path=str(tiny_model_dir))).load(
        task="causal-lm", dtype=torch.float32)
    prepared = LoRA(LoRA.Options(r=4, qlora=True)).prepare(model)
    linear = [m for n, m in prepared.named_modules() if n.endswith("q_proj.base_layer")]
    assert linear and all(isinstance(m, bnb.nn.Linear4bit) for m in linear)
    assert {m.weight.quant_type for m in linear} == {"nf4"}
    assert {m.compute_dtype for m in linear} == {torch.bfloat16}

    reg = tmp_path / "registry.db"
    spec = make_spec(qa_jsonl, **{"strategy": {"name": "lora", "options": {"r": 4,
                                                                            "qlora": True}},
                                  "training.max_steps": 6, "training.save_steps": 2,
                                  "training.learning_rate": 1e-2})
    registry = Registry(reg)
    run_id, _ = create_run(load_spec(spec), registry)
    stop_at(registry, run_id, 2)
    assert execute(registry, run_id) == "stopped"
    assert execute(registry, run_id, resume=True) == "completed"
    losses = [v for _, v in registry.metrics(run_id, "loss")]
    assert len(losses) == 6 and losses[-1] < losses[0]
    result = tuneyard(reg, "export", run_id, str(tmp_path / "merged"), "--merge")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "merged" / "model.safetensors").is_file()


def test_modules_to_save_must_name_a_module(tmp_path, make_spec, qa_jsonl):
    spec = make_spec(qa_jsonl, **{"strategy": {"name": "lora", "options": {
        "modules_to_save": ["nonexistent"]}}})
    result = tuneyard(tmp_path / "registry.db", "run", str(spec))
    assert result.exit_code == 2
    assert result.output.strip().splitlines()[-1] == (
        "Error: strategy.options.modules_to_save: 'nonexistent' names no module of the model "
        "(a module's name or its last parts, e.g. norm, lm_head, model.layers.0.mlp)")
