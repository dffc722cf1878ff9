"""The run process: load data and model, evaluate the baseline, train, checkpoint, evaluate.

Run as ``python -m tuneyard.core.runner RUN_ID [--registry PATH]`` (detached runs), or called
in-process by ``tuneyard run`` (foreground). Training is transformers' ``Trainer``; a callback
writes metrics to the registry and fires the lifecycle hooks.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import logging
import os
import random
import shutil
import signal
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import yaml

from tuneyard.core.atomic import remove_partials, written_atomically
from tuneyard.core.components import LABEL_TASKS, EvalContext, EvalResult, Example
from tuneyard.core.distributed import SINGLE, Ranks, is_echo, record_error
from tuneyard.core.engine import Composition, compose
from tuneyard.core.errors import (CheckpointError, DataChanged, DataError, PluginError,
                                   PluginFailed, SpecError, TuneyardError)
from tuneyard.core.formats import (IGNORE_INDEX, PadCollator, label_names, pack, resolve_columns,
                                   to_examples, tokenize, tokenize_all)
from tuneyard.core.models import set_chat_template
from tuneyard.core.paths import make_dir, never_world_writable
from tuneyard.core.plugins import Plugins, get_plugins
from tuneyard.core.registry import HEARTBEAT_S, Registry, now
from tuneyard.core.spec import EvaluatorSpec, RunSpec

log = logging.getLogger("tuneyard.core.runner")  # not __name__: that is __main__ under -m


class Progress(Protocol):
    """Where a run reports progress (the CLI draws it with rich; detached runs log it)."""

    def phase(self, text: str) -> None: ...
    def step(self, step: int, total: int, metrics: dict[str, float]) -> None: ...


class LogProgress:
    """Progress as log lines (every run writes them to ``<output_dir>/run.log``): each phase,
    and a step at most every :data:`LOG_EVERY_S` seconds, plus the first and the last (a
    line per step of a small model would cost ~2% of its step; the registry has every
    step)."""

    def __init__(self) -> None:
        self.logged_at = -LOG_EVERY_S

    def phase(self, text: str) -> None:
        log.info(text)

    def step(self, step: int, total: int, metrics: dict[str, float]) -> None:
        t = time.monotonic()
        if t - self.logged_at >= LOG_EVERY_S or step == total:
            self.logged_at = t
            log.info("step %d/%d %s", step, total,
                     " ".join(f"{k}={v:.4g}" for k, v in metrics.items()))


#: seconds between the step lines of ``run.log``
LOG_EVERY_S = 1.0


class Fanout:
    """Report progress to several places (the run's log, and the CLI's progress bar)."""

    def __init__(self, *targets: Progress) -> None:
        self.targets = targets

    def phase(self, text: str) -> None:
        for t in self.targets:
            t.phase(text)

    def step(self, step: int, total: int, metrics: dict[str, float]) -> None:
        for t in self.targets:
            t.step(step, total, metrics)


@dataclass
class Data:
    """A run's data after formatting and tokenization (deterministic given spec + seed).

    Attributes:
        train_rows: tokenized training rows (packed into blocks for a packing strategy).
        eval_examples: held-out examples as text.
        eval_rows: the held-out examples tokenized, one row each (see :class:`EvalContext`).
        fingerprint: hash of the source's data, the dataset spec and the seed.
        collator: makes evaluation batches (right padding).
        train_collator: makes training batches: padding (rows packed by ``training.packing`` too),
            stacking blocks, or random masking (masked LM).
        label_names: class names of a label task (id ``i`` is the ``i``-th), else ``None``.
    """

    train_rows: list[dict[str, Any]]
    eval_examples: list[Example]
    eval_rows: list[dict[str, Any]]
    fingerprint: str
    collator: PadCollator
    train_collator: Any
    label_names: list[str] | None


def guarded(comp: Any, plugin_of: dict[str, str], action: str, fn: Any, *args: Any, **kw: Any):
    """Call a component method; any other exception than a TuneyardError (a mistake in the
    user's input, reported as it is) or Ctrl-C becomes a PluginFailed naming the component and
    its plugin, ``sys.exit`` included."""
    try:
        return fn(*args, **kw)
    except (TuneyardError, KeyboardInterrupt):
        raise
    except BaseException as exc:
        raise component_failed(comp, plugin_of, f"failed to {action}: "
                                                f"{type(exc).__name__}: {exc}") from exc


def component_label(comp: Any, plugin_of: dict[str, str]) -> str:
    """How errors name a component: ``<kind> '<name>' (plugin <plugin>)``."""
    return f"{comp.kind} '{comp.name}' (plugin {plugin_of.get(f'{comp.kind}:{comp.name}', '?')})"


def component_failed(comp: Any, plugin_of: dict[str, str], what: str) -> PluginFailed:
    """The error of a component that failed or broke its contract, naming its plugin."""
    return PluginFailed(f"{component_label(comp, plugin_of)} {what}")


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
    stay one per row), and choose the collators.

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
    spec = comp.spec
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
    eval_examples = [examples[i] for i in held_out]
    names = label_names(examples, comp.task)
    label_ids = {name: i for i, name in enumerate(names or [])}
    max_len = spec.training.max_seq_len
    whole = None if comp.strategy.pack else max_len  # documents are cut into blocks, not cut off
    train_rows, dropped = tokenize_all([examples[i] for i in kept], tokenizer, whole,
                                       comp.task, label_ids)
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
        from tuneyard.core.formats import pack_examples

        train_rows = pack_examples(train_rows, max_len)
    if comp.strategy.pack:  # the held-out text is cut into blocks as the training text is
        documents = comp.task == "causal-lm"
        train_rows, eval_rows = (pack(train_rows, max_len, documents),
                                 pack(eval_rows, max_len, documents))
        for name, blocks in (("training", train_rows), ("held-out", eval_rows)):
            if not blocks:
                raise DataError(f"training.max_seq_len: the {name} text holds fewer than "
                                f"{max_len} tokens, not one packed block; lower it or add text "
                                "(or raise dataset.eval_split)")
    digest = hashlib.sha256(json.dumps(
        [spec.dataset.model_dump(mode="json"), spec.training.seed], sort_keys=True).encode())
    # the rows' values (~1 s for 200k rows): datasets' own fingerprint of rows read from its
    # cache is their path and modification time, which a rewritten file may keep
    for batch in rows.iter(batch_size=10_000):  # {column: [values]}
        digest.update(json.dumps(batch, sort_keys=True, default=str).encode())
    collator = PadCollator(tokenizer.pad_token_id)
    return Data(train_rows, eval_examples, eval_rows, digest.hexdigest()[:16], collator,
                train_collator(comp, tokenizer, collator), names)


def train_collator(comp: Composition, tokenizer: Any, collator: PadCollator) -> Any:
    """How training batches are made.

    - masked LM: transformers ``DataCollatorForLanguageModeling`` (15% of tokens chosen, of
      which 80% become [MASK], 10% a random token, 10% stay; Devlin et al. 2019, section 3.1),
      drawing from torch's global RNG, which the Trainer seeds and restores on resume;
    - otherwise right padding (:class:`PadCollator`): rows with ``position_ids`` (blocks of a
      causal packing strategy, rows packed by ``training.packing``) are padded with no
      attention mask, so the examples in a row attend and are scored as if alone; held-out
      rows (``training.eval_steps``) are padded with an attention mask as always.
    """
    from transformers import DataCollatorForLanguageModeling

    if comp.task == "masked-lm":
        return DataCollatorForLanguageModeling(tokenizer, mlm_probability=0.15)
    return collator


def evaluate(comp: Composition, plugins: Plugins, registry: Registry, run_id: str, model: Any,
             tokenizer: Any, data: Data, checkpoint: str, progress: Progress,
             missing_only: bool = False) -> dict[str, dict[str, float]]:
    """Run every evaluator of the spec on the held-out set and record the results; with
    ``missing_only``, only those with no result at ``checkpoint`` yet (a resumed run)."""
    import torch

    done = {e["evaluator"] for e in registry.evaluations(run_id)
            if e["checkpoint"] == checkpoint} if missing_only else set()
    results = {}
    model.eval()
    for ev in comp.evaluators:
        if ev.name in done:
            continue
        progress.phase(f"evaluating {checkpoint}: {ev.name}")
        ctx = EvalContext(model, tokenizer, data.eval_examples, data.eval_rows, data.collator,
                          torch.device(comp.device), comp.spec.training.eval_batch_size,
                          comp.task, data.label_names)
        result = checked_result(ev, comp.plugin_of,
                                guarded(ev, comp.plugin_of, "evaluate", ev.evaluate, ctx))
        registry.add_evaluation(run_id, checkpoint, ev.name, result.metrics, result.details)
        plugins.fire("on_evaluation", run_id=run_id, checkpoint=checkpoint, evaluator=ev.name,
                     metrics=result.metrics)
        results[ev.name] = result.metrics
    return results


def checked_result(ev: Any, plugin_of: dict[str, str], result: Any) -> EvalResult:
    """``result`` with its metrics as floats, once checked against the :class:`EvalResult`
    contract (name → number; JSON-able details).

    Raises:
        PluginFailed: the evaluator returned something else, naming it and its plugin.
    """
    def broken(what: str) -> PluginFailed:
        return component_failed(ev, plugin_of, f"evaluate() returned {what}")

    if not isinstance(result, EvalResult):
        raise broken(f"{type(result).__name__}, not an EvalResult")
    if not isinstance(result.metrics, dict):
        raise broken(f"metrics of type {type(result.metrics).__name__}, not a dict")
    for name, value in result.metrics.items():
        if not isinstance(name, str) or isinstance(value, bool) or not isinstance(
                value, int | float):
            raise broken(f"metric {name!r} = {value!r}; metrics map names to numbers")
    try:
        json.dumps(result.details)
    except (TypeError, ValueError) as exc:
        raise broken(f"details that are not JSON ({exc})") from None
    return EvalResult({k: float(v) for k, v in result.metrics.items()}, result.details)


def quiet_libraries() -> None:
    """Silence the libraries' own progress bars and info logs: tuneyard reports progress."""
    import datasets
    import transformers
    from huggingface_hub.utils import disable_progress_bars

    os.environ.setdefault("TQDM_DISABLE", "1")  # e.g. transformers' GGUF loader uses tqdm
    disable_progress_bars()
    datasets.disable_progress_bars()
    warnings.filterwarnings("ignore", category=FutureWarning, module="transformers")
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()


def run_labels(comp: Composition, rows: Any) -> list[str] | None:
    """The class names of a label task's rows (:func:`~tuneyard.core.formats.label_names`;
    those formats need no tokenizer to render), else ``None``."""
    if comp.task not in LABEL_TASKS:
        return None
    spec = comp.spec
    return label_names(to_examples(rows, spec.dataset.format, spec.dataset.columns, None),
                       comp.task)


def load_model(comp: Composition, rows: Any, progress: Progress) -> tuple[Any, Any]:
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
            kept = rows.select(split(len(rows), spec)[1])
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


def execute(registry: Registry, run_id: str, progress: Progress | None = None,
            resume: bool = False, ranks: Ranks = SINGLE) -> str:
    """Run ``run_id`` to its end in this process and return its final status.

    The run row is ``running`` while it trains, then ``completed``. A stop request
    (``tuneyard stop``, the TUI, SIGTERM or Ctrl-C; see :class:`StopRequest`) saves a
    checkpoint at the next step and ends it ``stopped``; during loading or an evaluation it
    ends at once, ``stopped`` too. On an exception it is ``failed`` with the reason in
    ``runs.error`` and the exception propagates; a second Ctrl-C aborts: ``interrupted``, and
    ``KeyboardInterrupt`` propagates. With ``resume`` the run continues where it stopped (see
    :func:`resume_point`). Log lines go to ``<output_dir>/run.log``; a :class:`Heartbeat`
    thread marks the run alive, and device telemetry is sampled every
    ``training.telemetry_interval_s`` seconds in another. Nothing it writes is writable by
    others (:func:`~tuneyard.core.paths.never_world_writable`). In a run of several processes
    this is rank 0, which hands the run to the others (:func:`follow`).
    """
    stop = StopRequest(registry, run_id)
    with never_world_writable(), stop.handling_signals():  # from the start: no signal is lost
        stop.poll()  # a stop asked for while the run was queued
        return _execute(registry, run_id, progress, resume, stop, ranks)


def follow(ranks: Ranks) -> str:
    """A rank other than 0 of a run of several processes: take the run from rank 0, load
    the same data and model, train this rank's share of every step, write this rank's part
    of each checkpoint, and end after the final save (rank 0 alone evaluates and records).
    It never opens the registry. Returns the status it ended with."""
    run, start_at = ranks.broadcast(None)
    stop = StopRequest(None, run["id"])
    with never_world_writable(), stop.handling_signals():
        quiet_libraries()
        spec = RunSpec.model_validate(run["spec"])
        try:
            return _train(None, get_plugins(), run, spec, LogProgress(), stop, start_at, ranks)
        except RunStopped:
            return "stopped"


def _execute(registry: Registry, run_id: str, progress: Progress | None, resume: bool,
             stop: StopRequest, ranks: Ranks) -> str:
    quiet_libraries()
    plugins = get_plugins()
    run = registry.get_run(run_id)
    start_at = resume_point(registry, run) if resume else None
    ranks.broadcast((run, start_at))
    out = Path(run["output_dir"])
    make_dir(out)
    file_log = logging.FileHandler(out / "run.log", encoding="utf-8")
    file_log.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    pkg_log = logging.getLogger("tuneyard")
    pkg_log.addHandler(file_log)
    pkg_log.setLevel(logging.INFO)
    progress = Fanout(LogProgress(), *([progress] if progress else []))
    start = {"resumed_at": now()} if resume else {"started_at": now()}
    before = {"status": run["status"], "error": run["error"], "ended_at": run["ended_at"]}
    registry.update_run(run_id, status="running", pid=os.getpid(), heartbeat_at=now(),
                        ended_at=None, error=None, world_size=ranks.world_size, **start)
    registry.sync_plugins(plugins)
    spec = RunSpec.model_validate(run["spec"])
    telemetry = Telemetry(registry.path, run_id, plugins, spec.training.telemetry_interval_s)
    telemetry.start()
    status, error, refused = "failed", None, False
    try:
        with Heartbeat(registry.path, run_id, stop):
            status = _train(registry, plugins, run, spec, progress, stop, start_at, ranks)
    except RunStopped:
        status = "stopped"
        progress.phase("stopped; tuneyard resume continues")
    except DataChanged:  # a resume refused: the run stays as it was
        status, error, refused = before["status"], before["error"], True
        raise
    except KeyboardInterrupt:
        status, error = "interrupted", "aborted by a second Ctrl-C (no checkpoint saved)"
        raise
    except Exception as exc:
        error = str(exc) if isinstance(exc, TuneyardError) else f"{type(exc).__name__}: {exc}"
        log.info("run %s failed: %s", run_id, error)  # for run.log; the caller reports it
        raise
    finally:
        telemetry.stop()
        registry.update_run(run_id, status=status, error=error, stop_requested_at=None,
                            ended_at=before["ended_at"] if refused else now())
        plugins.fire("on_run_end", run_id=run_id, status=status, error=error)
        log.info("run %s %s", run_id, status)
        pkg_log.removeHandler(file_log)
        file_log.close()
    return status


@dataclass
class ResumePoint:
    """Where a resumed run continues: training from ``checkpoint`` (``None``: from step 0, the
    run saved none), or, when ``finished`` (its ``final/`` folder exists), only the final
    evaluations it lacks."""

    checkpoint: Path | None
    finished: bool

    def describe(self) -> str:
        if self.finished:
            return "its training finished; it runs the final evaluations it lacks"
        if self.checkpoint is None:
            return "it saved no checkpoint; training starts again from step 0"
        return f"resumes from {self.checkpoint}"


def resume_point(registry: Registry, run: dict[str, Any]) -> ResumePoint:
    """Where ``run`` resumes: the latest complete Trainer checkpoint on disk
    (``checkpoints/checkpoint-N`` with its ``trainer_state.json``: model or adapter, optimizer,
    scheduler, RNG states and step; checkpoints are renamed into place only once written, see
    :mod:`tuneyard.core.atomic`), recorded in the registry if the process died before it could
    record it.

    Raises:
        TuneyardError: the run is not stopped, interrupted or failed.
    """
    if run["status"] not in ("stopped", "interrupted", "failed"):
        raise TuneyardError(f"run {run['id']} is {run['status']}; only a stopped, interrupted "
                            "or failed run can be resumed")
    out = Path(run["output_dir"])
    if (out / "final").is_dir():
        return ResumePoint(None, finished=True)
    found = sorted((int(p.name.removeprefix("checkpoint-")), p)
                   for p in (out / "checkpoints").glob("checkpoint-*")
                   if p.name.removeprefix("checkpoint-").isdigit()
                   and (p / "trainer_state.json").is_file())
    if not found:
        return ResumePoint(None, finished=False)
    step, path = found[-1]
    if str(path) not in {c["path"] for c in registry.checkpoints(run["id"])}:
        registry.add_checkpoint(run["id"], step, str(path))
    return ResumePoint(path, finished=False)


class RunStopped(KeyboardInterrupt):
    """Raised in the main thread when a stop request arrives outside the training loop
    (loading, evaluating): there is no step to finish, so the run ends at once. A subclass of
    ``KeyboardInterrupt`` so that no ``except Exception`` (a plugin's, a library's) swallows
    it."""


class StopRequest:
    """Whether the run was asked to stop, and how the request reaches the run.

    Requests: ``runs.stop_requested_at`` (``tuneyard stop``, the TUI; read with each registry
    write of the training callback, every :data:`FLUSH_S` seconds, and every
    :data:`~tuneyard.core.registry.HEARTBEAT_S` seconds by the :class:`Heartbeat`), SIGTERM,
    and Ctrl-C (SIGINT; a second Ctrl-C aborts at once: ``KeyboardInterrupt``). While
    training, the callback only reads the flag and the Trainer's loop saves a checkpoint and
    ends (the transformers ``TrainerCallback`` contract: callbacks set flags). Inside
    :meth:`interruptible` (loading, evaluating) a request raises :class:`RunStopped` in the
    main thread instead.
    """

    def __init__(self, registry: Registry | None, run_id: str) -> None:
        self.registry, self.run_id = registry, run_id  # no registry: ranks other than 0
        self.signalled = threading.Event()
        self._interruptible = False
        self._signals = False

    def __bool__(self) -> bool:
        return self.signalled.is_set()

    def poll(self) -> None:
        """Read ``runs.stop_requested_at`` (one primary-key read)."""
        if not self.signalled.is_set() and self.registry.stop_requested(self.run_id):
            self.request("tuneyard stop")

    def request(self, by: str) -> None:
        """Stop the run (from any thread): set the flag and, when the main thread is in an
        interruptible phase, interrupt it (through the SIGTERM handler)."""
        if self.signalled.is_set():
            return
        log.warning("stop requested (%s): the run saves a checkpoint at its next step (or ends "
                    "now if it is loading or evaluating)", by)
        self.signalled.set()
        if self._interruptible and self._signals and (
                threading.current_thread() is not threading.main_thread()):
            # a real signal, so that a blocking call in the main thread returns (EINTR)
            signal.pthread_kill(threading.main_thread().ident, signal.SIGTERM)

    def _on_signal(self, signum: int, _frame: Any) -> None:
        if signum == signal.SIGINT and self.signalled.is_set():
            raise KeyboardInterrupt  # the second Ctrl-C: abort without a checkpoint
        self.request("Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name)
        if self._interruptible:
            raise RunStopped

    @contextlib.contextmanager
    def handling_signals(self) -> Iterator[None]:
        """Turn SIGTERM and SIGINT into stop requests for the block (main thread only; in
        another thread, only registry requests reach the run)."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {sig: signal.signal(sig, self._on_signal)
                    for sig in (signal.SIGTERM, signal.SIGINT)}
        self._signals = True
        try:
            yield
        finally:
            self._signals = False
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    @contextlib.contextmanager
    def interruptible(self) -> Iterator[None]:
        """A phase with no step to finish (loading, evaluating): a stop request (already
        made, or arriving during the block) raises :class:`RunStopped`."""
        if self.signalled.is_set():
            raise RunStopped
        self._interruptible = True
        try:
            yield
        finally:
            self._interruptible = False


class Heartbeat:
    """Writes ``runs.heartbeat_at`` every :data:`~tuneyard.core.registry.HEARTBEAT_S` seconds
    from a daemon thread with its own registry connection, for the whole run, so a reader can
    tell a live run from a dead one (:meth:`Registry.reconcile`); and passes a registry stop
    request on to ``stop`` when the run is not stepping (loading, evaluating)."""

    def __init__(self, registry_path: Path, run_id: str, stop: StopRequest) -> None:
        self.path, self.run_id, self.stop = registry_path, run_id, stop
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._loop, name="tuneyard-heartbeat",
                                       daemon=True)

    def __enter__(self) -> Heartbeat:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.done.set()
        self.thread.join(timeout=10)

    def _loop(self) -> None:
        registry = Registry(self.path, create=False)
        while not self.done.wait(HEARTBEAT_S):
            try:
                registry.heartbeat(self.run_id)
                if registry.stop_requested(self.run_id):  # this thread's connection
                    self.stop.request("tuneyard stop")
            except Exception as exc:  # a busy or vanished registry must not end the run
                log.warning("could not record the heartbeat: %s", exc)


class Telemetry:
    """Samples every device monitor every ``training.telemetry_interval_s`` seconds (0 = off)
    into ``system_metrics``, from a daemon thread with its own registry connection, for the
    whole run (loading, training, evaluation). A failing monitor is logged once and skipped:
    telemetry never stops a run."""

    def __init__(self, registry_path: Path, run_id: str, plugins: Plugins,
                 interval_s: float) -> None:
        self.path, self.run_id, self.interval_s = registry_path, run_id, interval_s
        self.monitors = []  # (monitor, its plugin's name)
        for info in plugins.components["device-monitor"].values():
            try:
                self.monitors.append((info.cls(info.cls.Options()), info.plugin))
            except Exception as exc:
                log.warning("device monitor %s (plugin %s) could not start, skipped: %s: %s",
                            info.name, info.plugin, type(exc).__name__, exc)
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._loop, name="tuneyard-telemetry", daemon=True)

    def start(self) -> None:
        if self.interval_s > 0 and self.monitors:
            self.thread.start()

    def stop(self) -> None:
        self.done.set()
        if self.thread.is_alive():
            self.thread.join(timeout=10)

    def _loop(self) -> None:
        registry = Registry(self.path, create=False)
        failed: set[str] = set()
        while not self.done.is_set():
            samples = []
            for mon, plugin in self.monitors:
                try:
                    samples += [vars(s) for s in mon.sample()]
                except Exception as exc:
                    if mon.name not in failed:
                        failed.add(mon.name)
                        log.warning("device monitor %s (plugin %s) failed, skipped: %s: %s",
                                    mon.name, plugin, type(exc).__name__, exc)
            try:
                registry.add_system_metrics(self.run_id, samples)
            except Exception as exc:
                log.warning("could not record device telemetry: %s", exc)
            self.done.wait(self.interval_s)


def _train(registry: Registry | None, plugins: Plugins, run: dict[str, Any], spec: RunSpec,
           progress: Progress, stop: StopRequest, start_at: ResumePoint | None,
           ranks: Ranks = SINGLE) -> str:
    """Train ``run`` (its validated ``spec``; from ``start_at`` when resuming) and evaluate;
    ``completed`` or ``stopped``. Loading and evaluating are interruptible (see
    :class:`StopRequest`). Only rank 0 (``ranks.main``, the one with a ``registry``) records
    and evaluates; all ranks agree before training whether any of them was stopped."""
    from transformers import set_seed

    run_id, out = run["id"], Path(run["output_dir"])
    comp = compose(spec, plugins)
    t = spec.training
    finished = start_at is not None and start_at.finished
    if ranks.main:
        used = plugins.used_by_run(list(comp.plugin_of.values()))
        registry.update_run(run_id, plugin_versions=plugins.versions(used))
        if start_at is None:
            (out / "spec.yaml").write_text(yaml.safe_dump(run["spec"], sort_keys=False))
            registry.add_artifact(run_id, "spec", str(out / "spec.yaml"))
    elif finished:
        return "completed"  # only rank 0's final evaluations are left
    set_seed(t.seed)

    try:
        with stop.interruptible():
            rows = load_rows(comp, progress)
            model, tokenizer = load_model(comp, rows, progress)
            data = prepare_data(comp, rows, tokenizer)
        if ranks.main:
            if start_at is not None:
                check_same_data(run, data)
            registry.update_run(
                run_id, dataset_fingerprint=data.fingerprint, train_rows=len(data.train_rows),
                eval_rows=len(data.eval_rows), base_model=comp.provider.model_id(),
                device=comp.device)
        if finished:
            model = final_checkpoint(comp, model, out / "final")
        else:
            set_seed(t.seed)  # adapter init must not depend on what loading the model consumed
            model = guarded(comp.strategy, comp.plugin_of, "prepare the model",
                            comp.strategy.prepare, model)
            if not hasattr(model, "to"):
                raise component_failed(comp.strategy, comp.plugin_of,
                                       f"prepare() returned {type(model).__name__}, not a model")
        model.to(comp.device)
        if ranks.main:
            plugins.fire("on_run_start", run_id=run_id, spec=run["spec"], output_dir=str(out))
        if not finished and ranks.main:
            with stop.interruptible():
                evaluate(comp, plugins, registry, run_id, model, tokenizer, data, "base",
                         progress, missing_only=True)
    except RunStopped:
        if not finished:
            with contextlib.suppress(Exception):  # a rank that is gone has nothing to hear
                ranks.any(True)  # the other ranks wait to hear whether training starts
        raise
    if not finished:
        if ranks.any(bool(stop)):  # every rank trains, or none
            raise RunStopped
        if not trained(registry, run_id, out, comp, data, model, tokenizer, plugins, progress,
                       stop, start_at.checkpoint if start_at else None, ranks):
            return "stopped"
    if ranks.main:
        with stop.interruptible():
            evaluate(comp, plugins, registry, run_id, model, tokenizer, data, "final",
                     progress, missing_only=True)
    return "completed"


def trained(registry: Registry | None, run_id: str, out: Path, comp: Composition, data: Data,
            model: Any, tokenizer: Any, plugins: Plugins, progress: Progress, stop: StopRequest,
            checkpoint: Path | None, ranks: Ranks = SINGLE) -> bool:
    """Train ``model`` with transformers' ``Trainer`` (from ``checkpoint`` when resuming) and
    save it to ``<output_dir>/final``; ``False`` when a stop request ended training first (a
    checkpoint is saved).

    Every checkpoint and ``final/`` is written under a temporary name and renamed into place
    (:func:`~tuneyard.core.atomic.written_atomically`), with the run's tokenizer. On a GPU the
    optimizer is PyTorch's fused AdamW (one kernel for all parameters; transformers
    ``optim="adamw_torch_fused"``). Under torchrun every rank calls this; rank 0 records.

    Raises:
        CheckpointError: a checkpoint or ``final/`` could not be written (disk full, read-only
            folder); the previous checkpoint is intact.
    """
    import torch
    from transformers import PrinterCallback, Trainer, TrainingArguments

    t, folder = comp.spec.training, out / "checkpoints"
    args = TrainingArguments(
        output_dir=str(folder), max_steps=t.max_steps,
        per_device_train_batch_size=t.micro_batch_size,
        gradient_accumulation_steps=t.gradient_accumulation_steps,
        learning_rate=t.learning_rate, lr_scheduler_type=t.lr_scheduler,
        warmup_steps=t.warmup_steps, weight_decay=t.weight_decay, max_grad_norm=t.max_grad_norm,
        logging_steps=t.logging_steps, save_strategy="steps" if t.save_steps else "no",
        save_steps=t.save_steps or 500, seed=t.seed, data_seed=t.seed,
        bf16=t.precision == "bf16", fp16=t.precision == "fp16", use_cpu=comp.device == "cpu",
        report_to=[], disable_tqdm=True, remove_unused_columns=False,
        include_num_input_tokens_seen="non_padding", dataloader_num_workers=0,
        eval_strategy="steps" if t.eval_steps else "no", eval_steps=t.eval_steps,
        per_device_eval_batch_size=t.eval_batch_size, prediction_loss_only=True,
        optim="adamw_torch_fused" if comp.device == "cuda" else "adamw_torch",
        gradient_checkpointing=t.gradient_checkpointing,
        gradient_checkpointing_kwargs={"use_reentrant": False}, torch_compile=t.torch_compile,
        fsdp=t.fsdp, fsdp_config=t.fsdp_config or None,
    )
    agreed = StopCallback(stop, ranks)
    callbacks = [agreed]
    if ranks.main:
        callback = RegistryCallback(registry, plugins, run_id, progress, stop)
        callbacks.insert(0, callback)  # its registry read of a stop request comes first

    class RunTrainer(Trainer):
        """The Trainer, with two changes:

        - evaluation (``training.eval_steps``) runs under a forked, seeded RNG: every
          evaluation masks the held-out set the same way (masked LM), and training's random
          stream is the same with or without evaluations;
        - a checkpoint is written to a temporary folder and renamed into place once complete,
          with the tokenizer (a trained one exists nowhere else).
        """

        staging: Path | None = None

        def evaluate(self, *args: Any, **kwargs: Any) -> dict[str, float]:
            with torch.random.fork_rng(devices=range(torch.cuda.device_count())):
                torch.manual_seed(t.seed)
                return super().evaluate(*args, **kwargs)

        def _get_output_dir(self, trial: Any) -> str:
            return str(self.staging) if self.staging else super()._get_output_dir(trial)

        def _save_checkpoint(self, model: Any, trial: Any) -> None:
            name = f"checkpoint-{self.state.global_step}"
            with written(folder / name, ranks) as partial:
                self.staging = partial.parent  # the Trainer writes <staging>/<name>
                try:
                    super()._save_checkpoint(model, trial)
                finally:
                    self.staging = None
                if ranks.main:
                    tokenizer.save_pretrained(str(partial))

    trainer = RunTrainer(model=model, args=args, train_dataset=data.train_rows,
                         eval_dataset=data.eval_rows if t.eval_steps else None,
                         data_collator=data.train_collator, callbacks=callbacks)
    trainer.remove_callback(PrinterCallback)  # our callback reports; no raw dict prints
    if trainer.args.world_size != ranks.world_size:  # a launch path that fell back to one
        raise RuntimeError(f"the Trainer trains on {trainer.args.world_size} process(es), "
                           f"torchrun started {ranks.world_size}")
    if ranks.main:
        make_dir(folder)
        remove_partials(folder)  # what a killed process left half-written
        if checkpoint is not None:
            step = int(checkpoint.name.removeprefix("checkpoint-"))
            registry.delete_metrics_after(run_id, step)  # the resumed run logs them again
            progress.phase(f"resuming from step {step}")
        else:
            registry.delete_metrics_after(run_id, 0)  # a run resumed without a checkpoint
        if ranks.distributed:
            progress.phase(f"training on {ranks.world_size} processes")
    progress.phase("training")
    try:
        trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    finally:
        if ranks.main:
            callback.flush()  # the last steps, also of a training that failed
    if agreed.stopped and trainer.state.global_step < t.max_steps:
        progress.phase(f"stopped at step {trainer.state.global_step} (checkpoint saved)")
        return False

    final = out / "final"
    with written(final, ranks) as partial:
        trainer.save_model(str(partial))
        if ranks.main:
            tokenizer.save_pretrained(str(partial))
    if not ranks.main:
        return True
    step = trainer.state.global_step
    registry.add_checkpoint(run_id, step, str(final))
    registry.add_artifact(run_id, comp.strategy.saves, str(final))
    plugins.fire("on_checkpoint_saved", run_id=run_id, step=step, path=str(final))
    return True


@contextlib.contextmanager
def written(target: Path, ranks: Ranks = SINGLE) -> Iterator[Path]:
    """:func:`~tuneyard.core.atomic.written_atomically`, with a write failure reported as a
    :class:`CheckpointError` naming the folder, the reason and the free space left. Writers
    report a full disk in their own ways (``OSError`` ENOSPC, torch's zip writer a
    ``RuntimeError`` "unexpected pos", safetensors a ``SafetensorError``), so any exception
    of the write is one. Under torchrun every rank writes into the folder rank 0 names, and
    rank 0 renames it once all have written."""
    try:
        if not ranks.main:
            yield ranks.broadcast(None)
            ranks.barrier()
            return
        with written_atomically(target) as partial:
            ranks.broadcast(partial)
            yield partial
            ranks.barrier()  # every rank's part is written
    except Exception as exc:
        reason = (exc.strerror if isinstance(exc, OSError) and exc.strerror
                  else f"{type(exc).__name__}: {exc}")
        try:
            free = f"{shutil.disk_usage(target.parent).free / 2**20:,.1f} MiB free there"
        except OSError:
            free = "free space unknown"
        raise CheckpointError(
            f"could not write {target.name} to {target.parent}: {reason} ({free}); the "
            "previous checkpoint is intact (free space or fix the folder, then: tuneyard "
            "resume RUN)") from exc


def check_same_data(run: dict[str, Any], data: Data) -> None:
    """Refuse to go on with a run whose dataset changed since it trained.

    Raises:
        DataChanged: ``runs.dataset_fingerprint`` differs from ``data``'s.
    """
    if run["dataset_fingerprint"] and data.fingerprint != run["dataset_fingerprint"]:
        raise DataChanged(
            f"run {run['id']}: its dataset changed since it trained (fingerprint "
            f"{run['dataset_fingerprint']}, now {data.fingerprint}), so the held-out rows would "
            "not be the ones it was evaluated on; restore the data or start a new run")


def evaluate_run(registry: Registry, ref: str, evaluator: str | None = None,
                 progress: Progress | None = None) -> dict[str, dict[str, float]]:
    """Evaluate a finished run's final checkpoint again (``tuneyard eval``).

    Raises:
        RunNotFound: no such run. TuneyardError: the run has no final checkpoint, its dataset
        changed since it trained (``runs.dataset_fingerprint``), or ``evaluator`` is not a
        registered evaluator or does not judge the run's task.
    """
    progress = progress or LogProgress()
    quiet_libraries()
    plugins = get_plugins()
    run = registry.get_run(ref)
    spec = RunSpec.model_validate(run["spec"])
    if evaluator:
        try:
            tasks = plugins.get("evaluator", evaluator).cls.tasks
        except PluginError as exc:
            raise PluginError(f"--evaluator: {exc}") from None
        chosen = [e for e in spec.evaluators if e.name == evaluator]
        spec.evaluators = chosen or [EvaluatorSpec(name=evaluator)]
        task = compose(spec.model_copy(update={"evaluators": []}), plugins).task
        if tasks is not None and task not in tasks:
            raise SpecError(f"--evaluator: '{evaluator}' judges {', '.join(tasks)} models; "
                            f"run {run['id']} trained a {task} model")
    comp = compose(spec, plugins)
    model, tokenizer, data = trained_model(comp, run, progress)
    check_same_data(run, data)
    return evaluate(comp, plugins, registry, run["id"], model, tokenizer, data, "final", progress)


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


def final_checkpoint(comp: Composition, base: Any, final: Path) -> Any:
    """``base`` (from the run's model provider) with the run's ``final/`` checkpoint loaded by
    its strategy's :meth:`~tuneyard.core.components.TrainingStrategy.load_checkpoint`."""
    return guarded(comp.strategy, comp.plugin_of, "load its checkpoint",
                   comp.strategy.load_checkpoint, base, str(final))


#: Logged steps are written to the registry at most this often (seconds), in one transaction,
#: and the registry's stop request is read as often: a transaction per step would cost ~3% of a
#: tiny model's 11 ms step on 2 CPU cores, batched it is <1% (bench/registry_write.py).
FLUSH_S = 0.25


def RegistryCallback(registry: Registry, plugins: Plugins, run_id: str, progress: Progress,
                     stop: StopRequest) -> Any:
    """A ``TrainerCallback`` that records each logged step and checkpoint (rank 0's).

    Per logged step it records ``loss``, ``learning_rate``, ``grad_norm``, ``epoch`` and
    ``tokens_per_s`` (non-padding input tokens per second of wall time since the previous log)
    and fires ``on_step_end``; the steps are written every :data:`FLUSH_S` seconds in one
    transaction (:meth:`Registry.add_steps`), and before each checkpoint, after each
    evaluation and at the end of training (:meth:`flush`), so a checkpoint never has steps
    the registry lacks. After each Trainer evaluation (``training.eval_steps``) it records
    ``eval_loss``: the mean of the model's loss over the held-out batches (transformers
    ``Trainer.evaluate``; each batch's loss is its mean per label token). Each write also
    reads the registry's stop request (:meth:`StopRequest.poll`; :class:`StopCallback` acts
    on it).
    """
    from transformers import TrainerCallback

    class _Callback(TrainerCallback):
        def __init__(self) -> None:
            self.last_time = time.perf_counter()
            self.last_tokens = 0
            self.pending: list[tuple[int, dict[str, float], str]] = []
            self.flushed_at = time.perf_counter()

        def flush(self) -> None:
            """Write the pending steps and read the registry's stop request."""
            registry.add_steps(run_id, self.pending)
            self.pending = []
            self.flushed_at = time.perf_counter()
            stop.poll()

        def on_train_begin(self, args, state, control, **kwargs):
            self.last_tokens = int(state.num_input_tokens_seen)  # nonzero when resuming

        def on_log(self, args, state, control, logs=None, **kwargs):
            logs = logs or {}
            if "loss" not in logs:
                return
            t = time.perf_counter()
            tokens = int(state.num_input_tokens_seen)
            metrics = {k: float(logs[k]) for k in ("loss", "learning_rate", "grad_norm", "epoch")
                       if logs.get(k) is not None}
            metrics["tokens_per_s"] = (tokens - self.last_tokens) / max(t - self.last_time, 1e-9)
            self.last_time, self.last_tokens = t, tokens
            self.pending.append((state.global_step, metrics, now()))
            plugins.fire("on_step_end", run_id=run_id, step=state.global_step, metrics=metrics)
            progress.step(state.global_step, state.max_steps, metrics)
            if t - self.flushed_at >= FLUSH_S:
                self.flush()

        def on_evaluate(self, args, state, control, metrics=None, **kwargs):
            if metrics and "eval_loss" in metrics:
                self.pending.append((state.global_step,
                                     {"eval_loss": float(metrics["eval_loss"])}, now()))
            self.flush()
            self.last_time = time.perf_counter()  # evaluation time is not training time

        def on_save(self, args, state, control, **kwargs):
            self.flush()
            path = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            registry.add_checkpoint(run_id, state.global_step, str(path))
            plugins.fire("on_checkpoint_saved", run_id=run_id, step=state.global_step,
                         path=str(path))

    return _Callback()


def StopCallback(stop: StopRequest, ranks: Ranks) -> Any:
    """A ``TrainerCallback`` that asks the Trainer to save a checkpoint and end after this
    step (or this evaluation) once any rank was asked to stop; under torchrun the ranks agree
    on it at every step (:meth:`Ranks.any`), so all stop at the same one. It only sets flags
    (the ``TrainerCallback`` contract); ``stopped`` tells whether it did."""
    from transformers import TrainerCallback

    class _Callback(TrainerCallback):
        stopped = False

        def on_step_end(self, args, state, control, **kwargs):
            if ranks.any(bool(stop)):
                self.stopped = control.should_save = control.should_training_stop = True

        def on_evaluate(self, args, state, control, **kwargs):
            self.on_step_end(args, state, control)  # a stop request that came meanwhile

    return _Callback()


def preview_data(spec: RunSpec, plugins: Plugins, n_rows: int = 5) -> dict[str, Any]:
    """The first ``n_rows`` rows of a spec's dataset as the model will see them.

    Loads the dataset source and the model provider's tokenizer (and model), renders the rows
    in ``dataset.format`` and tokenizes them for the run's task with ``training.max_seq_len``
    as a run would.

    Returns:
        ``{"source", "format", "task", "total_rows", "rows": [{"prompt", "completion",
        "n_tokens", "n_trained", "tokens": [{"text", "trained"}]}]}``; ``text`` is each token
        decoded on its own; ``trained`` marks label tokens: those the loss is taken on (causal
        LM), those that may be masked (masked LM), the first sub-token of each word (token
        classification, which also gives the token's ``label``). A sequence-classification row
        has its class in ``label`` and no trained token.

    Raises:
        DataError, PluginError, SpecError: as for a run, before anything is written.
    """
    progress = LogProgress()
    comp = compose(spec, plugins)
    rows = load_rows(comp, progress)
    _, tokenizer = load_model(comp, rows, progress)
    fmt, columns = spec.dataset.format, spec.dataset.columns
    names = run_labels(comp, rows) or []
    label_ids = {name: i for i, name in enumerate(names)}
    head = rows.select(range(min(n_rows, len(rows))))
    shown = []
    for ex in to_examples(head, fmt, columns, tokenizer):
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
                      **({"label": row_label} if row_label is not None else {})})
    return {"source": spec.dataset.source, "format": fmt, "task": comp.task,
            "total_rows": len(rows), "rows": shown}


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


