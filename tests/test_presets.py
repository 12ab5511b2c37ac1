"""The GPU and CPU presets, the choice the notebooks make between them, and the Trainer's speed options (mixed
precision, channels_last, pinned memory, torch.compile).

The tests marked ``cuda`` need a CUDA GPU and are skipped without one; bench/gpu_check.py runs them on a device
(``pytest -m cuda``). The others run on the CPU: the CUDA decisions are checked with the device's properties
patched (a T4 is compute capability 7.5, an A100 8.0, an H100/H200 9.0).
"""
import math
import sys
from pathlib import Path
from urllib.error import URLError

import pytest
import torch
import torchvision.datasets
from test_data import cifar_root, write_mnist  # noqa: F401 (cifar_root is a fixture)

from ddpm_lite import configs
from ddpm_lite.configs import (
    CPU_PRESETS,
    GPU_PRESETS,
    ConfigError,
    ExperimentConfig,
    choose_preset,
    resolve_channels_last,
    resolve_precision,
)
from ddpm_lite.data import IMAGE_DATASETS, load_dataset
from ddpm_lite.models import UNetConfig
from ddpm_lite.sampling import generate
from ddpm_lite.train import Trainer, _Source

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import gpu_check  # noqa: E402 (bench/gpu_check.py: the synthetic data of a preset's shape)

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(),
                                reason="needs a CUDA GPU (bench/gpu_check.py runs these on one)")
TINY = {"model.model_channels": 8, "model.num_head_channels": 8, "batch_size": 4}


def params(config: ExperimentConfig) -> int:
    with torch.device("meta"):
        return sum(p.numel() for p in config.build_model().parameters())


@pytest.fixture
def as_gpu(monkeypatch):
    """Pretend a CUDA GPU of the given compute capability (and name) is there, for the decisions only."""

    def make(capability=(7, 5), name="Tesla T4"):
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
        monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: name)
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)
        monkeypatch.setattr(configs.torch.version, "hip", None)

    return make


# --------------------------------------------------------------------------- the presets


def test_preset_lists():
    assert GPU_PRESETS == ("mnist", "fashion_mnist", "cifar10")
    assert CPU_PRESETS == ("digits", "digits_fast", "digits16", "digits28")
    assert set(GPU_PRESETS + CPU_PRESETS) <= set(configs.preset_names())
    assert configs.preset_names()[:4] == ["digits", "digits_cond", "digits_classifier", "toy"]


@pytest.mark.parametrize("name, data, unet, batch, steps, millions", [
    ("mnist", "mnist", "mnist28", 256, 3200, 1.92),
    ("fashion_mnist", "fashion_mnist", "mnist28", 256, 3200, 1.92),
    ("cifar10", "cifar10", "cifar10_small", 256, 2500, 2.69),
    ("digits16", "digits16", "digits16", 128, 2000, 1.31),
    ("digits28", "digits28", "digits28", 64, 2000, 0.35),
])
def test_preset_contents(name, data, unet, batch, steps, millions):
    """The sizes docs/gpu.md states: the digits recipe (Improved DDPM's cosine schedule, learned variances, hybrid
    loss) with the U-Net sized for the data."""
    cfg = ExperimentConfig.preset(name)
    digits = ExperimentConfig.preset("digits")
    assert (cfg.data, cfg.batch_size, cfg.steps) == (data, batch, steps)
    assert cfg.diffusion == digits.diffusion and cfg.model.learn_sigma
    assert cfg.model == UNetConfig.preset(unet, learn_sigma=True)
    assert cfg.sample_shape == configs.DATA_SHAPES[data]
    assert params(cfg) / 1e6 == pytest.approx(millions, abs=0.01)
    assert cfg.mixed_precision == "auto" and cfg.channels_last is None and cfg.torch_compile is False


def test_digits_fast_is_the_digits_recipe_tuned_for_minutes():
    """digits_fast differs from digits only in what bench/time_to_quality.py tuned (docs/benchmarks.md)."""
    fast, digits = ExperimentConfig.preset("digits_fast"), ExperimentConfig.preset("digits")
    changed = {k for k, v in fast.to_dict().items() if v != digits.to_dict()[k]}
    assert changed == {"name", "model", "lr", "lr_warmup", "min_snr_gamma"}
    assert fast.model == UNetConfig.preset("digits8", learn_sigma=True, dropout=0.0)
    assert (fast.lr, fast.lr_warmup, fast.min_snr_gamma) == (1e-3, 100, 5.0)
    assert fast.diffusion == digits.diffusion and fast.data == "digits"
    assert "digits_fast" in str(choose_preset("mnist", "digits_fast", device="cpu"))


