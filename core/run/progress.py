"""How a run reports what it is doing: phases and steps, to ``run.log`` and the CLI's bar."""

from __future__ import annotations

import logging
import os
import time
import warnings
from typing import Protocol

log = logging.getLogger("tuneyard.core.run")

#: seconds between the step lines of ``run.log``
LOG_EVERY_S = 1.0


class Progress(Protocol):
    """Where a run reports progress (the CLI draws it with rich; detached runs log it)."""

    def phase(self, text: str) -> None: ...
    def step(self, step: int, total: int, metrics: dict[str, float]) -> None: ...


class LogProgress:
    """Progress as log lines (every run writes them to ``<output_dir>/run.log``): each phase,
    and a step at most every :data:`LOG_EVERY_S` seconds, plus the first and the last (a
    line per step of a small model would cost ~2% of its step; the registry has every
    step)."""

    def __init__(self) -> None:
        self.logged_at = -LOG_EVERY_S

    def phase(self, text: str) -> None:
        log.info(text)

    def step(self, step: int, total: int, metrics: dict[str, float]) -> None:
        t = time.monotonic()
        if t - self.logged_at >= LOG_EVERY_S or step == total:
            self.logged_at = t
            log.info("step %d/%d %s", step, total,
                     " ".join(f"{k}={v:.4g}" for k, v in metrics.items()))


class Fanout:
    """Report progress to several places (the run's log, and the CLI's progress bar)."""

    def __init__(self, *targets: Progress) -> None:
        self.targets = targets

    def phase(self, text: str) -> None:
        for t in self.targets:
            t.phase(text)

    def step(self, step: int, total: int, metrics: dict[str, float]) -> None:
        for t in self.targets:
            t.step(step, total, metrics)


def quiet_libraries() -> None:
    """Silence the libraries' own progress bars and info logs: tuneyard reports progress."""
    import datasets
    import transformers
    from huggingface_hub.utils import disable_progress_bars

    os.environ.setdefault("TQDM_DISABLE", "1")  # e.g. transformers' GGUF loader uses tqdm
    disable_progress_bars()
    datasets.disable_progress_bars()
    warnings.filterwarnings("ignore", category=FutureWarning, module="transformers")
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
