"""The TUI in a real terminal: tmux runs a bare ``tuneyard``, keys are sent, and
``capture-pane`` shows the runs table and then the live monitor."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None,
                                reason="needs tmux (make system-deps installs it)")


class Tmux:
    """One tmux server on its own socket, with one 100×30 session."""

    def __init__(self, name: str) -> None:
        self.base = ["tmux", "-L", name]

    def start(self, command: str, env: dict[str, str]) -> None:
        subprocess.run([*self.base, "-f", "/dev/null", "new-session", "-d", "-s", "t",
                        "-x", "100", "-y", "30", command], check=True, env=env)

    def keys(self, *keys: str) -> None:
        subprocess.run([*self.base, "send-keys", "-t", "t", *keys], check=True)

    def screen(self) -> str:
        """The visible pane ("" once the session ended with its command)."""
        return subprocess.run([*self.base, "capture-pane", "-p", "-t", "t"],
                              capture_output=True, text=True).stdout

    def wait_for(self, *texts: str, timeout_s: float = 30) -> str:
        deadline = time.monotonic() + timeout_s
        while True:
            screen = self.screen()
            if all(t in screen for t in texts):
                return screen
            if time.monotonic() > deadline:
                raise AssertionError(f"{texts} not on screen after {timeout_s} s:\n{screen}")
            time.sleep(0.2)

    def kill(self) -> None:
        subprocess.run([*self.base, "kill-server"], capture_output=True)


@pytest.fixture
def tmux():
    t = Tmux(f"tuneyard-test-{os.getpid()}")
    yield t
    t.kill()


def test_bare_tuneyard_opens_the_tui_in_a_terminal(tmux, seeded_registry):
    tuneyard = Path(sys.executable).parent / "tuneyard"
    env = {**os.environ, "TERM": "xterm-256color", "TUNEYARD_REGISTRY": str(seeded_registry)}
    tmux.start(str(tuneyard), env)
    screen = tmux.wait_for("smollm2-wordnet-lora", "wordnet-lora-long", "completed")
    assert "scratch-shakespeare" in screen and "failed" in screen
    tmux.keys("Enter")  # the cursor starts on the newest run: wordnet-lora-long (running)
    screen = tmux.wait_for("run-e", "25/100")
    assert "wordnet-lora-long" in screen
    tmux.keys("Escape")
    tmux.wait_for("smollm2-wordnet-lora")
    tmux.keys("q")
    deadline = time.monotonic() + 10
    while "smollm2-wordnet-lora" in tmux.screen() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert "smollm2-wordnet-lora" not in tmux.screen()
