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


def test_training_optim_picks_the_trainers_optimizer(tmp_path, make_spec, qa_jsonl):
    spec = make_spec(qa_jsonl, **{"strategy": {"name": "full"}, "training.max_steps": 4,
                                  "training.save_steps": 2, "training.optim": "sgd",
                                  "training.learning_rate": 0.5, "evaluators": []})
    registry, r = run(tmp_path, spec, "sgd")
    checkpoint = Path(r["output_dir"]) / "checkpoints" / "checkpoint-2"
    assert torch.load(checkpoint / "training_args.bin", weights_only=False).optim == "sgd"
    group = torch.load(checkpoint / "optimizer.pt", weights_only=True)["param_groups"][0]
    assert "momentum" in group and "betas" not in group  # torch.optim.SGD's, not AdamW's
    losses = [v for _, v in registry.metrics(r["id"], "loss")]
    assert losses[-1] < losses[0]


def test_an_unknown_or_unavailable_optimizer_is_refused_before_anything_loads(
        tmp_path, make_spec, qa_jsonl, monkeypatch):
    import importlib.util

    from click.testing import CliRunner

    from tuneyard.core.cli import cli

    spec = make_spec(qa_jsonl)
    reg = tmp_path / "registry.db"

    def refused(optim: str) -> str:
        result = CliRunner().invoke(cli, ["--registry", str(reg), "run", str(spec), "--set",
                                          f"training.optim={optim}"])
        assert result.exit_code == 2 and not reg.exists(), result.output
        return " ".join(result.output.split())

    assert refused("adamw").startswith(
        "Error: --set training.optim=adamw: training.optim: Input should be 'adamw_torch', "
        "'adamw_torch_fused', 'adafactor', 'sgd',")
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None
                        if name == "bitsandbytes" else find_spec(name, *a))
    assert refused("adamw_8bit") == (
        "Error: --set training.optim=adamw_8bit: training.optim: adamw_8bit needs the package "
        "bitsandbytes, which is not installed (pip install bitsandbytes); or leave optim out "
        "for AdamW")
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object()
                        if name == "bitsandbytes" else find_spec(name, *a))
    assert refused("paged_adamw_8bit") == (
        "Error: --set training.optim=paged_adamw_8bit: training.optim: paged_adamw_8bit pages "
        "optimizer state out of GPU memory and needs a CUDA GPU; this run's device is cpu")


def test_every_optimizer_offered_is_one_transformers_knows():
    from transformers.training_args import OptimizerNames

    from tuneyard.core.spec import OPTIMIZER_PACKAGES, OPTIMIZERS

    assert set(OPTIMIZERS) <= {o.value for o in OptimizerNames}
    assert set(OPTIMIZER_PACKAGES) == set(OPTIMIZERS) - {
        "adamw_torch", "adamw_torch_fused", "adafactor", "sgd", "adagrad", "rmsprop"}
