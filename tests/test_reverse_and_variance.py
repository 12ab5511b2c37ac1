"""ddpm_lite.course.reverse_process, ddpm_lite.course.learned_variance and the figures of notebooks 02, 04 and 06."""
import math

import numpy as np
import pytest
import torch

from ddpm_lite import GaussianDiffusion, get_betas, respace
from ddpm_lite.course import plotting
from ddpm_lite.course.analytic import GaussianMixture
from ddpm_lite.course.learned_variance import (
    MeanOnly,
    interpolation_weights,
    kl_optimal_variance,
    log_variance_bounds,
    sigma_from_v,
    with_variance,
    xstart_errors,
)
from ddpm_lite.course.reverse_process import (
    gaussian_fit,
    gaussian_fit_kl,
    mixture_pdf,
    nearest_distance,
    reverse_step_mixture,
    sample_trajectory,
    trajectory_distances,
)


# ---------------------------------------------------------------------- reverse.py
@pytest.mark.parametrize("x_t, s, t", [(0.0, 99, 100), (0.4, 40, 100), (-1.3, 0, 30), (2.0, 150, 400)])
def test_reverse_step_mixture_is_bayes_rule_on_a_grid(x_t, s, t):
    """q(x_s | x_t) proportional to q(x_t | x_s) q(x_s), evaluated by brute force on a grid."""
    d = GaussianDiffusion(get_betas("linear", 1000))
    ab = np.append(1.0, d.alphas_cumprod)
    means, std, weights = np.array([-1.0, 0.5, 1.2]), 0.2, np.array([0.2, 0.3, 0.5])
    grid = np.linspace(-6, 6, 60001)
    marginal = mixture_pdf(grid, weights, math.sqrt(ab[s]) * means,
                           np.full(3, math.sqrt(ab[s] * std ** 2 + 1 - ab[s])))
    a = ab[t] / ab[s]
    likelihood = np.exp(-0.5 * (x_t - math.sqrt(a) * grid) ** 2 / (1 - a))
    brute = marginal * likelihood
    brute /= np.trapezoid(brute, grid) if hasattr(np, "trapezoid") else np.trapz(brute, grid)
    w, m, sd = reverse_step_mixture(x_t, ab[s], ab[t], means, std, weights)
    assert np.isclose(w.sum(), 1.0)
    np.testing.assert_allclose(mixture_pdf(grid, w, m, sd), brute, atol=1e-6 * brute.max() + 1e-9)


def test_reverse_step_of_a_point_is_the_posterior():
    """With one component of width 0, q(x_{t-1} | x_t) is q(x_{t-1} | x_t, x_0) of DDPM eqs. 6-7."""
    d = GaussianDiffusion(get_betas("linear", 1000))
    ab = np.append(1.0, d.alphas_cumprod)
    t = 300  # the paper's t: code index t - 1
    w, m, sd = reverse_step_mixture(-0.4, ab[t - 1], ab[t], [0.7], 0.0)
    mean, var, _ = d.q_posterior_mean_variance(torch.tensor([[0.7]], dtype=torch.float64),
                                               torch.tensor([[-0.4]], dtype=torch.float64), torch.tensor([t - 1]))
    assert np.isclose(m[0], mean.item(), rtol=1e-5) and np.isclose(sd[0] ** 2, var.item(), rtol=1e-5)


def test_gaussian_fit_and_its_kl():
    assert gaussian_fit_kl([1.0], [0.3], [0.5]) < 1e-8
    assert gaussian_fit([0.5, 0.5], [-1.0, 1.0], [0.1, 0.1]) == pytest.approx((0.0, math.sqrt(1.01)))
    assert gaussian_fit_kl([0.5, 0.5], [-1.0, 1.0], [0.1, 0.1]) > 0.5
    assert 0 < gaussian_fit_kl([0.5, 0.5], [-0.1, 0.1], [1.0, 1.0]) < 1e-3


def test_small_steps_are_gaussian_large_jumps_are_not():
    d = GaussianDiffusion(get_betas("linear", 1000))
    ab = np.append(1.0, d.alphas_cumprod)
    kls = [gaussian_fit_kl(*reverse_step_mixture(0.0, ab[100 - k], ab[100], [-1, 1], 0.15)) for k in (1, 10, 30, 100)]
    assert kls[0] < 1e-4 and kls[-1] > 0.5 and np.all(np.diff(kls) > 0)


def test_sample_trajectory_keeps_every_step_of_p_sample_loop():
    d = GaussianDiffusion(get_betas("linear", 50))
    mixture = GaussianMixture([[1.0, 1.0], [-1.0, 0.0]], std=0.1)
    model = mixture.eps_model(d)
    noise = torch.randn(7, 2, generator=torch.Generator().manual_seed(0))
    traj = sample_trajectory(d, model, noise, generator=torch.Generator().manual_seed(3))
    assert traj.shape == (51, 7, 2) and torch.equal(traj[0], noise)
    final = d.p_sample_loop(model, (7, 2), noise=noise, clip_denoised=False, generator=torch.Generator().manual_seed(3))
    assert torch.allclose(traj[-1], final)
    spaced = respace(d, 10)
    assert sample_trajectory(spaced, model, noise).shape == (11, 7, 2)


