"""Registry polling off the UI thread.

A screen that shows registry data mixes in :class:`Polling`: while the screen is shown, one
thread worker reads the registry (its own SQLite connection, one poll at a time, at most once
per ``app.poll_interval_s``, the first after the app's next frame) and posts the result as
a :class:`Polled` message; the UI thread only renders it. The next poll starts only after the
previous one has been posted, so a slow registry never piles up work and a burst of writes
costs one read per interval whatever its size (the pattern of Textualize/toolong and posting).
A screen covered by another stops polling until it is shown again.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path
from typing import Any

from textual import work
from textual.message import Message
from textual.worker import get_current_worker

from tuneyard.core.errors import TuneyardError
from tuneyard.core.registry import Registry


class Polled(Message):
    """A poll's result (``data``), or the error that stopped it (``error``)."""

    def __init__(self, data: Any = None, error: str | None = None) -> None:
        super().__init__()
        self.data, self.error = data, error


class Polling:
    """Mixin for a ``Screen``: implement :meth:`fetch` (worker thread: read the registry,
    return plain data) and :meth:`show` (UI thread: render it). Polling runs while the screen
    is shown; ``polls`` counts the results shown (tests wait on it)."""

    polls: int = 0
    _wake: threading.Event | None = None
    _error: str | None = None  # the error shown last (a failing registry fails every poll)

    def fetch(self, registry: Registry) -> Any:
        """Read what the screen shows. Runs in the worker thread; must not touch widgets."""
        raise NotImplementedError

    def show(self, data: Any) -> None:
        """Render ``data`` from :meth:`fetch` (``None``: no registry yet). UI thread."""
        raise NotImplementedError

    def show_error(self, error: str) -> None:
        """Render an error raised by :meth:`fetch` (default: a notification). UI thread."""
        self.notify(error, title="registry", severity="error")  # type: ignore[attr-defined]

    def on_polled(self, message: Polled) -> None:
        message.stop()
        if message.error:
            if message.error != self._error:
                self.show_error(message.error)
        else:
            self.show(message.data)
        self._error = message.error
        self.polls += 1

    def on_screen_resume(self) -> None:
        self._wake = wake = threading.Event()
        # after the app's next frame: a poll's reading (hundreds of runs) competes with
        # painting for the interpreter, and would put off the TUI's first frame
        self.app.call_after_refresh(self._start_polling, wake)  # type: ignore[attr-defined]

    def _start_polling(self, wake: threading.Event) -> None:
        if self._wake is wake:  # not suspended, nor resumed again, since
            self._poll_loop(wake)

    def on_screen_suspend(self) -> None:
        self._stop_polling()

    def on_unmount(self) -> None:
        self._stop_polling()

    def _stop_polling(self) -> None:
        self.workers.cancel_group(self, "poll")  # type: ignore[attr-defined]
        if self._wake:
            self._wake.set()  # end the worker's wait now, not after the interval
        self._wake = None

    def poll_now(self) -> None:
        """Poll at once instead of waiting for the interval (after a user action)."""
        if self._wake:
            self._wake.set()

    @work(thread=True, exclusive=True, group="poll")
    def _poll_loop(self, wake: threading.Event) -> None:
        worker = get_current_worker()
        app: Any = self.app  # type: ignore[attr-defined]
        registry = None
        while not worker.is_cancelled:
            try:
                if registry is None:
                    registry = open_registry(app.registry_path)
                msg = Polled(data=self.fetch(registry) if registry else None)
            except (sqlite3.Error, OSError) as exc:
                registry, msg = None, Polled(error=f"{app.registry_path}: {exc}")
            except TuneyardError as exc:
                msg = Polled(error=str(exc))
            if worker.is_cancelled:
                break
            self.post_message(msg)  # type: ignore[attr-defined]
            wake.wait(app.poll_interval_s)
            wake.clear()


def open_registry(path: Path) -> Registry | None:
    """The registry at ``path``, or ``None`` while it does not exist yet (no run so far)."""
    return Registry(path, create=False) if path.exists() else None
