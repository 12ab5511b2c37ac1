"""GaussianDiffusion against independent float64 computations and published properties."""
import math

import numpy as np
import pytest
import torch

from ddpm_lite import GaussianDiffusion, get_betas
from ddpm_lite.losses import discretized_gaussian_log_likelihood

T = 100


def make(schedule="linear", **kwargs):
    return GaussianDiffusion(get_betas(schedule, T), **kwargs)


class Oracle:
    """Knows x_0: predicts the exact eps, x_0 or posterior mean of x_{t-1} (optionally with variance outputs)."""

    def __init__(self, diffusion, x0, var_values=None):
        self.d, self.x0, self.var_values = diffusion, x0, var_values
        self.seen_t = []

    def __call__(self, x_t, t):
        self.seen_t.append(t.clone())
        ab = torch.from_numpy(self.d.alphas_cumprod).float()[t].reshape(-1, *[1] * (x_t.ndim - 1))
        eps = (x_t - ab.sqrt() * self.x0) / (1 - ab).sqrt()
        out = {"eps": eps, "x0": self.x0,
               "xprev": self.d.q_posterior_mean_variance(self.x0, x_t, t)[0]}[self.d.mean_type]
        return out if self.var_values is None else torch.cat([out, self.var_values], dim=1)


def test_derived_quantities_in_float64():
    d = make("cosine")
    betas = get_betas("cosine", T)
    alpha_bar = np.array([np.prod(1 - betas[: t + 1]) for t in range(T)])
    assert d.alphas_cumprod.dtype == np.float64
    np.testing.assert_allclose(d.alphas_cumprod, alpha_bar, rtol=1e-13)
    np.testing.assert_allclose(d.alphas_cumprod_prev[1:], alpha_bar[:-1], rtol=1e-13)
    tilde_beta = betas[1:] * (1 - alpha_bar[:-1]) / (1 - alpha_bar[1:])
    np.testing.assert_allclose(d.posterior_variance[1:], tilde_beta, rtol=1e-12)
    assert d.posterior_variance[0] == 0


def test_q_sample_moments():
    d = make()
    x0 = torch.full((200_000, 1), 0.7)
    t = torch.full((200_000,), 30)
    x_t = d.q_sample(x0, t).double()
    ab = d.alphas_cumprod[30]
    assert x_t.mean().item() == pytest.approx(math.sqrt(ab) * 0.7, abs=5e-3)
    assert x_t.var().item() == pytest.approx(1 - ab, rel=1e-2)
    mean, var, log_var = d.q_mean_variance(x0[:2], t[:2])
    assert torch.allclose(mean, torch.full_like(mean, math.sqrt(ab) * 0.7))
    assert var.flatten()[0].item() == pytest.approx(1 - ab, rel=1e-6)
    assert log_var.flatten()[0].item() == pytest.approx(math.log(1 - ab), rel=1e-6)


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_posterior_equals_product_of_gaussians(schedule):
    """q(x_{t-1}|x_t,x_0) is proportional to q(x_t|x_{t-1}) q(x_{t-1}|x_0): multiply the two Gaussians in float64."""
    d = make(schedule)
    rng = np.random.default_rng(0)
    t = np.arange(1, T)
    x0, xt = rng.normal(size=len(t)), rng.normal(size=len(t))
    betas = get_betas(schedule, T)
    alpha_bar = np.cumprod(1 - betas)
    ab_prev, a, b = alpha_bar[t - 1], 1 - betas[t], betas[t]
    precision = a / b + 1 / (1 - ab_prev)  # from N(x_t; sqrt(a) x, b) and N(x; sqrt(ab_prev) x0, 1 - ab_prev)
    var = 1 / precision
    mean = var * (np.sqrt(a) * xt / b + np.sqrt(ab_prev) * x0 / (1 - ab_prev))
    m, v, lv = d.q_posterior_mean_variance(torch.tensor(x0)[:, None].float(), torch.tensor(xt)[:, None].float(),
                                           torch.tensor(t))
    np.testing.assert_allclose(m.double().numpy().ravel(), mean, rtol=2e-5, atol=2e-6)
    np.testing.assert_allclose(v.double().numpy().ravel(), var, rtol=2e-6)
    np.testing.assert_allclose(lv.double().numpy().ravel(), np.log(var), rtol=2e-6)


