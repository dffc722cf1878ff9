"""Preference tuning: the ``preference`` format (text and conversational rows, errors naming
the row), the ``preference`` evaluator against log-probabilities computed by hand, and the
``dpo`` and ``orpo`` strategies (TRL's trainers) end to end on LoRA and on every weight, with
their per-step rewards in the registry."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from tuneyard.core.cli import cli
from tuneyard.core.components import EvalContext, Example
from tuneyard.core.formats import PadCollator, to_examples
from tuneyard.core.registry import Registry
from tuneyard.plugins.evaluators.preference import Preference
from tuneyard.plugins.models.hf import HFModel

WORDS = [("cat", "a small animal"), ("dog", "a domesticated animal"),
         ("tree", "a tall perennial woody plant"), ("run", "move fast on foot")]
REWARDS = ("rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies")


WRONG = ["the blue sky at night", "a loud noise", "it is green", "nothing at all"]


@pytest.fixture
def pairs_jsonl(tmp_path) -> Path:
    """40 pairs: the gloss of the asked word is chosen, a wrong answer rejected."""
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(
        json.dumps({"prompt": f"define the word {w}", "chosen": d, "rejected": WRONG[i]}) + "\n"
        for _ in range(10) for i, (w, d) in enumerate(WORDS)))
    return path


@pytest.fixture
def tiny(tiny_model_dir):
    return HFModel(HFModel.Options(path=str(tiny_model_dir))).load(task="causal-lm",
                                                                   dtype=torch.float32)


def tuneyard(reg: Path, *args: str):
    return CliRunner().invoke(cli, ["--registry", str(reg), *args])


# -- the format ------------------------------------------------------------------------------
def test_text_and_conversational_rows_render_as_the_run_renders_prompts(tiny):
    _, tokenizer = tiny
    rows = [{"prompt": "define the word cat", "chosen": "a small animal", "rejected": "a tree"},
            {"prompt": [{"role": "system", "content": "be brief"},
                        {"role": "user", "content": "define dog"}],
             "chosen": [{"role": "assistant", "content": "a domesticated animal"}],
             "rejected": [{"role": "assistant", "content": "a tall plant"}]}]
    text, chat = to_examples(rows, "preference", {}, tokenizer)
    assert text == Example("<|im_start|>user\ndefine the word cat<|im_end|>\n"
                           "<|im_start|>assistant\n", "a small animal", rejected="a tree")
    assert chat == Example("<|im_start|>system\nbe brief<|im_end|>\n<|im_start|>user\ndefine "
                           "dog<|im_end|>\n<|im_start|>assistant\n", "a domesticated animal",
                           rejected="a tall plant")


@pytest.mark.parametrize(("row", "message"), [
    ({"prompt": "q", "chosen": "a", "rejected": "  "},
     "dataset row 2: column 'rejected' is empty; a preference row needs a prompt, a chosen "
     "and a rejected answer"),
    ({"prompt": "q", "chosen": None, "rejected": "b"},
     "dataset row 2: column 'chosen' is empty; a preference row needs a prompt, a chosen and "
     "a rejected answer"),
    ({"prompt": "q", "chosen": [{"role": "assistant", "content": "a"},
                                {"role": "user", "content": "b"}], "rejected": "b"},
     "dataset row 2: column 'chosen' holds 2 message(s) (assistant, user); a conversational "
     "answer is one message of role assistant"),
])
def test_a_bad_row_is_named(tmp_path, make_spec, row, message):
    data = tmp_path / "bad.jsonl"
    good = {"prompt": "q", "chosen": "a", "rejected": "b"}
    if isinstance(row["chosen"], list):  # a column holds one type in every row
        good["chosen"] = [{"role": "assistant", "content": "a"}]
    data.write_text("".join(json.dumps(r) + "\n" for r in (good, row, good, good)))
    spec = make_spec(data, **{"dataset.format": "preference"})
    result = tuneyard(tmp_path / "r.db", "data", "preview", str(spec))
    assert result.exit_code == 2
    assert " ".join(result.output.split()) == f"Error: {message}"


def test_a_missing_column_lists_the_columns_present(tmp_path, make_spec):
    data = tmp_path / "no-rejected.jsonl"
    data.write_text('{"prompt": "q", "chosen": "a"}\n' * 4)
    spec = make_spec(data, **{"dataset.format": "preference"})
    result = tuneyard(tmp_path / "r.db", "data", "preview", str(spec))
    assert result.exit_code == 2
    assert " ".join(result.output.split()) == (
        "Error: dataset: format 'preference' needs a column 'rejected'; columns present: "
        "prompt, chosen (map one with dataset.columns.rejected: COLUMN)")


def test_preview_shows_the_chosen_tokens_and_the_rejected_answer(tmp_path, make_spec,
                                                                 pairs_jsonl):
    spec = make_spec(pairs_jsonl, **{"dataset.format": "preference"})
    result = tuneyard(tmp_path / "r.db", "data", "preview", str(spec), "--rows", "1")
    assert result.exit_code == 0, result.output
    assert "a small animal<|im_end|>\nrejected: the blue sky at night\n" in result.output


# -- the evaluator ---------------------------------------------------------------------------
def log_prob(model, tokenizer, prompt: str, answer: str) -> tuple[float, int]:
    """log p(answer + EOS | prompt), summed over the answer's tokens, one unpadded sequence."""
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    answer_ids = tokenizer(answer, add_special_tokens=False)["input_ids"] + [
        tokenizer.eos_token_id]
    ids = torch.tensor([prompt_ids + answer_ids])
    with torch.no_grad():
        log_probs = torch.log_softmax(model(ids).logits[0].double(), dim=-1)  # [len, vocab]
    total = sum(float(log_probs[len(prompt_ids) + i - 1, token])
                for i, token in enumerate(answer_ids))
    return total, len(answer_ids)


