"""The one exception family of tuneyard.

Every error a user can fix is a :class:`TuneyardError`; its message names the file, line, field
or plugin at fault and what would be valid. The CLI prints it in one or two lines and exits with
code 2; anything else is a bug or a failed run (exit code 1).
"""

from __future__ import annotations

import difflib


class TuneyardError(Exception):
    """Base class: a mistake the user can fix (bad spec, missing file, broken plugin)."""

    #: the CLI's exit status for it: 2, a user error
    exit_code = 2


class SpecError(TuneyardError):
    """The run spec (YAML or ``--set``) is invalid; the message names the key to fix."""


class DataError(TuneyardError):
    """A dataset cannot be read or does not have the expected shape (file, line, column)."""


class DataChanged(DataError):
    """A run's dataset differs from the one it trained on (``runs.dataset_fingerprint``), so it
    cannot be resumed or evaluated again on the same held-out rows."""


class PluginError(TuneyardError):
    """A plugin failed to load or register, or a component it provides failed."""


class PluginFailed(PluginError):
    """A plugin's code failed where its input was fine: a component raised or returned the
    wrong thing during a run, or a freshly installed plugin does not load. The message names
    the plugin; the CLI exits with status 1 (a failed run), not 2."""

    exit_code = 1


class CheckpointError(TuneyardError):
    """A checkpoint could not be written (disk full, read-only folder): the run fails, its
    previous checkpoint intact. The CLI exits with status 1 (a failed run)."""

    exit_code = 1


class RankFailed(TuneyardError):
    """A process of a run on several processes (torchrun) failed; the message names its rank
    and its own error. The CLI exits with that process's status (1 a failed run, 2 a user
    error)."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class RunNotFound(TuneyardError):
    """No run with the given id or name exists in the registry."""


def unknown_name(kind: str, name: str, valid: list[str]) -> str:
    """Message for an unknown name: lists the valid ones and suggests the closest.

    >>> unknown_name("strategy", "lroa", ["full", "lora"])
    "unknown strategy 'lroa'; did you mean 'lora'? (valid: full, lora)"
    """
    close = difflib.get_close_matches(name, valid, n=1)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    return f"unknown {kind} '{name}'{hint} (valid: {', '.join(sorted(valid)) or 'none'})"