@pytest.mark.parametrize("mean_type", ["eps", "x0", "xprev"])
def test_every_parameterisation_gives_the_same_mean(mean_type):
    torch.manual_seed(0)
    d = make(mean_type=mean_type)
    x0 = torch.rand(8, 1, 4, 4) * 1.6 - 0.8
    t = torch.randint(0, T, (8,))
    x_t = d.q_sample(x0, t)
    out = d.p_mean_variance(Oracle(d, x0), x_t, t, clip_denoised=False)
    true_mean, _, _ = d.q_posterior_mean_variance(x0, x_t, t)
    assert torch.allclose(out["pred_xstart"], x0, atol=2e-4)
    assert torch.allclose(out["mean"], true_mean, atol=2e-4)


def test_variance_types():
    d = make()
    x = torch.zeros(3, 2, 1, 1)
    t = torch.tensor([0, 1, 60])
    betas, tilde = d.betas, d.posterior_variance
    small = make(var_type="fixed_small").p_mean_variance(lambda x, t: torch.zeros_like(x), x, t)
    assert np.allclose(small["variance"][:, 0, 0, 0].numpy(), [tilde[1] * 0 + tilde[0], tilde[1], tilde[60]])
    assert np.allclose(small["log_variance"][:, 0, 0, 0].numpy(), np.log([tilde[1], tilde[1], tilde[60]]))
    large = make(var_type="fixed_large").p_mean_variance(lambda x, t: torch.zeros_like(x), x, t)
    assert np.allclose(large["variance"][:, 0, 0, 0].numpy(), [tilde[1], betas[1], betas[60]])

    def out_with(v):
        return lambda x, t: torch.cat([torch.zeros_like(x), torch.full_like(x, v)], 1)

    learned = make(var_type="learned").p_mean_variance(out_with(-3.0), x, t)
    assert torch.allclose(learned["variance"], torch.full_like(x, math.exp(-3.0)))
    rng = make(var_type="learned_range")
    hi, lo, mid = (rng.p_mean_variance(out_with(v), x, t)["log_variance"][:, 0, 0, 0].double().numpy()
                   for v in (1.0, -1.0, 0.0))
    log_tilde = np.log([tilde[1], tilde[1], tilde[60]])
    np.testing.assert_allclose(hi, np.log(betas[[0, 1, 60]]), rtol=1e-6)  # v = 1: beta
    np.testing.assert_allclose(lo, log_tilde, rtol=1e-6)                    # v = -1: beta-tilde
    np.testing.assert_allclose(mid, 0.5 * (np.log(betas[[0, 1, 60]]) + log_tilde), rtol=1e-6)  # eq. 15, v = 0.5


def _vb_terms_float64(d, x0, x_t, t, model_mean, model_log_var):
    """L_{t-1} (KL of two Gaussians) and L_0 (discretised decoder) in bits, per example, in float64."""
    t = t.numpy()
    c1, c2 = d.posterior_mean_coef1[t][:, None], d.posterior_mean_coef2[t][:, None]
    true_mean = c1 * x0 + c2 * x_t
    true_log_var = d.posterior_log_variance_clipped[t][:, None]
    kl = 0.5 * (-1 + model_log_var - true_log_var + np.exp(true_log_var - model_log_var)
                + (true_mean - model_mean) ** 2 * np.exp(-model_log_var))
    nll = -discretized_gaussian_log_likelihood(torch.tensor(x0), means=torch.tensor(model_mean),
                                               log_scales=torch.tensor(0.5 * model_log_var)).numpy()
    return np.where(t == 0, nll.mean(1), kl.mean(1)) / math.log(2)


