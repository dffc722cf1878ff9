"""Data stage: the dataset source's rows → examples (``dataset.format``) → the held-out split
→ tokens (for the run's task) → the training strategy's dataset and collator.

Deterministic given the spec and ``training.seed``: the same spec always holds out the same
rows and tokenizes them the same way, so a resumed or re-evaluated run sees the same data
(:attr:`Data.fingerprint` tells when it changed).
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
from dataclasses import dataclass
from typing import Any

from tuneyard.core.components import LABEL_TASKS, Example
from tuneyard.core.engine import Composition
from tuneyard.core.errors import DataError
from tuneyard.core.formats import (IGNORE_INDEX, PadCollator, label_names, pack, pack_examples,
                                   resolve_columns, to_examples, tokenize, tokenize_all)
from tuneyard.core.run.guard import component_failed, component_label, guarded
from tuneyard.core.run.progress import Progress
from tuneyard.core.spec import RunSpec

log = logging.getLogger("tuneyard.core.run")


@dataclass
class Data:
    """A run's data after formatting and tokenization (deterministic given spec + seed).

    Attributes:
        train_rows: the training dataset the strategy's trainer gets
            (:meth:`~tuneyard.core.components.TrainingStrategy.dataset`; by default the
            tokenized training rows, packed into blocks for a packing strategy).
        eval_examples: held-out examples as text.
        eval_rows: the held-out examples tokenized, one row each (see :class:`EvalContext`).
        trainer_eval_rows: the held-out set as the strategy's trainer evaluates it
            (``training.eval_steps``), laid out as ``train_rows``.
        fingerprint: hash of the source's data, the dataset spec and the seed.
        collator: makes evaluation batches (right padding).
        train_collator: makes training batches (the strategy's
            :meth:`~tuneyard.core.components.TrainingStrategy.collator`; ``None`` lets its
            trainer choose).
        label_names: class names of a label task (id ``i`` is the ``i``-th), else ``None``.
    """

    train_rows: Any
    eval_examples: list[Example]
    eval_rows: list[dict[str, Any]]
    trainer_eval_rows: Any
    fingerprint: str
    collator: PadCollator
    train_collator: Any
    label_names: list[str] | None


def load_rows(comp: Composition, progress: Progress) -> Any:
    """Load the dataset source's rows and check the format's columns (before any model loads).

    Raises:
        DataError: fewer than 2 rows, or a column the format needs is missing or empty in
            every row.
    """
    spec = comp.spec
    progress.phase(f"loading dataset ({spec.dataset.source})")
    try:
        rows = guarded(comp.source, comp.plugin_of, "load data", comp.source.load)
    except DataError as exc:
        raise DataError(f"{component_label(comp.source, comp.plugin_of)}: {exc}") from exc
    if not hasattr(rows, "column_names"):
        raise component_failed(comp.source, comp.plugin_of,
                               f"load() returned {type(rows).__name__}, not a "
                               "datasets.Dataset")
    if len(rows) < 2:
        raise DataError(f"dataset: source '{spec.dataset.source}' gave {len(rows)} row"
                        f"{'' if len(rows) == 1 else 's'}; "
                        "need at least 2 (one to train, one to evaluate)")
    resolve_columns(spec.dataset.format, rows, spec.dataset.columns)
    n_eval = eval_size(len(rows), spec)
    if n_eval >= len(rows):
        raise DataError(f"dataset.eval_split: {spec.dataset.eval_split} holds out {n_eval} of "
                        f"{len(rows)} rows and leaves none to train on")
    return rows


def eval_size(n_rows: int, spec: RunSpec) -> int:
    """Held-out rows: ``round(n_rows × eval_split)``, at least 1, at most ``eval_limit``."""
    n_eval = max(1, round(n_rows * spec.dataset.eval_split))
    return min(n_eval, spec.dataset.eval_limit or n_eval)


def split(n_rows: int, spec: RunSpec) -> tuple[list[int], list[int]]:
    """Row indices held out for evaluation and kept for training: a seeded shuffle
    (``training.seed``), so the same spec always holds out the same rows, and training never
    sees them."""
    order = list(range(n_rows))
    random.Random(spec.training.seed).shuffle(order)
    n_eval = eval_size(n_rows, spec)
    return order[:n_eval], order[n_eval:]


def prepare_data(comp: Composition, rows: Any, tokenizer: Any) -> Data:
    """Render rows in the spec's format, split off the held-out eval set, tokenize for the run's
    task, pack the training examples into rows of ``training.max_seq_len`` tokens with
    ``training.packing`` (:func:`~tuneyard.core.formats.pack_examples`; the held-out examples
    stay one per row), cut the text into blocks for a packing strategy, and hand the result to
    the strategy for its trainer's dataset and collator.

    Examples longer than ``training.max_seq_len`` are cut in the prompt only; those whose
    answer and EOS do not fit are dropped, and logged as a warning with how many of how many
    (see :func:`~tuneyard.core.formats.tokenize`). The fingerprint hashes the rows' content,
    so a data file rewritten since an earlier run (even with the same size and modification
    time) gets a new one.

    Raises:
        DataError: every row has an empty answer, or no training example fits in
            ``training.max_seq_len`` (raise it), or a packing strategy's text holds less than
            one block.
    """
    spec, strategy = comp.spec, comp.strategy
    examples = to_examples(rows, spec.dataset.format, spec.dataset.columns, tokenizer)
    empty = sum(not e.completion.strip() for e in examples)
    if empty == len(examples):
        raise DataError(f"dataset: all {empty} rows have an empty answer (format "
                        f"'{spec.dataset.format}'); check the column it reads "
                        "(dataset.columns)")
    if empty:
        log.warning("%d of %d rows have an empty answer; they teach the model to stop at once",
                    empty, len(examples))
    held_out, kept = split(len(examples), spec)
    train_examples = [examples[i] for i in kept]
    eval_examples = [examples[i] for i in held_out]
    names = label_names(examples, comp.task)
    label_ids = {name: i for i, name in enumerate(names or [])}
    max_len = spec.training.max_seq_len
    whole = None if strategy.pack else max_len  # documents are cut into blocks, not cut off
    train_rows, dropped = tokenize_all(train_examples, tokenizer, whole, comp.task, label_ids)
    eval_rows, eval_dropped = tokenize_all(eval_examples, tokenizer, whole, comp.task, label_ids)
    if not train_rows:
        raise DataError(f"training.max_seq_len: none of the {dropped} training examples fits "
                        f"in {max_len} tokens (an example keeps its whole answer and EOS and at "
                        "least one prompt token; only the prompt is cut); raise "
                        "training.max_seq_len")
    for name, n, total in (("training", dropped, len(kept)),
                           ("held-out", eval_dropped, len(held_out))):
        if n:
            log.warning("dropped %d of %d %s examples: their answer and EOS do not fit in "
                        "training.max_seq_len (%d tokens) next to a prompt token; raise "
                        "training.max_seq_len to keep them", n, total, name, max_len)
    if spec.training.packing:  # several examples a row; the held-out ones stay alone
        train_rows = pack_examples(train_rows, max_len)
    if strategy.pack:  # the held-out text is cut into blocks as the training text is
        documents = comp.task == "causal-lm"
        train_rows, eval_rows = (pack(train_rows, max_len, documents),
                                 pack(eval_rows, max_len, documents))
        for name, blocks in (("training", train_rows), ("held-out", eval_rows)):
            if not blocks:
                raise DataError(f"training.max_seq_len: the {name} text holds fewer than "
                                f"{max_len} tokens, not one packed block; lower it or add text "
                                "(or raise dataset.eval_split)")
    collator = PadCollator(tokenizer.pad_token_id)

    def laid_out(what: str, chosen: list[Example], tokenized: list[dict[str, Any]]) -> Any:
        return guarded(strategy, comp.plugin_of, f"lay out the {what} dataset",
                       strategy.dataset, chosen, tokenized, tokenizer, max_len)

    return Data(laid_out("training", train_examples, train_rows), eval_examples, eval_rows,
                laid_out("held-out", eval_examples, eval_rows),
                fingerprint(spec, rows), collator,
                guarded(strategy, comp.plugin_of, "make its collator", strategy.collator,
                        tokenizer, collator), names)


def fingerprint(spec: RunSpec, rows: Any) -> str:
    """16 hex digits of SHA-256 over the dataset spec, the seed and every row's values (~1 s
    for 200k rows): datasets' own fingerprint of rows read from its cache is their path and
    modification time, which a rewritten file may keep."""
    digest = hashlib.sha256(json.dumps(
        [spec.dataset.model_dump(mode="json"), spec.training.seed], sort_keys=True).encode())
    for batch in rows.iter(batch_size=10_000):  # {column: [values]}
        digest.update(json.dumps(batch, sort_keys=True, default=str).encode())
    return digest.hexdigest()[:16]


def run_labels(comp: Composition, rows: Any) -> list[str] | None:
    """The class names of a label task's rows (:func:`~tuneyard.core.formats.label_names`;
    those formats need no tokenizer to render), else ``None``."""
    if comp.task not in LABEL_TASKS:
        return None
    spec = comp.spec
    return label_names(to_examples(rows, spec.dataset.format, spec.dataset.columns, None),
                       comp.task)


def preview_rows(comp: Composition, rows: Any, tokenizer: Any, n_rows: int) -> list[dict]:
    """The first ``n_rows`` rows rendered in ``dataset.format`` and tokenized for the run's
    task with ``training.max_seq_len`` as a run would (see :func:`preview_data`)."""
    spec = comp.spec
    names = run_labels(comp, rows) or []
    label_ids = {name: i for i, name in enumerate(names)}
    head = rows.select(range(min(n_rows, len(rows))))
    shown = []
    for ex in to_examples(head, spec.dataset.format, spec.dataset.columns, tokenizer):
        tok = tokenize(ex, tokenizer, spec.training.max_seq_len, comp.task, label_ids)
        labels = tok["labels"]
        row_label = None
        if isinstance(labels, int):  # sequence classification: one class for the whole row
            row_label, labels = names[labels], [IGNORE_INDEX] * len(tok["input_ids"])
        tokens = []
        for text, label in zip(token_texts(tokenizer, tok["input_ids"]), labels, strict=True):
            token = {"text": text, "trained": label != IGNORE_INDEX}
            if names and label != IGNORE_INDEX:
                token["label"] = names[label]
            tokens.append(token)
        shown.append({"prompt": ex.prompt, "completion": ex.completion, "n_tokens": len(tokens),
                      "n_trained": sum(t["trained"] for t in tokens), "tokens": tokens,
                      **({"label": row_label} if row_label is not None else {}),
                      **({"rejected": ex.rejected} if ex.rejected is not None else {})})
    return shown


def token_texts(tokenizer: Any, ids: list[int]) -> list[str]:
    """Each token's text as it adds to the decoded sequence, spaces included: the difference
    between decoding the first ``k`` ids and the first ``k - 1`` (as transformers'
    ``TextStreamer`` does), so WordPiece's ``##`` pieces join their word and a new word gets its
    space. Their concatenation is ``tokenizer.decode(ids)``."""
    texts, before = [], ""
    for k in range(1, len(ids) + 1):
        now = tokenizer.decode(ids[:k])
        alone = tokenizer.decode(ids[k - 1:k])
        texts.append(now[len(before):] if now.startswith(before) else alone)
        before = now
    return texts
