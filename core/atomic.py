"""Folders that appear whole or not at all: checkpoints, final models, exports.

A folder is written under a hidden temporary name next to its target, flushed to disk, then
renamed to the target (a rename within one filesystem is atomic, POSIX ``rename(2)``). A process
killed while writing leaves only the hidden folder, which nothing reads, so a half-written
checkpoint is never picked for resume; :func:`remove_partials` clears what such a process left.
"""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tuneyard.core.paths import DIR_MODE

PARTIAL_PREFIX = ".partial-"


@contextmanager
def written_atomically(target: Path) -> Iterator[Path]:
    """Yield the path to write ``target``'s content to (not yet created); when the block ends
    without an exception, that folder is flushed (``fsync`` of every file) and renamed to
    ``target``. An existing ``target`` is replaced (moved aside, then deleted). On an exception
    the partial folder is removed and ``target`` is left as it was.

    The parent of ``target`` must exist. Raises whatever the block or the filesystem raises
    (``OSError`` for a full disk or a read-only folder).
    """
    holder = target.parent / f"{PARTIAL_PREFIX}{secrets.token_hex(4)}"
    holder.mkdir(mode=DIR_MODE)
    try:
        partial = holder / target.name
        yield partial
        _fsync_tree(partial)
        if target.exists():  # e.g. written by a process killed before it was recorded
            old = holder / f"{target.name}.old"
            target.rename(old)
            try:
                partial.rename(target)
            except BaseException:
                old.rename(target)
                raise
        else:
            partial.rename(target)
    finally:
        shutil.rmtree(holder, ignore_errors=True)


def remove_partials(folder: Path) -> None:
    """Delete the partial folders a killed process left in ``folder``."""
    for holder in folder.glob(f"{PARTIAL_PREFIX}*"):
        shutil.rmtree(holder, ignore_errors=True)


def _fsync_tree(folder: Path) -> None:
    """Flush every file under ``folder`` to disk, so the renamed folder survives a power cut
    with its content (the rename alone orders nothing)."""
    for path in folder.rglob("*"):
        if path.is_file():
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
