"""The options that make a run use a GPU well (issue #7): SDPA attention, fused AdamW and bf16
autocast on CUDA, gradient checkpointing. Gradient checkpointing recomputes activations, so
it must not change the losses; the CUDA test runs where a GPU is (``bench/gpu.sh`` runs it)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tuneyard.core.engine import create_run
from tuneyard.core.registry import Registry
from tuneyard.core.run.pipeline import execute
from tuneyard.core.spec import load_spec
from tuneyard.plugins.models.hf import HFModel


def run(tmp_path: Path, spec_path: Path, name: str) -> tuple[Registry, dict]:
    registry = Registry(tmp_path / f"{name}.db")
    run_id, _ = create_run(load_spec(str(spec_path)), registry)
    assert execute(registry, run_id) == "completed"
    return registry, registry.get_run(run_id)


def test_models_use_pytorch_sdpa_attention(tiny_model_dir):
    model, _ = HFModel(HFModel.Options(path=str(tiny_model_dir))).load(
        task="causal-lm", dtype=torch.float32)
    assert model.config._attn_implementation == "sdpa"


@pytest.mark.parametrize("strategy", ["full", "lora"])
def test_gradient_checkpointing_leaves_the_losses_unchanged(tmp_path, make_spec, qa_jsonl,
                                                            strategy):
    losses = {}
    for checkpointing in (False, True):
        spec = make_spec(qa_jsonl, **{"strategy": {"name": strategy},
                                      "training.max_steps": 4, "evaluators": [],
                                      "training.gradient_checkpointing": checkpointing})
        registry, r = run(tmp_path, spec, f"gc-{checkpointing}")
        losses[checkpointing] = [v for _, v in registry.metrics(r["id"], "loss")]
    assert len(losses[True]) == 4
    assert max(abs(a - b) for a, b in zip(losses[False], losses[True])) < 1e-5
    assert losses[True][-1] < losses[True][0]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_on_cuda_bf16_autocast_and_fused_adamw(tmp_path, make_spec, qa_jsonl):
    spec = make_spec(qa_jsonl, **{"strategy": {"name": "full"}, "training.max_steps": 4,
                                  "training.save_steps": 2, "training.precision": "bf16",
                                  "evaluators": [{"name": "perplexity"}]})
    registry, r = run(tmp_path, spec, "cuda")
    assert r["device"] == "cuda"
    checkpoint = Path(r["output_dir"]) / "checkpoints" / "checkpoint-2"
    optimizer = torch.load(checkpoint / "optimizer.pt", weights_only=True)
    assert optimizer["param_groups"][0]["fused"] is True
    args = torch.load(checkpoint / "training_args.bin", weights_only=False)
    assert args.bf16 and args.optim == "adamw_torch_fused"
    losses = [v for _, v in registry.metrics(r["id"], "loss")]
    assert len(losses) == 4 and losses[-1] < losses[0]
