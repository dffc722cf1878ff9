"""Evaluators ``perplexity``, ``exact-match``, ``rouge`` and ``bleu``."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest

from tuneyard.core.components import EvalContext, Example
from tuneyard.core.errors import DataError

PAIRS = [
    ("define the word cat", "a small animal"),
    ("define the word dog", "a domesticated animal"),
    ("what is the meaning of the word tree", "a tall perennial woody plant"),
    ("define run", "to move fast on foot"),
    ("the quick brown fox", "jumps over the lazy dog"),
]


# -- helpers ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    return model, tokenizer


def make_rows(tokenizer, pairs=PAIRS) -> list[dict]:
    """prompt ids + completion ids + EOS; labels -100 on the prompt, pad == eos kept as label."""
    rows = []
    for prompt, completion in pairs:
        p = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        c = tokenizer(" " + completion, add_special_tokens=False)["input_ids"]
        eos = [tokenizer.eos_token_id]
        rows.append({"input_ids": p + c + eos, "labels": [-100] * len(p) + c + eos})
    return rows


def make_collator(pad_id: int, pad_to: int | None = None):
    """Right-pads rows to the longest row (or to ``pad_to``) as ``[batch, seq_len]`` int64."""
    import torch

    def collate(rows):
        width = max(pad_to or 0, *(len(r["input_ids"]) for r in rows))
        pad = [width - len(r["input_ids"]) for r in rows]
        return {
            "input_ids": torch.tensor([r["input_ids"] + [pad_id] * n for r, n in zip(rows, pad)]),
            "attention_mask": torch.tensor(
                [[1] * len(r["input_ids"]) + [0] * n for r, n in zip(rows, pad)]
            ),
            "labels": torch.tensor([r["labels"] + [-100] * n for r, n in zip(rows, pad)]),
        }

    return collate


def make_ctx(model, tokenizer, *, rows=None, examples=(), batch_size=2, pad_to=None):
    return EvalContext(
        model=model, tokenizer=tokenizer, examples=list(examples),
        eval_dataset=rows if rows is not None else make_rows(tokenizer),
        collator=make_collator(tokenizer.pad_token_id, pad_to), device="cpu",
        batch_size=batch_size,
    )


def text_ctx(examples, batch_size=2):
    """A context for the generation evaluators when generation is faked: examples only."""
    return EvalContext(model=None, tokenizer=None, examples=list(examples), eval_dataset=[],
                       collator=None, device="cpu", batch_size=batch_size)


def hand_nll(model, rows) -> tuple[float, int]:
    """Summed NLL (nats, float64) and label count, one unpadded example at a time."""
    import torch

    total, count = 0.0, 0
    with torch.no_grad():
        for row in rows:
            logits = model(input_ids=torch.tensor([row["input_ids"]])).logits[0].double()
            logp = torch.log_softmax(logits, dim=-1)  # [seq_len, vocab]
            for t, label in enumerate(row["labels"]):
                if t > 0 and label != -100:
                    total -= float(logp[t - 1, label])
                    count += 1
    return total, count


# -- perplexity ---------------------------------------------------------------------------------
def perplexity(**options):
    from tuneyard.plugins.evaluators.perplexity import Perplexity

    return Perplexity(Perplexity.Options(**options))


def test_perplexity_equals_hand_computed_value(tiny):
    model, tokenizer = tiny
    rows = make_rows(tokenizer)
    nll, count = hand_nll(model, rows)
    expected_tokens = sum(
        len(tokenizer(" " + c, add_special_tokens=False)["input_ids"]) + 1 for _, c in PAIRS
    )
    assert count == expected_tokens  # the EOS label counts although pad == eos

    metrics = perplexity().evaluate(make_ctx(model, tokenizer, batch_size=2)).metrics
    assert metrics["eval_tokens"] == expected_tokens
    assert metrics["eval_loss"] == pytest.approx(nll / count, abs=1e-5)
    assert metrics["perplexity"] == pytest.approx(math.exp(metrics["eval_loss"]), rel=1e-12)
    # an untrained model is close to uniform over its vocabulary: about ln(vocab) nats/token
    assert abs(metrics["eval_loss"] - math.log(len(tokenizer))) < 0.5


def test_perplexity_independent_of_batch_size_and_padding(tiny):
    model, tokenizer = tiny
    results = [
        perplexity().evaluate(make_ctx(model, tokenizer, batch_size=bs, pad_to=pad_to)).metrics
        for bs in (1, 2, 5) for pad_to in (None, 48)
    ]
    for metrics in results[1:]:
        assert metrics["eval_tokens"] == results[0]["eval_tokens"]
        assert metrics["eval_loss"] == pytest.approx(results[0]["eval_loss"], abs=1e-5)


def test_perplexity_is_token_weighted_not_mean_of_batch_means(tiny):
    """Two examples of very different lengths, batch size 1: the mean of per-batch means would
    weight the short example's tokens more; the token-weighted mean does not."""
    model, tokenizer = tiny
    rows = make_rows(tokenizer, [PAIRS[0], ("define", "a tall perennial woody plant " * 4)])
    nll, count = hand_nll(model, rows)
    per_example = [hand_nll(model, [r]) for r in rows]
    mean_of_means = sum(n / c for n, c in per_example) / 2
    assert abs(nll / count - mean_of_means) > 1e-3  # the two definitions differ here

    metrics = perplexity().evaluate(make_ctx(model, tokenizer, rows=rows, batch_size=1)).metrics
    assert metrics["eval_loss"] == pytest.approx(nll / count, abs=1e-5)