def test_with_data_sizes_cifar10_for_minutes():
    cfg = ExperimentConfig.preset("digits").with_data("cifar10")
    assert cfg.model == UNetConfig.preset("cifar10_small", learn_sigma=True)
    assert UNetConfig.preset("cifar10").model_channels == 128  # Improved DDPM's model stays available


def test_digits28_is_the_digits_at_mnist_size():
    data = load_dataset("digits28")
    assert "digits28" in IMAGE_DATASETS
    assert data.images.shape == (1437, 1, 28, 28) and data.image_shape == (1, 28, 28)
    assert data.images.min() >= -1 and data.images.max() <= 1
    assert torch.equal(data.images, load_dataset("digits", image_size=28).images)
    assert torch.equal(data.labels, load_dataset("digits").labels)


def test_speed_options_round_trip_and_are_checked():
    cfg = ExperimentConfig.preset("mnist").replace(channels_last=True, torch_compile=True)
    assert ExperimentConfig.from_dict(cfg.to_dict()) == cfg
    assert cfg.override(["channels_last=null"]).channels_last is None
    with pytest.raises(ConfigError, match="channels_last must be true or false"):
        cfg.override(["channels_last=yes"])
    with pytest.raises(ConfigError, match="torch_compile must be true or false"):
        cfg.override(["torch_compile=1"])
    old = {k: v for k, v in cfg.to_dict().items() if k not in ("channels_last", "torch_compile")}
    assert ExperimentConfig.from_dict(old).channels_last is None  # checkpoints written before these fields


def test_warmup_and_min_snr_fields_are_checked():
    cfg = ExperimentConfig.preset("digits")
    assert (cfg.lr_warmup, cfg.min_snr_gamma) == (0, None)
    changed = cfg.override(["lr_warmup=1e2", "min_snr_gamma=5"])
    assert (changed.lr_warmup, changed.min_snr_gamma) == (100, 5.0) and type(changed.min_snr_gamma) is float
    assert ExperimentConfig.from_dict(changed.to_dict()) == changed
    old = {k: v for k, v in cfg.to_dict().items() if k not in ("lr_warmup", "min_snr_gamma")}
    assert ExperimentConfig.from_dict(old) == cfg  # checkpoints written before these fields
    refused = {
        "lr_warmup=-1": "lr_warmup must be a number of steps >= 0",
        "lr_warmup=2.5": "lr_warmup must be an integer, got 2.5",
        "lr_warmup=true": "lr_warmup must be an integer",
        "min_snr_gamma=0": "min_snr_gamma must be positive or null",
        "min_snr_gamma=abc": "min_snr_gamma must be a finite number or null",
        "min_snr_gamma=NaN": "min_snr_gamma must be a finite number or null",
    }
    for change, message in refused.items():
        with pytest.raises(ConfigError, match=message):
            cfg.override([change])
    with pytest.raises(ConfigError, match="loss_type 'kl' has none"):
        cfg.override(["diffusion.loss_type=kl", "min_snr_gamma=5"])
    with pytest.raises(ConfigError, match="mean_type 'eps' or 'x0', not 'xprev'"):
        cfg.override(["diffusion.mean_type=xprev", "min_snr_gamma=5"])
    with pytest.raises(ConfigError, match="classifier's cross-entropy has none"):
        ExperimentConfig.preset("digits_classifier", min_snr_gamma=5.0)


# --------------------------------------------------------------------------- the CUDA decisions


def test_precision_on_the_cpu():
    assert resolve_precision("auto", "cpu") == "fp32"
    assert resolve_precision("bf16", "cpu") == "bf16"
    with pytest.raises(ConfigError, match="fp16 mixed precision needs CUDA"):
        resolve_precision("fp16", "cpu")
    with pytest.raises(ConfigError, match="unknown mixed_precision 'half'"):
        resolve_precision("half", "cpu")