def test_kl_loss_against_float64():
    torch.manual_seed(1)
    d = make(mean_type="x0", var_type="learned", loss_type="kl")
    x0 = (torch.randint(0, 256, (16, 6)).float() / 127.5 - 1)
    t = torch.cat([torch.zeros(4, dtype=torch.long), torch.randint(1, T, (12,))])
    noise = torch.randn_like(x0)
    pred = x0 + 0.05 * torch.randn(16, 6)  # a decent model: the decoder terms stay out of float32 tails
    log_var = torch.randn(16, 6) - 4
    model = lambda x, t: torch.cat([pred, log_var], dim=1)
    loss = d.training_losses(model, x0, t, noise=noise)["loss"]
    x_t = d.q_sample(x0, t, noise)
    c1, c2 = d.posterior_mean_coef1[t.numpy()][:, None], d.posterior_mean_coef2[t.numpy()][:, None]
    model_mean = c1 * pred.double().numpy() + c2 * x_t.double().numpy()
    expected = _vb_terms_float64(d, x0.double().numpy(), x_t.double().numpy(), t, model_mean,
                                 log_var.double().numpy())
    np.testing.assert_allclose(loss.double().numpy(), expected, rtol=1e-4, atol=1e-5)
    rescaled = GaussianDiffusion(d.betas, "x0", "learned", "rescaled_kl").training_losses(model, x0, t, noise)
    assert torch.allclose(rescaled["loss"], loss * T)


def test_simple_loss_is_the_eps_mse():
    d = make()
    x0, noise = torch.randn(4, 1, 2, 2), torch.randn(4, 1, 2, 2)
    out = torch.randn(4, 1, 2, 2)
    terms = d.training_losses(lambda x, t: out, x0, torch.tensor([0, 5, 50, 99]), noise=noise)
    assert set(terms) == {"loss", "mse"}
    assert torch.allclose(terms["loss"], ((noise - out) ** 2).mean(dim=(1, 2, 3)))


@pytest.mark.parametrize("mean_type", ["x0", "xprev"])
def test_simple_loss_targets(mean_type):
    d = make(mean_type=mean_type)
    x0, noise, t = torch.rand(3, 2) - 0.5, torch.randn(3, 2), torch.tensor([1, 10, 90])
    target = x0 if mean_type == "x0" else d.q_posterior_mean_variance(x0, d.q_sample(x0, t, noise), t)[0]
    terms = d.training_losses(lambda x, t: target, x0, t, noise=noise)
    assert torch.allclose(terms["mse"], torch.zeros(3), atol=1e-10)


def test_hybrid_loss_is_simple_plus_vb_with_stop_gradient_on_the_mean():
    torch.manual_seed(0)
    d = make(var_type="learned_range")
    x0, t, noise = torch.rand(6, 1, 3, 3) * 2 - 1, torch.randint(0, T, (6,)), torch.randn(6, 1, 3, 3)
    out = torch.randn(6, 2, 3, 3, requires_grad=True)
    terms = d.training_losses(lambda x, t: out, x0, t, noise=noise)
    assert torch.allclose(terms["loss"], terms["mse"] + terms["vb"])
    assert torch.allclose(terms["mse"], ((noise - out[:, :1]) ** 2).mean(dim=(1, 2, 3)))
    (grad,) = torch.autograd.grad(terms["vb"].sum(), out)
    assert (grad[:, :1] == 0).all() and (grad[:, 1:] != 0).any()  # vb trains only the variance
    # the vb term equals the kl loss of a model with the same output
    kl = GaussianDiffusion(d.betas, "eps", "learned_range", "kl").training_losses(lambda x, t: out, x0, t, noise)
    assert torch.allclose(terms["vb"], kl["loss"])
    rescaled = GaussianDiffusion(d.betas, "eps", "learned_range", "rescaled_mse")
    assert torch.allclose(rescaled.training_losses(lambda x, t: out, x0, t, noise)["vb"], terms["vb"] * T / 1000)


