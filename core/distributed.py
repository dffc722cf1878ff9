"""Runs on several processes: the launch through torchrun and what the ranks of a run share.

``tuneyard run SPEC --nproc-per-node N [--nnodes M --node-rank R --rdzv-endpoint HOST:PORT]``
starts PyTorch's elastic launcher (torchrun, ``torch.distributed.run``) in the CLI's process;
it starts ``N`` processes on this node, each ``python -m tuneyard.core.run``, with the
environment torchrun documents (``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``…).
transformers' ``Trainer`` trains them with DDP (or FSDP, ``training.fsdp``) over the process
group :meth:`Ranks.start` opens: gloo on CPU, NCCL on CUDA. Multi-node rendezvous is
torchrun's own (c10d); nothing here is home-made.

Rank 0 is the run's only writer: the registry, ``run.log``, the lifecycle hooks, the
evaluations. The other ranks get the run from rank 0 (:meth:`Ranks.broadcast`), train their
share, write their part of each checkpoint (their RNG state) into the folder rank 0 names,
and end after the final save. Whenever a rank fails, torchrun stops the others and the
launcher records the failed rank's own error on the run (:func:`root_cause`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

log = logging.getLogger(__name__)

#: how long a rank waits for the others in a collective, e.g. while rank 0 alone evaluates
#: the base model before training. A rank that dies does not make the others wait this long:
#: torchrun stops them at once.
COLLECTIVE_TIMEOUT = timedelta(hours=2)

#: seconds between the launcher's looks at the registry while the ranks run
POLL_S = 0.5


@dataclass(frozen=True)
class Ranks:
    """This process's place in a run: ``rank`` of ``world_size`` processes (``local_rank``
    on its node). A run without torchrun is rank 0 of 1 and every method is a no-op."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @classmethod
    def from_env(cls) -> Ranks:
        """The ranks torchrun set in the environment (``RANK``, ``WORLD_SIZE``,
        ``LOCAL_RANK``); rank 0 of 1 without them."""
        env = os.environ
        return cls(int(env.get("RANK", 0)), int(env.get("WORLD_SIZE", 1)),
                   int(env.get("LOCAL_RANK", 0)))

    @property
    def main(self) -> bool:
        """Rank 0: the one process that writes the registry, the log and the evaluations."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def start(self, device: str) -> None:
        """Open the process group (``torch.distributed.init_process_group``, env:// from
        torchrun's variables): gloo for a ``cpu`` run; for ``cuda``, NCCL for CUDA tensors
        (DDP's gradients) and gloo for the CPU tensors of this module's control messages,
        so they never wait on the GPU; each rank uses GPU ``local_rank``."""
        if not self.distributed:
            return
        import torch
        import torch.distributed as dist

        backend = "gloo"
        if device == "cuda":
            torch.cuda.set_device(self.local_rank)
            backend = "cpu:gloo,cuda:nccl"
        dist.init_process_group(backend, timeout=COLLECTIVE_TIMEOUT)

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's ``obj`` (any picklable object), on every rank."""
        if not self.distributed:
            return obj
        import torch
        import torch.distributed as dist

        box = [obj]
        dist.broadcast_object_list(box, src=0, device=torch.device("cpu"))
        return box[0]

    def any(self, flag: bool) -> bool:
        """Whether ``flag`` is true on any rank (an all-reduce of one CPU integer): how the
        ranks agree to stop at the same step."""
        if not self.distributed:
            return flag
        import torch
        import torch.distributed as dist

        t = torch.tensor([int(flag)])
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item())

    def barrier(self) -> None:
        """Wait until every rank is here."""
        self.any(False)


SINGLE = Ranks()


@dataclass(frozen=True)
class Launch:
    """How to start a run's processes: torchrun's ``--nproc-per-node``, ``--nnodes``,
    ``--node-rank`` and ``--rdzv-endpoint`` (``HOST:PORT`` of node 0; needed with
    ``nnodes > 1``)."""

    nproc_per_node: int = 1
    nnodes: int = 1
    node_rank: int = 0
    rdzv_endpoint: str | None = None

    @property
    def distributed(self) -> bool:
        return self.nproc_per_node * self.nnodes > 1

    def torchrun_args(self, worker_args: list[str]) -> list[str]:
        """torchrun's command line for ``python -m tuneyard.core.run WORKER_ARGS``: one
        node alone uses ``--standalone``; several rendezvous (c10d) at ``rdzv_endpoint``. No
        restarts: a failed rank fails the run, which ``tuneyard resume`` continues from its
        last checkpoint."""
        argv = ["--nproc-per-node", str(self.nproc_per_node), "--max-restarts", "0"]
        if self.nnodes == 1 and self.rdzv_endpoint is None:
            argv += ["--standalone"]
        else:
            argv += ["--nnodes", str(self.nnodes), "--node-rank", str(self.node_rank),
                     "--rdzv-backend", "c10d", "--rdzv-endpoint", str(self.rdzv_endpoint)]
        return [*argv, "-m", "tuneyard.core.run", *worker_args]


def run_ranks(launch: Launch, worker_args: list[str],
              poll: Callable[[], None] = lambda: None) -> Failure | None:
    """Start this node's ranks through torchrun and wait for them, calling ``poll`` about
    every :data:`POLL_S` seconds meanwhile; ``None`` when all ended well, else the failure
    that caused the others (:func:`root_cause`).

    torchrun runs in a thread, so it leaves this process's signal handlers alone, and this
    process passes Ctrl-C, SIGTERM and SIGHUP on to every rank (torchrun starts each in a
    session of its own, out of the terminal's reach): see :func:`signals_passed_on`.
    """
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args
    from torch.distributed.run import run as torchrun

    args = parse_args(launch.torchrun_args(worker_args))
    outcome: list[Any] = [None]

    def target() -> None:
        try:
            torchrun(args)
        except ChildFailedError as exc:
            outcome[0] = root_cause(exc.failures)
        except BaseException as exc:  # the launcher's own failure (rendezvous, ports)
            outcome[0] = Failure(None, f"torchrun: {type(exc).__name__}: {exc}", 1)

    thread = threading.Thread(target=target, name="tuneyard-torchrun")
    with signals_passed_on():
        thread.start()
        while thread.is_alive():
            thread.join(POLL_S)  # the main thread stays free for signals
            poll()
    return outcome[0]


@contextlib.contextmanager
def signals_passed_on() -> Iterator[None]:
    """While the ranks run, a signal to this process goes on to every process it started
    (torchrun's workers), where each rank's handler acts on it
    (:class:`~tuneyard.core.run.lifecycle.StopRequest`): Ctrl-C (SIGINT) as Ctrl-C, so a second one
    aborts; SIGTERM and SIGHUP (the terminal closed, an SSH connection lost) as SIGTERM: a
    checkpoint, then ``stopped``. A launcher killed with SIGKILL cannot pass anything on:
    its ranks train on, and ``tuneyard stop RUN`` stops them."""
    import psutil

    def pass_on(signum: int, _frame: Any) -> None:
        sent = signal.SIGINT if signum == signal.SIGINT else signal.SIGTERM
        for child in psutil.Process().children(recursive=True):
            with contextlib.suppress(psutil.Error):
                child.send_signal(sent)

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, pass_on)
                for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@dataclass(frozen=True)
