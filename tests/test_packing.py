"""Packing: several examples in one row with per-example position ids.

``training.packing`` (:func:`tuneyard.core.formats.pack_examples`: best-fit decreasing into rows
of at most ``training.max_seq_len`` tokens) and the pre-training blocks of
:func:`tuneyard.core.formats.pack` rely on transformers attending only within an example when
it is given ``position_ids`` and no attention mask (``masking_utils.find_packed_sequence_indices``).
These tests pin the bins of a hand-made set of lengths, check that a packed batch's loss is the
mean of its examples' token losses, that an example's logits do not depend on the others in its
row (and that the check can fail: the same row without position ids), that evaluation data is
not packed, and the SpecErrors of packing where it does not apply.

The tiny Llama loads with ``sdpa`` attention (transformers' default on CPU; asserted below).
Forward passes use ``use_cache=False`` as in training: the Trainer sets ``model.config.use_cache``
from ``TrainingArguments.use_cache`` (False). With a cache transformers skips the packed-sequence
mask, and packed examples would attend to each other.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from transformers import AutoModelForCausalLM, AutoTokenizer, default_data_collator

from tuneyard.core.cli import cli
from tuneyard.core.components import Example
from tuneyard.core.engine import compose
from tuneyard.core.formats import (IGNORE_INDEX, PadCollator, best_fit_bins, pack, pack_examples,
                                   to_examples, tokenize)
from tuneyard.core.plugins import get_plugins
from tuneyard.core.registry import Registry
from tuneyard.core.run.data import load_rows, prepare_data
from tuneyard.core.run.progress import LogProgress
from tuneyard.core.spec import load_spec

ROWS = [{"instruction": "define cat", "output": "a small animal"},
        {"instruction": "what is the meaning of the word tree",
         "output": "a tall perennial woody plant"},
        {"instruction": "run", "output": "move fast on foot, like a dog"}]


@pytest.fixture(scope="module")
def llama(tiny_model_dir):
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    assert model.config._attn_implementation == "sdpa"
    return model.eval(), AutoTokenizer.from_pretrained(tiny_model_dir)


def summed_loss(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Summed next-token cross-entropy (nats) of one sequence: ``logits`` ``[seq_len, vocab]``
    at position t predict ``labels`` ``[seq_len]`` at t + 1, -100 ignored."""
    return F.cross_entropy(logits[:-1], labels[1:], ignore_index=IGNORE_INDEX,
                           reduction="sum").item()


def token_losses(logits: torch.Tensor, ids: list[int]) -> torch.Tensor:
    """Per-token next-token losses ``[len(ids) - 1]`` of ``ids`` given ``logits``
    ``[len(ids), vocab]``."""
    return F.cross_entropy(logits[:-1], torch.tensor(ids[1:]), reduction="none")


def test_best_fit_decreasing_bins_of_hand_made_lengths():
    # longest first; each into the bin with the least room that fits it:
    # 8 (item 2), 7 (4), 6 (7), 5 (0) open bins with room 2, 3, 4, 5; then 4 (item 6) fills
    # the bin with room 4, 3 (item 1) the one with 3, 2 (item 3) the one with 2, and 1
    # (item 5) goes to the last bin with room, 5
    assert best_fit_bins([5, 3, 8, 2, 7, 1, 4, 6], 10) == [[2, 3], [4, 1], [7, 6], [0, 5]]
    # equal lengths keep their order; among bins with equal room, the earliest opened
    assert best_fit_bins([4, 4, 1, 1], 5) == [[0, 2], [1, 3]]
    assert best_fit_bins([3, 3, 3], 3) == [[0], [1], [2]]  # a full bin takes nothing more
    assert best_fit_bins([], 8) == []


