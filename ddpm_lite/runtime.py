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
import re
import sys
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path

import torch

DISTRIBUTION = "ddpm-lite"
URL_KEY = "Repository"  # the key of [project.urls] in pyproject.toml that holds the project's location
_FALLBACK_URL = "https://github.com/ddpm-lite/ddpm_lite"  # only when neither pyproject nor metadata can be read


def repo_url() -> str:
    """The project's published location, set in one place: ``[project.urls] Repository`` in pyproject.toml.

    Read from the checkout's pyproject.toml when the package runs from one (so an edit there counts at once, before
    a reinstall refreshes the metadata), else from the installed package's metadata (its ``Project-URL``, as in
    a wheel installed in Colab), else a fallback constant.
    """
    pyproject = Path(__file__).resolve().parent.parent / "pyproject.toml"
    if pyproject.is_file():
        url = _url_from_pyproject(pyproject.read_text(encoding="utf-8"))
        if url:
            return url
    try:
        for entry in metadata.metadata(DISTRIBUTION).get_all("Project-URL") or []:
            key, _, url = entry.partition(",")
            if key.strip() == URL_KEY and url.strip():
                return url.strip().rstrip("/")
    except metadata.PackageNotFoundError:
        pass
    return _FALLBACK_URL


def _url_from_pyproject(text: str) -> str | None:
    """``[project.urls] Repository`` of a pyproject.toml's text, when it is this project's; else None."""
    try:
        import tomllib
    except ImportError:  # Python 3.10: the one line it needs
        if not re.search(r'^name\s*=\s*"ddpm-lite"', text, re.M):
            return None
        match = re.search(r'^\[project\.urls\][^\[]*?^' + URL_KEY + r'\s*=\s*"([^"]+)"', text, re.M | re.S)
        return match.group(1).rstrip("/") if match else None
    try:
        project = tomllib.loads(text).get("project", {})
    except tomllib.TOMLDecodeError:
        return None
    if project.get("name") != DISTRIBUTION:
        return None
    url = project.get("urls", {}).get(URL_KEY)
    return url.rstrip("/") if isinstance(url, str) and url.strip() else None


REPO_URL = repo_url()


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


@contextmanager
def eval_mode(module):
    """``module.eval()`` for the block, then its training mode back (dropout and normalisation as they were);
    anything that is not an ``nn.Module`` (an exact denoiser written as a function) passes through untouched."""
    was_training = isinstance(module, torch.nn.Module) and module.training
    if isinstance(module, torch.nn.Module):
        module.eval()
    try:
        yield module
    finally:
        if was_training:
            module.train()


def pick(full, fast):
    """``fast`` in fast mode, else ``full``: ``steps = pick(2000, 50)``."""
    return fast if fast_mode() else full


def steps_in(steps: int, seconds: float) -> str:
    """The clock line a notebook prints after training: ``"300 steps in 41.2 s (137 ms per step)"``."""
    per_step = f" ({1000 * seconds / steps:.0f} ms per step)" if steps else ""
    return f"{steps:,} steps in {seconds:.1f} s{per_step}"


def strict_mode() -> bool:
    """True when ``DDPM_LITE_STRICT=1``: exercise checkers raise instead of falling back to the reference."""
    return os.environ.get("DDPM_LITE_STRICT", "0") == "1"


def debug_mode() -> bool:
    """True when ``DDPM_LITE_DEBUG=1``: the command line re-raises errors with their traceback."""
    return os.environ.get("DDPM_LITE_DEBUG", "0") == "1"


def data_root() -> Path:
    """``$DDPM_LITE_DATA`` if set, else ``~/.cache/ddpm_lite/data``."""
    return Path(os.environ.get("DDPM_LITE_DATA", Path.home() / ".cache" / "ddpm_lite" / "data"))