@pytest.mark.parametrize("batch_size", [1, 3, 8])
def test_the_evaluator_scores_each_answer_by_its_log_probability(tiny, batch_size):
    model, tokenizer = tiny
    model.eval()
    pairs = [Example(f"<|im_start|>user\ndefine the word {w}<|im_end|>\n<|im_start|>"
                     "assistant\n", d, rejected=WORDS[(i + 1) % 4][1])
             for i, (w, d) in enumerate(WORDS)]
    ctx = EvalContext(model, tokenizer, pairs, [], PadCollator(tokenizer.pad_token_id),
                      torch.device("cpu"), batch_size, "causal-lm", None, 256)
    result = Preference(Preference.Options()).evaluate(ctx)
    by_hand = [(log_prob(model, tokenizer, e.prompt, e.completion),
                log_prob(model, tokenizer, e.prompt, e.rejected)) for e in pairs]
    margins = [c - r for (c, _), (r, _) in by_hand]
    assert result.metrics["margin"] == pytest.approx(sum(margins) / 4, abs=1e-5)
    assert result.metrics["accuracy"] == sum(m > 0 for m in margins) / 4
    assert result.metrics["accuracy_normalized"] == sum(
        c / nc > r / nr for (c, nc), (r, nr) in by_hand) / 4
    assert result.metrics["pairs"] == 4.0
    for detail, ((c, nc), (r, nr)) in zip(result.details, by_hand):
        assert (detail["tokens_chosen"], detail["tokens_rejected"]) == (nc, nr)
        assert detail["logp_chosen"] == pytest.approx(c, abs=1e-5)
        assert detail["logp_rejected"] == pytest.approx(r, abs=1e-5)
    # a pair whose answers are the same is not preferred either way
    same = [Example(pairs[0].prompt, "a small animal", rejected="a small animal")]
    ctx.examples = same
    tie = Preference(Preference.Options()).evaluate(ctx).metrics
    assert (tie["accuracy"], tie["margin"]) == (0.0, 0.0)


