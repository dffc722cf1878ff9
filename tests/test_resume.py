"""Resume exactness (issue #6): a run stopped at a step and resumed from its checkpoint gives,
on CPU, the same losses, learning rates, gradient norms, strategy metrics (DPO's and ORPO's
rewards) and final weights (within 1e-6) as an uninterrupted run with the same seed, for
``full``, ``lora`` (also under a non-default adapter name, with ``training.packing``, and each
adapter kind: DoRA with rsLoRA and a saved module, PiSSA and OLoRA initialisation),
``pretrain-clm``, and ``dpo`` and ``orpo`` on LoRA and on every weight. The recipe makes each piece of saved
state matter: LoRA dropout (RNG), warmup + cosine (scheduler), gradient accumulation, a stop in
mid-epoch of a shuffled dataset (data order), and the final weights reload for ``tuneyard
eval``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tuneyard.core.engine import create_run
from tuneyard.core.registry import Registry
from tuneyard.core.run.evaluate import evaluate_run
from tuneyard.core.run.pipeline import execute
from tuneyard.core.spec import load_spec

MAX_STEPS, STOP_AT = 8, 2
TRAINING = {"training.max_steps": MAX_STEPS, "training.micro_batch_size": 4,
            "training.gradient_accumulation_steps": 2, "training.warmup_steps": 2,
            "training.lr_scheduler": "cosine", "training.save_steps": 4,
            "evaluators": [{"name": "perplexity"}]}
STRATEGIES = {
    "full": {"strategy": {"name": "full"}, "training.learning_rate": 3e-3},
    "lora": {"strategy": {"name": "lora", "options": {"r": 4, "dropout": 0.2}}},
    "lora-mine": {"strategy": {"name": "lora", "options": {"r": 4, "dropout": 0.2,
                                                           "adapter_name": "mine"}}},
    "pretrain-clm": {"strategy": {"name": "pretrain-clm"}, "training.max_seq_len": 32,
                     "training.learning_rate": 3e-3},
    "lora-packed": {"strategy": {"name": "lora", "options": {"r": 4, "dropout": 0.2}},
                    "training.packing": True, "training.max_seq_len": 128},
    "lora-dora": {"strategy": {"name": "lora", "options": {
        "r": 4, "dropout": 0.2, "use_dora": True, "use_rslora": True,
        "modules_to_save": ["norm"], "init": "gaussian"}}},
    "lora-pissa": {"strategy": {"name": "lora", "options": {"r": 4, "init": "pissa"}}},
    "lora-olora": {"strategy": {"name": "lora", "options": {"r": 4, "init": "olora"}}},
    **{f"{method}-{weights}": {
        "strategy": {"name": method, "options": {"weights": weights, "r": 4, "dropout": 0.2}},
        "training.learning_rate": 3e-3 if weights == "full" else 1e-2}
       for method in ("dpo", "orpo") for weights in ("lora", "full")},
}
#: the final weights' file inside ``<output_dir>/final`` (peft saves a non-default adapter
#: in a sub-folder named after it)
WEIGHTS = {kind: "adapter_model.safetensors" if "lora" in kind else "model.safetensors"
           for kind in STRATEGIES} | {"lora-mine": "mine/adapter_model.safetensors"}


@pytest.fixture
def corpus(tmp_path) -> Path:
    """Raw text for ``pretrain-clm``: 60 lines of 3 kinds, ~13 blocks of 32 tokens."""
    path = tmp_path / "corpus.txt"
    lines = ["the cat sat on the mat and the dog ran to the tree",
             "a tall perennial woody plant", "to run is to move fast on foot"]
    path.write_text("\n".join(lines * 20))
    return path


@pytest.fixture
def pairs(tmp_path) -> Path:
    """40 preference pairs for ``dpo`` and ``orpo``."""
    path = tmp_path / "pairs.jsonl"
    words = [("cat", "a small animal", "a loud noise"), ("dog", "a domesticated animal",
                                                         "it is green"),
             ("tree", "a tall perennial woody plant", "nothing at all")]
    path.write_text("".join(json.dumps({"prompt": f"define the word {w}", "chosen": good,
                                        "rejected": bad}) + "\n"
                            for i in range(14) for w, good, bad in words[i % 3:i % 3 + 1]))
    return path


def spec_for(kind: str, make_spec, qa_jsonl: Path, corpus: Path, pairs: Path) -> Path:
    changes = {**TRAINING, **STRATEGIES[kind]}
    data = qa_jsonl
    if kind == "pretrain-clm":
        data = corpus
        changes["dataset"] = {"source": "text", "options": {"path": str(corpus)},
                              "format": "text", "eval_split": 0.1}
    if kind.startswith(("dpo", "orpo")):
        data = pairs
        changes["dataset.format"] = "preference"
    return make_spec(data, **changes)


def curves(registry: Registry, run_id: str) -> dict[str, list[tuple[int, float]]]:
    """Every metric the run logged per step (the strategy's too), but its speed."""
    names = {r["name"] for r in registry.metrics_since(run_id)} - {"tokens_per_s"}
    return {name: registry.metrics(run_id, name) for name in sorted(names)}


def final_tensors(run: dict, kind: str) -> dict:
    from safetensors.torch import load_file

    return load_file(Path(run["output_dir"]) / "final" / WEIGHTS[kind])


def final_eval_loss(registry: Registry, run_id: str) -> float:
    [value] = [e["value"] for e in registry.evaluations(run_id)
               if (e["checkpoint"], e["metric"]) == ("final", "eval_loss")]
    return value


def global_step(checkpoint: Path) -> int:
    return json.loads((checkpoint / "trainer_state.json").read_text())["global_step"]


@pytest.mark.parametrize("kind", list(STRATEGIES))
def test_stopped_then_resumed_run_equals_an_uninterrupted_one(
        kind, registry_path, make_spec, qa_jsonl, corpus, pairs, stop_at):
    import torch

    registry = Registry(registry_path)
    spec = load_spec(spec_for(kind, make_spec, qa_jsonl, corpus, pairs))
    straight, _ = create_run(spec, registry)
    assert execute(registry, straight) == "completed"
    expected = curves(registry, straight)
    assert [s for s, _ in expected["loss"]] == list(range(1, MAX_STEPS + 1))
    assert {"loss", "learning_rate", "grad_norm"} <= set(expected)
    if kind.startswith(("dpo", "orpo")):
        assert {"rewards/chosen", "rewards/margins", "rewards/accuracies"} <= set(expected)
    assert expected["learning_rate"][0][1] < expected["learning_rate"][1][1]  # warmup

    run_id, _ = create_run(spec, registry)
    stop_at(registry, run_id, STOP_AT)
    assert execute(registry, run_id) == "stopped"
    [ckpt] = registry.checkpoints(run_id)
    stopped_at = ckpt["step"]
    assert STOP_AT <= stopped_at < MAX_STEPS
    state = json.loads((Path(ckpt["path"]) / "trainer_state.json").read_text())
    assert state["global_step"] == stopped_at
    assert not float(state["epoch"]).is_integer()  # mid-epoch: the data order matters
    assert registry.get_run(run_id)["step"] == stopped_at
    before = max(r["id"] for r in registry.metrics_since(run_id))

    assert execute(registry, run_id, resume=True) == "completed"
    run = registry.get_run(run_id)
    assert run["status"] == "completed" and run["step"] == MAX_STEPS
    log = (Path(run["output_dir"]) / "run.log").read_text()
    assert f"resuming from step {stopped_at}" in log
    resumed_rows = registry.metrics_since(run_id, before)
    assert min(r["step"] for r in resumed_rows) == stopped_at + 1  # no step logged twice
    last = Path(run["output_dir"]) / "checkpoints" / f"checkpoint-{MAX_STEPS}"
    assert global_step(last) == MAX_STEPS

    got = curves(registry, run_id)
    for name, values in expected.items():
        assert [s for s, _ in got[name]] == [s for s, _ in values], name
        assert [v for _, v in got[name]] == pytest.approx([v for _, v in values], abs=1e-6), \
            name
    want, have = final_tensors(registry.get_run(straight), kind), final_tensors(run, kind)
    assert sorted(have) == sorted(want) and want
    for key, tensor in want.items():
        torch.testing.assert_close(have[key], tensor, atol=1e-6, rtol=0, msg=key)
    # the strategy reloads the final weights onto the base model (tuneyard eval)
    trained = final_eval_loss(registry, run_id)
    assert evaluate_run(registry, run_id)["perplexity"]["eval_loss"] == pytest.approx(
        trained, abs=1e-6)
