"""Checkpoints: folders written atomically (every rank's part in, then renamed into place),
and where a resumed run continues."""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tuneyard.core.atomic import written_atomically
from tuneyard.core.distributed import SINGLE, Ranks
from tuneyard.core.errors import CheckpointError, DataChanged, TuneyardError
from tuneyard.core.registry import Registry


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


def check_same_data(run: dict[str, Any], data: Any) -> None:
    """Refuse to go on with a run whose dataset changed since it trained (``data`` is the
    run's :class:`~tuneyard.core.run.data.Data` now).

    Raises:
        DataChanged: ``runs.dataset_fingerprint`` differs from ``data``'s.
    """
    if run["dataset_fingerprint"] and data.fingerprint != run["dataset_fingerprint"]:
        raise DataChanged(
            f"run {run['id']}: its dataset changed since it trained (fingerprint "
            f"{run['dataset_fingerprint']}, now {data.fingerprint}), so the held-out rows would "
            "not be the ones it was evaluated on; restore the data or start a new run")