def test_the_evaluator_needs_preference_pairs(tiny):
    model, tokenizer = tiny
    ctx = EvalContext(model, tokenizer, [Example("q", "a")], [], None, torch.device("cpu"))
    from tuneyard.core.errors import DataError

    with pytest.raises(DataError, match="judges preference pairs"):
        Preference(Preference.Options()).evaluate(ctx)


# -- the strategies --------------------------------------------------------------------------
def preference_run(tmp_path: Path, make_spec, pairs_jsonl: Path, strategy: str, weights: str,
                   **changes) -> tuple[Registry, dict]:
    reg = tmp_path / f"{strategy}-{weights}.db"
    spec = make_spec(pairs_jsonl, **{
        "dataset.format": "preference",
        "strategy": {"name": strategy, "options": {"weights": weights, "r": 4}},
        "training.max_steps": 8, "training.learning_rate": 1e-2 if weights == "lora" else 3e-3,
        "evaluators": [{"name": "preference"}, {"name": "perplexity"}], **changes})
    result = tuneyard(reg, "run", str(spec))
    assert result.exit_code == 0, result.output
    registry = Registry(reg)
    [run] = registry.list_runs()
    return registry, registry.get_run(run["id"])


def evaluation(registry: Registry, run_id: str, checkpoint: str, metric: str) -> float:
    [value] = [e["value"] for e in registry.evaluations(run_id)
               if (e["checkpoint"], e["evaluator"], e["metric"]) == (checkpoint, "preference",
                                                                     metric)]
    return value


@pytest.mark.parametrize("weights", ["lora", "full"])
def test_dpo_starts_at_its_reference_and_widens_the_margin(tmp_path, make_spec, pairs_jsonl,
                                                           weights):
    registry, run = preference_run(tmp_path, make_spec, pairs_jsonl, "dpo", weights)
    steps = {name: registry.metrics(run["id"], name) for name in ("loss", *REWARDS)}
    assert all([s for s, _ in values] == list(range(1, 9)) for values in steps.values())
    # at step 1 the model is its reference (the base under a frozen copy of the fresh adapter,
    # or a frozen copy of the whole model): every implicit reward is 0 and the loss is log 2
    assert steps["loss"][0][1] == pytest.approx(math.log(2), abs=1e-6)
    assert [steps[name][0][1] for name in REWARDS] == [0.0, 0.0, 0.0, 0.0]
    losses = [v for _, v in steps["loss"]]
    assert sum(losses[-3:]) / 3 < math.log(2) - 0.1
    assert steps["rewards/margins"][-1][1] > 0 and steps["rewards/accuracies"][-1][1] > 0.5
    base = evaluation(registry, run["id"], "base", "margin")
    assert evaluation(registry, run["id"], "final", "margin") > base + 1.0
    final = Path(run["output_dir"]) / "final"
    saved = {p.name for p in final.iterdir()}
    if weights == "lora":  # the trained adapter only: TRL's reference copy is not saved
        assert "adapter_model.safetensors" in saved and "ref" not in saved
    else:
        assert "model.safetensors" in saved
    kinds = {a["kind"] for a in registry.artifacts(run["id"])}
    assert ("adapter" if weights == "lora" else "model") in kinds
    assert "strategy-preference" in run["plugin_versions"]


@pytest.mark.parametrize("weights", ["lora", "full"])
def test_orpo_learns_the_chosen_answers_and_prefers_them(tmp_path, make_spec, pairs_jsonl,
                                                         weights):
    registry, run = preference_run(tmp_path, make_spec, pairs_jsonl, "orpo", weights)
    logged = {name: [v for _, v in registry.metrics(run["id"], name)]
              for name in ("loss", "nll_loss", "log_odds_ratio", *REWARDS)}
    assert all(len(values) == 8 for values in logged.values())
    assert logged["nll_loss"][-1] < logged["nll_loss"][0] - 0.3  # it learns the chosen answers
    # ORPO's loss: the chosen answers' NLL minus β·log σ(log odds ratio), β = 0.1
    for loss, nll, ratio in zip(logged["loss"], logged["nll_loss"], logged["log_odds_ratio"]):
        assert loss == pytest.approx(nll - 0.1 * ratio, abs=1e-4)
    base = evaluation(registry, run["id"], "base", "margin")
    assert evaluation(registry, run["id"], "final", "margin") > base + 0.5


