import pytest
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


def test_eval_mode_sets_eval_for_the_block_and_gives_the_mode_back():

    net = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Dropout(0.5))
    with runtime.eval_mode(net) as inside:
        assert inside is net and not net.training and not net[1].training
    assert net.training and net[1].training
    with pytest.raises(RuntimeError), runtime.eval_mode(net):  # an error inside still restores the mode
        raise RuntimeError("boom")
    assert net.training
    net.eval()
    with runtime.eval_mode(net):
        pass
    assert not net.training  # a model in eval mode stays there

    def denoiser(x, t):  # a plain function passes through
        return x

    with runtime.eval_mode(denoiser) as inside:
        assert inside is denoiser
