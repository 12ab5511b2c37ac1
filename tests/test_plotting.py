"""The figure functions: what they draw is the package's own numbers."""
import matplotlib
import numpy as np
import pytest
import torch

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from ddpm_lite import GaussianDiffusion, get_betas  # noqa: E402
from ddpm_lite.course import plotting  # noqa: E402
from ddpm_lite.losses import mean_flat, normal_kl  # noqa: E402

T = 100


def alpha_bar(name, steps=T):
    return GaussianDiffusion(get_betas(name, steps)).alphas_cumprod


def test_figure_to_png_closes_the_figure():
    fig = plotting.snr_curve(num_timesteps=T)
    assert fig.number in plt.get_fignums()
    png = plotting.figure_to_png(fig)
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and fig.number not in plt.get_fignums()


def test_snr_curve_plots_the_package_snr_on_a_log_scale():
    fig = plotting.snr_curve(("linear", "cosine"), t=30, num_timesteps=T)
    ax = fig.axes[0]
    assert ax.get_yscale() == "log"
    lines = {line.get_label(): line for line in ax.get_lines()}
    for name in ("linear", "cosine"):
        ab = alpha_bar(name)
        np.testing.assert_allclose(lines[name].get_ydata(), ab / (1 - ab))
        np.testing.assert_array_equal(lines[name].get_xdata(), np.arange(T))
    marker = [line for line in ax.get_lines() if line.get_marker() == "o"][0]
    ab = alpha_bar("linear")
    assert marker.get_xdata()[0] == 30 and marker.get_ydata()[0] == pytest.approx(ab[30] / (1 - ab[30]))
    assert ax.get_title() == f"SNR(30) = {ab[30] / (1 - ab[30]):.3g}"


def test_alpha_bar_curves_like_improved_ddpm_figure_5():
    fig = plotting.alpha_bar_curves(num_timesteps=T)
    ax = fig.axes[0]
    lines = {line.get_label(): line for line in ax.get_lines()}
    for name in ("linear", "cosine"):
        np.testing.assert_allclose(lines[name].get_ydata(), alpha_bar(name))
        np.testing.assert_allclose(lines[name].get_xdata(), np.arange(T) / T)
    assert ax.get_xlabel() == "diffusion step t / T"


def test_forward_chain_grid_shows_q_sample():
    images = torch.rand(2, 1, 8, 8) * 2 - 1
    fig = plotting.forward_chain_grid(images, "linear", timesteps=[0, 50, 99], num_timesteps=T, seed=3)
    assert len(fig.axes) == 6 and [ax.get_title() for ax in fig.axes[:3]] == ["t = 0", "t = 50", "t = 99"]
    g = torch.Generator().manual_seed(3)
    d = GaussianDiffusion(get_betas("linear", T))
    noise = torch.randn(images[0].shape, generator=g)
    expected = d.q_sample(images[0][None], torch.tensor([50]), noise[None])[0]
    np.testing.assert_allclose(fig.axes[1].images[0].get_array(), plotting.to_display(expected), atol=1e-6)


def test_latent_grid_like_improved_ddpm_figure_3():
    x0 = plotting.sample_photo(16)
    fig = plotting.latent_grid(x0, ("linear", "cosine"), n_cols=5, num_timesteps=T, seed=0)
    axes = np.array(fig.axes).reshape(2, 5)
    assert [ax.get_title() for ax in axes[0]] == [f"t = {t}" for t in plotting.evenly_spaced(T, 5)]
    assert [axes[r, 0].get_ylabel() for r in range(2)] == ["linear", "cosine"]
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(0))
    for r, name in enumerate(("linear", "cosine")):
        d = GaussianDiffusion(get_betas(name, T))
        t = plotting.evenly_spaced(T, 5)[2]
        expected = plotting.to_display(d.q_sample(x0[None], torch.tensor([t]), noise[None])[0])
        np.testing.assert_allclose(axes[r, 2].images[0].get_array(), expected, atol=1e-6)
    # the same noise in both rows: at t = 0 (one small step of noise) they show nearly the same image
    np.testing.assert_allclose(axes[0, 0].images[0].get_array(), axes[1, 0].images[0].get_array(), atol=0.02)


