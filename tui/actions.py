"""What the TUI asks of the core, done by the ``tuneyard`` CLI in a child process.

The TUI never imports torch: composing and checking a spec, launching, resuming, evaluating and
previewing data all need it, so the TUI runs the same commands a user would type
(``python -m tuneyard.core.cli --registry PATH …``); installing a plugin runs pip there too, so
its output streams like a terminal's. Each function blocks; call it from a thread worker. A
command that fails raises :class:`ActionError` with the command's own error message, except
:func:`plugins`, which passes on every line and returns the exit status.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tuneyard.core.errors import TuneyardError


class ActionError(TuneyardError):
    """A ``tuneyard`` command run by the TUI failed; the message is its error output."""


def _command(registry_path: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "tuneyard.core.cli", "--registry", str(registry_path), *args]


def _run(registry_path: Path, *args: str, timeout_s: float = 600) -> str:
    proc = subprocess.run(_command(registry_path, *args), capture_output=True, text=True,
                          timeout=timeout_s, stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
        raise ActionError("\n".join(lines[-6:]) or f"tuneyard {args[0]} exited {proc.returncode}")
    return proc.stdout


def launch(registry_path: Path, spec_path: Path) -> str:
    """Validate ``spec_path`` and start it as a detached run (``tuneyard run SPEC --detach``);
    returns the new run's id. Raises ActionError with the spec error (file:line: key: …)."""
    return _run(registry_path, "run", str(spec_path), "--detach").strip().splitlines()[-1]


def resume(registry_path: Path, run_id: str) -> None:
    """Resume a stopped/interrupted/failed run from its last checkpoint, detached."""
    _run(registry_path, "resume", run_id, "--detach")


def evaluate(registry_path: Path, run_id: str, output_dir: str) -> int:
    """Start ``tuneyard eval RUN`` in the background (new session, output in
    ``<output_dir>/eval.log``); returns its pid. Results land in the registry."""
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "eval.log", "ab") as log:
        proc = subprocess.Popen(_command(registry_path, "eval", run_id), stdout=log,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
    threading.Thread(target=proc.wait, daemon=True).start()  # reap it: no zombie
    return proc.pid


def preview(registry_path: Path, spec_path: Path, rows: int = 5) -> dict[str, Any]:
    """The first ``rows`` rows of a spec's dataset as the model will see them
    (``tuneyard data preview SPEC --json``; see that command for the format)."""
    return json.loads(_run(registry_path, "data", "preview", str(spec_path), "--rows",
                           str(rows), "--json"))


def plugins(registry_path: Path, args: list[str], on_line: Callable[[str], None]) -> int:
    """Run ``tuneyard plugins ARGS`` (``install …`` or ``uninstall …``: pip, in tuneyard's
    own environment), calling ``on_line`` with each line of its output (stdout and stderr
    merged, pip's included, without the line end) as soon as it is written.

    Returns:
        The command's exit status: 0 done; 2 refused or pip failed (the last line is the
        command's ``Error: …``); 1 an unexpected error (its ``Failed: …``).

    Raises:
        OSError: the command could not be started.
    """
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}  # the CLI and pip write each line at once
    with subprocess.Popen(_command(registry_path, "plugins", *args), stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                          text=True, errors="replace", bufsize=1) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            on_line(line.rstrip("\r\n"))
    return proc.returncode
