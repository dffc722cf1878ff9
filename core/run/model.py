"""Model stage: the model provider's model and tokenizer for the run's task, the training
strategy's model to train, and the model of a finished run's final checkpoint."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tuneyard.core.components import LABEL_TASKS
from tuneyard.core.engine import Composition
from tuneyard.core.errors import TuneyardError
from tuneyard.core.formats import to_examples
from tuneyard.core.models import set_chat_template
from tuneyard.core.run.data import Data, Rows, load_rows, prepare_data, run_labels
from tuneyard.core.run.guard import component_failed, guarded
from tuneyard.core.run.progress import Progress


def load_model(comp: Composition, rows: Rows, progress: Progress) -> tuple[Any, Any]:
    """The model provider's ``(model, tokenizer)`` for the run's task, given the label names
    of a label task and, to a provider that wants it, the training corpus."""
    import torch

    progress.phase(f"loading model ({comp.spec.model.provider})")
    spec = comp.spec
    fmt, columns = spec.dataset.format, spec.dataset.columns
    extra: dict[str, Any] = {}
    if comp.task in LABEL_TASKS:
        extra["labels"] = run_labels(comp, rows)
    if comp.provider.wants_corpus:
        def corpus() -> Iterator[str]:  # the training rows' text, rendered without a tokenizer
            kept = rows.rows.select(rows.split(spec)[1])
            return (e.prompt + e.completion for e in to_examples(kept, fmt, columns, None))

        extra["corpus"] = corpus
    loaded = guarded(comp.provider, comp.plugin_of, "load the model", comp.provider.load,
                     task=comp.task, dtype=torch.float32, **extra)
    if not (isinstance(loaded, tuple) and len(loaded) == 2 and hasattr(loaded[0], "to")):
        raise component_failed(comp.provider, comp.plugin_of,
                               f"load() returned {type(loaded).__name__}, not a (model, "
                               "tokenizer) pair")
    # No KV cache in forward passes over batches (the Trainer sets the same): with one,
    # transformers ignores the document bounds that pre-training blocks' position_ids carry.
    # generate() still caches, through its generation config.
    loaded[0].config.use_cache = False
    set_chat_template(*loaded, spec.dataset.chat_template)
    return loaded


def model_to_train(comp: Composition, model: Any) -> Any:
    """The strategy's model to train (:meth:`TrainingStrategy.prepare`: ``model`` with frozen
    parts, or a wrapper such as a peft model), drawn from torch's RNG seeded with
    ``training.seed`` (an adapter's initialisation must not depend on what loading the model
    consumed).

    Raises:
        PluginFailed: ``prepare`` raised or did not return a model.
    """
    from transformers import set_seed

    set_seed(comp.spec.training.seed)
    model = guarded(comp.strategy, comp.plugin_of, "prepare the model", comp.strategy.prepare,
                    model)
    if not hasattr(model, "to"):
        raise component_failed(comp.strategy, comp.plugin_of,
                               f"prepare() returned {type(model).__name__}, not a model")
    return model


def final_checkpoint(comp: Composition, base: Any, final: Path) -> Any:
    """``base`` (from the run's model provider) with the run's ``final/`` checkpoint loaded by
    its strategy's :meth:`~tuneyard.core.components.TrainingStrategy.load_checkpoint`."""
    return guarded(comp.strategy, comp.plugin_of, "load its checkpoint",
                   comp.strategy.load_checkpoint, base, str(final))


def trained_model(comp: Composition, run: dict[str, Any], progress: Progress
                  ) -> tuple[Any, Any, Data]:
    """The model of a finished run's final checkpoint (``<output_dir>/final``), on
    ``comp.device`` in eval mode, with its tokenizer and the run's data (the same held-out split
    as in training): the base model from the run's model provider, then the strategy's
    :meth:`~tuneyard.core.components.TrainingStrategy.load_checkpoint`.

    Raises:
        TuneyardError: the run has no final checkpoint; as for a run (data, model).
    """
    final = Path(run["output_dir"] or "") / "final"
    if not final.is_dir():
        raise TuneyardError(f"run {run['id']} has no final checkpoint at {final} "
                            f"(status: {run['status']})")
    rows = load_rows(comp, progress)
    base, tokenizer = load_model(comp, rows, progress)
    model = final_checkpoint(comp, base, final)
    model.to(comp.device)
    model.eval()
    data = prepare_data(comp, rows, tokenizer)
    return model, tokenizer, data