@pytest.mark.parametrize("capability, expected", [((7, 5), "fp16"), ((7, 0), "fp16"), ((8, 0), "bf16"),
                                                  ((8, 9), "bf16"), ((9, 0), "bf16")])
def test_auto_precision_is_fp16_on_a_t4_even_though_torch_says_bf16_is_supported(as_gpu, capability, expected):
    """torch.cuda.is_bf16_supported() is True on a T4 (bf16 emulated, slowly): auto must not believe it."""
    as_gpu(capability)
    assert torch.cuda.is_bf16_supported()
    assert resolve_precision("auto", "cuda") == expected
    assert resolve_precision("fp32", "cuda") == "fp32" and resolve_precision("fp16", "cuda") == "fp16"


def test_channels_last_rule(as_gpu):
    assert resolve_channels_last(None, "cpu", "fp32") is False
    assert resolve_channels_last(True, "cpu", "fp32") is True
    as_gpu((7, 5))
    assert resolve_channels_last(None, "cuda", "fp16") is True
    assert resolve_channels_last(None, "cuda", "fp32") is False  # no tensor cores in fp32 on a T4
    assert resolve_channels_last(False, "cuda", "bf16") is False
    as_gpu((6, 1), "Tesla P100")
    assert resolve_channels_last(None, "cuda", "fp16") is False


# --------------------------------------------------------------------------- the notebooks' choice


def test_choose_preset_on_a_cpu_takes_the_offline_digits():
    choice = choose_preset("mnist", device="cpu")
    assert not choice.on_gpu and choice.device.type == "cpu"
    assert choice.config == ExperimentConfig.preset("digits") and len(choice.data) == 1437
    assert str(choice).startswith("CPU path: no CUDA GPU here") and "T4 GPU" in str(choice)
    assert "digits16" in str(choose_preset("cifar10", "digits16", device="cpu"))


def test_choose_preset_refuses_unknown_names():
    with pytest.raises(ConfigError, match="'imagenet' is not one of"):
        choose_preset("imagenet", device="cpu")
    with pytest.raises(ConfigError, match="'mnist' is not one of"):
        choose_preset("mnist", cpu="mnist", device="cpu")


def _pretend_cuda(monkeypatch, as_gpu, capability=(7, 5), name="Tesla T4"):
    as_gpu(capability, name)
    monkeypatch.setattr("ddpm_lite.runtime.check_device", lambda device=None: torch.device("cuda"))


def test_choose_preset_on_a_gpu_with_the_data(tmp_path, monkeypatch, as_gpu):
    write_mnist(tmp_path / "MNIST" / "raw")
    _pretend_cuda(monkeypatch, as_gpu)
    choice = choose_preset("mnist", root=tmp_path)
    assert choice.on_gpu and choice.device.type == "cuda" and choice.config == ExperimentConfig.preset("mnist")
    assert len(choice.data) == 5 and choice.data.image_shape == (1, 28, 28)
    assert str(choice) == ("GPU path: Tesla T4, the 'mnist' preset on MNIST (5 training images; 28x28 U-Net with "
                           "1.9M parameters; 3200 steps of 256 images; fp16 autocast with a gradient scaler, "
                           "channels_last)")
    _pretend_cuda(monkeypatch, as_gpu, (9, 0), "NVIDIA H200")
    assert "NVIDIA H200" in str(choose_preset("mnist", root=tmp_path)) and "bf16 autocast, channels_last" in \
        str(choose_preset("mnist", root=tmp_path))


def test_choose_preset_downloads_with_torchvision_then_trains(tmp_path, monkeypatch, as_gpu):
    calls = []

    def fake_download(self):  # torchvision's own download (with its tqdm progress bar) is what runs in Colab
        calls.append(self.raw_folder)
        write_mnist(tmp_path / "FashionMNIST" / "raw")

    monkeypatch.setattr(torchvision.datasets.FashionMNIST, "download", fake_download)
    _pretend_cuda(monkeypatch, as_gpu)
    choice = choose_preset("fashion_mnist", root=tmp_path)
    assert calls == [str(tmp_path / "FashionMNIST" / "raw")] and choice.on_gpu
    assert "on Fashion-MNIST (5 training images" in str(choice)


