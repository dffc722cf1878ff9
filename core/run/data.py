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


@dataclass
class Rows:
    """The rows of a run: ``rows`` from ``dataset.source``, and ``held_out`` from
    ``dataset.eval`` (``None``: the held-out rows are a share of ``rows``, ``eval_split``)."""

    rows: Any
    held_out: Any = None

    def split(self, spec: RunSpec) -> tuple[list[int], list[int]]:
        """Indices of the held-out rows and of the training rows: a seeded share of ``rows``
        (:func:`split`), or a seeded sample of at most ``eval_limit`` rows of ``held_out``
        and every row of ``rows``."""
        if self.held_out is None:
            return split(len(self.rows), spec)
        order = list(range(len(self.held_out)))
        random.Random(spec.training.seed).shuffle(order)
        return order[:spec.dataset.eval_limit or len(order)], list(range(len(self.rows)))

    def examples(self, spec: RunSpec, tokenizer: Any) -> tuple[list[Example], list[Example]]:
        """The held-out and the training examples, rendered in ``dataset.format``
        (:func:`~tuneyard.core.formats.to_examples`; errors name the row of its source).

        Raises:
            DataError: a row the format cannot render; ``dataset.eval``'s named so.
        """
        fmt, columns = spec.dataset.format, spec.dataset.columns
        examples = to_examples(self.rows, fmt, columns, tokenizer)
        held, kept = self.split(spec)
        if self.held_out is None:
            return [examples[i] for i in held], [examples[i] for i in kept]
        try:
            held_out = to_examples(self.held_out, fmt, columns, tokenizer)
        except DataError as exc:
            raise DataError(f"dataset.eval: {exc}") from None
        return [held_out[i] for i in held], examples


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


def load_rows(comp: Composition, progress: Progress) -> Rows:
    """Load the dataset source's rows (and ``dataset.eval``'s) and check the format's columns
    in each (before any model loads).

    Raises:
        DataError: fewer than 2 rows (without ``dataset.eval``; with it, no row in either),
            ``eval_split`` holding out every row, or a column the format needs is missing or
            empty in every row; ``dataset.eval``'s errors start with ``dataset.eval:``.
        PluginFailed: a source raised or returned no ``datasets.Dataset``.
    """
    spec = comp.spec
    rows = source_rows(comp, comp.source, progress)
    if comp.eval_source is None:
        if len(rows) < 2:
            raise DataError(f"dataset: source '{spec.dataset.source}' gave {len(rows)} row"
                            f"{'' if len(rows) == 1 else 's'}; "
                            "need at least 2 (one to train, one to evaluate)")
        n_eval = eval_size(len(rows), spec)
        if n_eval >= len(rows):
            raise DataError(f"dataset.eval_split: {spec.dataset.eval_split} holds out {n_eval} "
                            f"of {len(rows)} rows and leaves none to train on")
        return Rows(rows)
    try:
        held_out = source_rows(comp, comp.eval_source, progress)
    except DataError as exc:
        raise DataError(f"dataset.eval: {exc}") from None
    if not len(rows) or not len(held_out):
        key, name = (("dataset.source", spec.dataset.source) if not len(rows)
                     else ("dataset.eval.source", spec.dataset.eval.source))
        raise DataError(f"{key}: source '{name}' gave no rows")
    return Rows(rows, held_out)


def source_rows(comp: Composition, source: Any, progress: Progress) -> Any:
    """The rows of one dataset source, their columns checked against ``dataset.format``.

    Raises:
        DataError: a column the format needs is missing or empty, or the source's own error,
            naming the source and its plugin; PluginFailed: ``load()`` raised or returned no
            ``datasets.Dataset``.
    """
    spec = comp.spec
    progress.phase(f"loading dataset ({source.name})")
    try:
        rows = guarded(source, comp.plugin_of, "load data", source.load)
    except DataError as exc:
        raise DataError(f"{component_label(source, comp.plugin_of)}: {exc}") from exc
    if not hasattr(rows, "column_names"):
        raise component_failed(source, comp.plugin_of, f"load() returned "
                               f"{type(rows).__name__}, not a datasets.Dataset")
    if len(rows):
        resolve_columns(spec.dataset.format, rows, spec.dataset.columns)
    return rows


def prepare_data(comp: Composition, rows: Rows, tokenizer: Any) -> Data:
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
    eval_examples, train_examples = rows.examples(spec, tokenizer)
    empty = sum(not e.completion.strip() for e in train_examples + eval_examples)
    if empty == len(train_examples) + len(eval_examples):
        raise DataError(f"dataset: all {empty} rows have an empty answer (format "
                        f"'{spec.dataset.format}'); check the column it reads "
                        "(dataset.columns)")
    if empty:
        log.warning("%d of %d rows have an empty answer; they teach the model to stop at once",
                    empty, len(train_examples) + len(eval_examples))
    names = label_names(train_examples + eval_examples, comp.task)
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
    for name, n, total in (("training", dropped, len(train_examples)),
                           ("held-out", eval_dropped, len(eval_examples))):
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


def fingerprint(spec: RunSpec, rows: Rows) -> str:
    """16 hex digits of SHA-256 over the dataset spec, the seed and every row's values (~1 s
    for 200k rows), ``dataset.eval``'s after the source's: datasets' own fingerprint of rows
    read from its cache is their path and modification time, which a rewritten file may
    keep."""
    dataset = spec.dataset.model_dump(mode="json")
    if dataset["eval"] is None:  # as before dataset.eval existed: older runs keep their print
        del dataset["eval"]
    digest = hashlib.sha256(json.dumps([dataset, spec.training.seed], sort_keys=True).encode())
    for part in (rows.rows, rows.held_out):
        for batch in part.iter(batch_size=10_000) if part is not None else ():  # {column: […]}
            digest.update(json.dumps(batch, sort_keys=True, default=str).encode())
    return digest.hexdigest()[:16]


def run_labels(comp: Composition, rows: Rows) -> list[str] | None:
    """The class names of a label task's rows, held-out ones included
    (:func:`~tuneyard.core.formats.label_names`; those formats need no tokenizer to render),
    else ``None``."""
    if comp.task not in LABEL_TASKS:
        return None
    fmt, columns = comp.spec.dataset.format, comp.spec.dataset.columns
    return label_names([e for part in (rows.rows, rows.held_out) if part is not None
                        for e in to_examples(part, fmt, columns, None)], comp.task)


def preview_rows(comp: Composition, rows: Rows, tokenizer: Any, n_rows: int) -> list[dict]:
    """The first ``n_rows`` rows of ``dataset.source`` rendered in ``dataset.format`` and
    tokenized for the run's task with ``training.max_seq_len`` as a run would (see
    :func:`~tuneyard.core.run.pipeline.preview_data`)."""
    spec = comp.spec
    names = run_labels(comp, rows) or []
    label_ids = {name: i for i, name in enumerate(names)}
    head = rows.rows.select(range(min(n_rows, len(rows.rows))))
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
