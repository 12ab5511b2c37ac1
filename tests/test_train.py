"""The Trainer: exact resumption, divergence, interrupts, callbacks, and that it learns.

Models are tiny (a 16-channel U-Net on the 8x8 digits, the toy MLP) so the file runs in seconds on one thread.
"""
import dataclasses
import math
import signal

import pytest
import torch

from ddpm_lite.checkpoint import load_checkpoint, previous_path
from ddpm_lite.configs import ExperimentConfig
from ddpm_lite.data import load_dataset
from ddpm_lite.train import StopTraining, Trainer, TrainingDivergedError, every

TINY_UNET = {"model.model_channels": 16, "model.num_res_blocks": 1, "model.num_head_channels": 16}


def tiny(preset="digits", **changes):
    """A preset shrunk to a 16-channel model, T = 10 steps, batch 32."""
    cfg = ExperimentConfig.preset(preset).override({**TINY_UNET, "diffusion.num_timesteps": 10, "batch_size": 32})
    return cfg.override(changes) if changes else cfg


def assert_same_state(a: Trainer, b: Trainer):
    assert a.step == b.step
    for (name, p), q in zip(a.model.named_parameters(), b.model.parameters()):
        assert torch.equal(p, q), f"parameter {name} differs"
    for (name, p), q in zip(a.ema.named_parameters(), b.ema.parameters()):
        assert torch.equal(p, q), f"EMA parameter {name} differs"
    sa, sb = a.optimizer.state_dict()["state"], b.optimizer.state_dict()["state"]
    for key in sa:
        for field in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.equal(torch.as_tensor(sa[key][field]), torch.as_tensor(sb[key][field]))
    assert a.history == b.history


# --------------------------------------------------------------------------- exact resumption


@pytest.mark.parametrize("preset,changes", [
    ("digits", {"schedule_sampler": "loss-second-moment"}),  # dropout, learned sigma, importance sampling
    ("digits_cond", {}),                                     # labels and label dropout
    ("digits_classifier", {}),                               # the classifier objective
])
def test_resume_is_bit_exact(tmp_path, preset, changes):
    """2N steps in one go == N steps, save, a fresh reload (global RNG scrambled), N more steps."""
    cfg = tiny(preset, **changes)
    n = 8
    straight = Trainer.from_config(cfg, progress=False)
    straight.train(2 * n)

    path = tmp_path / "checkpoint.pt"
    first = Trainer.from_config(cfg, progress=False, checkpoint_path=path)
    first.train(n)
    del first
    torch.manual_seed(12345)  # as a new process would have another RNG state
    resumed = Trainer.resume(path, progress=False)
    assert resumed.step == n and resumed.checkpoint_path == path
    resumed.train(n)
    assert_same_state(straight, resumed)
    if cfg.schedule_sampler == "loss-second-moment":
        assert straight.sampler.warmed_up()  # the importance weights were in use
        assert (straight.sampler.loss_history == resumed.sampler.loss_history).all()
        assert (straight.sampler.loss_counts == resumed.sampler.loss_counts).all()


def test_periodic_checkpoint_resumes_exactly(tmp_path):
    """A periodic save (written during the next step, once its loss proved finite) holds the state of its step."""
    cfg = tiny(schedule_sampler="loss-second-moment")
    straight = Trainer.from_config(cfg, progress=False)
    straight.train(12)
    path = tmp_path / "checkpoint.pt"
    run = Trainer.from_config(cfg, progress=False, checkpoint_path=path, save_every=4)
    run.train(10)  # periodic saves at 4 and 8, the final one at 10; .prev holds step 8
    assert load_checkpoint(path)["step"] == 10
    assert load_checkpoint(previous_path(path))["step"] == 8
    torch.manual_seed(7)
    resumed = Trainer.resume(previous_path(path), progress=False, checkpoint_path=tmp_path / "other.pt")
    resumed.train(4)
    assert_same_state(straight, resumed)


def test_train_can_be_called_repeatedly():
    cfg = tiny()
    once = Trainer.from_config(cfg, progress=False)
    once.train(6)
    twice = Trainer.from_config(cfg, progress=False)
    twice.train(2)
    twice.train(4)
    assert_same_state(once, twice)
    assert len(twice.loss_history) == 6 and set(twice.history) == {"loss", "mse", "vb", "grad_norm"}


