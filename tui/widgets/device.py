"""A run's device telemetry: each GPU's utilisation, memory, power and temperature, then the
CPU and the run process's memory (the ``system_metrics`` rows the device monitors write)."""

from __future__ import annotations

from typing import Any

from rich.console import Group
from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import Static

from tuneyard.tui.format import size, when

NO_GPU = "No NVIDIA GPU reported (no driver or CPU-only run)"
BAR_WIDTH = 12  # cells of a utilisation bar


def device_order(device: str) -> tuple[str, int]:
    """Sort key: ``cuda:2`` before ``cuda:10``."""
    name, _, index = device.partition(":")
    return name, int(index) if index.isdigit() else -1


def meter(percent: float) -> Text:
    """A bar and its percentage, e.g. ``━━━━━━━━━━━━ 91%`` (the unfilled part dim)."""
    filled = round(BAR_WIDTH * min(max(percent, 0.0), 100.0) / 100)
    return Text.assemble(("━" * filled, "cyan"),
                         ("━" * (BAR_WIDTH - filled), "bright_black"), f" {percent:3.0f}%")


def gpu_table(samples: list[dict[str, Any]]) -> Table:
    """One row per accelerator sample: util, memory used / total, power (W), temperature (°C)."""
    table = Table(box=None, padding=(0, 2, 0, 0), header_style="bold")
    for column in ("device", "util", "memory", "power", "temp"):
        table.add_column(column, no_wrap=True)
    for s in samples:
        used, total = s.get("mem_bytes"), s.get("mem_total_bytes")
        table.add_row(
            s["device"],
            meter(s["util_pct"]) if s.get("util_pct") is not None else "",
            f"{size(used)} / {size(total)} ({used / total:.0%})" if used is not None and total
            else size(used),
            "" if s.get("power_w") is None else f"{s['power_w']:.0f} W",
            "" if s.get("temp_c") is None else f"{s['temp_c']:.0f} °C",
        )
    return table


def cpu_line(sample: dict[str, Any] | None) -> str:
    """``CPU 12.5% · run process RSS 3.0 GiB of 24.0 GiB RAM``."""
    if sample is None:
        return "No CPU sample yet."
    ram = f" of {size(sample['mem_total_bytes'])} RAM" if sample.get("mem_total_bytes") else ""
    return (f"CPU {sample['util_pct']:.1f}% · run process RSS {size(sample['mem_bytes'])}"
            f"{ram}")


class DevicePanel(Vertical):
    """The latest sample of each device of one run; :meth:`show` replaces them."""

    DEFAULT_CSS = """
    DevicePanel { height: auto; }
    DevicePanel > Static { height: auto; margin-bottom: 1; }
    DevicePanel #sampled { color: $text-muted; }
    """

    def compose(self) -> ComposeResult:
        yield Static(Text(NO_GPU, style="dim"), id="gpus")
        yield Static(cpu_line(None), id="cpu")
        yield Static(id="sampled")

    def show(self, samples: dict[str, dict[str, Any]]) -> None:
        """Render the latest sample per device (device name → ``system_metrics`` row)."""
        accelerators = [samples[d] for d in sorted(samples, key=device_order) if d != "cpu"]
        has_cuda = any(s["device"].startswith("cuda:") for s in accelerators)
        parts: list[Any] = [] if has_cuda else [Text(NO_GPU, style="dim")]
        if accelerators:
            parts.append(gpu_table(accelerators))
        self.query_one("#gpus", Static).update(Group(*parts))
        self.query_one("#cpu", Static).update(cpu_line(samples.get("cpu")))
        latest = max((s["at"] for s in samples.values()), default=None)
        self.query_one("#sampled", Static).update(
            f"latest sample {when(latest)} UTC" if latest else "")
