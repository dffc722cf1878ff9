"""Device monitors: psutil CPU/RAM readings and NVML GPU readings (faked without a driver)."""

from __future__ import annotations

import os
import sys
import types

import psutil

from tuneyard.plugins.monitors.cpu import CPUMonitor
from tuneyard.plugins.monitors.nvidia import NvidiaMonitor


def test_cpu_monitor_reports_this_process_rss():
    [sample] = CPUMonitor(CPUMonitor.Options()).sample()
    rss = psutil.Process(os.getpid()).memory_info().rss
    assert sample.device == "cpu"
    assert abs(sample.mem_bytes - rss) < 64 * 2**20  # same process, read moments apart
    assert sample.mem_total_bytes == psutil.virtual_memory().total
    assert 0.0 <= sample.util_pct <= 100.0


def fake_nvml(fail_init: bool) -> types.ModuleType:
    m = types.ModuleType("pynvml")
    m.NVML_TEMPERATURE_GPU = 0

    def init():
        if fail_init:
            raise RuntimeError("NVML Shared Library Not Found")

    m.nvmlInit = init
    m.nvmlDeviceGetCount = lambda: 2
    m.nvmlDeviceGetHandleByIndex = lambda i: i
    m.nvmlDeviceGetMemoryInfo = lambda h: types.SimpleNamespace(used=(h + 1) * 2**30,
                                                                total=80 * 2**30)
    m.nvmlDeviceGetUtilizationRates = lambda h: types.SimpleNamespace(gpu=50 + h)
    m.nvmlDeviceGetPowerUsage = lambda h: 250_000 + h  # milliwatts
    m.nvmlDeviceGetTemperature = lambda h, kind: 60 + h
    return m


def test_nvidia_monitor_without_driver_reports_nothing(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", fake_nvml(fail_init=True))
    assert NvidiaMonitor(NvidiaMonitor.Options()).sample() == []


def test_nvidia_monitor_converts_units_per_gpu(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", fake_nvml(fail_init=False))
    first, second = NvidiaMonitor(NvidiaMonitor.Options()).sample()
    assert (first.device, first.util_pct, first.mem_bytes, first.power_w, first.temp_c) == (
        "cuda:0", 50.0, 2**30, 250.0, 60.0)
    assert (second.device, second.mem_bytes, second.mem_total_bytes, second.power_w) == (
        "cuda:1", 2 * 2**30, 80 * 2**30, 250.001)
