"""One short CLI run per task and row format: pre-training a causal LM from scratch with a
trained tokenizer, masked-LM pre-training, NER (``tokens``), text classification (``label``),
QA (``instruction`` + ``squad``), ``alpaca`` and ``sharegpt``; re-evaluating a finished run with
another evaluator; and ``data preview`` of the label formats.

Models are tiny and random (hidden 32–64, 2 layers), built in-process: the Llama of
``conftest.tiny_model_dir`` and a BERT (:func:`bert_dir`) whose WordPiece vocabulary covers every
word of the data below.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from transformers import AutoConfig, AutoTokenizer

from tuneyard.core.cli import cli, preview_text
from tuneyard.core.registry import Registry
from tuneyard.core.run.data import split
from tuneyard.core.spec import load_spec
from tuneyard.plugins.models.scratch import train_bpe

BERT_VOCAB = [
    "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "a", "cat", "dog", "sat", "ran", "on",
    "to", "mat", "big", "red", "house", "john", "mary", "lives", "in", "paris", "london",
    "walk", "##s", "new", "york", "good", "bad", "film", "was", "great", "boring", "plot",
]

#: NER sentences: (words, IOB2 tags); "walks" is split into ``walk ##s``.
NER = [
    ("mary walks to new york", "B-per O O B-loc I-loc"),
    ("john lives in paris", "B-per O O B-loc"),
    ("the cat sat on the mat", "O O O O O O"),
    ("mary lives in london", "B-per O O B-loc"),
    ("john walks to paris", "B-per O O B-loc"),
    ("the dog ran to new york", "O O O O B-loc I-loc"),
    ("john lives in new york", "B-per O O B-loc I-loc"),
    ("mary walks to the big red house", "B-per O O O O O O"),
]

#: Sentiment rows: (text, class).
SENTIMENT = [("good film", "pos"), ("a great film", "pos"), ("great good film", "pos"),
             ("the film was good", "pos"), ("bad plot", "neg"), ("a boring plot", "neg"),
             ("bad boring plot", "neg"), ("the plot was bad", "neg")]

QA = [("define the word cat", "a small animal"), ("define the word dog", "a domesticated animal"),
      ("define the word tree", "a tall perennial woody plant"),
      ("define the word run", "move fast on foot")]


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory, wordpiece) -> Path:
    """A saved tiny BertForMaskedLM (hidden 32, 2 layers) and a BERT-style WordPiece fast
    tokenizer over :data:`BERT_VOCAB` (lower-cases, ``[CLS] … [SEP]``)."""
    import torch
    from transformers import BertConfig, BertForMaskedLM

    out = tmp_path_factory.mktemp("tiny-bert")
    wordpiece(BERT_VOCAB).save_pretrained(out)
    torch.manual_seed(0)
    BertForMaskedLM(BertConfig(
        vocab_size=len(BERT_VOCAB), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=64, pad_token_id=0)).save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    """The datasets, each a file: ``ner.conll`` (40 sentences, word and tag per line, the
    first sentence is ``NER[0]``), ``sentiment.jsonl`` (40 rows), ``qa.jsonl``,
    ``alpaca.jsonl`` and ``sharegpt.jsonl`` (32 rows each), ``animals.txt`` (60 lines) and
    ``mlm.txt`` (60 lines)."""
    out = tmp_path_factory.mktemp("data")
    rng = random.Random(0)
    sentences = NER + [rng.choice(NER) for _ in range(32)]
    (out / "ner.conll").write_text("-DOCSTART- O\n\n" + "\n\n".join(
        "\n".join(f"{w} {t}" for w, t in zip(words.split(), tags.split()))
        for words, tags in sentences) + "\n")
    write_jsonl(out / "sentiment.jsonl", [{"text": t, "label": c} for t, c in SENTIMENT * 5])
    write_jsonl(out / "qa.jsonl", [{"instruction": q, "output": a} for q, a in QA * 8])
    write_jsonl(out / "alpaca.jsonl", [
        {"instruction": q, "input": "in a few words" if i % 2 else "", "output": a}
        for i, (q, a) in enumerate(QA * 8)])
    write_jsonl(out / "sharegpt.jsonl", [{"conversations": [
        {"from": "system", "value": "answer briefly"}, {"from": "human", "value": q},
        {"from": "gpt", "value": a}]} for q, a in QA * 8])
    words = ["cat", "dog", "tree", "fox", "mat", "house", "word"]
    (out / "animals.txt").write_text("\n".join(
        f"the {rng.choice(words)} sat on the {rng.choice(words)} near the {rng.choice(words)}"
        for _ in range(60)) + "\n")
    (out / "mlm.txt").write_text("\n".join(
        ["the cat sat on the mat", "the dog ran to the big red house",
         "a big cat sat on a red mat", "the dog sat on the mat"] * 15) + "\n")
    return out


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def write_spec(folder: Path, source: str, path: Path, fmt: str, model: dict, strategy: str,
               evaluators: list[dict], **training) -> Path:
    """A run spec (YAML) in ``folder``: the given parts, 12 steps of 4 examples at lr 5e-3,
    seed 0, 20% held out, no telemetry; ``training`` keys override."""
    spec = {
        "name": f"{fmt}-{strategy}",
        "dataset": {"source": source, "options": {"path": str(path)}, "format": fmt,
                    "eval_split": 0.2},
        "model": model,
        "strategy": {"name": strategy},
        "training": {"max_steps": 12, "micro_batch_size": 4, "learning_rate": 5e-3, "seed": 0,
                     "telemetry_interval_s": 0, **training},
        "evaluators": evaluators,
        "output_dir": str(folder / "runs"),
    }
    out = folder / f"{fmt}-{strategy}.yaml"
    out.write_text(yaml.safe_dump(spec, sort_keys=False))
    return out


def run(registry: Path, spec: Path) -> dict:
    """``tuneyard run SPEC``; the run's row, which must be completed."""
    result = CliRunner().invoke(cli, ["--registry", str(registry), "run", str(spec)],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    run = Registry(registry).list_runs()[0]
    assert run["status"] == "completed", run["error"]
    return run


def losses(registry: Path, run: dict) -> list[float]:
    return [v for _, v in Registry(registry).metrics(run["id"], "loss")]


def falls(values: list[float], by: float) -> bool:
    """The mean of the last three is ``by`` (nats) or more below the mean of the first three."""
    return sum(values[-3:]) / 3 <= sum(values[:3]) / 3 - by


def evals(registry: Path, run: dict) -> dict[tuple[str, str, str], float]:
    """(checkpoint, evaluator, metric) → value."""
    return {(e["checkpoint"], e["evaluator"], e["metric"]): e["value"]
            for e in Registry(registry).evaluations(run["id"])}


def details(registry: Path, run: dict, checkpoint: str, evaluator: str) -> list[dict]:
    [row] = Registry(registry).db.query(
        "SELECT details FROM evaluations WHERE run_id = ? AND checkpoint = ? AND evaluator = ?"
        " AND details IS NOT NULL", [run["id"], checkpoint, evaluator])
    return json.loads(row["details"])


def test_pretrain_clm_from_scratch_trains_and_saves_its_tokenizer(tmp_path, data_dir):
    reg = tmp_path / "registry.db"
    corpus = data_dir / "animals.txt"
    model = {"provider": "scratch", "options": {
        "architecture": "llama", "train_tokenizer": {"vocab_size": 280},
        "config": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                   "num_attention_heads": 2, "max_position_embeddings": 64}}}
    spec = write_spec(tmp_path, "text", corpus, "text", model, "pretrain-clm",
                      [{"name": "perplexity"}], max_seq_len=32, learning_rate=1e-2,
                      save_steps=6)
    done = run(reg, spec)
    values = losses(reg, done)
    assert len(values) == 12 and values[-1] < values[0] - 0.5
    final = Path(done["output_dir"]) / "final"
    reloaded = AutoTokenizer.from_pretrained(final)
    # a checkpoint holds it too: the only copy of a trained tokenizer lives with the run
    checkpoint = Path(done["output_dir"]) / "checkpoints" / "checkpoint-6"
    assert AutoTokenizer.from_pretrained(checkpoint).get_vocab() == reloaded.get_vocab()
    # the tokenizer was trained on the training lines only (the held-out ones excluded)
    lines = corpus.read_text().splitlines()
    _, kept = split(len(lines), load_spec(spec))
    expected = train_bpe(iter([lines[i] for i in kept]), "llama", 280)
    assert len(reloaded) == 280 and reloaded.get_vocab() == expected.get_vocab()
    assert AutoConfig.from_pretrained(final).vocab_size == 280


def test_pretrain_mlm_lowers_the_pseudo_perplexity(tmp_path, data_dir, bert_dir):
    reg = tmp_path / "registry.db"
    spec = write_spec(tmp_path, "text", data_dir / "mlm.txt", "text",
                      {"provider": "hf", "options": {"path": str(bert_dir)}}, "pretrain-mlm",
                      [{"name": "masked-lm"}], max_seq_len=16, max_steps=20, learning_rate=1e-2)
    done = run(reg, spec)
    values = losses(reg, done)
    assert len(values) == 20 and falls(values, by=0.5)
    results = evals(reg, done)
    base = results[("base", "masked-lm", "pseudo_perplexity")]
    final = results[("final", "masked-lm", "pseudo_perplexity")]
    assert 1.0 <= final < base / 2
    assert 0.0 <= results[("final", "masked-lm", "masked_accuracy")] <= 1.0


def test_a_masked_lm_step_always_has_a_masked_token(tmp_path, data_dir):
    """One 8-token block a step: with seed 0 the 15% draw picks no token of step 3's block,
    which once trained on nothing and logged loss 0.0 and grad_norm 0.0. Every row now gets
    at least one masked token (as BERT's own data pipeline does), so every step learns."""
    reg = tmp_path / "registry.db"
    model = {"provider": "scratch", "options": {
        "architecture": "bert", "train_tokenizer": {"vocab_size": 280},
        "config": {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
                   "intermediate_size": 64}}}
    spec = write_spec(tmp_path, "text", data_dir / "mlm.txt", "text", model, "pretrain-mlm",
                      [], max_seq_len=8, micro_batch_size=1, max_steps=6, learning_rate=1e-3)
    done = run(reg, spec)
    registry = Registry(reg)
    for name in ("loss", "grad_norm"):
        values = [v for _, v in registry.metrics(done["id"], name)]
        assert len(values) == 6 and all(0.1 < v < 100 for v in values), (name, values)