def test_packed_rows_hold_whole_examples_with_their_own_positions():
    rows = [{"input_ids": [1, 2, 3], "labels": [-100, 2, 3]},
            {"input_ids": [4, 5, 6, 7, 8], "labels": [-100, -100, 6, 7, 8]},
            {"input_ids": [9, 10], "labels": [9, 10]},  # a text: its first token is a label
            {"input_ids": [11, 12, 13, 14], "labels": [11, 12, 13, 14]}]
    assert pack_examples(rows, 8) == [
        {"input_ids": [4, 5, 6, 7, 8, 1, 2, 3], "labels": [-100, -100, 6, 7, 8, -100, 2, 3],
         "position_ids": [0, 1, 2, 3, 4, 0, 1, 2]},
        {"input_ids": [11, 12, 13, 14, 9, 10], "labels": [-100, 12, 13, 14, -100, 10],
         "position_ids": [0, 1, 2, 3, 0, 1]}]
    batch = PadCollator(0)(pack_examples(rows, 8))
    assert sorted(batch) == ["input_ids", "labels", "position_ids"]  # no attention mask
    assert batch["input_ids"][1].tolist() == [11, 12, 13, 14, 9, 10, 0, 0]
    assert batch["labels"][1].tolist() == [-100, 12, 13, 14, -100, 10, -100, -100]
    # the padding is a document of its own: positions restart, so it sees only itself
    assert batch["position_ids"][1].tolist() == [0, 1, 2, 3, 0, 1, 0, 1]


def packed_batch(tok) -> tuple[list[dict], dict]:
    """The three :data:`ROWS` tokenized (32, 52 and 39 tokens), and a batch of them packed in
    rows of at most 80 tokens: 52 opens a row, 39 does not fit next to it and opens another,
    32 fits next to 39; the first row is padded to the second's 71 tokens."""
    rows = [tokenize(e, tok, 512) for e in to_examples(ROWS, "instruction", {}, tok)]
    assert [len(r["input_ids"]) for r in rows] == [32, 52, 39]
    packed = pack_examples(rows, 80)
    assert [p["input_ids"] for p in packed] == [
        rows[1]["input_ids"], rows[2]["input_ids"] + rows[0]["input_ids"]]
    batch = PadCollator(tok.pad_token_id)(packed)
    assert batch["position_ids"].tolist() == [[*range(52), *range(19)],
                                              [*range(39), *range(32)]]
    return rows, batch


def test_packed_batch_loss_is_the_mean_of_the_examples_token_losses(llama):
    """The model's loss on a batch of packed rows (one of them padded) equals the mean over all
    label tokens of the examples each scored alone: no padding is scored, and no example's
    first token is predicted from the previous example's last one (a text's first token is a
    label; packed after another example, it must not be scored)."""
    model, tok = llama
    rows = [tokenize(e, tok, 512) for e in to_examples(ROWS, "instruction", {}, tok)]
    text = tokenize(Example("", "the cat sat on the mat"), tok, 512)
    assert text["labels"][0] != IGNORE_INDEX
    packed = pack_examples([*rows, text], 80)
    assert packed[1]["input_ids"][71:] == text["input_ids"]  # after the 39 and 32 tokens
    batch = PadCollator(tok.pad_token_id)(packed)
    with torch.no_grad():
        total, targets = 0.0, 0
        for r in [*rows, text]:
            logits = model(input_ids=torch.tensor([r["input_ids"]]), use_cache=False).logits[0]
            total += summed_loss(logits, torch.tensor(r["labels"]))
            targets += sum(label != IGNORE_INDEX for label in r["labels"][1:])
        loss = model(**batch, use_cache=False).loss.item()
    assert targets == (batch["labels"][:, 1:] != IGNORE_INDEX).sum().item()
    assert loss == pytest.approx(total / targets, abs=1e-5)


def test_an_example_does_not_see_the_others_in_its_row(llama):
    """Changing the tokens of the first example of a packed row (39 tokens) changes its own
    logits only, not those of the second example in the row nor the other row's; without
    position ids (the row as one sequence) the second example's change too."""
    model, tok = llama
    _, batch = packed_batch(tok)
    changed = batch["input_ids"].clone()
    changed[1, 1:39] = (changed[1, 1:39] + 7) % len(tok)
    with torch.no_grad():
        before, after = (model(input_ids=ids, position_ids=batch["position_ids"],
                               use_cache=False).logits for ids in (batch["input_ids"], changed))
        naive_before, naive_after = (model(input_ids=ids, use_cache=False).logits
                                     for ids in (batch["input_ids"], changed))
    assert (after[1, 1:39] - before[1, 1:39]).abs().max() > 1e-3
    assert torch.allclose(after[1, 39:], before[1, 39:], atol=1e-6)
    assert torch.allclose(after[0], before[0], atol=1e-6)
    assert (naive_after[1, 39:] - naive_before[1, 39:]).abs().max() > 1e-3


