"""Evaluators of the label tasks: ``accuracy`` (sequence classification) and ``seqeval``
(token classification, scored by entity).

Both run the model over the tokenized held-out set in batches of ``ctx.batch_size`` and take
the most likely class (:func:`argmax_batches`); only the scoring differs. torch, scikit-learn
and seqeval are imported inside functions, so registering the plugin stays cheap.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field

from tuneyard.core.components import EvalContext, EvalResult, Evaluator
from tuneyard.core.errors import DataError
from tuneyard.core.hookspecs import hookimpl

if TYPE_CHECKING:
    import torch


class ClassificationOptions(BaseModel):
    """Options of the ``accuracy`` and ``seqeval`` evaluators."""

    model_config = ConfigDict(extra="forbid")

    limit: int | None = Field(
        default=None, ge=1,
        description="Evaluate only the first N held-out examples (default: all of them).",
    )


def argmax_batches(
    ctx: EvalContext, limit: int | None, evaluator: str
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Run ``ctx.model`` over the first ``limit`` rows of ``ctx.eval_dataset``, one batch of
    ``ctx.batch_size`` rows (padded by ``ctx.collator``) at a time, under inference mode.

    Yields:
        ``(labels, predictions)`` per batch, int64 on CPU, of the same shape: ``[batch]`` for
        sequence classification (logits ``[batch, num_labels]``), ``[batch, seq_len]`` for
        token classification (logits ``[batch, seq_len, num_labels]``, labels -100 where no
        word starts). ``predictions`` is the argmax class id of the logits.

    Raises:
        DataError: there is no held-out example; set ``dataset.eval_split`` above 0.
    """
    import torch

    rows = len(ctx.eval_dataset) if limit is None else min(len(ctx.eval_dataset), limit)
    if rows == 0:
        raise DataError(f"{evaluator}: no held-out examples; set dataset.eval_split above 0")
    with torch.inference_mode():
        for start in range(0, rows, ctx.batch_size):
            batch = ctx.collator(
                [ctx.eval_dataset[i] for i in range(start, min(start + ctx.batch_size, rows))]
            )
            logits = ctx.model(
                input_ids=batch["input_ids"].to(ctx.device),  # [batch, seq_len]
                attention_mask=batch["attention_mask"].to(ctx.device),  # [batch, seq_len]
            ).logits  # [batch, num_labels] or [batch, seq_len, num_labels]
            yield batch["labels"].cpu(), logits.argmax(dim=-1).cpu()


class Accuracy(Evaluator):
    """Accuracy and macro F1 of a sequence classifier, with the majority-class baseline.

    The prediction of an example is the argmax of its logits. Per class ``c``: precision =
    correct ``c`` / predicted ``c``, recall = correct ``c`` / gold ``c``, F1 their harmonic
    mean (0 when undefined). ``macro_f1`` is the unweighted mean of the per-class F1 over the
    classes that occur in the gold labels or the predictions: scikit-learn's ``f1_score(...,
    average="macro", labels=those classes, zero_division=0)`` (scikit-learn user guide,
    "Multiclass and multilabel classification" under "Precision, recall and F-measures"), so
    a class the model never predicts pulls it down although accuracy may be high.
    ``majority_accuracy`` is the accuracy of always answering the most frequent gold class of
    the evaluated examples: the baseline a useful classifier beats.
    """

    name = "accuracy"
    description = "Accuracy, macro F1 and per-class confusion rows of a sequence classifier"
    Options = ClassificationOptions
    tasks = ("sequence-classification",)

    def evaluate(self, ctx: EvalContext) -> EvalResult:
        """Classify the first ``limit`` held-out examples (batches of ``ctx.batch_size``).

        Returns:
            ``EvalResult`` with metrics ``accuracy``, ``macro_f1``, ``majority_accuracy`` (all
            in [0, 1]) and ``eval_examples`` (examples classified). Details: one dict per class
            that occurs in the gold labels or the predictions, in ``ctx.label_names`` order:
            ``label``, ``precision``, ``recall``, ``f1``, ``support`` (gold examples of the
            class) and ``predicted`` (label name → how many examples of this gold class were
            predicted as it, for each of those classes: a row of the confusion matrix).

        Raises:
            DataError: there is no held-out example; set ``dataset.eval_split`` above 0.
        """
        from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

        gold: list[int] = []
        predicted: list[int] = []
        for labels, predictions in argmax_batches(ctx, self.options.limit, self.name):
            gold += labels.tolist()
            predicted += predictions.tolist()
        classes = sorted(set(gold) | set(predicted))  # class ids: label_names order
        precision, recall, f1, support = precision_recall_fscore_support(
            gold, predicted, labels=classes, zero_division=0,
        )  # each [classes]
        matrix = confusion_matrix(gold, predicted, labels=classes)  # [gold class, predicted]
        names = [ctx.label_names[c] for c in classes]
        details = [
            {"label": name, "precision": float(precision[i]), "recall": float(recall[i]),
             "f1": float(f1[i]), "support": int(support[i]),
             "predicted": {other: int(n) for other, n in zip(names, matrix[i])}}
            for i, name in enumerate(names)
        ]
        examples = len(gold)
        majority = Counter(gold).most_common(1)[0][1]
        return EvalResult(metrics={
            "accuracy": sum(g == p for g, p in zip(gold, predicted)) / examples,
            "macro_f1": float(f1.mean()),
            "majority_accuracy": majority / examples,
            "eval_examples": float(examples),
        }, details=details)


