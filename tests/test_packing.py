"""Packing: several examples in one row with per-example position ids, and no padding.

``training.packing`` (transformers ``DataCollatorWithFlattening``) and the pre-training blocks of
:func:`tuneyard.core.formats.pack` rely on transformers attending only within an example when
it is given ``position_ids`` and no attention mask (``masking_utils.find_packed_sequence_indices``).
These tests check that each packed example is scored exactly as if it were alone, that the
check can fail (the same row without position ids is not), and the SpecErrors of packing where
it does not apply.

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
from transformers import (AutoModelForCausalLM, AutoTokenizer, DataCollatorWithFlattening,
                          default_data_collator)

from tuneyard.core.cli import cli
from tuneyard.core.components import Example
from tuneyard.core.engine import compose
from tuneyard.core.formats import IGNORE_INDEX, PadCollator, pack, to_examples, tokenize
from tuneyard.core.plugins import get_plugins
from tuneyard.core.registry import Registry
from tuneyard.core.runner import train_collator
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


def test_flattened_batch_scores_each_example_as_if_alone(llama, qa_jsonl, make_spec):
    model, tok = llama
    rows = [tokenize(e, tok, 512) for e in to_examples(ROWS, "instruction", {}, tok)]
    lengths = [len(r["input_ids"]) for r in rows]
    assert len(set(lengths)) == 3  # different lengths: padding would be needed without packing
    comp = compose(load_spec(make_spec(qa_jsonl, **{"training.packing": True})), get_plugins())
    collator = train_collator(comp, tok, PadCollator(tok.pad_token_id))
    assert isinstance(collator, DataCollatorWithFlattening)
    batch = collator(rows)
    assert sorted(batch) == ["input_ids", "labels", "position_ids"]  # no attention mask
    assert batch["input_ids"].shape == (1, sum(lengths))
    assert batch["position_ids"][0].tolist() == [i for n in lengths for i in range(n)]

    with torch.no_grad():
        alone = []
        for r in rows:
            out = model(input_ids=torch.tensor([r["input_ids"]]),
                        labels=torch.tensor([r["labels"]]), use_cache=False)
            alone.append(summed_loss(out.logits[0], torch.tensor(r["labels"])))
            n_targets = sum(label != IGNORE_INDEX for label in r["labels"][1:])
            assert out.loss.item() * n_targets == pytest.approx(alone[-1], rel=1e-5)
        packed_logits = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"],
                              use_cache=False).logits[0]  # [total_tokens, vocab]
        naive_logits = model(input_ids=batch["input_ids"], use_cache=False).logits[0]

    starts = [sum(lengths[:i]) for i in range(3)]
    labels = batch["labels"][0]
    packed = [summed_loss(packed_logits[s:s + n], labels[s:s + n])
              for s, n in zip(starts, lengths)]
    naive = [summed_loss(naive_logits[s:s + n], labels[s:s + n])
             for s, n in zip(starts, lengths)]
    assert packed == pytest.approx(alone, abs=1e-5)
    # one row without position ids: the later examples attend to the earlier ones
    assert naive[0] == pytest.approx(alone[0], abs=1e-5)
    assert abs(naive[1] - alone[1]) > 1e-3 and abs(naive[2] - alone[2]) > 1e-3


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


def test_packed_lora_run_matches_the_padded_run(tmp_path, qa_jsonl, make_spec):
    """Both runs see the same examples in the same order (the Trainer's sampler is seeded by
    ``training.seed`` and the datasets have the same rows), so step 1, taken before any update,
    has the same mean loss: the flattened batch has the same target tokens as the padded one
    (each example's first label is a prompt token, -100 either way) and each is scored as if
    alone. LoRA dropout is 0 so that the later steps draw no random masks whose shapes differ
    between a ``[4, width]`` and a ``[1, total_tokens]`` batch; they differ only by float
    summation order."""
    reg = tmp_path / "registry.db"
    losses = {}
    for packing in (False, True):
        spec = make_spec(qa_jsonl, **{"strategy.options": {"r": 4, "dropout": 0.0},
                                      "training.max_steps": 6, "training.packing": packing,
                                      "evaluators": []})
        result = run_cli(reg, "run", str(spec))
        assert result.exit_code == 0, result.output
        run = Registry(reg).list_runs()[0]
        assert run["status"] == "completed" and run["spec"]["training"]["packing"] is packing
        losses[packing] = [v for _, v in Registry(reg).metrics(run["id"], "loss")]
        tokens_per_s = Registry(reg).metrics(run["id"], "tokens_per_s")
        assert [step for step, _ in tokens_per_s] == [1, 2, 3, 4, 5, 6]
        assert all(v > 0 for _, v in tokens_per_s)
    assert len(losses[True]) == len(losses[False]) == 6
    assert losses[True][0] == pytest.approx(losses[False][0], abs=1e-4)
    assert losses[True] == pytest.approx(losses[False], abs=1e-3)
    assert losses[True][-1] < losses[True][0]


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
    from tuneyard.core.runner import LogProgress, load_model
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
