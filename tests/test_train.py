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
    ("digits", {"lr_warmup": 12, "min_snr_gamma": 5.0}),     # resumed inside the warm-up, Min-SNR weighting
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


# --------------------------------------------------------------------------- learning-rate warm-up and Min-SNR


@pytest.mark.parametrize("warmup", [0, 1, 5])
def test_lr_warmup_is_linear_in_the_step(warmup):
    """The learning rate AdamW used at step s is lr * min(1, (s + 1) / lr_warmup), lr from then on."""
    cfg = tiny("digits", lr=2e-3, lr_warmup=warmup)
    used = []
    trainer = Trainer.from_config(cfg, progress=False,
                                  callbacks=[lambda tr, step, logs: used.append(tr.optimizer.param_groups[0]["lr"])])
    trainer.train(8)
    expected = [2e-3 * min(1.0, (s + 1) / warmup) if warmup else 2e-3 for s in range(8)]
    assert used == pytest.approx(expected, rel=1e-12, abs=0)
    if warmup == 5:
        assert used[0] == pytest.approx(2e-3 / 5) and used[4:] == [2e-3] * 4


def test_lr_warmup_changes_the_first_steps_only_by_their_learning_rate():
    """One step with lr_warmup=4 is one step with lr / 4 (AdamW's first step scales with lr)."""
    warm = Trainer.from_config(tiny("digits", lr=1e-3, lr_warmup=4, grad_clip=None), progress=False)
    plain = Trainer.from_config(tiny("digits", lr=2.5e-4, grad_clip=None), progress=False)
    warm.train(1)
    plain.train(1)
    for p, q in zip(warm.model.parameters(), plain.model.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=1e-7)


@pytest.mark.parametrize("schedule", ["cosine", "linear"])
@pytest.mark.parametrize("gamma", [0.5, 5.0, 1e4])
def test_min_snr_weights_match_a_float64_computation(schedule, gamma):
    """min(SNR, gamma) / SNR for eps, min(SNR, gamma) for x0, with SNR = alpha_bar / (1 - alpha_bar) computed
    here from the betas by a float64 running product."""
    import numpy as np

    from ddpm_lite.schedules import get_betas
    from ddpm_lite.train import min_snr_weights

    betas = np.asarray(get_betas(schedule, 1000), dtype=np.float64)
    alpha_bar = np.ones(1000)
    running = 1.0
    for i, beta in enumerate(betas):
        running *= 1.0 - beta
        alpha_bar[i] = running
    snr = alpha_bar / (1.0 - alpha_bar)
    diffusion = ExperimentConfig.preset("digits").diffusion.build() if schedule == "cosine" else \
        dataclasses.replace(ExperimentConfig.preset("digits").diffusion, schedule="linear").build()
    for mean_type, expected in (("eps", np.minimum(snr, gamma) / snr), ("x0", np.minimum(snr, gamma))):
        got = min_snr_weights(diffusion.alphas_cumprod, gamma, mean_type)
        assert got.dtype == torch.float32 and got.shape == (1000,)
        np.testing.assert_allclose(got.numpy(), expected, rtol=2e-6, atol=0)
    eps = min_snr_weights(diffusion.alphas_cumprod, gamma).numpy()
    assert eps.max() <= 1.0 and (eps[snr <= gamma] == 1.0).all()  # only high-SNR (small t) steps are down-weighted


def test_min_snr_weights_refuse_what_they_do_not_define():
    from ddpm_lite.train import min_snr_weights

    abar = ExperimentConfig.preset("digits").diffusion.build().alphas_cumprod
    with pytest.raises(ValueError, match="mean_type 'eps' or 'x0', not 'xprev'"):
        min_snr_weights(abar, 5.0, "xprev")
    for gamma in (0, -1.0, math.nan):
        with pytest.raises(ValueError, match="positive number"):
            min_snr_weights(abar, gamma)
    assert min_snr_weights([0.5, 0.0], 5.0).tolist() == [1.0, 1.0]  # SNR = 0: the limit 1, not 0 / 0


def test_min_snr_weighs_the_mse_term_and_leaves_the_variance_term():
    """The objective's per-example loss is w(t) * mse + vb, with the unweighted terms from training_losses."""
    from ddpm_lite.train import DiffusionObjective, min_snr_weights

    cfg = tiny("digits")
    torch.manual_seed(0)
    model, diffusion = cfg.build_model().eval(), cfg.diffusion.build()
    x = load_dataset("digits").images[:6]
    t = torch.tensor([0, 1, 3, 5, 8, 9])
    noise = torch.randn_like(x)

    def draw(kind, shape):
        return noise

    objective = DiffusionObjective(diffusion, min_snr_gamma=2.0)
    _, per_example, logs = objective(model, x, None, t, torch.ones(6), draw)
    terms = diffusion.training_losses(model, x, t, noise=noise)
    w = min_snr_weights(diffusion.alphas_cumprod, 2.0)[t]
    assert (w < 1).any() and (w == 1).any()
    torch.testing.assert_close(per_example, w * terms["mse"] + terms["vb"])
    torch.testing.assert_close(logs["vb"], terms["vb"].mean())
    with pytest.raises(ValueError, match="loss_type 'kl' has none"):
        DiffusionObjective(dataclasses.replace(cfg.diffusion, loss_type="kl").build(), min_snr_gamma=2.0)


def test_the_trainer_clocks_its_training():
    from ddpm_lite.runtime import steps_in

    trainer = Trainer.from_config(tiny("digits"), progress=False)
    assert trainer.clock() == "0 steps in 0.0 s"
    trainer.train(3)
    trainer.train(2)
    assert trainer.timed_steps == 5 and trainer.seconds > 0
    assert trainer.clock() == steps_in(5, trainer.seconds)
    assert steps_in(1200, 41.25) == "1,200 steps in 41.2 s (34 ms per step)"