def test_distances_to_the_data():
    data = torch.tensor([[0.0, 0.0], [10.0, 0.0]])
    assert nearest_distance(torch.tensor([[3.0, 4.0], [10.0, 1.0]]), data) == pytest.approx(3.0)
    traj = torch.stack([torch.full((4, 2), float(k)) for k in range(21)])  # (21, 4, 2): points at (k, k)
    steps, values = trajectory_distances(traj, data, num=5)
    assert list(steps) == [0, 5, 10, 15, 20]
    assert values[0] == pytest.approx(0.0) and values[2] == pytest.approx(10.0)


# ---------------------------------------------------------------------- variance.py
class ConstantVariance(torch.nn.Module):
    """eps = 0 and a raw variance output r everywhere: v = (r + 1) / 2."""

    def __init__(self, r):
        super().__init__()
        self.r = torch.nn.Parameter(torch.tensor(float(r)))

    def forward(self, x, t):
        return torch.cat([torch.zeros_like(x), torch.full_like(x, self.r.item())], dim=1)


def test_mean_only_and_with_variance():
    d = GaussianDiffusion(get_betas("cosine", 100), var_type="learned_range")
    model = ConstantVariance(0.3)
    mean_only = MeanOnly(model)
    x, t = torch.randn(3, 1, 4, 4), torch.tensor([0, 5, 99])
    assert mean_only(x, t).shape == x.shape and list(mean_only.parameters()) == list(model.parameters())
    for var_type in ("fixed_small", "fixed_large"):
        fixed = with_variance(d, var_type)
        assert fixed.var_type == var_type and np.array_equal(fixed.betas, d.betas) and fixed.mean_type == d.mean_type
        out = respace(fixed, 10).p_mean_variance(mean_only, x, torch.tensor([0, 4, 9]))
        assert out["mean"].shape == x.shape
    with pytest.raises(ValueError, match="original diffusion"):
        with_variance(respace(d, 10), "fixed_small")


def test_sigma_from_v_spans_beta_tilde_to_beta():
    d = GaussianDiffusion(get_betas("cosine", 100))
    log_beta, log_beta_tilde = log_variance_bounds(d)
    assert np.allclose(sigma_from_v(d, 1.0), d.betas)
    assert np.allclose(sigma_from_v(d, 0.0)[1:], d.posterior_variance[1:])
    assert np.isfinite(log_beta_tilde).all() and log_beta_tilde[0] == log_beta_tilde[1]
    mid = sigma_from_v(d, 0.5)
    assert np.allclose(mid, np.sqrt(d.betas * np.exp(log_beta_tilde)))  # the geometric mean


def test_interpolation_weights_reads_the_v_channel():
    d = GaussianDiffusion(get_betas("cosine", 100), var_type="learned_range")
    v = interpolation_weights(ConstantVariance(0.4), d, torch.randn(5, 1, 4, 4), [0, 10, 50, 99], batch_size=8)
    assert np.allclose(v, 0.7)
    with pytest.raises(ValueError, match="learned_range"):
        interpolation_weights(ConstantVariance(0.4), with_variance(d, "fixed_small"), torch.randn(2, 1, 4, 4), [0])


# ---------------------------------------------------------------------- figures
def test_reverse_step_figure_titles_give_the_kl():
    d = GaussianDiffusion(get_betas("linear", 1000))
    fig = plotting.reverse_step_figure([-1, 1], 0.15, 0.0, 100, [1, 100], d)
    assert len(fig.axes) == 2 and fig.axes[0].get_title().startswith("k = 1 step:")
    assert "KL to the Gaussian" in fig.axes[1].get_title()


def test_trajectory_figure():
    traj = torch.randn(11, 30, 2)
    fig = plotting.trajectory_figure(traj, 4, data=torch.randn(50, 2), n_paths=3,
                                     distances=(np.arange(11), np.linspace(1, 0.1, 11)), title="run")
    assert fig.axes[0].get_title() == "after 4 of 10 reverse steps: x_6"
    assert fig.axes[1].get_title() == "distance to the data: 0.640"
    np.testing.assert_allclose(fig.axes[0].collections[1].get_offsets(), traj[4].numpy())
    assert len(plotting.trajectory_figure(traj, 99).axes) == 1  # no curve; step clamped to 10


