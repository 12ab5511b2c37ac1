"""The closed-form sampler moments for Gaussian data (course.analytic.gaussian_sampler_moments) against the
package's own samplers run with the exact denoiser (Monte Carlo), and against the property that makes the
optimal variance special: with Sigma = the true reverse step's covariance, the chain is exact at any step count."""
import numpy as np
import pytest
import torch

from ddpm_lite.course.analytic import (
    SAMPLER_VARIANCES,
    GaussianMixture,
    gaussian_sampler_distance,
    gaussian_sampler_moments,
)
from ddpm_lite.gaussian_diffusion import GaussianDiffusion
from ddpm_lite.respace import respace
from ddpm_lite.sampling import generate
from ddpm_lite.schedules import cosine_betas

MEAN = np.array([0.3, -0.2, 0.1])
COV = np.array([[0.20, 0.08, 0.00], [0.08, 0.10, -0.03], [0.00, -0.03, 0.02]])


def _diffusion(var_type="fixed_small", T=200):
    return GaussianDiffusion(cosine_betas(T), "eps", var_type, "simple")


@pytest.mark.parametrize("steps", [3, 10, 200])
def test_the_optimal_variance_samples_the_data_exactly_at_any_step_count(steps):
    m, s = gaussian_sampler_moments(respace(_diffusion(), steps), MEAN, COV, "optimal", exact_ends=True)
    np.testing.assert_allclose(m, MEAN, atol=1e-10)
    np.testing.assert_allclose(s, COV, atol=1e-10)
    assert gaussian_sampler_distance(respace(_diffusion(), steps), MEAN, COV, "optimal", exact_ends=True) < 1e-10
    # as the samplers run it (from N(0, I), no noise at the last step) it is not exact, beta~ even less so
    as_run = gaussian_sampler_distance(respace(_diffusion(), steps), MEAN, COV, "optimal")
    assert 1e-8 < as_run < gaussian_sampler_distance(respace(_diffusion(), steps), MEAN, COV, "fixed_small")


def test_beta_tilde_under_disperses_at_few_steps_and_the_full_chain_is_nearly_exact():
    few = [gaussian_sampler_distance(respace(_diffusion(), 10), MEAN, COV, v) for v in SAMPLER_VARIANCES]
    full = [gaussian_sampler_distance(_diffusion(), MEAN, COV, v) for v in SAMPLER_VARIANCES]
    assert max(full) < 0.1 * max(few)
    _, small = gaussian_sampler_moments(respace(_diffusion(), 10), MEAN, COV, "fixed_small")
    assert np.trace(small) < np.trace(COV)  # beta~ leaves the x_0 uncertainty out: too little spread
    diagonal = np.diag(np.diag(COV))  # independent pixels: the per-pixel optimum is the optimum
    for steps in (5, 20):
        a = gaussian_sampler_moments(respace(_diffusion(), steps), MEAN, diagonal, "optimal_diagonal", True)
        np.testing.assert_allclose(a[1], diagonal, atol=1e-10)
        iso = 0.3 * np.eye(3)  # and with every pixel alike, one variance per step is
        b = gaussian_sampler_moments(respace(_diffusion(), steps), MEAN, iso, "optimal_isotropic", True)
        np.testing.assert_allclose(b[1], iso, atol=1e-10)
    # with pixels that differ, one variance per step is further from the data than one per pixel
    per_step, per_pixel = (gaussian_sampler_distance(respace(_diffusion(), 10), MEAN, COV, v)
                           for v in ("optimal_isotropic", "optimal_diagonal"))
    assert per_step > per_pixel > 0


@pytest.mark.parametrize("variance", ["fixed_small", "fixed_large", "ddim"])
def test_closed_form_matches_the_package_sampler_with_the_exact_denoiser(variance):
    std, mean = 0.5, [0.3, -0.2]  # one isotropic component: the exact eps model of GaussianMixture
    mixture = GaussianMixture([mean], std=std)
    base = _diffusion("fixed_large" if variance == "fixed_large" else "fixed_small")
    n, steps = 40000, 8
    x = generate(mixture.eps_model(base), respace(base, steps), (n, 2), steps=steps, ddim=variance == "ddim",
                 clip_denoised=False, generator=torch.Generator().manual_seed(0)).double().numpy()
    m, s = gaussian_sampler_moments(respace(base, steps), mean, std ** 2 * np.eye(2), variance)
    sample_var = x.var(axis=0, ddof=1)
    assert np.all(np.abs(x.mean(axis=0) - m) < 5 * np.sqrt(np.diag(s) / n)), (x.mean(axis=0), m)
    np.testing.assert_allclose(sample_var, np.diag(s), rtol=5 * np.sqrt(2 / n))
    others = [gaussian_sampler_moments(respace(base, steps), mean, std ** 2 * np.eye(2), v)[1][0, 0]
              for v in ("fixed_small", "fixed_large", "ddim") if v != variance]
    assert all(abs(sample_var.mean() - o) > 10 * s[0, 0] * np.sqrt(2 / n) for o in others)  # it tells them apart


def test_bad_input_says_what_is_wrong():
    with pytest.raises(ValueError, match="unknown variance 'beta'"):
        gaussian_sampler_moments(_diffusion(), MEAN, COV, "beta")
    with pytest.raises(ValueError, match=r"shape \(D,\) and cov \(D, D\)"):
        gaussian_sampler_moments(_diffusion(), MEAN, COV[:2], "fixed_small")