def test_the_mlm_collator_masks_one_token_of_a_row_the_draw_left_unmasked(wordpiece):
    import torch

    from tuneyard.plugins.strategies.pretrain import PretrainMLM

    tokenizer = wordpiece(BERT_VOCAB)
    collator = PretrainMLM(PretrainMLM.Options()).collator(tokenizer, None)
    collator.mlm_probability = 0.0  # the 15% draw chooses nothing
    ids = tokenizer("the cat sat on the mat")["input_ids"]  # [CLS] … [SEP]
    torch.manual_seed(0)
    counts = {}
    for _ in range(200):
        batch = collator([{"input_ids": ids}, {"input_ids": ids}])
        for row in range(2):
            chosen = (batch["labels"][row] != -100).nonzero().flatten().tolist()
            assert len(chosen) == 1 and 0 < chosen[0] < len(ids) - 1  # never [CLS]/[SEP]
            pos = chosen[0]
            assert batch["labels"][row, pos] == ids[pos]
            new = int(batch["input_ids"][row, pos])
            kind = "mask" if new == tokenizer.mask_token_id else "kept" if new == ids[pos] \
                else "random"
            counts[kind] = counts.get(kind, 0) + 1
            others = [i for i in range(len(ids)) if i != pos]
            assert batch["input_ids"][row, others].tolist() == [ids[i] for i in others]
    assert counts["mask"] > 280 and counts["random"] > 15 and counts["kept"] > 15  # 80/10/10