def test_variance_ratio_figure_plots_the_package_ratio():
    fig = plotting.variance_ratio_figure(num_timesteps=(100, 400))
    line = fig.axes[1].get_lines()[0]
    d = GaussianDiffusion(get_betas("cosine", 100))
    np.testing.assert_allclose(line.get_ydata(), d.posterior_variance[1:] / d.betas[1:])


def test_variance_interpolation_figure():
    d = GaussianDiffusion(get_betas("cosine", 100))
    fig = plotting.variance_interpolation_figure(d, 0.25, 7, learned=([0, 50, 99], [0.5, 0.6, 0.7]))
    assert fig.axes[0].get_title().startswith("t = 7:") and "Σ(v = 0.25)" in fig.axes[0].get_title()
    orange = [line for line in fig.axes[0].get_lines() if line.get_label() == "Σₜ with v = 0.25"][0]
    np.testing.assert_allclose(orange.get_ydata(), sigma_from_v(d, 0.25)[1:] / d.betas[1:])


def test_moving_average_and_loss_curves():
    np.testing.assert_allclose(plotting.moving_average([1, 2, 3, 4], 2), [1, 1.5, 2.5, 3.5])
    np.testing.assert_allclose(plotting.moving_average([1, 2, 3], 1), [1, 2, 3])
    fig = plotting.loss_curves_figure({"a": [1.0, 2.0, 3.0], "b": []}, smoothing=2, markers={"here": 2})
    labels = [line.get_label() for line in fig.axes[0].get_lines()]
    assert "a: 2.5 at step 3" in labels and fig.axes[0].get_yscale() == "log"


def test_timestep_importance_figure():
    vb = torch.rand(3, 20) * torch.logspace(0, -3, 20)
    fig = plotting.timestep_importance_figure(vb, probs=np.full(20, 0.05))
    p = fig.axes[1].get_lines()[0].get_ydata()
    rms = np.sqrt((vb.double().numpy() ** 2).mean(0))
    np.testing.assert_allclose(p, rms / rms.sum())


def test_sample_grids_figure():
    fig = plotting.sample_grids_figure({"a": torch.zeros(4, 1, 8, 8), "b": torch.ones(9, 1, 8, 8)},
                                       titles={"a": "A!"}, suptitle="s")
    assert [ax.get_title() for ax in fig.axes] == ["A!", "b"]


@pytest.mark.parametrize("steps", [None, 25, 10])
def test_kl_optimal_variance_runs_from_beta_tilde_to_beta(steps):
    """A perfect x0 wants beta~' (v = 0); the error of the best guess for N(0, I) data, 1 - alpha_bar_t, wants
    exactly beta' (v = 1): the true reverse step of Gaussian data. Plain and respaced chains alike."""
    base = GaussianDiffusion(get_betas("cosine", 1000))
    d = base if steps is None else respace(base, steps)
    perfect = kl_optimal_variance(d, np.zeros(d.num_timesteps))
    np.testing.assert_allclose(perfect["sigma"], perfect["beta_tilde"])
    np.testing.assert_allclose(perfect["v"], 0.0, atol=1e-12)
    gaussian = kl_optimal_variance(d, 1 - d.alphas_cumprod)
    np.testing.assert_allclose(gaussian["sigma"], gaussian["beta"], rtol=1e-9)
    np.testing.assert_allclose(gaussian["v"], 1.0, rtol=1e-6)
    expected_t = np.arange(1, 1000) if steps is None else d.timestep_map.numpy()[1:]
    np.testing.assert_array_equal(gaussian["t"], expected_t)
    with pytest.raises(ValueError, match="one error per step"):
        kl_optimal_variance(d, np.zeros(3))


def test_xstart_errors_measure_the_clipped_prediction_of_x0():
    """Images all 0.5: a model that predicts x0 = 0.5 has error 0; one that predicts 2, clipped to 1 as in
    sampling, has error 0.25, at every t; an eps-model is read through eq. 4 the same way."""
    x0 = torch.full((8, 1, 2, 2), 0.5)
    d = GaussianDiffusion(get_betas("cosine", 100), mean_type="x0")
    np.testing.assert_allclose(xstart_errors(lambda x, t: torch.full_like(x, 0.5), d, x0, [0, 10, 99]), 0.0,
                               atol=1e-12)
    np.testing.assert_allclose(xstart_errors(lambda x, t: torch.full_like(x, 2.0), d, x0, [0, 10, 99]), 0.25,
                               rtol=1e-6)
    eps_d = GaussianDiffusion(get_betas("cosine", 100))

    def perfect_eps(x_t, t):  # the eps that makes eq. 4 give back x0 = 0.5
        ab = torch.from_numpy(eps_d.alphas_cumprod).float()[t].reshape(-1, 1, 1, 1)
        return (x_t - ab.sqrt() * 0.5) / (1 - ab).sqrt()

    np.testing.assert_allclose(xstart_errors(perfect_eps, eps_d, x0, [1, 50]), 0.0, atol=1e-6)
