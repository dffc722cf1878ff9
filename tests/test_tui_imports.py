"""The TUI process never imports the training libraries: a fresh process opens the app the
way ``tuneyard tui`` does, visits every screen (plugins loaded, registry polled), and then
looks at ``sys.modules``."""

from __future__ import annotations

import json
import subprocess
import sys

SCRIPT = r"""
import asyncio, json, sys
from tuneyard.tui.command import open_app

async def visit(path):
    app = open_app(path)
    async with app.run_test(size=(100, 30)) as pilot:
        async def settle(check):
            for _ in range(500):
                if check():
                    return
                await pilot.pause(0.02)
            raise SystemExit(f"timed out on {app.screen}")
        await settle(lambda: app.screen.polls > 0)
        app.open_run("run-e")
        await settle(lambda: getattr(app.screen, "run_row", None))
        app.open_compare(["run-a", "run-b"])
        await settle(lambda: app.screen.polls > 0)
        await pilot.press("n")
        await settle(lambda: getattr(app.screen, "plugins", None) is not None)
        await pilot.press("g")
        await settle(lambda: app.screen.polls > 0)

asyncio.run(visit(sys.argv[1]))
heavy = ("torch", "transformers", "peft", "datasets", "accelerate", "pandas")
print(json.dumps(sorted({m.split(".")[0] for m in sys.modules} & set(heavy))))
"""


def test_tui_process_imports_no_training_library(seeded_registry):
    out = subprocess.run([sys.executable, "-c", SCRIPT, str(seeded_registry)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []
