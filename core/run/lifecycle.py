"""Process lifecycle of a run: stop requests (``tuneyard stop``, the TUI, SIGTERM, Ctrl-C),
the heartbeat that tells a live run from a dead one, and device telemetry."""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tuneyard.core.plugins import Plugins
from tuneyard.core.registry import HEARTBEAT_S, Registry

log = logging.getLogger("tuneyard.core.run")


class RunStopped(KeyboardInterrupt):
    """Raised in the main thread when a stop request arrives outside the training loop
    (loading, evaluating): there is no step to finish, so the run ends at once. A subclass of
    ``KeyboardInterrupt`` so that no ``except Exception`` (a plugin's, a library's) swallows
    it."""


class StopRequest:
    """Whether the run was asked to stop, and how the request reaches the run.

    Requests: ``runs.stop_requested_at`` (``tuneyard stop``, the TUI; read with each registry
    write of the training callback, every :data:`~tuneyard.core.run.train.FLUSH_S` seconds,
    and every :data:`~tuneyard.core.registry.HEARTBEAT_S` seconds by the :class:`Heartbeat`),
    SIGTERM,
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