# --------------------------------------------------------------------------- divergence


def test_nan_loss_stops_without_updating_or_saving(tmp_path):
    path = tmp_path / "checkpoint.pt"
    trainer = Trainer.from_config(tiny(), progress=False, checkpoint_path=path)
    trainer.train(2)
    good = path.read_bytes()
    before = [p.detach().clone() for p in trainer.model.parameters()]

    def poison(module, inputs, output):
        return output * float("nan")

    handle = trainer.model.register_forward_hook(poison)
    with pytest.raises(TrainingDivergedError) as info:
        trainer.train(5)
    handle.remove()
    err = info.value
    assert err.step == 2 and err.term == "mse" and math.isnan(err.value)
    message = str(err)
    assert "step 2" in message and "mse" in message and "lr=" in message and "[-1, 1]" in message
    assert trainer.step == 2
    assert all(torch.equal(p, q) for p, q in zip(before, trainer.model.parameters()))
    assert path.read_bytes() == good


def test_exploding_learning_rate_leaves_the_last_good_checkpoint(tmp_path):
    path = tmp_path / "checkpoint.pt"
    trainer = Trainer.from_config(tiny(grad_clip=None), progress=False, checkpoint_path=path, save_every=1)
    trainer.train(2)
    for group in trainer.optimizer.param_groups:
        group["lr"] = 1e30
    with pytest.raises(TrainingDivergedError, match="diverged") as info:
        trainer.train(10)
    assert "grad_clip" in str(info.value)
    # the step taken with lr = 1e30 was saved only if the next loss was finite: the file holds finite weights
    state = load_checkpoint(path)
    assert state["step"] <= info.value.step
    assert all(torch.isfinite(v).all() for v in state["model"].values())
    assert all(abs(v).max() < 1e6 for v in state["model"].values() if v.is_floating_point())


# --------------------------------------------------------------------------- interrupts and callbacks


def test_keyboard_interrupt_from_a_callback_saves(tmp_path, capsys):
    path = tmp_path / "checkpoint.pt"

    def stop_at_3(trainer, step, logs):
        if step == 3:
            raise KeyboardInterrupt

    trainer = Trainer.from_config(tiny(), progress=False, checkpoint_path=path, callbacks=[stop_at_3])
    with pytest.raises(KeyboardInterrupt):
        trainer.train(10)
    assert trainer.step == 3 and load_checkpoint(path)["step"] == 3
    assert "checkpoint saved" in capsys.readouterr().out


@pytest.fixture
def python_sigint():
    """SIGINT as a terminal or a notebook kernel has it: Python's default handler, not blocked (whatever earlier
    tests in this process, e.g. ones that start servers or worker pools, left behind); restored afterwards."""
    handler = signal.signal(signal.SIGINT, signal.default_int_handler)
    mask = signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    yield
    signal.pthread_sigmask(signal.SIG_SETMASK, mask)
    signal.signal(signal.SIGINT, handler)


def test_ctrl_c_stops_at_the_end_of_the_step_and_saves(tmp_path, python_sigint):
    """A real SIGINT (Ctrl-C, the notebook's stop button) is deferred to the end of the step, then saved."""
    path = tmp_path / "checkpoint.pt"

    def press_ctrl_c(trainer, step, logs):
        if step == 2:
            signal.raise_signal(signal.SIGINT)

    trainer = Trainer.from_config(tiny(), progress=False, checkpoint_path=path, callbacks=[press_ctrl_c])
    with pytest.raises(KeyboardInterrupt):
        trainer.train(10)
    assert trainer.step == 2 and load_checkpoint(path)["step"] == 2
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # restored


def test_callbacks_every_and_stop_training():
    seen = []

    def stop(trainer, step, logs):
        if step == 5:
            raise StopTraining

    trainer = Trainer.from_config(tiny(), progress=False,
                                  callbacks=[every(2, lambda tr, step, logs: seen.append((step, logs["step"]))), stop])
    history = trainer.train(100)
    assert trainer.step == 5 and seen == [(2, 2), (4, 4)]
    assert len(history["loss"]) == 5 and history is trainer.history


