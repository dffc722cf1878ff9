"""Model provider ``scratch`` with a tokenizer trained on the corpus (``train_tokenizer``)."""

from __future__ import annotations

import json
import logging

import pytest
import torch

from tuneyard.core.errors import SpecError, TuneyardError
from tuneyard.core.spec import validate_options
from tuneyard.plugins.models.scratch import ScratchModel, train_bpe

TEXTS = [
    "the cat sat on the mat", "a dog is a domesticated animal", "define the word cat",
    "the quick brown fox jumps over the lazy dog", "what is the meaning of the word tree",
    "aa bb aa bb cc dd cc dd",  # pairs with equal counts: ties the trainer must break the same way
] * 10

TINY = {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
        "intermediate_size": 64}


def provider(**options):
    return ScratchModel(ScratchModel.Options(**options))


def merges(tokenizer) -> list:
    return json.loads(tokenizer.backend_tokenizer.to_str())["model"]["merges"]


def test_vocab_has_vocab_size_entries():
    tokenizer = train_bpe(iter(TEXTS), "llama", 300)
    assert len(tokenizer) == len(tokenizer.get_vocab()) == 300
    assert len(merges(tokenizer)) == 300 - 256 - 1  # 256 byte symbols, 1 special token


def test_small_corpus_stops_early_and_warns(caplog):
    """BPE stops when no pair left occurs min_frequency times: the vocabulary is then the byte
    alphabet, the specials and one token per merge, fewer than asked."""
    with caplog.at_level(logging.WARNING, logger="tuneyard.plugins.models.scratch"):
        tokenizer = train_bpe(iter(TEXTS), "llama", 5000)
    assert len(tokenizer) == 256 + 1 + len(merges(tokenizer)) < 5000
    assert [r.getMessage() for r in caplog.records] == [
        f"trained tokenizer has {len(tokenizer)} tokens, fewer than train_tokenizer.vocab_size "
        "5000: no pair left occurs min_frequency (2) times in the corpus"]


def test_training_is_deterministic():
    a = train_bpe(iter(TEXTS), "llama", 300)
    b = train_bpe(iter(TEXTS), "llama", 300)
    assert a.get_vocab() == b.get_vocab()
    assert merges(a) == merges(b)
    assert a.backend_tokenizer.to_str() == b.backend_tokenizer.to_str()


@pytest.mark.parametrize("architecture", ["llama", "bert"])
def test_round_trips_through_save_pretrained(architecture, tmp_path):
    from transformers import AutoTokenizer

    trained = train_bpe(iter(TEXTS), architecture, 300)
    trained.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)

    assert loaded.get_vocab() == trained.get_vocab()
    assert merges(loaded) == merges(trained)
    assert loaded.special_tokens_map == trained.special_tokens_map
    text = "the cat sat on a tree, naïve café 🐈"  # unseen bytes still encode (byte-level)
    ids = trained(text)["input_ids"]
    assert loaded(text)["input_ids"] == ids
    assert loaded.decode(ids, skip_special_tokens=True) == text


def test_bert_wraps_texts_and_has_a_mask_token():
    tokenizer = train_bpe(iter(TEXTS), "bert", 300)
    assert tokenizer.convert_ids_to_tokens([0, 1, 2, 3, 4]) == [
        "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    assert (tokenizer.mask_token, tokenizer.mask_token_id) == ("[MASK]", 4)
    assert tokenizer.pad_token_id == 0

    a = tokenizer("the cat", add_special_tokens=False)["input_ids"]
    b = tokenizer("a dog", add_special_tokens=False)["input_ids"]
    assert tokenizer("the cat")["input_ids"] == [2, *a, 3]
    assert tokenizer("the cat", "a dog")["input_ids"] == [2, *a, 3, *b, 3]


def test_llama_pad_is_eos_and_nothing_is_added():
    tokenizer = train_bpe(iter(TEXTS), "llama", 300)
    assert tokenizer.pad_token == tokenizer.eos_token == tokenizer.bos_token == "<|endoftext|>"
    assert tokenizer.pad_token_id == tokenizer.eos_token_id == 0
    assert tokenizer.unk_token is None
    assert tokenizer("the cat")["input_ids"] == tokenizer(
        "the cat", add_special_tokens=False)["input_ids"]  # the data pipeline appends EOS


@pytest.mark.parametrize(("architecture", "task"), [("llama", "causal-lm"), ("bert", "masked-lm")])
def test_load_trains_the_tokenizer_on_the_corpus(architecture, task):
    scratch = provider(architecture=architecture, config=TINY,
                       train_tokenizer={"vocab_size": 300})
    model, tokenizer = scratch.load(task=task, dtype=torch.float32, corpus=lambda: iter(TEXTS))

    assert len(tokenizer) == 300
    assert model.get_input_embeddings().num_embeddings == model.config.vocab_size == 300
    assert model.config.pad_token_id == tokenizer.pad_token_id == 0
    assert tokenizer.get_vocab() == train_bpe(iter(TEXTS), architecture, 300).get_vocab()
    ids = tokenizer(["the cat sat", "a dog"], return_tensors="pt", padding=True)
    logits = model(**ids).logits  # [batch, seq_len, vocab]
    assert logits.shape == (2, ids["input_ids"].shape[1], 300)
    assert scratch.model_id() == f"scratch-{architecture}-1x32"


def test_named_tokenizer_does_not_read_the_corpus(tiny_model_dir):
    def corpus():
        raise AssertionError("corpus read without train_tokenizer")

    _, tokenizer = provider(tokenizer=str(tiny_model_dir), config=TINY).load(
        task="causal-lm", dtype=torch.float32, corpus=corpus)
    assert tokenizer.eos_token == "<|im_end|>"


def options_error(options) -> str:
    with pytest.raises(SpecError) as info:
        validate_options(ScratchModel.Options, options, "model.options")
    return str(info.value)


def test_exactly_one_tokenizer_source():
    message = ("spec: model.options: set exactly one of tokenizer (a tokenizer to load) and "
               "train_tokenizer (train one on the corpus)")
    assert options_error({}) == message
    assert options_error({"tokenizer": "x", "train_tokenizer": {"vocab_size": 300}}) == message


def test_vocab_size_must_leave_room_for_merges():
    assert options_error({"architecture": "bert", "train_tokenizer": {"vocab_size": 261}}) == (
        "spec: model.options: train_tokenizer.vocab_size: 261 leaves no room for merges; it "
        "must exceed 261 (256 byte symbols and bert's special tokens: [PAD], [UNK], [CLS], "
        "[SEP], [MASK])")
    assert ScratchModel.Options(train_tokenizer={"vocab_size": 258}).train_tokenizer.vocab_size \
        == 258  # llama has a single special token


def test_missing_corpus():
    with pytest.raises(TuneyardError) as info:
        provider(config=TINY, train_tokenizer={"vocab_size": 300}).load(
            task="causal-lm", dtype=torch.float32)
    assert str(info.value) == (
        "model.options.train_tokenizer: training a tokenizer needs the run's training texts, "
        "but load() was given no corpus")