def test_ddim_with_eta_one_has_the_ddpm_posterior_variance():
    d = make("cosine")
    x0 = torch.full((100_000, 1), 0.3)
    for step in (1, 40, 99):
        t = torch.full((100_000,), step)
        x_t = d.q_sample(x0, t)
        oracle = Oracle(d, x0)
        ddim = d.ddim_sample(oracle, x_t, t, clip_denoised=False, eta=1.0)["sample"]
        ddpm_mean, ddpm_var, _ = d.q_posterior_mean_variance(x0, x_t, t)
        resid = (ddim - ddpm_mean).double()
        assert resid.mean().item() == pytest.approx(0.0, abs=4 * math.sqrt(ddpm_var[0].item() / 1e5) + 1e-6)
        assert resid.var().item() == pytest.approx(ddpm_var[0].item(), rel=2e-2)


def test_ddim_with_eta_zero_is_deterministic_and_inverts_q_sample_for_an_oracle():
    d = make()
    x0 = torch.rand(5, 3) * 2 - 1
    x_T = d.q_sample(x0, torch.full((5,), T - 1))
    out = d.ddim_sample_loop(Oracle(d, x0), (5, 3), noise=x_T, eta=0.0)
    assert torch.allclose(out, x0, atol=1e-4)


def test_p_sample_adds_no_noise_at_t0_and_loops_are_reproducible():
    d = make(var_type="fixed_large")
    x = torch.randn(4, 2)
    zero = lambda x, t: torch.zeros_like(x)
    a = d.p_sample(zero, x, torch.zeros(4, dtype=torch.long))["sample"]
    b = d.p_sample(zero, x, torch.zeros(4, dtype=torch.long))["sample"]
    assert torch.equal(a, b)
    s1 = d.p_sample_loop(zero, (4, 2), generator=torch.Generator().manual_seed(3), progress=True)
    s2 = d.p_sample_loop(zero, (4, 2), generator=torch.Generator().manual_seed(3))
    assert s1.shape == (4, 2) and torch.equal(s1, s2)
    steps = list(d.p_sample_loop_progressive(zero, (4, 2)))
    assert len(steps) == T


def test_ancestral_sampling_with_an_oracle_recovers_the_data_point():
    d = make("cosine")
    x0 = torch.tensor([[0.5, -0.25]]).repeat(64, 1)
    samples = d.p_sample_loop(Oracle(d, x0), (64, 2), generator=torch.Generator().manual_seed(0))
    assert torch.allclose(samples, x0, atol=1e-3)


def test_guidance_shifts_mean_and_score():
    d = make()
    x0 = torch.rand(3, 2) - 0.5
    t = torch.tensor([2, 20, 80])
    x_t = d.q_sample(x0, t)
    g = torch.tensor([[1.0, -2.0]]).repeat(3, 1)
    cond_fn = lambda x, t: g
    out = d.p_mean_variance(Oracle(d, x0), x_t, t, clip_denoised=False)
    shifted = d.condition_mean(cond_fn, out, x_t, t)
    assert torch.allclose(shifted, out["mean"] + out["variance"] * g)
    scored = d.condition_score(cond_fn, out, x_t, t)
    ab = torch.from_numpy(d.alphas_cumprod[t.numpy()]).float()[:, None]
    eps = (x_t - ab.sqrt() * x0) / (1 - ab).sqrt()
    new_eps = eps - (1 - ab).sqrt() * g
    assert torch.allclose(scored["pred_xstart"], (x_t - (1 - ab).sqrt() * new_eps) / ab.sqrt(), atol=1e-4)


def test_cond_fn_in_p_sample_changes_the_sample():
    d = make()
    x = torch.randn(4, 2)
    t = torch.full((4,), 50)
    zero = lambda x, t: torch.zeros_like(x)
    g = torch.Generator().manual_seed(0)
    plain = d.p_sample(zero, x, t, generator=torch.Generator().manual_seed(0))["sample"]
    guided = d.p_sample(zero, x, t, cond_fn=lambda x, t: torch.ones_like(x), generator=g)["sample"]
    var = d.posterior_variance[50]
    assert torch.allclose(guided - plain, torch.full_like(x, var), atol=1e-6)