def test_sample_from_the_ema():
    trainer = Trainer.from_config(tiny("digits_cond"), progress=False)
    trainer.train(2)
    images = trainer.sample(6, steps=5)
    assert images.shape == (6, 1, 8, 8) and images.abs().max() <= 1
    assert torch.equal(images, trainer.sample(6, steps=5))  # a fixed seed: the same noise every time
    assert trainer.sample(3, steps=4, ddim=True, y=7).shape == (3, 1, 8, 8)


# --------------------------------------------------------------------------- it learns


def test_loss_decreases_on_a_toy_problem():
    cfg = ExperimentConfig.preset("toy").override({"diffusion.num_timesteps": 100, "model.hidden": 64})
    trainer = Trainer.from_config(cfg, progress=False)
    trainer.train(250)
    losses = trainer.loss_history
    assert sum(losses[-50:]) / 50 < 0.6 * sum(losses[:10]) / 10


def test_classifier_beats_chance_on_digits():
    cfg = tiny("digits_classifier", **{"diffusion.num_timesteps": 1000, "batch_size": 64, "lr": 2e-3})
    trainer = Trainer.from_config(cfg, progress=False)
    trainer.train(120)
    assert "accuracy" in trainer.history and "mse" not in trainer.history
    test = load_dataset("digits", "test")
    x, y = test.images[:200], test.labels[:200]
    t = torch.randint(0, 100, (len(x),), generator=torch.Generator().manual_seed(0))  # lightly noised
    x_t = trainer.diffusion.q_sample(x, t, noise=torch.randn(x.shape, generator=torch.Generator().manual_seed(1)))
    with torch.no_grad():
        accuracy = (trainer.model.eval()(x_t, t).argmax(1) == y).float().mean().item()
    assert accuracy > 0.5, accuracy  # chance is 0.1


def test_hand_built_trainer_on_points():
    """A Trainer without a config: a model, a diffusion and a tensor of points."""
    from ddpm_lite import GaussianDiffusion, get_betas
    from ddpm_lite.data import toy_2d
    from ddpm_lite.models import MLPDenoiser

    torch.manual_seed(0)
    diffusion = GaussianDiffusion(get_betas("linear", 50), var_type="learned_range")
    trainer = Trainer(MLPDenoiser(hidden=32, out_mult=2), diffusion, toy_2d("moons", 500), batch_size=50,
                      progress=False, device="cpu")
    trainer.train(3)
    assert trainer.config.model_kind == "mlp" and trainer.config.diffusion.schedule == "linear"
    assert trainer.sample(5, steps=10).shape == (5, 2)


def test_points_are_not_clipped_but_images_are():
    """x_0 is clipped to [-1, 1] for images only: 2-D toy points live outside that box."""
    from ddpm_lite import GaussianDiffusion, get_betas
    from ddpm_lite.models import MLPDenoiser

    far = torch.full((200, 2), 3.0) + 0.1 * torch.randn(200, 2, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    trainer = Trainer(MLPDenoiser(hidden=64), GaussianDiffusion(get_betas("cosine", 50)), far, batch_size=100,
                      lr=3e-3, progress=False, device="cpu")
    trainer.train(150)
    points = trainer.sample(200, steps=50, use_ema=False)
    assert points.abs().max() > 1.5  # not clipped at the box
    assert trainer.sample(200, steps=50, use_ema=False, clip_denoised=True).abs().max() <= 1.0 + 0.2
    images = Trainer.from_config(tiny("digits"), progress=False)
    assert images.sample(4, steps=3).abs().max() <= 1


def test_from_config_trains_another_network_like_for_like():
    """``model=`` swaps the network and keeps the rest of the config; the checkpoint records that network."""
    from ddpm_lite.models import UNetModel

    cfg = tiny("digits")
    other = UNetModel(dataclasses.replace(cfg.model, resblock_updown=False))
    trainer = Trainer.from_config(cfg, model=other, progress=False)
    assert trainer.model is other and trainer.batch_size == cfg.batch_size
    trainer.train(2)
    assert trainer.config.model.resblock_updown is False
