"""Shared fixtures: a tiny random Llama with a tiny BPE tokenizer, and a tmp registry.

The tiny model (hidden 64, 2 layers, ~100k parameters) is built from a config in-process and
saved once per session; nothing is downloaded.
"""

from __future__ import annotations

import json
import math
import os
import site
import socket
import subprocess
import sys
import types
from datetime import UTC, datetime, timedelta
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


@pytest.fixture(scope="session")
def wordpiece():
    """Factory: ``wordpiece(vocab)`` → a BERT-style WordPiece fast tokenizer over ``vocab``
    (which starts ``[PAD] [UNK] [CLS] [SEP] [MASK]``, ids 0–4): lower-cases, splits
    "cats" into ``cat ##s`` when both are in ``vocab``, wraps texts in ``[CLS] … [SEP]``."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    def make(vocab: list[str]) -> PreTrainedTokenizerFast:
        assert vocab[:5] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
        tok = Tokenizer(models.WordPiece({w: i for i, w in enumerate(vocab)}, unk_token="[UNK]"))
        tok.normalizer = normalizers.BertNormalizer(lowercase=True)
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tok.decoder = decoders.WordPiece()
        tok.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
        return PreTrainedTokenizerFast(
            tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
            sep_token="[SEP]", mask_token="[MASK]")

    return make


@pytest.fixture
def fresh_venv(tmp_path, monkeypatch) -> Path:
    """A new virtual environment (its ``python`` returned) that sees this one's packages
    (tuneyard, torch, pip, pytest) through a ``.pth`` file, so a plugin installed into it lands
    in the new environment only. pip runs offline there: no index, no build isolation (the
    build backend, setuptools, is one of the packages seen)."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    purelib = subprocess.check_output(
        [python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], text=True)
    Path(purelib.strip(), "_tuneyard_parent_env.pth").write_text("".join(
        f"import site; site.addsitedir({path!r})\n" for path in site.getsitepackages()))
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_NO_BUILD_ISOLATION", "0")  # pip reads "0" as: do not isolate
    monkeypatch.setenv("PIP_DISABLE_PIP_VERSION_CHECK", "1")
    return python


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


@pytest.fixture(autouse=True)
def write_every_step(monkeypatch):
    """In-process runs write each logged step to the registry at once (``train.FLUSH_S = 0``,
    0.25 s in use), so a test that asks for a stop through the registry at step N sees the run
    checkpoint at step N + 1. ``test_stop_resume.py`` tests the batching itself."""
    from tuneyard.core.run import train

    monkeypatch.setattr(train, "FLUSH_S", 0.0)


@pytest.fixture
def plugin():
    """Register a lifecycle plugin object for one test (``plugin(obj, name)``: its ``on_*``
    methods become the plugin's hooks)."""
    from tuneyard.core.plugins import get_plugins

    p, names = get_plugins(), []

    def add(obj, name: str) -> None:
        module = types.ModuleType(name)
        for attr in dir(obj):
            if attr.startswith("on_"):
                setattr(module, attr, getattr(obj, attr))
        p.register_plugin(module, name=name)
        names.append(name)

    yield add
    for name in names:
        p.pm.unregister(name=name)
        p.infos.pop(name, None)


@pytest.fixture
def plugins_dir_env(monkeypatch):
    """``--plugins-dir`` sets TUNEYARD_PLUGINS_DIR in os.environ and reloads the plugin
    manager; put both back afterwards, so later tests do not load this test's plugins."""
    from tuneyard.core.plugins import LOAD_ENV, PLUGINS_DIR_ENV, get_plugins

    monkeypatch.setenv(PLUGINS_DIR_ENV, "")  # records the original value, restored after
    monkeypatch.delenv(LOAD_ENV, raising=False)
    get_plugins.cache_clear()
    yield
    get_plugins.cache_clear()


