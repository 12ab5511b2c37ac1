"""One line describing the machine a benchmark ran on: date, CPU, cores, torch threads, versions."""
from __future__ import annotations

import datetime
import os
import platform
from pathlib import Path

import torch


def describe() -> str:
    cpu = platform.processor() or "unknown CPU"
    if Path("/proc/cpuinfo").exists():
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    gpu = f", GPU {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ", no GPU"
    return (f"{datetime.date.today()}: {cpu}, {os.cpu_count()} cores{gpu}, {torch.get_num_threads()} torch "
            f"thread(s), torch {torch.__version__}, Python {platform.python_version()}, {platform.system()}")