#: the averages seqeval's classification_report adds after the entity types
_AVERAGES = ("micro avg", "macro avg", "weighted avg")


class Seqeval(Evaluator):
    """Entity-level precision, recall and F1 of a token classifier (NER), by seqeval.

    Each word is tagged with the argmax class at its first sub-token (where the labels are not
    -100). Entities are read from the IOB2 tags (``B-TYPE`` starts one, ``I-TYPE`` continues
    it, ``O`` is outside); an entity is correct only when its type and both boundaries match a
    gold entity, as in the CoNLL-2003 shared task (Tjong Kim Sang and De Meulder 2003).
    ``precision`` = correct / predicted entities, ``recall`` = correct / gold entities, ``f1``
    their harmonic mean, micro-averaged over all entities of all examples. Computed by the
    seqeval library (Nakayama 2018, https://github.com/chakki-works/seqeval) with
    ``mode="strict", scheme=IOB2``: a predicted ``I-TYPE`` that does not continue a ``B-TYPE``
    or ``I-TYPE`` of the same type is no entity at all (the CoNLL script ``conlleval`` and
    seqeval's default mode would start one there), and ``zero_division=0``.

    ``accuracy`` is the fraction of words tagged correctly (seqeval ``accuracy_score``);
    ``majority_f1`` the entity F1 of tagging every word with the most frequent gold tag (the
    first met on a tie), the baseline: for NER that tag is ``O``, no entity is predicted and it
    is 0.0.
    """

    name = "seqeval"
    description = "Entity-level precision, recall and F1 of a token classifier (seqeval, strict)"
    Options = ClassificationOptions
    tasks = ("token-classification",)

    def evaluate(self, ctx: EvalContext) -> EvalResult:
        """Tag the words of the first ``limit`` held-out examples (batches of
        ``ctx.batch_size``) and score the entities.

        Returns:
            ``EvalResult`` with metrics ``precision``, ``recall``, ``f1``, ``accuracy``,
            ``majority_f1`` (all in [0, 1]) and ``eval_examples``. Details: one dict per
            entity type, sorted by type (seqeval ``classification_report``, strict IOB2):
            ``type``, ``precision``, ``recall``, ``f1`` and ``support`` (gold entities).

        Raises:
            DataError: a label name is not an IOB2 tag (``O``, ``B-TYPE``, ``I-TYPE``; check
                the dataset's tags), there is no held-out example (set
                ``dataset.eval_split`` above 0), or no word is labelled (check that
                ``training.max_seq_len`` does not truncate the words away).
        """
        from seqeval.metrics import (
            accuracy_score, classification_report, f1_score, precision_score, recall_score,
        )
        from seqeval.scheme import IOB2

        names = ctx.label_names
        not_iob2 = [n for n in names if n != "O" and n[:2] not in ("B-", "I-")]
        if not_iob2:
            raise DataError(f"{self.name}: labels {', '.join(map(repr, not_iob2))} are not IOB2 "
                            "tags (O, B-TYPE, I-TYPE); retag the dataset's tags column")
        gold: list[list[str]] = []  # per example, the tag of each word
        predicted: list[list[str]] = []
        for labels, predictions in argmax_batches(ctx, self.options.limit, self.name):
            for row_labels, row_predictions in zip(labels, predictions):  # [seq_len] each
                words = row_labels != -100  # [seq_len], True on each word's first sub-token
                gold.append([names[c] for c in row_labels[words].tolist()])
                predicted.append([names[c] for c in row_predictions[words].tolist()])
        tag_counts = Counter(tag for tags in gold for tag in tags)
        if not tag_counts:
            raise DataError(f"{self.name}: the {len(gold)} eval example(s) have no labelled "
                            "word; check that training.max_seq_len leaves room for the words")
        strict = {"mode": "strict", "scheme": IOB2, "zero_division": 0}
        majority = tag_counts.most_common(1)[0][0]
        report = classification_report(gold, predicted, output_dict=True, **strict)
        details = [
            {"type": kind, "precision": float(r["precision"]), "recall": float(r["recall"]),
             "f1": float(r["f1-score"]), "support": int(r["support"])}
            for kind, r in report.items() if kind not in _AVERAGES
        ]
        return EvalResult(metrics={
            "precision": float(precision_score(gold, predicted, **strict)),
            "recall": float(recall_score(gold, predicted, **strict)),
            "f1": float(f1_score(gold, predicted, **strict)),
            "accuracy": float(accuracy_score(gold, predicted)),
            "majority_f1": float(f1_score(gold, [[majority] * len(t) for t in gold], **strict)),
            "eval_examples": float(len(gold)),
        }, details=details)


@hookimpl
def register_evaluators(register):
    register(Accuracy)
    register(Seqeval)
