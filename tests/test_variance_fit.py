"""The learned-variance diagnostic (ddpm_lite/metrics/variance.py): v*(t) against independent float64
computations, the exact Gaussian case in closed form, a numerical minimisation of L_t over v, the Trainer
callback and the figure."""
import math

import matplotlib

matplotlib.use("Agg")
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from ddpm_lite import GaussianDiffusion, get_betas  # noqa: E402
from ddpm_lite.course.analytic import GaussianMixture  # noqa: E402
from ddpm_lite.course.plotting import variance_fit_figure  # noqa: E402
from ddpm_lite.metrics.variance import (  # noqa: E402
    VarianceFit,
    default_timesteps,
    kl_optimal_v,
    log_variance_fit,
    variance_fit,
)
from ddpm_lite.respace import respace  # noqa: E402


def _chain64(betas):
    """alpha-bar, beta-tilde and the posterior's x_0 coefficient from the betas alone, in float64."""
    betas = np.asarray(betas, dtype=np.float64)
    abar = np.cumprod(1 - betas)
    abar_prev = np.concatenate([[1.0], abar[:-1]])
    beta_tilde = betas * (1 - abar_prev) / (1 - abar)
    c = betas * np.sqrt(abar_prev) / (1 - abar)
    return abar, abar_prev, beta_tilde, c


@pytest.mark.parametrize("schedule, T", [("cosine", 1000), ("linear", 200), ("cosine", 4000)])
def test_kl_optimal_v_matches_the_formula_in_float64(schedule, T):
    d = GaussianDiffusion(get_betas(schedule, T))
    rng = np.random.default_rng(0)
    t = np.unique(rng.integers(0, T, 60))
    e = rng.uniform(0, 0.5, len(t)) * (1 - d.alphas_cumprod[t])  # errors below the noise: v* in [0, 1]
    out = kl_optimal_v(d, e, t)
    _, _, beta_tilde, c = _chain64(d.betas)
    beta = d.betas
    beta_tilde[0] = np.nan  # 0: the decoder step, where v* is undefined
    sigma = beta_tilde[t] + c[t] ** 2 * e
    with np.errstate(divide="ignore", invalid="ignore"):
        v = (np.log(sigma) - np.log(beta_tilde[t])) / (np.log(beta[t]) - np.log(beta_tilde[t]))
    np.testing.assert_allclose(out["sigma_star"][t > 0], sigma[t > 0], rtol=1e-12)
    ok = (t > 0) & (np.abs(v) < np.inf) & (np.log(beta / beta_tilde)[t] > 1e-4)  # the plain formula has digits
    assert ok.sum() > 0.5 * len(t)
    np.testing.assert_allclose(out["v_star_raw"][ok], v[ok], rtol=1e-7, atol=1e-10)
    assert np.isnan(out["v_star"][t == 0]).all()
    defined = np.isfinite(out["v_star"])
    assert defined[t > 0].mean() > 0.95 and ((out["v_star"][defined] >= 0) & (out["v_star"][defined] <= 1)).all()
    np.testing.assert_array_equal(out["v_star"][defined], out["v_star_raw"][defined])  # e < 1 - abar: no clipping


def test_kl_optimal_v_is_accurate_where_beta_and_beta_tilde_nearly_agree():
    """At the end of a long cosine chain beta / beta-tilde - 1 is ~1e-6: the plain formula loses digits, the
    log1p form does not. Compare with the first-order expansion v* = (c^2 e / beta~) / ((beta - beta~) / beta~)."""
    d = GaussianDiffusion(get_betas("cosine", 4000))
    t = np.arange(3000, 3990)
    e = 0.3 * (1 - d.alphas_cumprod[t])
    out = kl_optimal_v(d, e, t, tol=0.0)
    abar, abar_prev, beta_tilde, c = _chain64(d.betas)
    x = c[t] ** 2 * e / beta_tilde[t]
    y = d.betas[t] ** 2 * abar_prev[t] / (1 - abar[t]) / beta_tilde[t]
    expansion = x * (1 - x / 2) / (y * (1 - y / 2))  # log1p(x) / log1p(y) to second order
    np.testing.assert_allclose(out["v_star_raw"], expansion, rtol=1e-5)
    # e = (1 - abar_t) v exactly gives v* -> v as the steps get small (the continuum limit of the formula)
    np.testing.assert_allclose(out["v_star_raw"], 0.3, atol=2e-3)


