import numpy as np
import pytest
import torch

from ddpm_lite import LossSecondMomentResampler, UniformSampler, create_named_schedule_sampler


def test_uniform_weights_are_one():
    t, w = UniformSampler(50).sample(1000, generator=torch.Generator().manual_seed(0))
    assert t.min() >= 0 and t.max() < 50 and torch.equal(w, torch.ones(1000))


def warm(sampler, losses_per_t):
    T = sampler.num_timesteps
    for _ in range(sampler.history_per_term):
        sampler.update_with_all_losses(list(range(T)), list(losses_per_t))


def test_second_moment_sampler_is_uniform_until_warm():
    s = LossSecondMomentResampler(4)
    s.update_with_all_losses([0, 1, 2, 3] * 9, [1.0] * 36)
    assert not s.warmed_up() and np.array_equal(s.weights(), np.ones(4))
    s.update_with_all_losses([0, 1, 2], [1.0] * 3)
    assert not s.warmed_up()
    s.update_with_all_losses([3], [1.0])
    assert s.warmed_up()


def test_second_moment_weights_match_eq18():
    T = 5
    s = LossSecondMomentResampler(T)
    rng = np.random.default_rng(0)
    history = rng.uniform(0.1, 3.0, size=(T, 25))
    for k in range(25):  # only the last 10 losses count
        s.update_with_all_losses(list(range(T)), list(history[:, k]))
    rms = np.sqrt((history[:, -10:] ** 2).mean(1))
    expected = rms / rms.sum() * 0.999 + 0.001 / T
    np.testing.assert_allclose(s.weights(), expected, rtol=1e-12)
    assert s.weights().sum() == pytest.approx(1.0)


def test_importance_weights_keep_the_expected_loss_unbiased():
    T = 20
    losses = np.linspace(10.0, 0.1, T) ** 2  # large at small t, as L_vlb terms are
    s = LossSecondMomentResampler(T)
    warm(s, losses)
    p = s.weights() / s.weights().sum()
    exact = np.sum(p * losses / (T * p))
    assert exact == pytest.approx(losses.mean(), rel=1e-12)
    t, w = s.sample(400_000, generator=torch.Generator().manual_seed(0))
    estimate = (w.double() * torch.from_numpy(losses)[t]).mean().item()
    assert estimate == pytest.approx(losses.mean(), rel=1e-2)
    assert np.bincount(t.numpy(), minlength=T)[0] > np.bincount(t.numpy(), minlength=T)[-1] * 10


def test_sampler_state_round_trip_and_mismatch():
    s = LossSecondMomentResampler(6)
    warm(s, np.arange(1, 7.0))
    s2 = LossSecondMomentResampler(6)
    s2.load_state_dict(s.state_dict())
    assert np.array_equal(s2.weights(), s.weights())
    with pytest.raises(ValueError, match="another number of timesteps"):
        LossSecondMomentResampler(7).load_state_dict(s.state_dict())


def test_update_with_local_losses_accepts_tensors():
    s = LossSecondMomentResampler(3, history_per_term=1)
    s.update_with_local_losses(torch.tensor([0, 1, 2]), torch.tensor([1.0, 2.0, 3.0]))
    assert s.warmed_up()


def test_named_samplers():
    assert isinstance(create_named_schedule_sampler("uniform", 10), UniformSampler)
    with pytest.raises(ValueError, match="loss-second-moment"):
        create_named_schedule_sampler("importance", 10)
