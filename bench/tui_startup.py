"""Benchmark: TUI startup to first frame on a registry with 1,000 runs (issue #3: < 1 s).

    python bench/tui_startup.py [--runs 1000] [--repeat 5]

Each repeat starts a fresh Python process that does what ``tuneyard tui`` does (import the CLI,
load the plugins, which add the ``tui`` command, then ``tuneyard.tui.command.open_app``) and
runs the app headless. Three times are measured from just before the process is started (so
interpreter start-up and imports count): ``first frame`` (the Runs screen is painted), ``runs
shown`` (the first registry poll is in the table: its first rows) and ``table full`` (all the
runs are rows of the table; after the first 100 they are added in chunks between frames).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHILD = r"""
import json, sys, time
born = float(sys.argv[3])  # the parent's clock just before it started this process
from tuneyard.core.cli import cli  # what `tuneyard tui` does before the TUI: the CLI, and
from tuneyard.core.plugins import get_plugins  # the plugins that add commands (the TUI's)
get_plugins().pm.hook.register_commands(cli=cli)
from tuneyard.tui.command import open_app
app = open_app(sys.argv[1])
marks = {}
def check():
    screen = app.screen
    if getattr(screen, "polls", 0):
        marks.setdefault("runs_shown_s", time.time() - born)
        table = screen.query_one("DataTable")
        if table.row_count == int(sys.argv[2]):
            marks["table_full_s"] = time.time() - born
            app.exit()
def mounted():
    marks["first_frame_s"] = time.time() - born
    app.set_interval(0.005, check)
app.call_after_refresh(mounted)
app.run(headless=True, size=(120, 40))
print(json.dumps(marks))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=5)
    a = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).parent))
    from seed import seed, size

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "registry.db"
        t = time.perf_counter()
        seed(path, a.runs)
        print(f"seeded {a.runs} runs ({size(path)}) in {time.perf_counter() - t:.1f} s")
        results = []
        for _ in range(a.repeat):
            out = subprocess.run(
                [sys.executable, "-c", CHILD, str(path), str(a.runs), repr(time.time())],
                capture_output=True, text=True, check=True)
            results.append(json.loads(out.stdout.strip().splitlines()[-1]))
        for key in ("first_frame_s", "runs_shown_s", "table_full_s"):
            values = [r[key] for r in results]
            print(f"{key}: median {statistics.median(values):.3f} s, "
                  f"max {max(values):.3f} s over {a.repeat} starts")


if __name__ == "__main__":
    main()
