"""Device monitor ``cpu``: CPU utilisation and this process's memory, through psutil."""

from __future__ import annotations

from tuneyard.core.components import DeviceMonitor, DeviceSample
from tuneyard.core.hookspecs import hookimpl


class CPUMonitor(DeviceMonitor):
    """One sample named ``cpu``: system-wide CPU % since the last call (psutil's
    ``cpu_percent(interval=None)``), this process's RSS in bytes, and total RAM in bytes."""

    name = "cpu"
    description = "CPU utilisation and process RSS (psutil)"

    def sample(self) -> list[DeviceSample]:
        import psutil

        return [DeviceSample(
            device="cpu", util_pct=psutil.cpu_percent(interval=None),
            mem_bytes=psutil.Process().memory_info().rss,
            mem_total_bytes=psutil.virtual_memory().total,
        )]


@hookimpl
def register_device_monitors(register):
    register(CPUMonitor)