def test_perplexity_limit(tiny):
    model, tokenizer = tiny
    rows = make_rows(tokenizer)
    nll, count = hand_nll(model, rows[:2])
    metrics = perplexity(limit=2).evaluate(make_ctx(model, tokenizer, batch_size=5)).metrics
    assert metrics["eval_tokens"] == count
    assert metrics["eval_loss"] == pytest.approx(nll / count, abs=1e-5)


def test_perplexity_without_label_tokens_is_a_data_error(tiny):
    model, tokenizer = tiny
    rows = [{"input_ids": r["input_ids"], "labels": [-100] * len(r["labels"])}
            for r in make_rows(tokenizer)]
    with pytest.raises(DataError, match="no label tokens"):
        perplexity().evaluate(make_ctx(model, tokenizer, rows=rows))


def test_perplexity_fully_masked_example_does_not_make_nan(tiny):
    """A batch where one example has all labels masked still gives a finite loss."""
    model, tokenizer = tiny
    rows = make_rows(tokenizer)
    masked = {"input_ids": rows[0]["input_ids"], "labels": [-100] * len(rows[0]["labels"])}
    nll, count = hand_nll(model, rows[1:])
    metrics = perplexity().evaluate(
        make_ctx(model, tokenizer, rows=[masked] + rows[1:], batch_size=1)
    ).metrics
    assert metrics["eval_loss"] == pytest.approx(nll / count, abs=1e-5)


def test_perplexity_options_forbid_unknown_keys():
    from pydantic import ValidationError

    from tuneyard.plugins.evaluators.perplexity import Perplexity

    with pytest.raises(ValidationError):
        Perplexity.Options(limt=3)


# -- exact-match and rouge ----------------------------------------------------------------------
def test_normalize():
    from tuneyard.plugins.evaluators.generation import normalize

    assert normalize("  A small\n\tanimal. ") == "a small animal"
    assert normalize("U.S.A !") == "u.s.a"
    assert normalize("Hello, world?!") == "hello, world"
    assert normalize("") == ""


@pytest.fixture
def fake_generate(monkeypatch):
    """Replace the generation step by fixed predictions; records each call's arguments."""
    import tuneyard.core.generation

    calls: list[dict] = []
    predictions: list[str] = []

    def generate(model, tokenizer, prompts, **kwargs):
        calls.append({"prompts": list(prompts), **kwargs})
        return predictions[: len(prompts)]

    monkeypatch.setattr(tuneyard.core.generation, "generate", generate)
    return calls, predictions


def test_exact_match_with_fixed_predictions(fake_generate):
    from tuneyard.plugins.evaluators.generation import ExactMatch

    calls, predictions = fake_generate
    predictions += [" a  SMALL animal ", "a domesticated animal!", "a tree"]
    examples = [Example("p1", "A small animal."), Example("p2", "a domesticated animal"),
                Example("p3", "tree")]
    evaluator = ExactMatch(ExactMatch.Options(max_new_tokens=7, batch_size=3))
    result = evaluator.evaluate(text_ctx(examples, batch_size=8))
    assert result.metrics == {"exact_match": pytest.approx(2 / 3)}
    assert [d["exact_match"] for d in result.details] == [1.0, 1.0, 0.0]
    assert result.details[2] == {"prompt": "p3", "reference": "tree", "prediction": "a tree",
                                 "exact_match": 0.0}
    assert calls == [{"prompts": ["p1", "p2", "p3"], "max_new_tokens": 7, "batch_size": 3,
                      "device": "cpu"}]