class Failure:
    """The rank whose failure ended a run (``None``: torchrun itself failed), its error, its
    exit code (2 for a user error, :class:`~tuneyard.core.errors.TuneyardError`), and whether
    rank 0 ended on its own terms (exited, or failed with an error it recorded), having
    written the run's final status itself."""

    rank: int | None
    error: str
    exit_code: int
    rank0_recorded: bool = False

    def __str__(self) -> str:
        return self.error if self.rank is None else f"rank {self.rank}: {self.error}"


#: messages of a rank that failed because another one did: a collective's peer vanished, or
#: torchrun stopped it (SIGTERM) after another rank failed
_VICTIM_MARKS = ("DistBackendError", "Connection closed by peer", "Connection reset by peer",
                 "NCCL communicator was aborted", "Signal 15 (SIGTERM)")


def is_echo(message: str) -> bool:
    """Whether an error message is another rank's failure seen from here (a peer gone from a
    collective, or torchrun's SIGTERM), not an error of this rank's own."""
    return any(mark in message for mark in _VICTIM_MARKS)


def root_cause(failures: dict[int, Any]) -> Failure:
    """The failure that caused the others: the earliest (torchrun's own rule, "first
    observed failure") of the ranks that raised an error of their own, not one from a
    collective whose peer had died or a signal from torchrun stopping the rest.

    Args:
        failures: torchrun's ``ChildFailedError.failures``: global rank →
            ``ProcessFailure`` (``message``, ``timestamp`` in seconds, ``exitcode``).
    """
    messages = {r: f.message if isinstance(f.message, str) else f.message.get("message", "")
                for r, f in failures.items()}  # an error file's message, or torchrun's own
    own = [r for r, m in messages.items() if not is_echo(m)]
    rank = min(own or failures, key=lambda r: (failures[r].timestamp, r))
    exitcode = failures[rank].exitcode
    code = exitcode if exitcode in (1, 2) else 1
    recorded = 0 not in failures or failures[0].exitcode in (1, 2)
    if messages[rank].startswith("To enable traceback"):  # no error file: a crash
        return Failure(rank, f"exited with code {exitcode} (see its console output)", code,
                       recorded)
    return Failure(rank, messages[rank], code, recorded)


def record_error(exc: BaseException) -> None:
    """Write ``exc`` to the error file torchrun gave this rank (``TORCHELASTIC_ERROR_FILE``)
    so that the launcher can report it (torch.distributed.elastic ``ErrorHandler``, the
    mechanism of its ``@record`` decorator). No-op outside torchrun."""
    if "TORCHELASTIC_ERROR_FILE" not in os.environ:
        return
    from torch.distributed.elastic.multiprocessing.errors import ErrorHandler

    try:
        ErrorHandler().record_exception(exc)
    except OSError as err:
        print(f"could not write the error file: {err}", file=sys.stderr)
