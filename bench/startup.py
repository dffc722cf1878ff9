"""Benchmark 4 (issue #7): start-up of ``tuneyard --help``, ``tuneyard runs list`` and the TUI's
first frame, on registries of 1 and 10,000 runs. Targets: 0.3 s, 0.5 s and 1 s.

    python bench/startup.py [--runs 1 10000] [--steps 20] [--repeat 7] [--keep DIR]

Each measurement starts a fresh process and times it from just before the start (interpreter
start-up and imports count), the median and the slowest of ``--repeat`` starts, after one start
left out that writes the bytecode caches and warms the file cache, as a user's second command
finds them; for the commands, also the CPU time (user + system) the process used, which a busy
machine inflates less than the wall time. The commands run through the virtual environment's
``tuneyard`` script. The TUI child does what ``tuneyard tui`` does (the CLI, the plugins, which
add the ``tui`` command, then ``tuneyard.tui.command.open_app``) and runs the app headless at
120×40; its times are ``first frame`` (the Runs screen painted: the target), ``runs shown``
(the first registry poll in the table) and ``table full`` (every run shown is a row; after the
first 100 they are added in chunks between frames). The registries (``bench/seed.py``: the
runner's five metrics per step) are built in a temporary folder, or in ``--keep DIR`` and
reused from there.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import table  # noqa: E402
from seed import machine, seed, size  # noqa: E402

TUNEYARD = Path(sys.executable).with_name("tuneyard")
#: the children's environment: bytecode is written, as an installed package has it
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
TARGETS_S = {"tuneyard --help": 0.3, "tuneyard runs list": 0.5, "TUI first frame": 1.0}

TUI = r"""
import json, sys, time
born = float(sys.argv[2])  # the parent's clock just before it started this process
from tuneyard.core.cli import cli  # what `tuneyard tui` does before the TUI: the CLI, and
from tuneyard.core.plugins import get_plugins  # the plugins that add commands (the TUI's)
get_plugins().pm.hook.register_commands(cli=cli)
from tuneyard.tui.command import open_app
from tuneyard.tui.screens.runs import RUNS_SHOWN
app = open_app(sys.argv[1])
marks = {}
def check():
    screen = app.screen
    if getattr(screen, "polls", 0):
        marks.setdefault("runs_shown_s", time.time() - born)
        if screen.query_one("DataTable").row_count == min(screen.total, RUNS_SHOWN):
            marks["table_full_s"] = time.time() - born
            app.exit()
def mounted():
    marks["first_frame_s"] = time.time() - born
    app.set_interval(0.005, check)
app.call_after_refresh(mounted)
app.run(headless=True, size=(120, 40))
print(json.dumps(marks))
"""


def timed(argv: list[str], repeat: int) -> tuple[list[float], list[float]]:
    """Wall seconds, and CPU seconds (user + system), of ``repeat`` runs of ``argv`` (after one
    left out). On a busy machine the CPU time is closer to what a quiet one would take."""
    walls, cpus = [], []
    for i in range(repeat + 1):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, env=ENV)
        wall = time.perf_counter() - start
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if i:
            walls.append(wall)
            cpus.append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
    return walls, cpus


def tui(registry: Path, repeat: int) -> dict[str, list[float]]:
    """The TUI child's marks (seconds) over ``repeat`` starts (after one left out)."""
    marks: dict[str, list[float]] = {}
    for i in range(repeat + 1):
        out = subprocess.run([sys.executable, "-c", TUI, str(registry), repr(time.time())],
                             capture_output=True, text=True, check=True, env=ENV)
        if i:
            for key, value in json.loads(out.stdout.strip().splitlines()[-1]).items():
                marks.setdefault(key, []).append(value)
    return marks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, nargs="+", default=[1, 10_000],
                        help="registry sizes, in runs")
    parser.add_argument("--steps", type=int, default=20, help="logged steps of each run")
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--keep", type=Path, help="build the registries here, and reuse them")
    a = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = a.keep or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        print(f"machine: {machine()}\n")
        rows = []

        def add(what: str, runs: int | str, times: list[float] | tuple[list[float], list[float]],
                target: float | None) -> None:
            walls, cpus = times if isinstance(times, tuple) else (times, None)
            median = statistics.median(walls)
            met = "" if target is None else "yes" if median <= target else "**no**"
            rows.append([what, runs, f"{median:.3f}", f"{max(walls):.3f}",
                         f"{statistics.median(cpus):.3f}" if cpus else "",
                         f"≤ {target} s" if target else "", met])

        add("tuneyard --help", "–", timed([str(TUNEYARD), "--help"], a.repeat),
            TARGETS_S["tuneyard --help"])
        for n in a.runs:
            path = folder / f"registry-{n}-runs-{a.steps}-steps.db"
            if not path.exists():
                start = time.perf_counter()
                seed(path, n, a.steps).db.conn.close()
                print(f"built {path.name}: {n:,} runs × {a.steps} steps × 5 metrics "
                      f"({size(path)}) in {time.perf_counter() - start:.0f} s")
            add("tuneyard runs list", f"{n:,}", timed(
                [str(TUNEYARD), "--registry", str(path), "runs", "list"], a.repeat),
                TARGETS_S["tuneyard runs list"])
            marks = tui(path, a.repeat)
            add("TUI first frame", f"{n:,}", marks["first_frame_s"],
                TARGETS_S["TUI first frame"])
            add("TUI: first runs shown", f"{n:,}", marks["runs_shown_s"], None)
            add("TUI: table full", f"{n:,}", marks["table_full_s"], None)
        print(f"\nfresh processes, median and slowest of {a.repeat} starts:\n")
        print(table(["command", "runs", "median s", "max s", "CPU s (median)", "target", "met"],
                    rows))
        print(f"\nload average at the end: {', '.join(f'{x:.1f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