def test_kl_optimal_v_clips_marks_undefined_steps_and_refuses_bad_input():
    d = GaussianDiffusion(get_betas("cosine", 100))
    t = np.array([0, 1, 50, 99])
    e = np.array([0.1, 10.0, 0.0, 0.1])  # 10: worse than the noise, v* > 1; 0: a perfect model, v* = 0
    out = kl_optimal_v(d, e, t, tol=1e-3)
    assert math.isnan(out["v_star"][0]) and math.isnan(out["v_star_raw"][0])
    assert out["v_star_raw"][1] > 1 and out["v_star"][1] == 1.0
    assert out["v_star"][2] == 0.0
    assert math.isnan(out["v_star"][3])  # delta below tol
    with pytest.raises(ValueError, match="one error per timestep"):
        kl_optimal_v(d, e[:3], t)
    with pytest.raises(ValueError, match="non-negative"):
        kl_optimal_v(d, -e, t)
    with pytest.raises(ValueError, match=r"\[0, 99\]"):
        kl_optimal_v(d, e, t + 1)


def test_kl_optimal_v_on_a_respaced_chain_uses_its_own_betas():
    d = respace(GaussianDiffusion(get_betas("cosine", 1000)), 25)
    e = np.full(25, 0.05)
    out = kl_optimal_v(d, e)
    _, _, beta_tilde, c = _chain64(d.betas)
    np.testing.assert_allclose(out["sigma_star"], beta_tilde + c ** 2 * 0.05, rtol=1e-12)


class _TinyNet(torch.nn.Module):
    """A fixed, deterministic learned-variance model: eps and v depend on x_t and t smoothly."""

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.w = torch.nn.Parameter(0.3 * torch.randn(2, 1, 3, 3, generator=g))

    def forward(self, x, t):
        s = (t.float() / 50).reshape(-1, 1, 1, 1)
        h = torch.nn.functional.conv2d(x, self.w, padding=1)
        return torch.cat([0.8 * x + 0.2 * torch.tanh(h[:, :1]) * s, torch.tanh(h[:, 1:] + s) - 0.2], dim=1)


def test_variance_fit_matches_a_float64_computation_and_the_library_bound_terms():
    d = GaussianDiffusion(get_betas("cosine", 60), var_type="learned_range")
    model = _TinyNet()
    x0 = torch.rand(16, 1, 4, 4) * 2 - 1
    t_grid = [0, 1, 3, 10, 30, 59]
    fit = variance_fit(model, d, x0, t_grid, clip_denoised=False, seed=3, batch_size=10_000)
    # the same draws of noise, then everything again in float64 from the betas
    noise = torch.randn((len(t_grid) * 16, 1, 4, 4), generator=torch.Generator().manual_seed(3)).double()
    abar, abar_prev, beta_tilde, c = _chain64(d.betas)
    log_bt_clipped = np.log(np.append(beta_tilde[1], beta_tilde[1:]))
    for i, t in enumerate(t_grid):
        eps_in = noise[16 * i: 16 * (i + 1)]
        x_t = math.sqrt(abar[t]) * x0.double() + math.sqrt(1 - abar[t]) * eps_in
        with torch.no_grad():
            out = model(x_t.float(), torch.full((16,), t)).double()
        eps, raw = out[:, :1], out[:, 1:]
        v = (raw + 1) / 2
        x0_hat = (x_t - math.sqrt(1 - abar[t]) * eps) / math.sqrt(abar[t])
        e = ((x0_hat - x0.double()) ** 2).mean().item()
        assert fit.v[i] == pytest.approx(v.mean().item(), rel=1e-6)
        assert fit.xstart_mse[i] == pytest.approx(e, rel=1e-4)
        if t == 0:
            assert math.isnan(fit.v_star[i]) and math.isnan(fit.kl_model[i])
            continue
        log_sigma = v * math.log(d.betas[t]) + (1 - v) * log_bt_clipped[t]
        mean_gap = c[t] * (x0.double() - x0_hat)
        kl = 0.5 * (log_sigma - math.log(beta_tilde[t]) + (beta_tilde[t] + mean_gap ** 2) / torch.exp(log_sigma) - 1)
        assert fit.kl_model[i] == pytest.approx(kl.mean().item() / math.log(2), rel=1e-4)
        sigma_star = beta_tilde[t] + c[t] ** 2 * e
        assert fit.sigma_star[i] == pytest.approx(sigma_star, rel=1e-4)
        assert fit.kl_star[i] == pytest.approx(0.5 * math.log(sigma_star / beta_tilde[t]) / math.log(2), rel=1e-4)
        assert fit.kl_small[i] == pytest.approx(0.5 * c[t] ** 2 * e / beta_tilde[t] / math.log(2), rel=1e-4)
        assert fit.kl_star[i] <= min(fit.kl_small[i], fit.kl_large[i]) + 1e-12
    # kl_model is the library's own term L_{t-1} of the bound (_vb_terms_bpd), averaged over the images
    for i, t in enumerate(t_grid[1:], start=1):
        eps_in = noise[16 * i: 16 * (i + 1)].float()
        tt = torch.full((16,), t)
        x_t = d.q_sample(x0, tt, eps_in)
        terms = d._vb_terms_bpd(model, x0, x_t, tt, clip_denoised=False)["output"]
        assert fit.kl_model[i] == pytest.approx(terms.mean().item(), rel=2e-3)