def test_rouge_with_hand_computed_scores(fake_generate):
    """Hand computation (n-gram / LCS overlap, F = 2PR / (P + R)):

    1. "the cat sat" vs "the cat sat on the mat": rouge1 P=3/3 R=3/6 F=2/3; rouge2 bigrams
       {the cat, cat sat} all in the 5 reference bigrams: P=1 R=2/5 F=4/7; rougeL LCS=3 F=2/3.
    2. "a dog" vs "a cat": rouge1 P=R=1/2 F=1/2; rouge2 0; rougeL LCS=1 F=1/2.
    3. "dogs running" vs "dog runs": Porter stems "dog run" on both sides: all F=1.
    """
    from tuneyard.plugins.evaluators.generation import Rouge

    calls, predictions = fake_generate
    predictions += ["the cat sat", "a dog", "dogs running"]
    examples = [Example("p1", "the cat sat on the mat"), Example("p2", "a cat"),
                Example("p3", "dog runs")]
    result = Rouge(Rouge.Options()).evaluate(text_ctx(examples, batch_size=4))
    assert [d["rougeL"] for d in result.details] == pytest.approx([2 / 3, 1 / 2, 1.0])
    assert [d["rouge2"] for d in result.details] == pytest.approx([4 / 7, 0.0, 1.0])
    assert result.metrics == {
        "rouge1": pytest.approx((2 / 3 + 1 / 2 + 1) / 3),
        "rouge2": pytest.approx((4 / 7 + 0 + 1) / 3),
        "rougeL": pytest.approx((2 / 3 + 1 / 2 + 1) / 3),
    }
    assert calls[0]["max_new_tokens"] == 64 and calls[0]["batch_size"] == 4  # defaults


def test_generation_limit_takes_the_first_examples(fake_generate):
    from tuneyard.plugins.evaluators.generation import ExactMatch

    calls, predictions = fake_generate
    predictions += ["x", "y", "z"]
    examples = [Example(f"p{i}", "x") for i in range(5)]
    result = ExactMatch(ExactMatch.Options(limit=2)).evaluate(text_ctx(examples))
    assert calls[0]["prompts"] == ["p0", "p1"]
    assert len(result.details) == 2
    assert result.metrics["exact_match"] == 0.5


def test_generation_needs_prompts(fake_generate):
    from tuneyard.plugins.evaluators.generation import ExactMatch, Rouge

    with pytest.raises(DataError, match="empty prompt"):
        Rouge(Rouge.Options()).evaluate(text_ctx([Example("", "some text")]))
    with pytest.raises(DataError, match="no held-out examples"):
        ExactMatch(ExactMatch.Options()).evaluate(text_ctx([]))


def test_generation_evaluators_end_to_end_on_tiny_model(tiny):
    from tuneyard.plugins.evaluators.generation import ExactMatch, Rouge

    model, tokenizer = tiny
    examples = [
        Example(tokenizer.apply_chat_template([{"role": "user", "content": p}], tokenize=False,
                                              add_generation_prompt=True), c)
        for p, c in PAIRS
    ]
    ctx = make_ctx(model, tokenizer, examples=examples, batch_size=2)
    em = ExactMatch(ExactMatch.Options(max_new_tokens=6, limit=3)).evaluate(ctx)
    rouge = Rouge(Rouge.Options(max_new_tokens=6, limit=3, batch_size=3)).evaluate(ctx)

    assert set(em.metrics) == {"exact_match"}
    assert set(rouge.metrics) == {"rouge1", "rouge2", "rougeL"}
    for value in [*em.metrics.values(), *rouge.metrics.values()]:
        assert 0.0 <= value <= 1.0
    assert len(em.details) == len(rouge.details) == 3
    # one generation step shared by both, and greedy: same predictions at batch sizes 2 and 3
    assert [d["prediction"] for d in em.details] == [d["prediction"] for d in rouge.details]
    assert [d["reference"] for d in rouge.details] == [c for _, c in PAIRS[:3]]
    assert tokenizer.padding_side == "right"


# -- registration -------------------------------------------------------------------------------
def test_plugins_register_their_evaluators():
    from tuneyard.core.plugins import Plugins
    from tuneyard.plugins.evaluators import generation, perplexity

    plugins = Plugins()
    plugins.register_plugin(perplexity, "evaluator-perplexity")
    plugins.register_plugin(generation, "evaluator-generation")
    plugins.collect_components()
    evaluators = plugins.components["evaluator"]
    assert sorted(evaluators) == ["bleu", "exact-match", "perplexity", "rouge"]
    assert all(info.cls.tasks == ("causal-lm",) for info in evaluators.values())
    assert all(not info.errors for info in plugins.infos.values())