def test_a_preference_strategy_needs_preference_rows(tmp_path, make_spec, qa_jsonl):
    spec = make_spec(qa_jsonl, **{"strategy": {"name": "dpo"}})
    result = tuneyard(tmp_path / "r.db", "run", str(spec))
    assert result.exit_code == 2
    assert result.output.strip().splitlines()[-1].endswith(
        "dataset.format: strategy 'dpo' trains on format preference, not 'instruction'")


def test_a_pair_whose_answer_does_not_fit_is_skipped_and_counted(tiny):
    model, tokenizer = tiny
    model.eval()
    prompt = "<|im_start|>user\ndefine the word cat<|im_end|>\n<|im_start|>assistant\n"
    pairs = [Example(prompt, "a small animal", rejected="the blue sky " * 40),
             Example(prompt, "a small animal", rejected="a loud noise")]
    ctx = EvalContext(model, tokenizer, pairs, [], None, torch.device("cpu"), 8, "causal-lm",
                      None, 64)  # the prompt and a short answer fit whole
    result = Preference(Preference.Options()).evaluate(ctx)
    assert (result.metrics["pairs"], result.metrics["pairs_skipped"]) == (1.0, 1.0)
    assert [d["rejected"] for d in result.details] == ["a loud noise"]
    (c, _), (r, _) = (log_prob(model, tokenizer, prompt, a) for a in ("a small animal",
                                                                      "a loud noise"))
    assert result.metrics["margin"] == pytest.approx(c - r, abs=1e-5)
    ctx.examples = pairs[:1]
    from tuneyard.core.errors import DataError

    with pytest.raises(DataError, match=r"none of the 1 held-out pairs fits in "
                                        r"training.max_seq_len \(64 tokens\)"):
        Preference(Preference.Options()).evaluate(ctx)


def test_dpo_refuses_a_max_seq_len_no_prompt_fits_in(tmp_path, make_spec, pairs_jsonl):
    spec = make_spec(pairs_jsonl, **{"dataset.format": "preference",
                                     "strategy": {"name": "dpo"}, "training.max_seq_len": 12,
                                     "evaluators": []})
    result = tuneyard(tmp_path / "r.db", "run", str(spec))
    assert result.exit_code == 2
    assert result.output.strip().splitlines()[-1] == (
        "Error: training.max_seq_len: the prompts of all 32 pairs fill 12 tokens, leaving no "
        "room for an answer; raise training.max_seq_len")


@pytest.mark.parametrize(("changes", "message"), [
    ({"training.packing": True},
     "training.packing: strategy 'dpo' lays out its own training data; remove it"),
    ({"dataset.format": "instruction", "strategy": {"name": "lora"}},
     "evaluators.0.name: 'preference' judges rows of format preference, not 'instruction'"),
])
def test_what_cannot_apply_is_refused_before_a_run_is_recorded(tmp_path, make_spec,
                                                               pairs_jsonl, qa_jsonl, changes,
                                                               message):
    data = qa_jsonl if changes.get("dataset.format") == "instruction" else pairs_jsonl
    spec = make_spec(data, **{"dataset.format": "preference", "strategy": {"name": "dpo"},
                              "evaluators": [{"name": "preference"}], **changes})
    reg = tmp_path / "r.db"
    result = tuneyard(reg, "run", str(spec))
    assert result.exit_code == 2 and not reg.exists()
    assert result.output.strip().splitlines()[-1].endswith(message)