@pytest.fixture
def stop_at(plugin):
    """``stop_at(registry, run_id, step)``: a lifecycle plugin asks the run to stop through the
    registry (as ``tuneyard stop`` does) when ``step`` is logged; the Trainer then checkpoints
    at the end of the next step and ends."""
    from tuneyard.core.hookspecs import hookimpl

    def add(registry, run_id: str, step: int) -> None:
        wanted = (run_id, step)

        @hookimpl
        def on_step_end(run_id: str, step: int) -> None:
            if (run_id, step) == wanted:
                registry.request_stop(run_id)

        plugin(types.SimpleNamespace(on_step_end=on_step_end), f"stop-{run_id}")

    return add


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


# -- a registry seeded with runs, for the TUI's tests and pictures --------------------------
#: The TUI's clock in tests; every seeded time is before it.
FROZEN_NOW = "2026-11-01T12:00:00+00:00"


def _loss(step: int, scale: float) -> float:
    return round(1.6 + scale * math.exp(-step / 15) + 0.05 * math.sin(step), 4)


@pytest.fixture
def seeded_registry(tmp_path) -> Path:
    """A registry with five runs at fixed times (ids ``run-a`` … ``run-e``): two completed
    LoRA/full runs with curves, evaluations, checkpoints and artifacts; a failed one; a stopped
    one; and a ``running`` one owned by this test process (so it stays running), with device
    telemetry of two GPUs and the CPU. Plugins and components are synced from the real
    plugin manager."""
    from tuneyard.core.plugins import get_plugins
    from tuneyard.core.registry import Registry

    path = tmp_path / "registry.db"
    reg = Registry(path)
    runs = [
        # id, name, status, strategy, source, model, steps done, max, lr, loss scale, minutes ago
        ("run-a", "smollm2-wordnet-lora", "completed", "lora", "wordnet",
         "SmolLM2-135M-Instruct.Q4_1.gguf", 40, 40, 1e-3, 3.0, 300),
        ("run-b", "smollm2-wordnet-full", "completed", "full", "wordnet",
         "SmolLM2-135M-Instruct.Q4_1.gguf", 40, 40, 5e-5, 2.5, 240),
        ("run-c", "scratch-shakespeare", "failed", "pretrain-clm", "text", "scratch-llama",
         3, 200, 3e-4, 6.0, 180),
        ("run-d", "qa-lora-r16", "stopped", "lora", "jsonl", "tiny-llama", 18, 60, 5e-3, 3.5, 120),
        ("run-e", "wordnet-lora-long", "running", "lora", "wordnet",
         "SmolLM2-135M-Instruct.Q4_1.gguf", 25, 100, 1e-3, 3.0, 10),
    ]
    now = datetime.fromisoformat(FROZEN_NOW)
    for (rid, name, status, strategy, source, model, done, max_steps, lr, scale, ago) in runs:
        start = now - timedelta(minutes=ago)
        end = None if status == "running" else start + timedelta(seconds=5 * done + 30)
        spec = {"name": name, "dataset": {"source": source, "options": {"limit": 2000},
                                          "format": "instruction", "eval_split": 0.05},
                "model": {"provider": "gguf" if "gguf" in model else "hf",
                          "options": {"path": model}},
                "strategy": {"name": strategy, "options": {"r": 8} if strategy == "lora" else {}},
                "training": {"max_steps": max_steps, "learning_rate": lr, "seed": 0},
                "evaluators": [{"name": "perplexity"}], "output_dir": "runs"}
        reg.db["runs"].insert({
            "id": rid, "name": name, "status": status, "spec": json.dumps(spec),
            "dataset_source": source, "dataset_fingerprint": f"{source[:4]}0123456789ab",
            "train_rows": 1900, "eval_rows": 100, "base_model": model, "strategy": strategy,
            "host": socket.gethostname(), "device": "cuda",
            "pid": os.getpid() if status == "running" else 1, "output_dir": str(tmp_path / rid),
            "max_steps": max_steps, "step": done, "created_at": start.isoformat(),
            "started_at": start.isoformat(), "heartbeat_at": start.isoformat(),
            "ended_at": end and end.isoformat(),
            "error": "DataError: dataset: source 'text' gave 0 rows" if status == "failed"
            else None,
        })
        at = start.isoformat()
        for step in range(1, done + 1):
            reg.add_metrics(rid, step, {"loss": _loss(step, scale),
                                        "learning_rate": lr * (1 - step / max_steps),
                                        "tokens_per_s": 2000.0 + 10 * step})
        reg.db.execute("UPDATE metrics SET at = ? WHERE run_id = ?", [at, rid])
        # a running run's last heartbeat is really now: one before this process started would
        # mean its pid was reused by another process (Registry.reconcile)
        beat = datetime.now(UTC).isoformat() if status == "running" else at
        reg.db.execute("UPDATE runs SET heartbeat_at = ? WHERE id = ?", [beat, rid])
        if status == "completed":
            for ckpt, ppl in (("base", 40.0 + scale), ("final", 12.0 + scale)):
                reg.add_evaluation(rid, ckpt, "perplexity",
                                   {"perplexity": ppl, "eval_loss": math.log(ppl)})
            reg.add_checkpoint(rid, max_steps, str(tmp_path / rid / "final"))
            kind = "adapter" if strategy == "lora" else "model"
            reg.add_artifact(rid, kind, str(tmp_path / rid / "final"))
            reg.db.execute("UPDATE evaluations SET at = ? WHERE run_id = ?", [at, rid])
        if status == "stopped":
            reg.add_checkpoint(rid, done, str(tmp_path / rid / f"checkpoints/checkpoint-{done}"))
        reg.db.execute("UPDATE checkpoints SET created_at = ? WHERE run_id = ?", [at, rid])
        reg.db.execute("UPDATE artifacts SET created_at = ? WHERE run_id = ?", [at, rid])
        if status == "running":
            for i in range(30):
                reg.add_system_metrics(rid, [
                    {"device": "cuda:0", "util_pct": 90.0 + i % 7, "mem_bytes": 40 * 2**30,
                     "mem_total_bytes": 141 * 2**30, "power_w": 450.0, "temp_c": 61.0},
                    {"device": "cuda:1", "util_pct": 85.0 + i % 5, "mem_bytes": 38 * 2**30,
                     "mem_total_bytes": 141 * 2**30, "power_w": 430.0, "temp_c": 59.0},
                    {"device": "cpu", "util_pct": 12.5, "mem_bytes": 3 * 2**30,
                     "mem_total_bytes": 24 * 2**30},
                ])
            reg.db.execute("UPDATE system_metrics SET at = ? WHERE run_id = ?", [at, rid])
    reg.sync_plugins(get_plugins())
    reg.db.execute("UPDATE plugins SET loaded_at = ?", [FROZEN_NOW])
    return path


@pytest.fixture
def tui_app(monkeypatch):
    """Factory: the TUI app (as the CLI builds it) on a registry path, with the clock pinned
    to ``FROZEN_NOW`` and a 50 ms poll interval. It runs in the registry's folder and opens
    it as ``registry.db``, so pictures show no tmp path."""
    from tuneyard.tui.app import make_app

    def make(path: Path, **kwargs):
        monkeypatch.chdir(Path(path).parent)
        kwargs.setdefault("clock", lambda: datetime.fromisoformat(FROZEN_NOW))
        kwargs.setdefault("poll_interval_s", 0.05)
        return make_app(Path(Path(path).name), **kwargs)

    return make


@pytest.fixture
def wait_for():
    """``await wait_for(pilot, predicate, timeout_s=10)``: pause the app until ``predicate()``
    is true (e.g. ``lambda: pilot.app.screen.polls > 0``); fails the test on timeout."""
    import asyncio
    import time

    async def wait(pilot, predicate, timeout_s: float = 10.0) -> None:
        deadline = time.monotonic() + timeout_s
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout_s} s waiting for {predicate}")
            await pilot.pause(0.02)
            await asyncio.sleep(0)

    return wait
