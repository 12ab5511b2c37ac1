import math

import numpy as np
import pytest
import torch
from scipy.stats import norm

from ddpm_lite.losses import approx_standard_normal_cdf, discretized_gaussian_log_likelihood, mean_flat, normal_kl


def test_kl_of_equal_gaussians_is_zero():
    m, lv = torch.randn(5, 3, dtype=torch.float64), torch.randn(5, 3, dtype=torch.float64)
    assert torch.allclose(normal_kl(m, lv, m, lv), torch.zeros(5, 3, dtype=torch.float64), atol=1e-15)


def test_kl_matches_monte_carlo_and_closed_form():
    m1, v1, m2, v2 = 0.3, 0.5, -0.2, 2.0
    closed = 0.5 * (math.log(v2 / v1) + (v1 + (m1 - m2) ** 2) / v2 - 1)
    ours = normal_kl(torch.tensor(m1, dtype=torch.float64), math.log(v1), m2, math.log(v2)).item()
    assert ours == pytest.approx(closed, rel=1e-12)
    x = np.random.default_rng(0).normal(m1, math.sqrt(v1), 2_000_000)
    mc = np.mean(norm.logpdf(x, m1, math.sqrt(v1)) - norm.logpdf(x, m2, math.sqrt(v2)))
    assert ours == pytest.approx(mc, abs=3e-3)


def test_kl_nonnegative_and_broadcasts_scalars():
    m, lv = torch.randn(100), torch.randn(100)
    kl = normal_kl(m, lv, 0.0, 0.0)
    assert kl.shape == (100,) and (kl >= 0).all()


def test_kl_needs_a_tensor():
    with pytest.raises(ValueError, match="torch.Tensor"):
        normal_kl(0.0, 0.0, 1.0, 0.0)


def test_cdf_approximation_is_close_to_scipy():
    x = torch.linspace(-6, 6, 1001, dtype=torch.float64)
    assert np.abs(approx_standard_normal_cdf(x).numpy() - norm.cdf(x.numpy())).max() < 3e-4


@pytest.mark.parametrize("mean,log_scale", [(0.0, math.log(0.1)), (0.7, math.log(0.02)), (-0.99, 0.0)])
def test_discretized_likelihood_sums_to_one_over_256_bins(mean, log_scale):
    x = torch.linspace(-1, 1, 256, dtype=torch.float64)  # every 8-bit value, scaled to [-1, 1]
    logp = discretized_gaussian_log_likelihood(x, means=torch.full_like(x, mean),
                                               log_scales=torch.full_like(x, log_scale))
    assert logp.exp().sum().item() == pytest.approx(1.0, abs=1e-9)


def test_discretized_likelihood_of_a_narrow_gaussian_concentrates_on_its_bin():
    x = torch.tensor([0.0 + 2 / 255 * 3], dtype=torch.float64)
    logp = discretized_gaussian_log_likelihood(x, means=x.clone(), log_scales=torch.tensor([math.log(1e-4)],
                                                                                            dtype=torch.float64))
    assert logp.exp().item() == pytest.approx(1.0, abs=1e-6)


def test_discretized_likelihood_shape_error():
    with pytest.raises(ValueError, match="share a shape"):
        discretized_gaussian_log_likelihood(torch.zeros(2, 3), means=torch.zeros(2, 3), log_scales=torch.zeros(3))


def test_mean_flat():
    x = torch.arange(24.0).reshape(2, 3, 4)
    assert torch.equal(mean_flat(x), x.reshape(2, -1).mean(1))
