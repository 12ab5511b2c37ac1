"""Checkpoint files (atomic writes, clear errors, loading for sampling) and the experiment configs they carry."""
import argparse
import json
import os

import pytest
import torch

from ddpm_lite import GaussianDiffusion, get_betas
from ddpm_lite import checkpoint as ckpt
from ddpm_lite.checkpoint import (
    CheckpointError,
    CheckpointMismatchError,
    CheckpointNotFoundError,
    export_checkpoint,
    load_checkpoint,
    load_model,
    previous_path,
)
from ddpm_lite.configs import ConfigError, DiffusionConfig, ExperimentConfig, build_model, model_spec, preset_names
from ddpm_lite.train import Trainer

TINY = {"model.model_channels": 16, "model.num_res_blocks": 1, "model.num_head_channels": 16,
        "diffusion.num_timesteps": 10, "batch_size": 16}


def tiny(preset="digits", **changes):
    return ExperimentConfig.preset(preset).override({**TINY, **changes})


@pytest.fixture
def trained(tmp_path):
    """A tiny trainer saved at step 2 (checkpoint.pt) after one at step 1 (checkpoint.prev.pt)."""
    path = tmp_path / "checkpoint.pt"
    trainer = Trainer.from_config(tiny(), progress=False, checkpoint_path=path)
    trainer.train(1)
    trainer.train(1)
    return trainer, path


def temporaries(folder):
    return [p.name for p in folder.iterdir() if p.name.endswith(".tmp")]


# --------------------------------------------------------------------------- atomic writes