def test_choose_preset_offline_falls_back_to_the_digits_on_the_gpu(tmp_path, monkeypatch, as_gpu):
    def offline(self):
        raise URLError(OSError(-3, "Temporary failure in name resolution"))

    monkeypatch.setattr(torchvision.datasets.CIFAR10, "download", offline)
    _pretend_cuda(monkeypatch, as_gpu)
    choice = choose_preset("cifar10", root=tmp_path)
    assert not choice.on_gpu and choice.device.type == "cuda"
    assert choice.config == ExperimentConfig.preset("digits") and len(choice.data) == 1437
    reason = str(choice)
    assert reason.startswith("GPU (Tesla T4), but could not download 'cifar10' (Temporary failure in name "
                             "resolution; is this machine offline?)")
    assert reason.endswith("so the 'digits' preset on the embedded 8x8 digits, on the GPU") and "\n" not in reason
    choice = choose_preset("cifar10", root=tmp_path, download=False)
    assert "dataset 'cifar10' not found in" in str(choice) and not choice.on_gpu


# --------------------------------------------------------------------------- the presets train (on the CPU here)


def test_mnist_preset_trains_from_torchvision_files(tmp_path):
    write_mnist(tmp_path / "MNIST" / "raw")
    config = ExperimentConfig.preset("mnist").override(TINY)
    trainer = Trainer.from_config(config, device="cpu", root=tmp_path, progress=False)
    history = trainer.train(2)
    assert trainer.source.sample_shape == (1, 28, 28) and all(math.isfinite(v) for v in history["loss"])
    assert trainer.sample(2, steps=2).shape == (2, 1, 28, 28)


def test_cifar10_preset_trains_from_torchvision_files(cifar_root):  # noqa: F811
    root, _ = cifar_root
    config = ExperimentConfig.preset("cifar10").override(TINY)
    trainer = Trainer.from_config(config, device="cpu", root=root, progress=False)
    assert trainer.source.sample_shape == (3, 32, 32)
    assert all(math.isfinite(v) for v in trainer.train(2)["loss"])


@pytest.mark.parametrize("name", ["digits16", "digits28"])
def test_cpu_presets_train(name):
    trainer = Trainer.from_config(ExperimentConfig.preset(name).override(TINY), device="cpu", progress=False)
    assert all(math.isfinite(v) for v in trainer.train(2)["loss"])


def test_channels_last_on_the_cpu_computes_the_same_step():
    config = ExperimentConfig.preset("cifar10").override(TINY)  # 3 channels: NCHW and NHWC strides differ
    data = gpu_check.synthetic_data(config, n=16)
    losses = {}
    for layout in (False, True):
        trainer = Trainer.from_config(config.replace(channels_last=layout), data, device="cpu", progress=False)
        assert (trainer.memory_format is torch.channels_last) is layout
        conv = next(p for p in trainer.model.parameters() if p.ndim == 4 and p.shape[1] > 1)
        assert conv.is_contiguous(memory_format=torch.channels_last) is layout
        x, _ = trainer._batch(0)
        assert x.is_contiguous(memory_format=torch.channels_last) is layout
        losses[layout] = trainer.train(2)["loss"]
    assert losses[True] == pytest.approx(losses[False], rel=1e-4)


def test_torch_compile_wraps_only_the_training_forward():
    config = ExperimentConfig.preset("digits").override({"model.model_channels": 8, "model.num_head_channels": 8})
    trainer = Trainer.from_config(config.replace(torch_compile=True), device="cpu", progress=False)
    assert type(trainer._net).__name__ == "OptimizedModule" and trainer._net._orig_mod is trainer.model
    assert not any(k.startswith("_orig_mod") for k in trainer.state_dict()["model"])
    assert trainer.config.torch_compile and trainer.precision == "fp32"


def test_data_stays_where_it_is_on_the_cpu():
    source = _Source(load_dataset("digits"), torch.device("cpu"))
    assert not source.pinned and source.storage.type == "cpu"


# --------------------------------------------------------------------------- on a CUDA GPU


def _cuda_trainer(name="mnist", batch=64, dropout=None, **options):
    config = ExperimentConfig.preset(name).replace(batch_size=batch, **options)
    if dropout is not None:  # 0: two runs compare step by step (dropout draws from the global RNG)
        config = config.override({"model.dropout": dropout})
    return Trainer.from_config(config, gpu_check.synthetic_data(config), device="cuda", progress=False)


