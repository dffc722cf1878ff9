"""Shared fixtures: a tiny random Llama with a tiny BPE tokenizer, and a tmp registry.

The tiny model (hidden 64, 2 layers, ~100k parameters) is built from a config in-process and
saved once per session; nothing is downloaded.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

CORPUS = [
    "the cat sat on the mat", "a dog is a domesticated animal", "define the word cat",
    "an organism that depends on complex organic substances for nutrition",
    "to run is to move fast on foot", "the quick brown fox jumps over the lazy dog",
    "what is the meaning of the word tree", "a tall perennial woody plant",
] * 20


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A saved tiny Llama causal LM + tokenizer folder; pad == eos == ``<|im_end|>`` as in
    SmolLM2, so the pad/eos label trap is exercised."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast
    import torch

    out = tmp_path_factory.mktemp("tiny-llama")
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ["<unk>", "<|im_start|>", "<|im_end|>"]
    tok.train_from_iterator(
        CORPUS, trainers.BpeTrainer(vocab_size=300, special_tokens=specials,
                                    initial_alphabet=pre_tokenizers.ByteLevel.alphabet()),
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="<unk>", bos_token="<|im_start|>",
        eos_token="<|im_end|>", pad_token="<|im_end|>",
    )
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(out)
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(fast), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
        bos_token_id=fast.bos_token_id, eos_token_id=fast.eos_token_id,
        pad_token_id=fast.pad_token_id, tie_word_embeddings=True,
    )
    LlamaForCausalLM(config).save_pretrained(out)
    return out


@pytest.fixture
def registry_path(tmp_path, monkeypatch) -> Path:
    """A registry file in a tmp folder, also set as ``TUNEYARD_REGISTRY``."""
    path = tmp_path / "registry.db"
    monkeypatch.setenv("TUNEYARD_REGISTRY", str(path))
    return path


@pytest.fixture
def qa_jsonl(tmp_path) -> Path:
    """A small instruction dataset (JSONL, 40 rows) the tiny model can overfit."""
    path = tmp_path / "qa.jsonl"
    rows = [{"instruction": f"define the word {w}", "output": d}
            for w, d in [("cat", "a small animal"), ("dog", "a domesticated animal"),
                         ("tree", "a tall perennial woody plant"), ("run", "move fast on foot")]] * 10
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture
def make_spec(tmp_path, tiny_model_dir):
    """Factory: write a run spec (LoRA on the tiny model, 12 steps, perplexity) for a JSONL
    file, with dotted-key ``changes``; returns the YAML's path."""

    def make(data: Path, **changes) -> Path:
        spec = {
            "name": "tiny",
            "dataset": {"source": "jsonl", "options": {"path": str(data)},
                        "format": "instruction", "eval_split": 0.2},
            "model": {"provider": "hf", "options": {"path": str(tiny_model_dir)}},
            "strategy": {"name": "lora", "options": {"r": 4}},
            "training": {"max_steps": 12, "micro_batch_size": 4, "learning_rate": 5e-3,
                         "seed": 0},
            "evaluators": [{"name": "perplexity"}],
            "output_dir": str(tmp_path / "runs"),
        }
        for key, value in changes.items():
            node = spec
            *parents, last = key.split(".")
            for part in parents:
                node = node[part]
            node[last] = value
        path = tmp_path / "spec.yaml"
        path.write_text(yaml.safe_dump(spec, sort_keys=False))
        return path

    return make