def test_round_trip_with_weights_only(trained):
    trainer, path = trained
    state = torch.load(path, weights_only=True)  # plain containers and tensors only
    assert state["format"] == ckpt.FORMAT and state["step"] == 2
    assert set(state) >= {"model", "ema", "optimizer", "sampler", "rng", "history", "config"}
    assert json.loads(json.dumps(state["config"])) == state["config"]
    assert state["history"]["loss"].tolist() == trainer.loss_history
    assert load_checkpoint(previous_path(path))["step"] == 1
    mask = os.umask(0)
    os.umask(mask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~mask  # the usual permissions, not mkstemp's 0600


@pytest.mark.parametrize("target", ["torch.save", "os.replace"])
def test_a_crash_while_saving_keeps_the_old_checkpoint(trained, monkeypatch, target):
    trainer, path = trained
    old = path.read_bytes()
    trainer.checkpoint_path = None
    trainer.train(1)  # step 3 in memory only
    trainer.checkpoint_path = path

    def crash_midway(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 half a zip file")
        raise OSError("No space left on device")

    def crash(*args, **kwargs):
        raise OSError("simulated crash before the rename")

    if target == "torch.save":
        monkeypatch.setattr(ckpt.torch, "save", crash_midway)
    else:
        monkeypatch.setattr(ckpt.os, "replace", crash)
    with pytest.raises(OSError):
        trainer.save()
    monkeypatch.undo()
    assert path.read_bytes() == old and load_checkpoint(path)["step"] == 2
    assert temporaries(path.parent) == []


def test_stale_temporary_files_are_removed(trained):
    trainer, path = trained
    stale = path.parent / f".{path.name}.abc123.tmp"
    stale.write_bytes(b"left by a killed process")
    trainer.save()
    assert not stale.exists() and temporaries(path.parent) == []


# --------------------------------------------------------------------------- clear errors


def test_truncated_file_names_the_previous_one_without_reading_it(trained, monkeypatch):
    _, path = trained
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    loaded = []
    real_load = torch.load
    monkeypatch.setattr(ckpt.torch, "load", lambda f, *a, **k: loaded.append(str(f)) or real_load(f, *a, **k))
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    message = str(info.value)
    assert "truncated" in message and str(previous_path(path)) in message
    assert loaded == [str(path)]  # the error path names the neighbours, it does not load them


def test_without_a_previous_file_other_checkpoints_are_named_newest_first(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.pt"
    path.write_bytes(b"PK\x03\x04 broken")
    for i, name in enumerate(["old.pt", "new.pt"]):
        (tmp_path / name).write_bytes(b"x")
        os.utime(tmp_path / name, (1000 + i, 1000 + i))
    monkeypatch.setattr(ckpt.torch, "load", _refuse_garbage)
    with pytest.raises(CheckpointError, match=r"truncated or corrupt.*new\.pt, old\.pt"):
        load_checkpoint(path)


def _refuse_garbage(f, *args, **kwargs):
    if not str(f).endswith("checkpoint.pt"):
        raise AssertionError(f"{f} was loaded to word an error message")
    raise RuntimeError("PytorchStreamReader failed reading zip archive: failed finding central directory")


@pytest.mark.parametrize("content", [b"", b"not a checkpoint at all" * 10])
def test_garbage_files(tmp_path, content):
    path = tmp_path / "checkpoint.pt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_checkpoint(path)


def test_foreign_files(tmp_path):
    path = tmp_path / "weights.pt"
    torch.save({"weight": torch.ones(2)}, path)
    with pytest.raises(CheckpointError, match="not a ddpm_lite checkpoint.*bare state_dict"):
        load_checkpoint(path)
    torch.save({"format": ckpt.FORMAT, "obj": argparse.Namespace(a=1)}, path)  # refused by weights_only
    with pytest.raises(CheckpointError, match="weights_only"):
        load_checkpoint(path)


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointNotFoundError, match="no checkpoint at") as info:
        load_checkpoint(tmp_path / "nope.pt")
    assert isinstance(info.value, FileNotFoundError)


def test_other_config_names_the_differences(trained):
    _, path = trained
    other = Trainer.from_config(tiny(**{"model.model_channels": 32, "diffusion.num_timesteps": 20}), progress=False)
    with pytest.raises(CheckpointMismatchError) as info:
        other.load(path)
    message = str(info.value)
    assert "model.model_channels: checkpoint 16, this model 32" in message
    assert "diffusion.num_timesteps: checkpoint 10, this model 20" in message


def test_hand_built_models_are_checked_by_shape(tmp_path):
    from ddpm_lite.models import MLPDenoiser

    class Custom(torch.nn.Module):  # no known config: the state_dict check decides
        def __init__(self, hidden):
            super().__init__()
            self.net = MLPDenoiser(hidden=hidden)

        def forward(self, x, t):
            return self.net(x, t)

    diffusion = GaussianDiffusion(get_betas("linear", 100))
    points = torch.randn(100, 2)
    a = Trainer(Custom(16), diffusion, points, batch_size=10, progress=False, checkpoint_path=tmp_path / "a.pt")
    a.train(1)
    b = Trainer(Custom(32), diffusion, points, batch_size=10, progress=False)
    with pytest.raises(CheckpointMismatchError, match=r"shapes differ: net\.time_embed\.0\.weight"):
        b.load(tmp_path / "a.pt")


# --------------------------------------------------------------------------- models for sampling


def test_load_model_gives_the_ema(trained, tmp_path):
    trainer, path = trained
    model, diffusion, config = load_model(path, device="cpu")
    assert not model.training and diffusion.num_timesteps == 10 and config.name == "digits"
    for p, q in zip(model.parameters(), trainer.ema.parameters()):
        assert torch.equal(p, q)
    raw, _, _ = load_model(path, ema=False, device="cpu")
    assert any(not torch.equal(p, q) for p, q in zip(raw.parameters(), model.parameters()))

    small = export_checkpoint(path, tmp_path / "small.pt", half=True)
    assert small.stat().st_size < path.stat().st_size / 3
    exported, _, _ = load_model(small, device="cpu")
    for p, q in zip(exported.parameters(), model.parameters()):
        torch.testing.assert_close(p, q, atol=1e-3, rtol=1e-3)
    with pytest.raises(CheckpointError, match="sampling-only"):
        trainer.load(small)


# --------------------------------------------------------------------------- configs


@pytest.mark.parametrize("name", preset_names())
def test_presets_round_trip_and_build(name):
    cfg = ExperimentConfig.preset(name)
    assert ExperimentConfig.from_dict(json.loads(cfg.to_json())) == cfg
    model = cfg.build_model()
    assert model_spec(model) == (cfg.model_kind, cfg.model)
    assert model_spec(build_model(*model_spec(model))) == model_spec(model)
    assert cfg.build_diffusion().num_timesteps == cfg.diffusion.num_timesteps


def test_preset_contents():
    digits, cond, clf = (ExperimentConfig.preset(n) for n in ("digits", "digits_cond", "digits_classifier"))
    assert digits.diffusion == DiffusionConfig("cosine", 1000, "eps", "learned_range", "simple")
    assert digits.model.learn_sigma and digits.model.num_classes is None and not digits.class_cond
    assert cond.class_cond and cond.label_dropout == 0.1 and cond.model.num_classes == 10
    assert clf.objective == "classifier" and clf.num_classes == 10
    assert ExperimentConfig.preset("toy").model_kind == "mlp"


def test_unknown_preset_lists_the_known_ones():
    with pytest.raises(ValueError, match="digits, digits_cond, digits_classifier, toy"):
        ExperimentConfig.preset("imagenet")


def test_overrides_and_data():
    cfg = ExperimentConfig.preset("digits").override(
        ["lr=3e-4", "grad_clip=null", "model.model_channels=32", "diffusion.schedule=linear"])
    assert (cfg.lr, cfg.grad_clip, cfg.model.model_channels, cfg.diffusion.schedule) == (3e-4, None, 32, "linear")
    fixed = cfg.override(["diffusion.var_type=fixed_small"])
    assert fixed.model.learn_sigma is False  # the diffusion decides the output width
    with pytest.raises(ConfigError, match="unknown config key"):
        cfg.override(["model.channels=3"])
    with pytest.raises(ConfigError, match="key=value"):
        cfg.override(["lr"])
    mnist = ExperimentConfig.preset("digits_cond").with_data("mnist")
    assert mnist.model.image_size == 28 and mnist.model.num_classes == 10 and mnist.model.learn_sigma
    assert ExperimentConfig.preset("toy").with_data("moons").data == "moons"
    with pytest.raises(ConfigError, match="--preset toy"):
        ExperimentConfig.preset("digits").with_data("moons")


def test_diffusion_config_from_a_diffusion():
    d = DiffusionConfig("linear", 200, "x0", "fixed_large", "kl")
    assert DiffusionConfig.from_diffusion(d.build()) == d
    assert DiffusionConfig.from_diffusion(GaussianDiffusion([0.1, 0.2, 0.3])) is None
    with pytest.raises(ConfigError, match="unknown diffusion schedule"):
        DiffusionConfig(schedule="quadratic")
    with pytest.raises(ConfigError, match="use T > 20"):
        DiffusionConfig(schedule="linear", num_timesteps=20)