def test_importing_the_plugins_does_not_import_torch():
    code = (
        "import sys, tuneyard.plugins.evaluators.perplexity, "
        "tuneyard.plugins.evaluators.generation, tuneyard.core.generation; "
        "heavy = {'torch', 'transformers', 'rouge_score', 'sacrebleu'} & set(sys.modules); "
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# -- bleu ---------------------------------------------------------------------------------------
def test_bleu_is_a_corpus_score_with_hand_computed_value(fake_generate):
    """BLEU = BP · (p1 p2 p3 p4)^(1/4) · 100, 13a tokens (split on spaces here).

    1. "the cat sat on the mat" vs "the cat sat on the mat today": 6 of 6 unigrams, 5/5
       bigrams, 4/4 trigrams, 3/3 4-grams match; 6 vs 7 tokens → BP = exp(1 - 7/6).
       sentence BLEU = 100 · exp(-1/6).
    2. "a b c d x" vs "a b c d y": 4/5, 3/4, 2/3, 1/2; same length, BP = 1.
       sentence BLEU = 100 · (4/5 · 3/4 · 2/3 · 1/2)^(1/4) = 100 · (1/5)^(1/4).
    Corpus: counts summed before dividing: 10/11, 8/9, 6/7, 4/5; 11 predicted vs 12 reference
    tokens → BLEU = 100 · exp(1 - 12/11) · (10·8·6·4 / (11·9·7·5))^(1/4) ≈ 78.78, not the mean
    of the two sentence scores (≈ 75.76).
    """
    from tuneyard.plugins.evaluators.generation import Bleu

    calls, predictions = fake_generate
    predictions += ["the cat sat on the mat", "a b c d x"]
    examples = [Example("p1", "the cat sat on the mat today"), Example("p2", "a b c d y")]
    result = Bleu(Bleu.Options()).evaluate(text_ctx(examples))
    corpus = 100 * math.exp(1 - 12 / 11) * (10 * 8 * 6 * 4 / (11 * 9 * 7 * 5)) ** 0.25
    assert result.metrics == {"bleu": pytest.approx(corpus)}
    assert [d["sentence_bleu"] for d in result.details] == pytest.approx(
        [100 * math.exp(-1 / 6), 100 * (1 / 5) ** 0.25])
    assert result.details[1] == {"prompt": "p2", "reference": "a b c d y",
                                 "prediction": "a b c d x",
                                 "sentence_bleu": pytest.approx(100 * (1 / 5) ** 0.25)}
    assert len(calls) == 1  # one generation step


# -- samples ------------------------------------------------------------------------------------
def test_distinct_2_by_hand():
    from tuneyard.plugins.evaluators.samples import distinct_2

    # "a b a b": bigrams (a,b) (b,a) (a,b); "c d": (c,d) → 3 distinct of 4
    assert distinct_2(["a b a b", "c d"]) == 0.75
    assert distinct_2(["x x x x x"]) == 0.25  # (x,x) four times: 1 distinct of 4
    assert distinct_2(["one", ""]) == 0.0     # no bigram at all


def test_samples_continue_each_prompt_and_score_distinct_2(fake_generate, tiny):
    from tuneyard.plugins.evaluators.samples import Samples

    calls, predictions = fake_generate
    predictions += ["to be or not to be", "the cat the cat"]
    model, tokenizer = tiny
    ctx = EvalContext(model, tokenizer, [], [], None, "cpu", batch_size=3)
    result = Samples(Samples.Options(prompts=["ROMEO.\n", "KING.\n"], max_new_tokens=5)
                     ).evaluate(ctx)
    # bigrams: (to,be)(be,or)(or,not)(not,to)(to,be) + (the,cat)(cat,the)(the,cat): 8, of
    # which 6 distinct (to,be and the,cat repeat)
    assert result.metrics == {"distinct_2": 6 / 8}
    assert result.details == [{"prompt": "ROMEO.\n", "sample": "to be or not to be"},
                              {"prompt": "KING.\n", "sample": "the cat the cat"}]
    assert calls[0]["prompts"] == ["ROMEO.\n", "KING.\n"]
    assert (calls[0]["max_new_tokens"], calls[0]["batch_size"]) == (5, 3)


def test_samples_on_the_tiny_model_are_its_greedy_continuations(tiny):
    from tuneyard.core.generation import generate
    from tuneyard.plugins.evaluators.samples import Samples, distinct_2

    model, tokenizer = tiny
    ctx = EvalContext(model, tokenizer, [], [], None, "cpu", batch_size=2)
    result = Samples(Samples.Options(prompts=["the cat", "a dog"], max_new_tokens=6)
                     ).evaluate(ctx)
    expected = generate(model, tokenizer, ["the cat", "a dog"], max_new_tokens=6,
                        batch_size=1, device="cpu")
    assert [d["sample"] for d in result.details] == expected
    assert result.metrics["distinct_2"] == distinct_2(expected)