def _gaussian_case(T=200, D=6, n=4000, m=0.3, s=0.5):
    """Data N(m, s^2 I) in D dimensions and its exact eps model, with a constant v output."""
    d = GaussianDiffusion(get_betas("cosine", T), var_type="learned_range")
    mixture = GaussianMixture(torch.full((1, D), m), std=s)
    eps_model = mixture.eps_model(d)

    def model(x_t, t):
        return torch.cat([eps_model(x_t, t), torch.zeros_like(x_t)], dim=1)

    x0, _ = mixture.sample(n, generator=torch.Generator().manual_seed(1))
    return d, model, x0, s


def test_kl_optimal_variance_of_an_exact_model_of_gaussian_data_is_the_true_reverse_variance():
    """For x_0 ~ N(m, s^2 I) the exact model's error is Var(x_0 | x_t) = s^2 (1 - abar) / (abar s^2 + 1 - abar),
    and Sigma* = beta~ + c^2 Var(x_0 | x_t) must be the variance of the true reverse step q(x_{t-1} | x_t), which
    the joint Gaussian of (x_{t-1}, x_t) gives without any posterior coefficient."""
    d, model, x0, s = _gaussian_case()
    t = np.array([1, 3, 10, 30, 60, 100, 150])
    fit = variance_fit(model, d, x0, t, clip_denoised=False, seed=0)
    abar, abar_prev = d.alphas_cumprod[t], d.alphas_cumprod_prev[t]
    e = s ** 2 * (1 - abar) / (abar * s ** 2 + 1 - abar)
    np.testing.assert_allclose(fit.xstart_mse, e, rtol=0.04)
    var_prev = abar_prev * s ** 2 + 1 - abar_prev
    var_t = abar * s ** 2 + 1 - abar
    true_reverse = var_prev - (1 - d.betas[t]) * var_prev ** 2 / var_t
    np.testing.assert_allclose(fit.sigma_star, true_reverse, rtol=0.01)
    closed = kl_optimal_v(d, e, t)
    np.testing.assert_allclose(fit.v_star, closed["v_star"], atol=0.02)
    assert np.isclose(fit.v, 0.5).all()  # the model's variance output is 0: v = (0 + 1) / 2


def test_minimising_the_sampled_kl_over_v_lands_on_v_star():
    """The expected L_{t-1} estimated from samples, as a function of v (eq. 15), is minimal at v*."""
    from scipy.optimize import minimize_scalar

    d, model, x0, _ = _gaussian_case(n=2000)
    g = torch.Generator().manual_seed(5)
    for t in (2, 20, 80):
        tt = torch.full((len(x0),), t)
        x_t = d.q_sample(x0, tt, torch.randn(x0.shape, generator=g))
        out = d.p_mean_variance(model, x_t, tt, clip_denoised=False)
        true_mean, _, _ = d.q_posterior_mean_variance(x0, x_t, tt)
        sq = ((true_mean.double() - out["mean"].double()) ** 2).mean().item()
        beta, beta_tilde = d.betas[t], d.posterior_variance[t]

        def expected_kl(v, beta=beta, beta_tilde=beta_tilde, sq=sq):
            log_sigma = v * math.log(beta) + (1 - v) * math.log(beta_tilde)
            return 0.5 * (log_sigma - math.log(beta_tilde) + (beta_tilde + sq) / math.exp(log_sigma) - 1)

        best = minimize_scalar(expected_kl, bounds=(-1, 2), method="bounded", options={"xatol": 1e-10}).x
        e = ((out["pred_xstart"].double() - x0.double()) ** 2).mean().item()
        assert best == pytest.approx(kl_optimal_v(d, [e], [t])["v_star_raw"][0], abs=1e-6)


