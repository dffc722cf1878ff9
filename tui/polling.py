"""Registry polling off the UI thread.

A screen that shows registry data mixes in :class:`Polling`: one long-lived thread worker per
screen reads the registry (its own SQLite connection, one poll at a time, at most once per
``interval_s``) and posts the result as a :class:`Polled` message; the UI thread only renders
it. Because the next poll starts only after the previous one has been posted, a slow registry
never piles up work, and a burst of writes costs one read per interval whatever its size
(the pattern of Textualize/toolong and posting).
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from textual import work
from textual.message import Message
from textual.worker import get_current_worker

from tuneyard.core.errors import TuneyardError
from tuneyard.core.registry import Registry


class Polled(Message):
    """A poll's result (``data``), or the registry error that stopped it (``error``)."""

    def __init__(self, data: Any = None, error: str | None = None) -> None:
        super().__init__()
        self.data, self.error = data, error


class Polling:
    """Mixin for a ``Screen``: call :meth:`start_polling` in ``on_mount``; implement
    :meth:`fetch` (worker thread: read the registry, return plain data) and :meth:`show`
    (UI thread: render it). ``polls`` counts the results shown (tests wait on it)."""

    _wake: threading.Event
    polls: int = 0

    def fetch(self, registry: Registry) -> Any:
        """Read what the screen shows. Runs in the worker thread; must not touch widgets."""
        raise NotImplementedError

    def show(self, data: Any) -> None:
        """Render ``data`` from :meth:`fetch` (``None``: no registry yet). UI thread."""
        raise NotImplementedError

    def show_error(self, error: str) -> None:
        """Render a registry error (the default notifies it once). UI thread."""
        self.notify(error, title="registry", severity="error")  # type: ignore[attr-defined]

    def on_polled(self, message: Polled) -> None:
        message.stop()
        if message.error:
            self.show_error(message.error)
        else:
            self.show(message.data)
        self.polls += 1

    def start_polling(self) -> None:
        self._wake = threading.Event()
        self._poll_loop()

    def poll_now(self) -> None:
        """Poll at once instead of waiting for the interval (after a user action)."""
        self._wake.set()

    @work(thread=True, exclusive=True, group="poll")
    def _poll_loop(self) -> None:
        worker = get_current_worker()
        app: Any = self.app  # type: ignore[attr-defined]
        registry = None
        while not worker.is_cancelled:
            try:
                if registry is None:
                    registry = open_registry(app.registry_path)
                msg = Polled(data=self.fetch(registry) if registry else None)
            except (TuneyardError, OSError) as exc:
                registry, msg = None, Polled(error=str(exc))
            if worker.is_cancelled:
                break
            self.post_message(msg)  # type: ignore[attr-defined]
            self._wake.wait(app.poll_interval_s)
            self._wake.clear()


def open_registry(path: Path) -> Registry | None:
    """The registry at ``path``, or ``None`` while it does not exist yet (no run so far)."""
    return Registry(path, create=False) if path.exists() else None