def test_pretraining_block_scores_its_second_document_as_if_alone(llama):
    model, tok = llama
    docs = [tokenize(Example("", t), tok, 512) for t in
            ["the cat sat on the mat", "a dog is a domesticated animal",
             "the quick brown fox jumps over the lazy dog"]]
    first, second = (d["input_ids"] for d in docs[:2])
    block_size = len(first) + len(second) + 2  # doc 1, doc 2, and the start of doc 3
    blocks = pack(docs, block_size)
    batch = default_data_collator(blocks[:1])
    assert sorted(batch) == ["input_ids", "labels", "position_ids"]  # no attention mask
    s = len(first)
    assert batch["input_ids"][0, s:s + len(second)].tolist() == second
    assert batch["position_ids"][0].tolist() == [*range(s), *range(len(second)), 0, 1]
    assert batch["labels"][0, s].item() == IGNORE_INDEX  # doc 2's first token, after doc 1

    with torch.no_grad():
        alone = token_losses(model(input_ids=torch.tensor([second]),
                                   use_cache=False).logits[0], second)
        in_block = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"],
                         use_cache=False).logits[0, s:s + len(second)]
        naive = model(input_ids=batch["input_ids"], use_cache=False).logits[0, s:s + len(second)]
    assert token_losses(in_block, second).tolist() == pytest.approx(alone.tolist(), abs=1e-5)
    assert (token_losses(naive, second) - alone).abs().max() > 1e-3  # doc 1 leaks in otherwise


def run_cli(registry: Path, *args: str):
    return CliRunner().invoke(cli, ["--registry", str(registry), *args], catch_exceptions=False)


def test_packed_run_trains_on_packed_rows_and_evaluates_unpacked(tmp_path, qa_jsonl, make_spec,
                                                                 tiny_model_dir):
    """With ``training.packing`` the 32 training examples (34 to 46 tokens) become a few rows
    of at most ``training.max_seq_len`` = 128 tokens, each example whole and once, batched by
    the padding collator (no attention mask); the held-out examples stay one per row. The run
    trains on the packed rows (``runs.train_rows``, the loss falls), and its evaluation before
    training equals the padded run's: the same held-out rows, scored the same way."""
    reg = tmp_path / "registry.db"
    changes = {"strategy.options": {"r": 4}, "training.max_steps": 6,
               "training.max_seq_len": 128}
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    data = {}
    for packing in (False, True):
        comp = compose(load_spec(make_spec(qa_jsonl, **changes, **{"training.packing": packing})),
                       get_plugins())
        data[packing] = prepare_data(comp, load_rows(comp, LogProgress()), tok)
    examples, rows = data[False].train_rows, data[True].train_rows
    assert len(examples) == 32 and len(rows) < 32 / 2
    assert all(len(r["input_ids"]) <= 128 for r in rows)
    pieces = []  # each packed row cut where its positions restart
    for r in rows:
        starts = [i for i, p in enumerate(r["position_ids"]) if p == 0] + [len(r["input_ids"])]
        pieces += [(r["input_ids"][a:b], r["labels"][a:b]) for a, b in zip(starts, starts[1:])]
    assert sorted(pieces) == sorted((e["input_ids"], [IGNORE_INDEX, *e["labels"][1:]])
                                    for e in examples)
    assert data[True].eval_rows == data[False].eval_rows
    assert "position_ids" not in data[True].eval_rows[0]
    assert data[True].train_collator is data[True].collator

    runs = {}
    for packing in (False, True):
        result = run_cli(reg, "run", str(make_spec(qa_jsonl, **changes,
                                                   **{"training.packing": packing})))
        assert result.exit_code == 0, result.output
        run = Registry(reg).list_runs()[0]
        assert run["status"] == "completed" and run["spec"]["training"]["packing"] is packing
        runs[packing] = run
    assert runs[False]["train_rows"] == 32 and runs[True]["train_rows"] == len(rows)
    registry = Registry(reg)
    base = {p: [e["value"] for e in registry.evaluations(r["id"])
                if (e["checkpoint"], e["metric"]) == ("base", "eval_loss")]
            for p, r in runs.items()}
    assert base[True] == pytest.approx(base[False], abs=1e-6)
    losses = [v for _, v in registry.metrics(runs[True]["id"], "loss")]
    assert len(losses) == 6 and losses[-1] < losses[0]
    tokens_per_s = registry.metrics(runs[True]["id"], "tokens_per_s")
    assert [step for step, _ in tokens_per_s] == [*range(1, 7)]