def test_forward_noising_figure_panels():
    d = GaussianDiffusion(get_betas("cosine", T))
    points = torch.randn(50, 2)
    fig = plotting.forward_noising_figure(d, 40, {"digit": torch.zeros(1, 8, 8)}, points, seed=1,
                                          schedule_name="cosine")
    assert [ax.get_title() for ax in fig.axes] == ["digit", "2-D points",
                                                   f"SNR(40) = {d.alphas_cumprod[40] / (1 - d.alphas_cumprod[40]):.3g}"]
    assert fig._suptitle.get_text().startswith("cosine: t = 40")
    g = torch.Generator().manual_seed(1)
    noise_digit, noise_points = torch.randn(1, 8, 8, generator=g), torch.randn(50, 2, generator=g)
    scatter = fig.axes[1].collections[1].get_offsets()
    np.testing.assert_allclose(scatter, d.q_sample(points, torch.full((50,), 40), noise_points), atol=1e-6)
    expected = d.q_sample(torch.zeros(1, 1, 8, 8), torch.tensor([40]), noise_digit[None])[0]
    np.testing.assert_allclose(fig.axes[0].images[0].get_array(), plotting.to_display(expected), atol=1e-6)


def test_schedule_comparison_figure():
    fig = plotting.schedule_comparison_figure(plotting.sample_photo(16), 70, n_cols=4, num_timesteps=T)
    titles = [ax.get_title() for ax in fig.axes]
    assert titles[0] == "ᾱₜ, t = 70"
    assert f"linear\nᾱ = {alpha_bar('linear')[70]:.3f}" in titles
    assert f"cosine\nᾱ = {alpha_bar('cosine')[70]:.3f}" in titles
    assert len(fig.axes) == 1 + 2 + 2 * 4


def test_vb_terms_figure_plots_each_term():
    vb = torch.tensor([[2.0, 0.5, 0.1, 0.01], [1.0, 0.3, 0.1, 0.03]])
    fig = plotting.vb_terms_figure(vb, torch.tensor([1e-4, 3e-4]))
    ax, ax2 = fig.axes
    lines = ax.get_lines()
    np.testing.assert_allclose(lines[0].get_ydata(), [0.4, 0.1, 0.02])  # L_t, t >= 1, batch mean
    assert lines[1].get_ydata()[0] == pytest.approx(1.5)  # L_0 at t = 0
    assert lines[2].get_xdata()[0] == 4 and lines[2].get_ydata()[0] == pytest.approx(2e-4)  # L_T
    assert ax.get_yscale() == "log" and ax2.get_lines()[0].get_ydata()[-1] == pytest.approx(1.0)


def test_vlb_weight_is_eq_12():
    """KL(q(x_{t-1}|x_t,x_0) || p(x_{t-1}|x_t)) with equal variances = lambda_t ||eps - eps_hat||^2 (DDPM eq. 12)."""
    d = GaussianDiffusion(get_betas("linear", T), mean_type="eps")
    g = torch.Generator().manual_seed(0)
    x0, noise, eps_hat = (torch.randn(8, 5, generator=g, dtype=torch.float64) for _ in range(3))
    t = torch.arange(1, 9) * 11
    x_t = d.q_sample(x0, t, noise)
    true_mean, _, logvar = d.q_posterior_mean_variance(x0, x_t, t)
    model_mean, _, _ = d.q_posterior_mean_variance(d._predict_xstart_from_eps(x_t, t, eps_hat), x_t, t)
    kl = mean_flat(normal_kl(true_mean, logvar, model_mean, logvar))
    w = torch.from_numpy(plotting.vlb_weight(d))[t]
    torch.testing.assert_close(kl, w * mean_flat((noise - eps_hat) ** 2), rtol=1e-4, atol=0)
    assert np.isnan(plotting.vlb_weight(d)[0])
    fig = plotting.vlb_weights(d)
    np.testing.assert_allclose(fig.axes[0].get_lines()[0].get_ydata(), plotting.vlb_weight(d)[1:])


def test_sample_photo_and_to_display():
    gray, rgb = plotting.sample_photo(32), plotting.sample_photo(16, color=True)
    assert gray.shape == (1, 32, 32) and rgb.shape == (3, 16, 16)
    assert -1 <= gray.min() < -0.5 and 0.5 < gray.max() <= 1 and gray.dtype == torch.float32
    assert plotting.to_display(rgb).shape == (16, 16, 3) and plotting.to_display(gray).shape == (32, 32)
    np.testing.assert_allclose(plotting.to_display(torch.tensor([[[-3.0, 0.0, 3.0]]])), [[0.0, 0.5, 1.0]])
    gray[0, 0, 0] = 5.0  # a copy: the cached photo is not changed
    assert plotting.sample_photo(32)[0, 0, 0] != 5.0