def _fit(v, v_star, t=None):
    t = np.arange(1, len(v) + 1) if t is None else np.asarray(t)
    z = np.zeros(len(t))
    return VarianceFit(t=t, v=np.asarray(v, float), v_star=np.asarray(v_star, float),
                       v_star_raw=np.asarray(v_star, float), sigma_star=z + 1, xstart_mse=z, beta=z + 2,
                       beta_tilde=z + 1, kl_model=z + 0.2, kl_star=z + 0.1, kl_small=z, kl_large=z,
                       num_timesteps=len(t) + 1, num_images=1)


def test_rms_gap_is_uniform_in_t_whatever_the_grid():
    t = default_timesteps(1000)
    v_star = 0.2 + 0.5 * np.exp(-t / 50)
    assert _fit(v_star + 0.1, v_star, t).rms_gap == pytest.approx(0.1)
    # a gap only below t = 100 counts for about a tenth of the chain, however densely the grid samples it
    gap = np.where(t < 100, 0.3, 0.0)
    assert _fit(v_star + gap, v_star, t).rms_gap == pytest.approx(0.3 * math.sqrt(0.1), rel=0.1)
    assert _fit(v_star + gap, v_star, t).rms_gap_log > 0.2
    fit = _fit([0.5, 0.5, 0.5], [np.nan, 0.4, 0.6], t=[1, 2, 3])
    assert fit.rms_gap == pytest.approx(0.1) and fit.excess_bpd == pytest.approx(0.1 * 3)
    assert fit.at(2)["v_star"] == 0.4
    with pytest.raises(KeyError, match="not on this fit's grid"):
        fit.at(7)
    assert "RMS(v - v*) 0.100" in fit.summary()
    assert fit.to_dict()["v_star"][0] is None


def test_default_timesteps_are_dense_at_both_ends_and_distinct():
    t = default_timesteps(1000)
    assert t[0] == 1 and t[-1] == 999 and len(np.unique(t)) == len(t) and 40 <= len(t) <= 50
    assert {1, 2, 3, 996, 998, 999} <= set(t.tolist())
    assert np.diff(t).max() < 120 and (np.diff(t)[:5] <= 1).all() and (np.diff(t)[-2:] <= 2).all()
    assert default_timesteps(4000)[-1] == 3999 and default_timesteps(2).tolist() == [1]
    with pytest.raises(ValueError):
        default_timesteps(1)


def test_a_fixed_variance_model_has_no_v_but_a_v_star():
    d = GaussianDiffusion(get_betas("cosine", 50), var_type="fixed_small")
    fit = variance_fit(lambda x, t: 0.9 * x, d, torch.rand(8, 1, 4, 4) * 2 - 1, [1, 10, 40])
    assert np.isnan(fit.v).all() and np.isfinite(fit.v_star).all() and math.isnan(fit.rms_gap)
    np.testing.assert_allclose(fit.kl_model, fit.kl_small, rtol=1e-4)  # the model's variance is beta-tilde
    assert "fixed variance" in fit.summary()


def test_variance_fit_refuses_bad_arguments():
    d = GaussianDiffusion(get_betas("cosine", 50), var_type="learned_range")
    model = _TinyNet()
    with pytest.raises(ValueError, match="float tensor"):
        variance_fit(model, d, torch.zeros(4, 1, 4, 4, dtype=torch.long))
    with pytest.raises(ValueError, match=r"\[0, 49\]"):
        variance_fit(model, d, torch.zeros(4, 1, 4, 4), [10, 50])