@pytest.mark.cuda
@needs_cuda
@pytest.mark.parametrize("mode", ["auto", "fp32", "bf16", "fp16"])
def test_cuda_precisions_train(mode):
    trainer = _cuda_trainer(mixed_precision=mode)
    expected = resolve_precision(mode, "cuda")
    major = torch.cuda.get_device_capability()[0]
    assert expected == {"auto": "bf16" if major >= 8 else "fp16"}.get(mode, mode)
    assert trainer.precision == expected and (trainer.scaler is not None) == (expected == "fp16")
    assert trainer.memory_format is (torch.contiguous_format if expected == "fp32" else torch.channels_last)
    history = trainer.train(5)
    assert all(math.isfinite(v) for v in history["loss"])
    assert trainer.sample(4, steps=3).shape == (4, 1, 28, 28)


@pytest.mark.cuda
@needs_cuda
def test_cuda_channels_last_and_nchw_train_alike():
    losses = {}
    for layout in (False, True):
        trainer = _cuda_trainer(mixed_precision="fp32", channels_last=layout, dropout=0.0)
        x, _ = trainer._batch(0)
        assert x.is_cuda and x.is_contiguous(memory_format=torch.channels_last) is layout
        losses[layout] = trainer.train(3)["loss"]
    # the first loss is the same in any case (ADM's last convolution starts at zero); the next ones differ by the
    # convolution algorithms' rounding (TF32 where cuDNN allows it)
    assert losses[True] == pytest.approx(losses[False], rel=1e-2)


@pytest.mark.cuda
@needs_cuda
def test_cuda_small_data_lives_on_the_gpu_large_data_goes_through_pinned_memory(monkeypatch):
    resident = _cuda_trainer(mixed_precision="fp32", dropout=0.0)
    assert resident.source.storage.type == "cuda" and not resident.source.pinned
    resident_losses = resident.train(3)["loss"]
    monkeypatch.setattr(_Source, "GPU_DATA_LIMIT", 0)  # as if the data were larger than 1 GiB
    pinned = _cuda_trainer(mixed_precision="fp32", dropout=0.0)
    assert pinned.source.storage.type == "cpu" and pinned.source.pinned
    x, y = pinned._batch(3)
    assert x.is_cuda and y.is_cuda
    assert torch.equal(x, resident._batch(3)[0]) and torch.equal(y, resident._batch(3)[1])
    assert pinned.train(3)["loss"] == pytest.approx(resident_losses, rel=1e-3)


@pytest.mark.cuda
@needs_cuda
def test_cuda_torch_compile_trains():
    trainer = _cuda_trainer("digits", batch=32, torch_compile=True)
    assert all(math.isfinite(v) for v in trainer.train(3)["loss"])


@pytest.mark.cuda
@needs_cuda
@pytest.mark.parametrize("name", GPU_PRESETS + ("digits",))
def test_cuda_every_preset_trains_samples_and_saves(name, tmp_path):
    trainer = _cuda_trainer(name, batch=32)
    trainer.checkpoint_path = tmp_path / "checkpoint.pt"
    assert all(math.isfinite(v) for v in trainer.train(3)["loss"])
    shape = trainer.source.sample_shape
    samples = generate(trainer.ema, trainer.diffusion, (4, *shape), steps=5, device="cuda")
    assert samples.shape == (4, *shape) and torch.isfinite(samples).all()
    cpu = Trainer.resume(trainer.checkpoint_path, gpu_check.synthetic_data(trainer.config), device="cpu",
                         progress=False)  # a channels_last checkpoint loads into an NCHW model on the CPU
    assert cpu.step == 3 and cpu.memory_format is torch.contiguous_format


@pytest.mark.cuda
@needs_cuda
def test_cuda_choose_preset_takes_the_gpu_path(tmp_path):
    write_mnist(tmp_path / "MNIST" / "raw")
    choice = choose_preset("mnist", root=tmp_path)
    assert choice.on_gpu and choice.device.type == "cuda" and str(choice).startswith("GPU path: ")
    assert torch.cuda.get_device_name() in str(choice)