def test_masked_lm_evaluations_during_training_leave_its_losses_unchanged(tmp_path, data_dir,
                                                                          bert_dir):
    """Evaluation masks the held-out text under its own seeded RNG: the training masks, so
    the training losses, are the same with training.eval_steps as without."""
    model = {"provider": "hf", "options": {"path": str(bert_dir)}}
    curves = {}
    for eval_steps in (None, 3):
        folder = tmp_path / f"eval-{eval_steps}"
        folder.mkdir()
        spec = write_spec(folder, "text", data_dir / "mlm.txt", "text", model, "pretrain-mlm",
                          [], max_seq_len=16, max_steps=6, learning_rate=1e-2,
                          eval_steps=eval_steps)
        done = run(folder / "registry.db", spec)
        curves[eval_steps] = losses(folder / "registry.db", done)
        eval_loss = Registry(folder / "registry.db").metrics(done["id"], "eval_loss")
        assert [step for step, _ in eval_loss] == ([] if eval_steps is None else [3, 6])
    assert curves[3] == curves[None]


def test_ner_with_conll_trains_a_token_classifier(tmp_path, data_dir, bert_dir):
    reg = tmp_path / "registry.db"
    spec = write_spec(tmp_path, "conll", data_dir / "ner.conll", "tokens",
                      {"provider": "hf", "options": {"path": str(bert_dir)}}, "full",
                      [{"name": "seqeval"}])
    done = run(reg, spec)
    assert falls(losses(reg, done), by=0.3)
    results = evals(reg, done)
    for checkpoint in ("base", "final"):
        for metric in ("precision", "recall", "f1", "accuracy"):
            assert 0.0 <= results[(checkpoint, "seqeval", metric)] <= 1.0
        assert results[(checkpoint, "seqeval", "eval_examples")] == 8.0  # 20% of 40
    config = AutoConfig.from_pretrained(Path(done["output_dir"]) / "final")
    assert config.id2label == {0: "B-loc", 1: "B-per", 2: "I-loc", 3: "O"}


def test_classification_with_lora_reports_a_confusion_row_per_class(tmp_path, data_dir,
                                                                    bert_dir):
    reg = tmp_path / "registry.db"
    spec = write_spec(tmp_path, "jsonl", data_dir / "sentiment.jsonl", "label",
                      {"provider": "hf", "options": {"path": str(bert_dir)}}, "lora",
                      [{"name": "accuracy"}], learning_rate=3e-2)
    done = run(reg, spec)
    assert falls(losses(reg, done), by=0.3)
    results = evals(reg, done)
    accuracy = results[("final", "accuracy", "accuracy")]
    assert accuracy > results[("base", "accuracy", "accuracy")]
    rows = details(reg, done, "final", "accuracy")
    assert [r["label"] for r in rows] == ["neg", "pos"]  # both classes are in the held-out 8
    for r in rows:
        assert list(r["predicted"]) == ["neg", "pos"]
        assert sum(r["predicted"].values()) == r["support"]
    assert sum(r["support"] for r in rows) == 8
    assert sum(r["predicted"][r["label"]] for r in rows) / 8 == accuracy  # the diagonal


@pytest.fixture(scope="module")
def qa_run(tmp_path_factory, data_dir, tiny_model_dir) -> tuple[Path, dict]:
    """A completed QA run (``instruction`` rows, full fine-tuning of the tiny Llama, squad)."""
    folder = tmp_path_factory.mktemp("qa")
    reg = folder / "registry.db"
    spec = write_spec(folder, "jsonl", data_dir / "qa.jsonl", "instruction",
                      {"provider": "hf", "options": {"path": str(tiny_model_dir)}}, "full",
                      [{"name": "squad", "options": {"max_new_tokens": 8}}], max_steps=6,
                      learning_rate=3e-3)
    return reg, run(reg, spec)


