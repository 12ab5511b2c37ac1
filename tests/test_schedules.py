import math

import numpy as np
import pytest

from ddpm_lite import get_betas
from ddpm_lite.schedules import cosine_betas, linear_betas


def test_linear_matches_ddpm_at_1000_steps():
    betas = get_betas("linear", 1000)
    assert betas.dtype == np.float64 and betas.shape == (1000,)
    assert betas[0] == pytest.approx(1e-4, rel=1e-15) and betas[-1] == pytest.approx(0.02, rel=1e-15)
    np.testing.assert_allclose(np.diff(betas), (0.02 - 1e-4) / 999, rtol=1e-9)


@pytest.mark.parametrize("T", [100, 250, 4000])
def test_linear_scales_by_1000_over_T(T):
    betas = linear_betas(T)
    assert betas[0] == pytest.approx(1e-4 * 1000 / T) and betas[-1] == pytest.approx(0.02 * 1000 / T)


@pytest.mark.parametrize("T", [50, 1000, 4000])
def test_cosine_alpha_bar_endpoints(T):
    alpha_bar = np.cumprod(1 - cosine_betas(T))
    assert alpha_bar[0] > 1 - 2.0 / T  # t = 1: almost clean
    assert alpha_bar[-1] < 1e-4   # t = T: almost pure noise


def test_cosine_matches_eq17_in_float64():
    T, s = 1000, 0.008
    f = lambda t: math.cos((t / T + s) / (1 + s) * math.pi / 2) ** 2
    expected_alpha_bar = np.array([f(t) / f(0) for t in range(1, T + 1)])
    alpha_bar = np.cumprod(1 - cosine_betas(T))
    unclipped = slice(0, T - 1)  # the last beta is clipped at 0.999
    np.testing.assert_allclose(alpha_bar[unclipped], expected_alpha_bar[unclipped], rtol=1e-10)
    assert cosine_betas(T).max() == pytest.approx(0.999)


def test_unknown_schedule_lists_known_names():
    with pytest.raises(ValueError, match=r"unknown noise schedule 'quadratic'.*cosine.*linear"):
        get_betas("quadratic", 100)


@pytest.mark.parametrize("T", [0, -3, 2.5])
def test_bad_num_timesteps(T):
    with pytest.raises(ValueError, match="positive integer"):
        get_betas("linear", T)