def test_trainer_callback_logs_a_fit_every_k_steps():
    from ddpm_lite.configs import ExperimentConfig
    from ddpm_lite.data import load_dataset
    from ddpm_lite.train import Trainer, every

    cfg = ExperimentConfig.preset("digits").override({"model.model_channels": 16, "model.num_head_channels": 16,
                                                      "diffusion.num_timesteps": 20, "batch_size": 32})
    images = load_dataset("digits", "test").images[:8]
    callback = log_variance_fit(images, [1, 5, 19], verbose=False)
    trainer = Trainer.from_config(cfg, device="cpu", progress=False, callbacks=[every(2, callback)])
    trainer.train(4)
    assert [f.step for f in callback.fits] == [2, 4]
    assert all(np.isfinite(f.v).all() and f.num_images == 8 for f in callback.fits)
    assert trainer.logs["v_rms_gap"] == pytest.approx(callback.fits[-1].rms_gap)
    assert trainer.ema.training is False  # the EMA copy stays in eval mode
    # the fits are paired (same x_t noise): refitting the final EMA weights gives the last fit again
    again = variance_fit(trainer.ema, trainer.diffusion, images, [1, 5, 19])
    np.testing.assert_allclose(again.v, callback.fits[-1].v, rtol=1e-6)


def test_figure_is_readable_and_labels_each_fit():
    from ddpm_lite.course import style

    t = default_timesteps(1000)
    v_star = 0.2 + 0.5 * np.exp(-t / 50)
    fits = [_fit(np.full(len(t), 0.77), v_star, t), _fit(v_star + 0.02, v_star, t)]
    fits[0].step, fits[1].step = 2000, 6000
    fig = variance_fit_figure(fits)
    labels = [text.get_text() for text in fig.axes[0].get_legend().get_texts()]
    assert labels[0].startswith("step 2000: learned v (RMS gap") and "v* (KL-optimal)" in labels[1]
    assert fig.axes[0].get_xscale() == "log"
    assert style.check(fig) == []
    with pytest.raises(ValueError, match="no fits"):
        variance_fit_figure({})


def test_fixed_v_samples_with_the_given_variance_on_full_and_respaced_chains():
    """FixedV keeps the model's eps and replaces its v by v[t] of the original chain: p_mean_variance then gives
    log Sigma = v log beta + (1 - v) log beta~, with the respaced beta' and beta~' on a respaced chain."""
    from ddpm_lite.metrics import FixedV

    d = GaussianDiffusion(get_betas("cosine", 100), var_type="learned_range")
    model = _TinyNet()
    v = np.linspace(0.9, 0.1, 100)
    fixed = FixedV(model, v)
    x = torch.randn(3, 1, 4, 4)
    for diffusion in (d, respace(d, 10)):
        t = torch.tensor([0, 4, 9]) if diffusion is not d else torch.tensor([0, 40, 99])
        original_t = diffusion.timestep_map[t] if diffusion is not d else t
        out = diffusion.p_mean_variance(fixed, x, t, clip_denoised=False)
        ref = diffusion.p_mean_variance(model, x, t, clip_denoised=False)
        torch.testing.assert_close(out["pred_xstart"], ref["pred_xstart"])
        vt = torch.from_numpy(v[original_t.numpy()]).reshape(-1, 1, 1, 1)
        log_beta = torch.from_numpy(np.log(diffusion.betas[t.numpy()])).reshape(-1, 1, 1, 1)
        log_beta_tilde = torch.from_numpy(diffusion.posterior_log_variance_clipped[t.numpy()]).reshape(-1, 1, 1, 1)
        expected = vt * log_beta + (1 - vt) * log_beta_tilde
        torch.testing.assert_close(out["log_variance"].double(), expected.expand(3, 1, 4, 4).double(),
                                   rtol=1e-5, atol=1e-5)


def test_v_star_every_step_interpolates_in_log_t_and_fills_the_ends():
    t = np.array([1, 10, 100, 999])
    fit = _fit([0.5] * 4, [0.7, 0.5, np.nan, 0.3], t)
    fit.num_timesteps = 1000
    full = fit.v_star_every_step()
    assert full.shape == (1000,) and full[0] == 0.7 and full[1] == 0.7 and full[10] == 0.5 and full[999] == 0.3
    assert full[100] == pytest.approx(0.5 + (0.3 - 0.5) * math.log(10) / math.log(99.9))
    assert 0.5 < full[3] < 0.7


def test_to_dict_and_from_dict_round_trip():
    d = GaussianDiffusion(get_betas("cosine", 50), var_type="learned_range")
    fit = variance_fit(_TinyNet(), d, torch.rand(4, 1, 4, 4) * 2 - 1, [0, 3, 30])
    back = VarianceFit.from_dict(fit.to_dict())
    for name in ("t", "v", "v_star", "kl_model", "beta", "beta_tilde"):
        np.testing.assert_array_equal(getattr(back, name), getattr(fit, name))
    assert back.rms_gap == fit.rms_gap and back.num_timesteps == 50
