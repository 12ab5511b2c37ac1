import torch

from ddpm_lite import runtime


def test_fast_mode_reads_the_environment(monkeypatch):
    monkeypatch.setenv("DDPM_LITE_FAST", "1")
    assert runtime.fast_mode() and runtime.pick(100, 5) == 5
    monkeypatch.setenv("DDPM_LITE_FAST", "0")
    assert not runtime.fast_mode() and runtime.pick(100, 5) == 100


def test_device_override(monkeypatch):
    monkeypatch.setenv("DDPM_LITE_DEVICE", "cpu")
    assert runtime.default_device() == torch.device("cpu")
    monkeypatch.delenv("DDPM_LITE_DEVICE")
    assert runtime.default_device().type in ("cpu", "cuda", "mps")