def test_bits_per_dim_of_a_perfect_model_of_a_point_mass():
    """For data that is a single point, the oracle's KL terms vanish: total = prior + decoder NLL."""
    d = make("cosine")
    x0 = (torch.randint(0, 256, (2, 1, 2, 2)).float() / 127.5 - 1)
    out = d.calc_bpd_loop(Oracle(d, x0), x0, clip_denoised=False, progress=True)
    assert out["vb"].shape == (2, T) and out["mse"].shape == (2, T)
    assert out["vb"][:, 1:].abs().max() < 1e-3
    assert torch.allclose(out["total_bpd"], out["prior_bpd"] + out["vb"].sum(1))
    ab_T = d.alphas_cumprod[-1]
    mean = math.sqrt(ab_T) * x0.double()
    prior = (0.5 * (-1 - math.log(1 - ab_T) + (1 - ab_T) + mean ** 2)).mean(dim=(1, 2, 3)) / math.log(2)
    assert torch.allclose(out["prior_bpd"].double(), prior, rtol=1e-4, atol=1e-7)
    # decoder at t = 0: N(x0, beta-tilde_1) discretised; independent log-likelihood in float64
    sigma = math.sqrt(d.posterior_variance[1])
    from scipy.stats import norm
    x = x0.double().numpy()
    upper = np.where(x > 0.999, 1.0, norm.cdf(1 / 255 / sigma))
    lower = np.where(x < -0.999, 0.0, norm.cdf(-1 / 255 / sigma))
    nll = -np.log(upper - lower).mean(axis=(1, 2, 3)) / math.log(2)
    np.testing.assert_allclose(out["vb"][:, 0].double().numpy(), nll, rtol=2e-3)


@pytest.mark.parametrize("kwargs,match", [
    ({"mean_type": "score"}, r"unknown mean_type 'score'.*eps"),
    ({"var_type": "fixed"}, r"unknown var_type 'fixed'.*learned_range"),
    ({"loss_type": "l1"}, r"unknown loss_type 'l1'.*rescaled_kl"),
])
def test_unknown_types(kwargs, match):
    with pytest.raises(ValueError, match=match):
        make(**kwargs)


@pytest.mark.parametrize("betas", [np.zeros(3), np.ones((2, 2)) * 0.1, np.array([0.1, 1.5])])
def test_bad_betas(betas):
    with pytest.raises(ValueError, match="beta"):
        GaussianDiffusion(betas)


def test_bad_inputs_name_what_was_expected():
    d = make()
    x = torch.randn(2, 1, 4, 4)
    with pytest.raises(ValueError, match="integer torch.Tensor"):
        d.q_sample(x, torch.tensor([1.0, 2.0]))
    with pytest.raises(ValueError, match=r"lie in \[0, 99\]"):
        d.q_sample(x, torch.tensor([0, 100]))
    with pytest.raises(ValueError, match=r"shape \(2,\)"):
        d.q_sample(x, torch.tensor([1, 2, 3]))
    with pytest.raises(ValueError, match="floating-point"):
        d.q_sample(x.long(), torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="noise must have the shape"):
        d.q_sample(x, torch.tensor([1, 2]), noise=torch.randn(2, 1, 4, 5))
    with pytest.raises(ValueError, match=r"model output has shape \(2, 1, 4, 4\), expected \(2, 2, 4, 4\)"):
        make(var_type="learned").p_mean_variance(lambda x, t: x, x, torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="share a shape"):
        d.q_posterior_mean_variance(x, x[:, :, :2], torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="noise has shape"):
        d.p_sample_loop(lambda x, t: x, (2, 3), noise=torch.randn(2, 4))
