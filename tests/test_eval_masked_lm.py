"""Evaluator ``masked-lm``: masked-token accuracy and pseudo-perplexity (Salazar et al. 2020).

A fake model with fixed one-hot logits gives values written out by hand; a tiny random
BertForMaskedLM checks the pseudo-perplexity against a plain loop that masks one token at a
time.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from tuneyard.core.components import EvalContext
from tuneyard.core.errors import DataError, TuneyardError
from tuneyard.core.formats import PadCollator

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "cat", "dog", "sat", "on", "mat",
         "a", "ran", "to", "big", "red", "house", "##s", "##ed", "."]
PAD, CLS, SEP, MASK = 0, 2, 3, 4


def row(ids: list[int]) -> dict[str, list[int]]:
    """``[CLS] ids [SEP]``, labels the ids and -100 on the special tokens."""
    return {"input_ids": [CLS, *ids, SEP], "labels": [-100, *ids, -100]}


def make_ctx(model, rows, batch_size, tokenizer=SimpleNamespace(mask_token_id=MASK)):
    return EvalContext(model=model, tokenizer=tokenizer, examples=[], eval_dataset=rows,
                       collator=PadCollator(PAD), device="cpu", batch_size=batch_size,
                       task="masked-lm")


def masked_lm(**options):
    from tuneyard.plugins.evaluators.masked_lm import MaskedLM

    return MaskedLM(MaskedLM.Options(**options))


class AlwaysSeven(torch.nn.Module):
    """Fake masked LM: logits ``[batch, seq_len, vocab]`` one-hot on token 7 everywhere, so
    P(7) = e / (e + V - 1) and P(any other token) = 1 / (e + V - 1). Records its inputs."""

    def __init__(self):
        super().__init__()
        self.inputs: list[torch.Tensor] = []

    def forward(self, input_ids, attention_mask):
        self.inputs.append(input_ids.clone())
        return SimpleNamespace(logits=F.one_hot(torch.full_like(input_ids, 7), len(VOCAB)).float())


# A: 20 tokens, all 7 (always right); B: 4 tokens, all 8 (always wrong); C: 2 tokens, all 7.
ROWS = [row([7] * 20), row([8] * 4), row([7] * 2)]


@pytest.mark.parametrize("batch_size", [1, 2, 5])
def test_masked_lm_with_hand_computed_scores(batch_size):
    """masked_accuracy: k = max(1, round(0.15 n)) per example → A 3, B round(0.6)=1,
    C max(1, round(0.3)) = 1; right 3 + 0 + 1 of 5 → 4/5 (the mean of per-example accuracies
    would be (1 + 0 + 1) / 3 = 2/3).

    pseudo_perplexity: 26 tokens, 22 of them 7 with log P = 1 - log(e + V - 1), 4 of them 8
    with log P = -log(e + V - 1): PLL = 22 - 26 log(e + V - 1), so
    PPPL = exp(-PLL / 26) = (e + V - 1) · exp(-22/26).
    """
    model = AlwaysSeven()
    metrics = masked_lm().evaluate(make_ctx(model, ROWS, batch_size)).metrics
    vocab = len(VOCAB)
    assert metrics == {
        "masked_accuracy": pytest.approx(4 / 5),
        "pseudo_perplexity": pytest.approx((math.e + vocab - 1) * math.exp(-22 / 26)),
        "eval_tokens": 26.0,
    }
    passes = math.ceil(3 / batch_size)
    accuracy_inputs, pppl_inputs = model.inputs[:passes], model.inputs[passes:]
    masks_per_row = [int(n) for x in accuracy_inputs for n in (x == MASK).sum(dim=1)]
    assert masks_per_row == [3, 1, 1]
    assert sum(len(x) for x in pppl_inputs) == 26  # one copy per scored token
    for x in pppl_inputs:  # [copies, seq_len]: at most batch_size, one [MASK] each
        assert len(x) <= batch_size and ((x == MASK).sum(dim=1) == 1).all()
    for x in model.inputs:  # special tokens are never masked
        assert (x[:, 0] == CLS).all()


def test_masked_positions_depend_on_seed_not_batch_size():
    rows = [row(list(range(5, 19))), row(list(range(5, 12))), row(list(range(5, 20)))]

    def masked_positions(batch_size, seed):
        model = AlwaysSeven()
        masked_lm(seed=seed).evaluate(make_ctx(model, rows, batch_size))
        passes = math.ceil(3 / batch_size)
        return [(r == MASK).nonzero().squeeze(-1).tolist()
                for x in model.inputs[:passes] for r in x]

    assert masked_positions(1, seed=0) == masked_positions(3, seed=0)
    assert masked_positions(1, seed=0) != masked_positions(1, seed=1)


def test_masked_lm_pseudo_perplexity_matches_a_hand_loop_on_tiny_bert(wordpiece):
    """Salazar et al. 2020: mask each word token alone, sum its log-probability."""
    from transformers import BertConfig, BertForMaskedLM

    tokenizer = wordpiece(VOCAB)
    texts = ["the cat sat on the mat.", "a big red dog ran to the house", "cats sat"]
    rows = []
    for text in texts:
        enc = tokenizer(text, return_special_tokens_mask=True)
        rows.append({"input_ids": enc["input_ids"],
                     "labels": [-100 if s else t for t, s in
                                zip(enc["input_ids"], enc["special_tokens_mask"])]})
    torch.manual_seed(0)
    model = BertForMaskedLM(BertConfig(
        vocab_size=len(VOCAB), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=64)).eval()

    pll, tokens = 0.0, 0
    with torch.no_grad():
        for r in rows:
            for t, label in enumerate(r["labels"]):
                if label == -100:
                    continue
                ids = list(r["input_ids"])
                ids[t] = tokenizer.mask_token_id
                logits = model(input_ids=torch.tensor([ids])).logits[0, t].double()
                pll += float(torch.log_softmax(logits, dim=-1)[label])
                tokens += 1
    assert tokens == 7 + 8 + 3  # "cats" is cat ##s

    metrics = masked_lm().evaluate(make_ctx(model, rows, 3, tokenizer)).metrics
    assert metrics["eval_tokens"] == tokens
    assert metrics["pseudo_perplexity"] == pytest.approx(math.exp(-pll / tokens), rel=1e-5)
    # an untrained model is close to uniform over its vocabulary
    assert abs(math.log(metrics["pseudo_perplexity"]) - math.log(len(VOCAB))) < 0.5
    assert 0.0 <= metrics["masked_accuracy"] <= 1.0
    again = masked_lm().evaluate(make_ctx(model, rows, 1, tokenizer)).metrics
    assert again["masked_accuracy"] == metrics["masked_accuracy"]
    assert again["pseudo_perplexity"] == pytest.approx(metrics["pseudo_perplexity"], rel=1e-5)


def test_masked_lm_limit():
    """Default limit 32 examples of 2 tokens → 64 tokens scored; limit 3 → 6; None → all 40."""
    rows = [row([7, 7])] * 40
    assert masked_lm().evaluate(make_ctx(AlwaysSeven(), rows, 8)).metrics["eval_tokens"] == 64
    assert masked_lm(limit=3).evaluate(make_ctx(AlwaysSeven(), rows, 8)).metrics[
        "eval_tokens"] == 6
    assert masked_lm(limit=None).evaluate(make_ctx(AlwaysSeven(), rows, 8)).metrics[
        "eval_tokens"] == 80


def test_masked_lm_errors():
    from pydantic import ValidationError

    from tuneyard.plugins.evaluators.masked_lm import MaskedLM

    specials_only = [{"input_ids": [CLS, SEP], "labels": [-100, -100]}]
    with pytest.raises(DataError, match="no label token"):
        masked_lm().evaluate(make_ctx(AlwaysSeven(), specials_only, 2))
    with pytest.raises(TuneyardError, match="no mask token"):
        masked_lm().evaluate(make_ctx(AlwaysSeven(), ROWS, 2, SimpleNamespace(mask_token_id=None)))
    with pytest.raises(ValidationError):
        MaskedLM.Options(mask_probability=0)
    with pytest.raises(ValidationError):
        MaskedLM.Options(sed=1)
