"""Device monitor ``nvidia``: per-GPU utilisation, memory, power and temperature via NVML."""

from __future__ import annotations

from tuneyard.core.components import DeviceMonitor, DeviceSample
from tuneyard.core.hookspecs import hookimpl


class NvidiaMonitor(DeviceMonitor):
    """One sample per NVIDIA GPU (``cuda:0``, ``cuda:1``…), read with nvidia-ml-py.

    Units: utilisation % over the driver's last sample period, memory in bytes, power in watts
    (NVML reports milliwatts), temperature in °C. Without an NVIDIA driver NVML raises; that is
    no error here: the monitor returns an empty list.
    """

    name = "nvidia"
    description = "NVIDIA GPU utilisation, memory, power, temperature (NVML)"

    def sample(self) -> list[DeviceSample]:
        try:
            import pynvml

            pynvml.nvmlInit()
        except Exception:  # no driver, no library: no NVIDIA GPUs to report
            return []
        samples = []
        for i in range(pynvml.nvmlDeviceGetCount()):
            h = pynvml.nvmlDeviceGetHandleByIndex(i)
            mem = pynvml.nvmlDeviceGetMemoryInfo(h)
            samples.append(DeviceSample(
                device=f"cuda:{i}", util_pct=float(pynvml.nvmlDeviceGetUtilizationRates(h).gpu),
                mem_bytes=int(mem.used), mem_total_bytes=int(mem.total),
                power_w=pynvml.nvmlDeviceGetPowerUsage(h) / 1000.0,
                temp_c=float(pynvml.nvmlDeviceGetTemperature(h, pynvml.NVML_TEMPERATURE_GPU)),
            ))
        return samples


@hookimpl
def register_device_monitors(register):
    register(NvidiaMonitor)
