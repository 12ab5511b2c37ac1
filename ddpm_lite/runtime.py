"""Where the code runs: the device, fast mode, Colab. The one place the environment is read.

- ``DDPM_LITE_FAST=1`` makes notebooks and scripts run a small version of their work (CI sets it);
  learners get the full run.
- ``DDPM_LITE_DEVICE`` overrides the device picked by :func:`default_device` (``cpu``, ``cuda``, ``mps``).
- ``DDPM_LITE_STRICT=1`` makes exercise checkers raise on a wrong answer (CI, on the solution notebooks).
- ``DDPM_LITE_DATA`` is where MNIST, Fashion-MNIST and CIFAR-10 are looked for (default ``~/.cache/ddpm_lite/data``).
- ``DDPM_LITE_DEBUG=1`` makes the command line show full tracebacks.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import torch

REPO_URL = "https://github.com/ddpm-lite/ddpm_lite"


def fast_mode() -> bool:
    """True when ``DDPM_LITE_FAST=1``: run small versions of long work."""
    return os.environ.get("DDPM_LITE_FAST", "0") == "1"


def in_colab() -> bool:
    return "google.colab" in sys.modules


def default_device() -> torch.device:
    """``DDPM_LITE_DEVICE`` if set, else CUDA, else Apple's MPS, else the CPU."""
    name = os.environ.get("DDPM_LITE_DEVICE")
    if name:
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


class DeviceUnavailableError(ValueError):
    """The requested device does not exist or is not usable on this machine."""


def available_devices() -> list[str]:
    """The devices this machine can run on: ``cpu``, then ``cuda:0``... and ``mps`` where present."""
    found = ["cpu"]
    if torch.cuda.is_available():
        found += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        found.append("mps")
    return found


def check_device(device: str | torch.device | None = None, option: str = "device") -> torch.device:
    """``device`` as a :class:`torch.device` once it is known to be usable here (``None``: :func:`default_device`,
    which reads ``DDPM_LITE_DEVICE``). Raises :class:`DeviceUnavailableError` with one line saying what is
    available instead of torch's error (or a crash much later, when the first tensor moves there); ``option``
    names the setting in that line (the CLI passes "--device")."""
    origin = option
    if device is None:
        if not os.environ.get("DDPM_LITE_DEVICE"):
            return default_device()
        device, origin = os.environ["DDPM_LITE_DEVICE"], "DDPM_LITE_DEVICE"
    available = available_devices()
    here = f"this machine has: {', '.join(available)}"
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise DeviceUnavailableError(f"{origin} {device!s}: unknown device name; {here}") from None
    if dev.type == "cpu":
        return dev
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            why = "this torch build has no CUDA" if torch.version.cuda is None else "no CUDA GPU or driver was found"
            raise DeviceUnavailableError(f"{origin} {device!s} is not available ({why}); {here}")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise DeviceUnavailableError(f"{origin} {device!s} is not available (there are "
                                         f"{torch.cuda.device_count()} CUDA devices); {here}")
        return dev
    if dev.type == "mps":
        if "mps" not in available:
            raise DeviceUnavailableError(f"{origin} {device!s} is not available (MPS needs an Apple-silicon Mac "
                                         f"and a torch built for it); {here}")
        return dev
    backend = getattr(torch, dev.type, None)
    is_available = getattr(backend, "is_available", None)
    if callable(is_available) and is_available():
        return dev
    raise DeviceUnavailableError(f"{origin} {device!s} is not available; {here}")


def model_device(model) -> torch.device:
    """The device of a model's first parameter (or buffer); the CPU for a module without tensors or a plain
    callable (an exact denoiser written as a function)."""
    for tensors in ("parameters", "buffers"):
        method = getattr(model, tensors, None)
        if callable(method):
            for tensor in method():
                return tensor.device
    return torch.device("cpu")


def pick(full, fast):
    """``fast`` in fast mode, else ``full``: ``steps = pick(2000, 50)``."""
    return fast if fast_mode() else full


def strict_mode() -> bool:
    """True when ``DDPM_LITE_STRICT=1``: exercise checkers raise instead of falling back to the reference."""
    return os.environ.get("DDPM_LITE_STRICT", "0") == "1"


def debug_mode() -> bool:
    """True when ``DDPM_LITE_DEBUG=1``: the command line re-raises errors with their traceback."""
    return os.environ.get("DDPM_LITE_DEBUG", "0") == "1"


def data_root() -> Path:
    """``$DDPM_LITE_DATA`` if set, else ``~/.cache/ddpm_lite/data``."""
    return Path(os.environ.get("DDPM_LITE_DATA", Path.home() / ".cache" / "ddpm_lite" / "data"))