def test_qa_run_scores_squad_metrics(qa_run):
    reg, done = qa_run
    results = evals(reg, done)
    for checkpoint in ("base", "final"):
        assert {m for c, e, m in results if (c, e) == (checkpoint, "squad")} == {
            "exact_match", "f1"}
        assert 0.0 <= results[(checkpoint, "squad", "exact_match")] <= 1.0
        assert 0.0 <= results[(checkpoint, "squad", "f1")] <= 1.0
    assert len(details(reg, done, "final", "squad")) == 6  # 20% of 32 rows held out


def test_eval_with_another_evaluator_adds_rows_without_training(qa_run):
    reg, done = qa_run
    registry = Registry(reg)
    metrics_before = registry.metrics_since(done["id"])
    checkpoints_before = registry.checkpoints(done["id"])
    result = CliRunner().invoke(cli, ["--registry", str(reg), "eval", done["id"],
                                      "--evaluator", "bleu"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    bleu = [e for e in registry.evaluations(done["id"]) if e["evaluator"] == "bleu"]
    assert [(e["checkpoint"], e["metric"]) for e in bleu] == [("final", "bleu")]
    assert 0.0 <= bleu[0]["value"] <= 100.0
    assert len(details(reg, done, "final", "bleu")) == 6
    assert registry.metrics_since(done["id"]) == metrics_before
    assert registry.checkpoints(done["id"]) == checkpoints_before
    assert registry.get_run(done["id"])["status"] == "completed"


@pytest.mark.parametrize("fmt", ["alpaca", "sharegpt"])
def test_alpaca_and_sharegpt_runs_complete(tmp_path, data_dir, tiny_model_dir, fmt):
    reg = tmp_path / "registry.db"
    spec = write_spec(tmp_path, "jsonl", data_dir / f"{fmt}.jsonl", fmt,
                      {"provider": "hf", "options": {"path": str(tiny_model_dir)}}, "full",
                      [{"name": "perplexity"}], max_steps=6, learning_rate=3e-3)
    done = run(reg, spec)
    assert done["step"] == 6 and len(losses(reg, done)) == 6
    assert done["train_rows"] == 26 and done["eval_rows"] == 6  # 32 rows, 20% held out
    assert (Path(done["output_dir"]) / "final" / "model.safetensors").is_file()
    assert ("final", "perplexity", "eval_loss") in evals(reg, done)


def preview(spec: Path) -> dict:
    result = CliRunner().invoke(cli, ["data", "preview", str(spec), "--rows", "1", "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_preview_shows_word_labels_and_row_labels(tmp_path, data_dir, bert_dir):
    bert = {"provider": "hf", "options": {"path": str(bert_dir)}}
    shown = preview(write_spec(tmp_path, "conll", data_dir / "ner.conll", "tokens", bert,
                               "full", []))
    assert (shown["format"], shown["task"], shown["total_rows"]) == (
        "tokens", "token-classification", 40)
    [row] = shown["rows"]
    # each token as it adds to the decoded text: "##s" joins "walk", a new word gets a space
    assert row["tokens"] == [
        {"text": "[CLS]", "trained": False}, {"text": " mary", "trained": True, "label": "B-per"},
        {"text": " walk", "trained": True, "label": "O"}, {"text": "s", "trained": False},
        {"text": " to", "trained": True, "label": "O"},
        {"text": " new", "trained": True, "label": "B-loc"},
        {"text": " york", "trained": True, "label": "I-loc"},
        {"text": " [SEP]", "trained": False}]
    assert (row["n_tokens"], row["n_trained"]) == (8, 5) and "label" not in row
    text = preview_text(shown).plain.splitlines()[-1]
    assert text == "[CLS] mary/B-per walks/O to/O new/B-loc york/I-loc [SEP]"

    shown = preview(write_spec(tmp_path, "jsonl", data_dir / "sentiment.jsonl", "label", bert,
                               "full", []))
    assert (shown["format"], shown["task"]) == ("label", "sequence-classification")
    [row] = shown["rows"]
    assert (row["prompt"], row["completion"], row["label"]) == ("good film", "pos", "pos")
    assert [t["text"] for t in row["tokens"]] == ["[CLS]", " good", " film", " [SEP]"]
    assert row["n_trained"] == 0 and not any("label" in t for t in row["tokens"])
