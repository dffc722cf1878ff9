"""The entry point of a run process: ``python -m tuneyard.core.run RUN_ID [--registry PATH]
[--resume]`` (a detached run), or one rank of a run started by torchrun
(:mod:`tuneyard.core.distributed`)."""

from __future__ import annotations

import argparse
import logging
import sys

from tuneyard.core.distributed import Ranks, is_echo, record_error
from tuneyard.core.errors import TuneyardError
from tuneyard.core.registry import Registry
from tuneyard.core.run.pipeline import execute, follow

log = logging.getLogger("tuneyard.core.run")


def main(argv: list[str] | None = None) -> int:
    """Entry point of a run process: a detached run, or one rank of a run started by
    torchrun (:mod:`tuneyard.core.distributed`; ranks other than 0 need no ``RUN_ID``: rank 0
    hands them the run). Exit code 0 completed or stopped, 1 failed, 2 user error (the
    error's ``exit_code``). Log lines
    go to ``<output_dir>/run.log``; warnings and errors also to stderr (the launcher's
    ``console.log``); under torchrun a rank's error also goes to torchrun's error file."""
    parser = argparse.ArgumentParser(prog="python -m tuneyard.core.run")
    parser.add_argument("run_id", nargs="?")
    parser.add_argument("--registry", default=None)
    parser.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                        help="under torchrun: the run's device, for the process group's backend")
    a = parser.parse_args(argv)
    stderr = logging.StreamHandler()
    stderr.setLevel(logging.WARNING)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s",
                        handlers=[stderr])
    ranks = Ranks.from_env()
    try:
        ranks.start(a.device)
        if not ranks.main:
            follow(ranks)
        elif a.run_id is None:
            parser.error("RUN_ID is required (rank 0)")
        else:
            execute(Registry(a.registry, create=False), a.run_id, resume=a.resume, ranks=ranks)
    except TuneyardError as exc:
        log.error("%s", exc)
        record_error(exc)
        return exc.exit_code
    except Exception as exc:
        if ranks.distributed and is_echo(str(exc)):  # another rank failed: it reports why
            log.error("rank %d: ended because another rank did (%s)", ranks.rank,
                      str(exc).splitlines()[0][:200])
        else:
            log.exception("run %s, rank %d: failed", a.run_id, ranks.rank)
        record_error(exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
