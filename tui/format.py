"""Text formatting shared by the screens: status colours, model names, durations, sizes,
numbers."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import PurePath
from typing import Any

from rich.text import Text

STATUS_STYLE = {"queued": "white", "running": "bold cyan", "completed": "green",
                "failed": "bold red", "stopped": "yellow", "interrupted": "magenta"}


def status_text(status: str | None) -> Text:
    return Text(status or "", style=STATUS_STYLE.get(status or "", ""))


def model_name(run: dict[str, Any]) -> str:
    """The run's base model, else its spec's model path basename, else the provider."""
    if run.get("base_model"):
        return run["base_model"]
    model = (run.get("spec") or {}).get("model") or {}
    path = (model.get("options") or {}).get("path")
    return PurePath(str(path)).name if path else model.get("provider", "")


def parse_time(iso: str | None) -> datetime | None:
    """An ISO-8601 time from the registry (UTC), or None."""
    if not iso:
        return None
    t = datetime.fromisoformat(iso)
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def duration_s(run: dict, now: datetime) -> float | None:
    """Seconds from ``started_at`` to ``ended_at`` (or to ``now`` while it runs)."""
    start = parse_time(run.get("started_at"))
    end = parse_time(run.get("ended_at")) or (now if run.get("status") == "running" else None)
    return (end - start).total_seconds() if start and end else None


def hms(seconds: float | None) -> str:
    """``1:02:03`` / ``2:03`` for a duration in seconds; ``""`` for None."""
    if seconds is None:
        return ""
    s = int(round(seconds))
    h, m = divmod(s // 60, 60)
    return f"{h}:{m:02d}:{s % 60:02d}" if h else f"{m}:{s % 60:02d}"


def when(iso: str | None) -> str:
    """A registry time as ``YYYY-MM-DD HH:MM`` UTC."""
    t = parse_time(iso)
    return t.strftime("%Y-%m-%d %H:%M") if t else ""


def num(value: float | None, digits: int = 4) -> str:
    """A metric value with ``digits`` significant digits; ``""`` for None."""
    return "" if value is None else f"{value:.{digits}g}"


def size(n_bytes: float | None) -> str:
    """Bytes in binary units (``3.2 GiB``)."""
    if n_bytes is None:
        return ""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n_bytes) < 1024 or unit == "TiB":
            return f"{n_bytes:.0f} {unit}" if unit == "B" else f"{n_bytes:.1f} {unit}"
        n_bytes /= 1024
    return ""
