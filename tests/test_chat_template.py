"""Tokenizers that lack something: no pad token (pad == eos, handled safely), no chat template
for a chat dataset (a clear error, or ``dataset.chat_template``), and ``chatml`` tokens added to
the vocabulary of a LoRA run (the resized embeddings are trained and saved with the adapter,
which reloads onto the base model)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from click.testing import CliRunner

from tuneyard.core.cli import cli
from tuneyard.core.components import EvalResult, Evaluator
from tuneyard.core.engine import create_run
from tuneyard.core.errors import DataError, SpecError
from tuneyard.core.models import (CHATML_TOKENS, added_token_ids, load_pretrained,
                                  set_chat_template)
from tuneyard.core.plugins import ComponentInfo, get_plugins
from tuneyard.core.registry import Registry
from tuneyard.core.run.pipeline import execute
from tuneyard.core.spec import load_spec
from tuneyard.plugins.strategies.lora import LoRA

WORDS = [("cat", "a small animal"), ("dog", "a domesticated animal"),
         ("tree", "a tall perennial woody plant"), ("run", "move fast on foot")]


def plain_base(out: Path, tied: bool) -> Path:
    """A tiny Llama whose tokenizer has no pad token, no chat template and no ChatML tokens
    (``<unk> <s> </s>`` only), as many base models."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    corpus = [f"define the word {w} user assistant {d}" for w, d in WORDS] * 20
    tok.train_from_iterator(corpus, trainers.BpeTrainer(
        vocab_size=280, special_tokens=["<unk>", "<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>",
                                   eos_token="</s>")
    fast.save_pretrained(out)
    torch.manual_seed(0)
    LlamaForCausalLM(LlamaConfig(
        vocab_size=len(fast), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
        bos_token_id=fast.bos_token_id, eos_token_id=fast.eos_token_id,
        tie_word_embeddings=tied)).save_pretrained(out)
    return out


@pytest.fixture
def chat_jsonl(tmp_path) -> Path:
    path = tmp_path / "chat.jsonl"
    rows = [{"messages": [{"role": "user", "content": f"define the word {w}"},
                          {"role": "assistant", "content": d}]} for w, d in WORDS] * 10
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def losses(registry: Registry, run_id: str) -> list[float]:
    return [v for _, v in registry.metrics(run_id, "loss")]


def finite_and_falling(values: list[float]) -> bool:
    """No NaN/inf, and the last 3 steps' mean loss at least 0.1 below the first 3 steps'."""
    return all(map(math.isfinite, values)) and sum(values[-3:]) < sum(values[:3]) - 0.3


def final_eval_loss(registry: Registry, run_id: str) -> list[float]:
    return [e["value"] for e in registry.evaluations(run_id)
            if (e["checkpoint"], e["metric"]) == ("final", "eval_loss")]


# -- no pad token -------------------------------------------------------------------------------

def test_tokenizer_without_a_pad_token_trains_as_with_pad_equal_to_eos(
        tmp_path, tiny_model_dir, qa_jsonl, make_spec, registry_path):
    """The provider pads with EOS; batches are padded (answers differ in length), the EOS
    label is kept, and the run is the very run of the same model whose tokenizer says
    pad == eos itself."""
    from transformers import AutoTokenizer

    no_pad = tmp_path / "no-pad"
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    tokenizer.pad_token = None
    tokenizer.save_pretrained(no_pad)
    for name in ("config.json", "model.safetensors"):
        (no_pad / name).write_bytes((tiny_model_dir / name).read_bytes())
    assert AutoTokenizer.from_pretrained(no_pad).pad_token is None

    registry = Registry(registry_path)
    runs = {}
    for name, folder in (("no-pad", no_pad), ("pad-is-eos", tiny_model_dir)):
        spec = make_spec(qa_jsonl, **{"model.options.path": str(folder), "name": name})
        runs[name], _ = create_run(load_spec(spec), registry)
        assert execute(registry, runs[name]) == "completed"
    got = losses(registry, runs["no-pad"])
    assert len(got) == 12 and finite_and_falling(got)
    assert got == pytest.approx(losses(registry, runs["pad-is-eos"]), abs=1e-6)
    [loss] = final_eval_loss(registry, runs["no-pad"])
    assert math.isfinite(loss)
    saved = AutoTokenizer.from_pretrained(
        Path(registry.get_run(runs["no-pad"])["output_dir"]) / "final")
    assert saved.pad_token == saved.eos_token == "<|im_end|>"


# -- no chat template ---------------------------------------------------------------------------

def test_chat_rows_without_a_chat_template_name_the_option(
        tmp_path, chat_jsonl, make_spec, registry_path):
    base = plain_base(tmp_path / "plain", tied=True)
    spec = make_spec(chat_jsonl, **{"model.options.path": str(base), "dataset.format": "chat"})
    registry = Registry(registry_path)
    run_id, _ = create_run(load_spec(spec), registry)
    with pytest.raises(DataError, match="dataset.format 'chat' needs a chat template and the "
                       "model's tokenizer has none: set dataset.chat_template: chatml, or use a "
                       "model whose tokenizer has one"):
        execute(registry, run_id)


@pytest.mark.parametrize("fmt,template,message", [
    ("chat", "chatm", "dataset.chat_template: 'chatm' is neither 'chatml' nor a Jinja chat "
                      "template"),
    ("text", "chatml", "dataset: chat_template: format 'text' renders no chat; it is used by "
                       "formats chat, sharegpt, instruction"),
])
def test_spec_chat_template_is_chatml_or_jinja_for_a_chat_format(
        chat_jsonl, make_spec, fmt, template, message):
    spec = make_spec(chat_jsonl, **{"dataset.format": fmt, "dataset.chat_template": template})
    with pytest.raises(SpecError, match=message):
        load_spec(spec)


def test_a_jinja_chat_template_is_set_and_a_broken_one_names_the_option(tiny_model_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    size = len(tokenizer)
    set_chat_template(None, tokenizer, "{% for m in messages %}[{{ m['content'] }}]{% endfor %}")
    assert tokenizer.apply_chat_template([{"role": "user", "content": "hi"}],
                                         tokenize=False) == "[hi]"
    assert len(tokenizer) == size  # nothing added
    with pytest.raises(SpecError, match="dataset.chat_template: the Jinja template does not "
                       "render a user message: TemplateSyntaxError"):
        set_chat_template(None, tokenizer, "{% for m in messages %}{{ m }}")


def test_chatml_adds_only_the_missing_tokens_and_resizes_the_embeddings(tmp_path,
                                                                        tiny_model_dir):
    import torch

    model, tokenizer = load_pretrained(str(tiny_model_dir), task="causal-lm",
                                       dtype=torch.float32, field="model.options.path")
    size = len(tokenizer)
    set_chat_template(model, tokenizer, "chatml")  # this tokenizer has both tokens already
    assert len(tokenizer) == size and added_token_ids(model) == []

    base = plain_base(tmp_path / "plain", tied=True)
    model, tokenizer = load_pretrained(str(base), task="causal-lm", dtype=torch.float32,
                                       field="model.options.path")
    size = len(tokenizer)
    set_chat_template(model, tokenizer, "chatml")
    assert added_token_ids(model) == [size, size + 1] == tokenizer.convert_tokens_to_ids(
        list(CHATML_TOKENS))
    assert model.get_input_embeddings().weight.shape[0] == size + 2 == model.config.vocab_size
    text = tokenizer.apply_chat_template([{"role": "user", "content": "define cat"}],
                                         tokenize=False, add_generation_prompt=True)
    assert text == "<|im_start|>user\ndefine cat<|im_end|>\n<|im_start|>assistant\n"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert ids.count(size) == 2 and ids.count(size + 1) == 1  # each special is one token


# -- LoRA with tokens added ---------------------------------------------------------------------

class Logits(Evaluator):
    """Records the model's logits on the first two held-out rows (the trained model's, at the
    final evaluation)."""

    name = "logits"
    description = "keeps the logits of the model under evaluation"
    seen: dict = {}

    def evaluate(self, ctx):
        import torch

        batch = ctx.collator(list(ctx.eval_dataset)[:2])
        with torch.no_grad():
            logits = ctx.model(input_ids=batch["input_ids"],
                               attention_mask=batch["attention_mask"]).logits
        type(self).seen["batch"], type(self).seen["logits"] = batch, logits
        return EvalResult({"rows": 2.0})


@pytest.mark.parametrize("tied", [True, False], ids=["tied-head", "own-head"])
def test_lora_with_chatml_tokens_added_saves_the_resized_embeddings_and_reloads(
        tmp_path, chat_jsonl, make_spec, registry_path, monkeypatch, tied):
    import torch
    from safetensors.torch import load_file

    monkeypatch.setitem(get_plugins().components["evaluator"], "logits",
                        ComponentInfo(Logits, "logits-plugin"))
    monkeypatch.setattr(Logits, "seen", {})
    base = plain_base(tmp_path / "plain", tied=tied)
    spec = make_spec(chat_jsonl, **{
        "model.options.path": str(base), "dataset.format": "chat",
        "dataset.chat_template": "chatml", "evaluators": [{"name": "logits"},
                                                          {"name": "perplexity"}]})
    registry = Registry(registry_path)
    run_id, _ = create_run(load_spec(spec), registry)
    assert execute(registry, run_id) == "completed"
    assert finite_and_falling(losses(registry, run_id))

    final = Path(registry.get_run(run_id)["output_dir"]) / "final"
    model, tokenizer = load_pretrained(str(base), task="causal-lm", dtype=torch.float32,
                                       field="model.options.path")
    vocab = len(tokenizer) + 2
    saved = load_file(final / "adapter_model.safetensors")
    for layer in ("model.model.embed_tokens", "model.lm_head"):
        assert saved[f"base_model.{layer}.token_adapter.base_layer.weight"].shape == (vocab, 64)
        assert saved[f"base_model.{layer}.token_adapter.trainable_tokens_delta"].shape == (2, 64)
    delta = saved["base_model.model.model.embed_tokens.token_adapter.trainable_tokens_delta"]
    assert delta.abs().max() > 0  # the new tokens' rows were trained

    set_chat_template(model, tokenizer, "chatml")  # the same tokens, the same ids
    strategy = LoRA(LoRA.Options(r=4))
    reloaded = strategy.load_checkpoint(model, str(final)).eval()
    batch = Logits.seen["batch"]
    assert int((batch["input_ids"] >= vocab - 2).sum()) > 0  # the held-out rows use them
    with torch.no_grad():
        logits = reloaded(input_ids=batch["input_ids"],
                          attention_mask=batch["attention_mask"]).logits
    torch.testing.assert_close(logits, Logits.seen["logits"], atol=1e-5, rtol=0)

    result = CliRunner().invoke(cli, ["--registry", str(registry_path), "eval", run_id,
                                      "--evaluator", "perplexity"])
    assert result.exit_code == 0, result.output
    first, again = final_eval_loss(registry, run_id)
    assert again == pytest.approx(first, abs=1e-5)