def main(argv: list[str] | None = None) -> int:
    """Entry point of a run process: a detached run, or one rank of a run started by
    torchrun (:mod:`tuneyard.core.distributed`; ranks other than 0 need no ``RUN_ID``: rank 0
    hands them the run). Exit code 0 completed or stopped, 1 failed, 2 user error (the
    error's ``exit_code``). Log lines
    go to ``<output_dir>/run.log``; warnings and errors also to stderr (the launcher's
    ``console.log``); under torchrun a rank's error also goes to torchrun's error file."""
    parser = argparse.ArgumentParser(prog="python -m tuneyard.core.runner")
    parser.add_argument("run_id", nargs="?")
    parser.add_argument("--registry", default=None)
    parser.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                        help="under torchrun: the run's device, for the process group's backend")
    a = parser.parse_args(argv)
    stderr = logging.StreamHandler()
    stderr.setLevel(logging.WARNING)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s",
                        handlers=[stderr])
    ranks = Ranks.from_env()
    try:
        ranks.start(a.device)
        if not ranks.main:
            follow(ranks)
        elif a.run_id is None:
            parser.error("RUN_ID is required (rank 0)")
        else:
            execute(Registry(a.registry, create=False), a.run_id, resume=a.resume, ranks=ranks)
    except TuneyardError as exc:
        log.error("%s", exc)
        record_error(exc)
        return exc.exit_code
    except Exception as exc:
        if ranks.distributed and is_echo(str(exc)):  # another rank failed: it reports why
            log.error("rank %d: ended because another rank did (%s)", ranks.rank,
                      str(exc).splitlines()[0][:200])
        else:
            log.exception("run %s, rank %d: failed", a.run_id, ranks.rank)
        record_error(exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