def test_packing_where_it_does_not_apply_is_refused(tmp_path, qa_jsonl, make_spec):
    reg = tmp_path / "registry.db"

    def refused(spec: Path) -> str:
        line = next(i for i, t in enumerate(spec.read_text().splitlines(), 1)
                    if t.strip() == "packing: true")
        result = CliRunner().invoke(cli, ["--registry", str(reg), "run", str(spec)])
        assert result.exit_code == 2, result.output
        assert not reg.exists() or Registry(reg).list_runs() == []
        return result.output.strip().splitlines()[-1].replace(f"{spec}:{line}: ", "FILE: ")

    spec = make_spec(qa_jsonl, **{"training.packing": True, "dataset.format": "text",
                                  "strategy": {"name": "pretrain-clm"}})
    assert refused(spec) == ("Error: FILE: training.packing: strategy 'pretrain-clm' already "
                             "packs text into blocks; remove it")
    spec = make_spec(qa_jsonl, **{"training.packing": True, "dataset.format": "tokens",
                                  "evaluators": [{"name": "seqeval"}]})
    assert refused(spec) == ("Error: FILE: training.packing: it packs causal-LM examples, and "
                             "this run trains token-classification; remove it")


def test_perplexity_of_a_block_on_the_model_the_runner_loads_keeps_documents_apart(
        tmp_path, make_spec):
    """The runner hands evaluators its model with ``config.use_cache`` off, so the perplexity
    evaluator (which passes no ``use_cache``) scores a two-document block as the two documents
    alone: the block's summed NLL equals doc 1's plus doc 2's without its first token (no label
    in the block). With the cache left on, doc 1 leaks into doc 2."""
    from tuneyard.core.components import EvalContext
    from tuneyard.core.engine import compose
    from tuneyard.core.formats import PadCollator
    from tuneyard.core.plugins import get_plugins
    from tuneyard.core.run.model import load_model
    from tuneyard.core.run.progress import LogProgress
    from tuneyard.core.spec import load_spec
    from tuneyard.plugins.evaluators.perplexity import Perplexity

    text = tmp_path / "docs.txt"
    text.write_text("the cat sat on the mat\na dog is a domesticated animal\n")
    spec = load_spec(make_spec(text, **{"dataset": {"source": "text", "options": {
        "path": str(text)}, "format": "text"}, "strategy": {"name": "pretrain-clm"}}))
    comp = compose(spec, get_plugins())
    model, tok = load_model(comp, comp.source.load(), LogProgress())
    assert model.config.use_cache is False
    docs = [tokenize(Example("", t), tok, 512) for t in text.read_text().splitlines()]
    [block] = pack(docs, sum(len(d["input_ids"]) for d in docs))

    def nll(rows: list[dict], m) -> float:
        ctx = EvalContext(m.eval(), tok, [], rows, PadCollator(tok.pad_token_id), "cpu")
        result = Perplexity(Perplexity.Options()).evaluate(ctx).metrics
        return result["eval_loss"] * result["eval_tokens"]

    second = dict(docs[1], labels=[IGNORE_INDEX] + docs[1]["labels"][1:])
    alone = nll([docs[0]], model) + nll([second], model)
    assert nll([block], model) == pytest.approx(alone, abs=1e-4)
    model.config.use_cache = True
    assert abs(nll([block], model) - alone) > 1e-3
