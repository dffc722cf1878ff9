"""One run, top to bottom: :func:`execute` records the run in the registry around
:func:`pipeline`, which takes the spec through every stage (data, model, evaluation, training,
evaluation) in order; :func:`follow` is the same for the ranks other than 0 of a run on
several processes."""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path
from typing import Any

import yaml

from tuneyard.core.distributed import SINGLE, Ranks
from tuneyard.core.engine import compose
from tuneyard.core.errors import DataChanged, TuneyardError
from tuneyard.core.paths import make_dir, never_world_writable
from tuneyard.core.plugins import Plugins, get_plugins
from tuneyard.core.registry import Registry, now
from tuneyard.core.run.checkpoints import ResumePoint, check_same_data, resume_point
from tuneyard.core.run.data import load_rows, prepare_data, preview_rows
from tuneyard.core.run.evaluate import evaluate
from tuneyard.core.run.lifecycle import Heartbeat, RunStopped, StopRequest, Telemetry
from tuneyard.core.run.model import final_checkpoint, load_model, model_to_train
from tuneyard.core.run.progress import Fanout, LogProgress, Progress, quiet_libraries
from tuneyard.core.run.train import train
from tuneyard.core.spec import RunSpec

log = logging.getLogger("tuneyard.core.run")


def execute(registry: Registry, run_id: str, progress: Progress | None = None,
            resume: bool = False, ranks: Ranks = SINGLE) -> str:
    """Run ``run_id`` to its end in this process and return its final status.

    The run row is ``running`` while it trains, then ``completed``. A stop request
    (``tuneyard stop``, the TUI, SIGTERM or Ctrl-C; see :class:`StopRequest`) saves a
    checkpoint at the next step and ends it ``stopped``; during loading or an evaluation it
    ends at once, ``stopped`` too. On an exception it is ``failed`` with the reason in
    ``runs.error`` and the exception propagates; a second Ctrl-C aborts: ``interrupted``, and
    ``KeyboardInterrupt`` propagates. With ``resume`` the run continues where it stopped (see
    :func:`~tuneyard.core.run.checkpoints.resume_point`). Log lines go to
    ``<output_dir>/run.log``; a :class:`Heartbeat` thread marks the run alive, and device
    telemetry is sampled every ``training.telemetry_interval_s`` seconds in another. Nothing
    it writes is writable by others (:func:`~tuneyard.core.paths.never_world_writable`). In a
    run of several processes this is rank 0, which hands the run to the others
    (:func:`follow`).
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
            return pipeline(None, get_plugins(), run, spec, LogProgress(), stop, start_at, ranks)
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
            status = pipeline(registry, plugins, run, spec, progress, stop, start_at, ranks)
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


def pipeline(registry: Registry | None, plugins: Plugins, run: dict[str, Any], spec: RunSpec,
             progress: Progress, stop: StopRequest, start_at: ResumePoint | None,
             ranks: Ranks = SINGLE) -> str:
    """The flow of one run: compose the spec, load the rows, the model and the data, let the
    strategy prepare the model, evaluate it (``base``), train it with the strategy's trainer,
    evaluate it again (``final``); ``completed`` or ``stopped``. From ``start_at`` when
    resuming: training continues from its checkpoint, or only the missing final evaluations
    run. Loading and evaluating are interruptible (see :class:`StopRequest`). Only rank 0
    (``ranks.main``, the one with a ``registry``) records and evaluates; all ranks agree
    before training whether any of them was stopped."""
    from transformers import set_seed

    run_id, out = run["id"], Path(run["output_dir"])
    comp = compose(spec, plugins)
    finished = start_at is not None and start_at.finished
    if ranks.main:
        used = plugins.used_by_run(list(comp.plugin_of.values()))
        registry.update_run(run_id, plugin_versions=plugins.versions(used))
        if start_at is None:
            (out / "spec.yaml").write_text(yaml.safe_dump(run["spec"], sort_keys=False))
            registry.add_artifact(run_id, "spec", str(out / "spec.yaml"))
    elif finished:
        return "completed"  # only rank 0's final evaluations are left
    set_seed(spec.training.seed)

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
        model = (final_checkpoint(comp, model, out / "final") if finished
                 else model_to_train(comp, model))
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
        model = train(comp, registry, run_id, out, data, model, tokenizer, plugins, progress,
                      stop, start_at.checkpoint if start_at else None, ranks)
        if model is None:
            return "stopped"
    if ranks.main:
        with stop.interruptible():
            evaluate(comp, plugins, registry, run_id, model, tokenizer, data, "final",
                     progress, missing_only=True)
    return "completed"


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
        has its class in ``label`` and no trained token; a preference row has its rejected
        answer in ``rejected``.

    Raises:
        DataError, PluginError, SpecError: as for a run, before anything is written.
    """
    progress = LogProgress()
    comp = compose(spec, plugins, trains=False)
    rows = load_rows(comp, progress)
    _, tokenizer = load_model(comp, rows, progress)
    return {"source": spec.dataset.source, "format": spec.dataset.format, "task": comp.task,
            "total_rows": len(rows.rows), "rows": preview_rows(comp, rows, tokenizer, n_rows)}
