"""DPM-Solver++(2M) (ddpm_lite.dpm_solver) against exact solutions of the probability-flow ODE.

For Gaussian data x_0 ~ N(m, s^2 I) the noised marginals are Gaussian, q_t = N(alpha_t m, v_t I) with
v_t = alpha_t^2 s^2 + sigma_t^2, and the exact eps-model is E[eps | x_t] = sigma_t (x_t - alpha_t m) / v_t. The ODE
is then linear in x and its solution keeps the standardised value z = (x_t - alpha_t m) / sqrt(v_t) constant:
substituting x_t = alpha_t m + sqrt(v_t) z into dx/dt = f x + g^2 / (2 sigma) eps, with f = dlog(alpha)/dt and
g^2 = d(sigma^2)/dt - 2 f sigma^2, both sides agree because dv/dt = 2 f v + g^2. So the exact endpoint at timestep 0
is alpha_0 m + sqrt(v_0) (x_T - alpha_T m) / sqrt(v_T), computed in float64.

For a Gaussian mixture the eps-model is still exact (posterior responsibilities) but the ODE is nonlinear; the
reference is a fine RK4 integration in lambda, in float64, of y = x / sigma: dy/dlambda = e^lambda x0(sigma y).

The solvers run on the discrete chain (T = 1000, linear betas) at timesteps evenly spaced in log-SNR or in t,
without the final denoising call, and are compared with the exact x at timestep 0: DPM-Solver++(2M)'s error falls
as steps^-2, DDIM's (the library's ddim_sample_loop on the respaced chain) as steps^-1 (slopes of log-log fits over
step counts where the errors are in their asymptotic regime).
"""
import numpy as np
import pytest
import torch

from ddpm_lite import GaussianDiffusion, get_betas, respace
from ddpm_lite.dpm_solver import (
    SPACINGS,
    dpm_solver_sample_loop,
    dpm_solver_sample_loop_progressive,
    half_log_snr,
    solver_plan,
    solver_timesteps,
)
from ddpm_lite.sampling import generate


class GaussianEps(torch.nn.Module):
    """The exact eps-model of x_0 ~ N(mean, std^2 I) on a chain with ``alphas_cumprod`` (float64)."""

    def __init__(self, alphas_cumprod, mean=0.3, std=0.5):
        super().__init__()
        self.abar = torch.as_tensor(np.asarray(alphas_cumprod), dtype=torch.float64)
        self.mean, self.std = mean, std

    def forward(self, x, t, **kwargs):
        a = self.abar[t].reshape(-1, *([1] * (x.ndim - 1)))
        alpha, sigma = a.sqrt(), (1 - a).sqrt()
        return sigma * (x - alpha * self.mean) / (alpha ** 2 * self.std ** 2 + sigma ** 2)

    def exact(self, x_start, t_start: int, t_end: int):
        """The probability-flow ODE's solution at t_end from x_start at t_start."""
        abar = self.abar.numpy()
        v0, v1 = (abar[t] * self.std ** 2 + 1 - abar[t] for t in (t_start, t_end))
        z = (x_start - np.sqrt(abar[t_start]) * self.mean) / np.sqrt(v0)
        return np.sqrt(abar[t_end]) * self.mean + np.sqrt(v1) * z


W = torch.tensor([0.3, 0.5, 0.2], dtype=torch.float64)
M = torch.tensor([[-0.5, 0.2], [0.5, 0.4], [0.1, -0.6]], dtype=torch.float64)
S = torch.tensor([0.35, 0.4, 0.3], dtype=torch.float64)


def mixture_x0(x, alpha, sigma):
    """E[x_0 | x_t] for the 2-D mixture sum_k W_k N(M_k, S_k^2 I); alpha, sigma: (B, 1)."""
    v = alpha ** 2 * S ** 2 + sigma ** 2  # (B, K)
    diff = x[:, None, :] - alpha[:, :, None] * M[None]  # (B, K, 2)
    log_r = W.log() - v.log() - (diff ** 2).sum(-1) / (2 * v)  # d = 2: -d/2 log v = -log v
    r = torch.softmax(log_r, dim=1)
    return (r[:, :, None] * (M[None] + (alpha * S ** 2 / v)[:, :, None] * diff)).sum(1)


class MixtureEps(torch.nn.Module):
    def __init__(self, alphas_cumprod):
        super().__init__()
        self.abar = torch.as_tensor(np.asarray(alphas_cumprod), dtype=torch.float64)

    def forward(self, x, t, **kwargs):
        a = self.abar[t].reshape(-1, 1)
        alpha, sigma = a.sqrt(), (1 - a).sqrt()
        return (x - alpha * mixture_x0(x, alpha, sigma)) / sigma


def rk4_reference(x_start, lam_start: float, lam_end: float, n: int = 2000):
    """The mixture's ODE from lambda_start to lambda_end by RK4 in lambda (float64)."""
    def alpha_sigma(lam):
        a2 = 1 / (1 + np.exp(-2 * lam))
        return (torch.full((len(x_start), 1), float(np.sqrt(a2)), dtype=torch.float64),
                torch.full((len(x_start), 1), float(np.sqrt(1 - a2)), dtype=torch.float64))

    def f(y, lam):
        alpha, sigma = alpha_sigma(lam)
        return np.exp(lam) * mixture_x0(sigma * y, alpha, sigma)

    lams = np.linspace(lam_start, lam_end, n + 1)
    y = x_start / alpha_sigma(lam_start)[1]
    for a, b in zip(lams[:-1], lams[1:]):
        h = b - a
        k1 = f(y, a)
        k2 = f(y + h / 2 * k1, a + h / 2)
        k3 = f(y + h / 2 * k2, a + h / 2)
        k4 = f(y + h * k3, b)
        y = y + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
    return y * alpha_sigma(lam_end)[1]


@pytest.fixture(scope="module")
def chain():
    return GaussianDiffusion(get_betas("linear", 1000))


def ddim_at_zero(diffusion, model, grid, noise):
    """The library's DDIM over the timesteps ``grid`` (respaced), stopped at timestep 0 (before its final step to
    the data): the second-to-last state of ddim_sample_loop_progressive."""
    spaced = respace(diffusion, grid)
    states = [out["sample"] for out in spaced.ddim_sample_loop_progressive(model, tuple(noise.shape), noise=noise,
                                                                           clip_denoised=False)]
    return states[-2]


def solver_at_zero(diffusion, model, grid, noise, order=2, lower_order_final=False):
    return dpm_solver_sample_loop(diffusion, model, tuple(noise.shape), timesteps=grid, noise=noise,
                                  clip_denoised=False, denoise_final=False, order=order,
                                  lower_order_final=lower_order_final)


def slope(steps, errors) -> float:
    return float(np.polyfit(np.log(steps), np.log(errors), 1)[0])


def rms(a, b) -> float:
    return float((a - b).pow(2).mean().sqrt())


# --------------------------------------------------------------------------- convergence at the stated order


@pytest.fixture(scope="module")
def exact_endpoints(chain):
    """(model, x_T, the exact x at timestep 0) for Gaussian data and for the Gaussian mixture."""
    gaussian = GaussianEps(chain.alphas_cumprod)
    x_T = torch.randn(256, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    mixture = MixtureEps(chain.alphas_cumprod)
    m_T = torch.randn(256, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    lam = half_log_snr(chain.alphas_cumprod)
    reference = rk4_reference(m_T, lam[-1], lam[0])
    assert rms(reference, rk4_reference(m_T, lam[-1], lam[0], n=1000)) < 1e-9  # the reference has converged
    return {"gaussian": (gaussian, x_T, gaussian.exact(x_T, chain.num_timesteps - 1, 0)),
            "mixture": (mixture, m_T, reference)}


@pytest.mark.parametrize("data", ["gaussian", "mixture"])
@pytest.mark.parametrize("spacing,steps", [
    ("logSNR", [16, 24, 32, 48, 64]),
    ("time_uniform", [64, 96, 128, 192, 256]),  # the default: on this chain its asymptotic range starts later
])
def test_error_falls_as_steps_squared_for_2m_and_as_steps_for_ddim(chain, exact_endpoints, data, spacing, steps):
    model, x_T, exact = exact_endpoints[data]
    errors = {"2m": [], "ddim": [], "default": []}
    for n in steps:
        grid = solver_timesteps(chain.alphas_cumprod, n + 1, spacing)
        errors["2m"].append(rms(solver_at_zero(chain, model, grid, x_T), exact))
        errors["ddim"].append(rms(ddim_at_zero(chain, model, grid, x_T), exact))
        errors["default"].append(rms(solver_at_zero(chain, model, grid, x_T, lower_order_final=True), exact))
    assert slope(steps, errors["2m"]) == pytest.approx(-2.0, abs=0.25), errors
    assert slope(steps, errors["ddim"]) == pytest.approx(-1.0, abs=0.15), errors
    assert all(a < b for a, b in zip(errors["2m"], errors["ddim"]))  # more accurate at equal cost...
    assert errors["2m"][-1] < errors["ddim"][-1] / 4  # ...and far more at the finest of these grids
    # the default makes the last step first order (lower_order_final): one step, so still far ahead of DDIM
    assert all(a < b / 4 for a, b in zip(errors["default"], errors["ddim"])), errors


def test_first_order_solver_is_the_librarys_ddim_on_the_same_timesteps(chain):
    model = MixtureEps(chain.alphas_cumprod)
    x_T = torch.randn(64, 2, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    grid = solver_timesteps(chain.alphas_cumprod, 12, "time_uniform")
    ours = solver_at_zero(chain, model, grid, x_T, order=1)
    assert rms(ours, ddim_at_zero(chain, model, grid, x_T)) < 1e-6
    # with the final denoising call: DDIM's last step (to alpha_bar = 1) returns the predicted x_0 too
    ours = dpm_solver_sample_loop(chain, model, (64, 2), timesteps=grid, noise=x_T, order=1, clip_denoised=False,
                                  denoise_final=True)
    theirs = respace(chain, grid).ddim_sample_loop(model, (64, 2), noise=x_T, clip_denoised=False)
    assert rms(ours, theirs) < 1e-6


def test_with_every_timestep_of_the_chain_it_agrees_with_ddim():
    """steps = T on the original (cosine) chain, final denoising call included: DPM-Solver++(2M) and the full
    1000-step DDIM solve the same ODE; they agree to DDIM's own first-order error, and the solver is the closer
    to the exact endpoint (m + s z: the ODE run to alpha_bar = 1)."""
    diffusion = GaussianDiffusion(get_betas("cosine", 1000))
    model = GaussianEps(diffusion.alphas_cumprod)
    x_T = torch.randn(64, 3, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    ours = dpm_solver_sample_loop(diffusion, model, (64, 3), noise=x_T, clip_denoised=False)  # steps=None: all
    ddim = diffusion.ddim_sample_loop(model, (64, 3), noise=x_T, clip_denoised=False)
    abar_T = diffusion.alphas_cumprod[-1]
    exact = model.mean + model.std * (x_T - np.sqrt(abar_T) * model.mean) / np.sqrt(abar_T * model.std ** 2
                                                                                      + 1 - abar_T)
    assert (ours - ddim).abs().max() < 5e-3
    assert rms(ours, exact) < rms(ddim, exact) / 10


# --------------------------------------------------------------------------- timesteps and coefficients


@pytest.mark.parametrize("spacing", SPACINGS)
@pytest.mark.parametrize("count", [1, 2, 5, 10, 20, 999, 1000])
def test_solver_timesteps_are_distinct_integers_from_the_last_to_zero(spacing, count):
    abar = GaussianDiffusion(get_betas("cosine", 1000)).alphas_cumprod
    ts = solver_timesteps(abar, count, spacing)
    assert len(ts) == count and ts.dtype == np.int64 and ts[0] == 999
    assert (np.diff(ts) < 0).all() and (count == 1 or ts[-1] == 0)
    if count == 1000:
        assert (ts == np.arange(999, -1, -1)).all()


def test_logsnr_spacing_is_even_in_lambda_and_time_uniform_even_in_t():
    abar = GaussianDiffusion(get_betas("linear", 1000)).alphas_cumprod
    lam = half_log_snr(abar)
    steps = np.diff(lam[solver_timesteps(abar, 11, "logSNR")])
    assert steps.min() > 0 and steps.max() / steps.min() < 1.3  # rounding to integer timesteps only
    assert list(solver_timesteps(abar, 4, "time_uniform")) == [999, 666, 333, 0]
    assert np.allclose(lam, 0.5 * np.log(abar / (1 - abar)))


def test_the_plan_starts_with_a_first_order_step_and_uses_the_step_ratio():
    abar = GaussianDiffusion(get_betas("linear", 1000)).alphas_cumprod
    ts = [999, 700, 400, 100, 0]
    plan = solver_plan(abar, ts, denoise_final=False, lower_order_final=False)
    lam = half_log_snr(abar[ts])
    h = np.diff(lam)
    assert plan.weight_previous[0] == 0.0 and plan.network_calls == 4
    alpha = np.sqrt(abar[ts])
    for i in range(1, 4):  # D = (1 + 1/(2r)) x0_i - 1/(2r) x0_{i-1}, r = h_{i-1} / h_i
        c = h[i] / (2 * h[i - 1])
        assert plan.weight_previous[i] == pytest.approx(alpha[i + 1] * -np.expm1(-h[i]) * c, rel=1e-12)
        assert plan.weight_current[i] == pytest.approx(alpha[i + 1] * -np.expm1(-h[i]) * (1 + c), rel=1e-12)
    assert solver_plan(abar, ts, denoise_final=True).network_calls == 5  # one more: the final x_0 prediction
    assert solver_plan(abar, ts, order=1).weight_previous == (0.0,) * 4
    lower = solver_plan(abar, ts)  # the default: the last step is first order
    assert lower.weight_previous[:3] == plan.weight_previous[:3] and lower.weight_previous[3] == 0.0
    assert lower.weight_current[3] == pytest.approx(alpha[4] * -np.expm1(-h[3]), rel=1e-12)


@pytest.mark.parametrize("kwargs,match", [
    ({"steps": 0}, r"steps must lie in \[1, 49\]"),
    ({"steps": 50, "denoise_final": False}, r"steps must lie in \[1, 49\]"),
    ({"steps": 51, "denoise_final": True}, r"steps must lie in \[1, 50\]"),
    ({"steps": 2.5}, "steps must be an integer"),
    ({"steps": 5, "spacing": "karras"}, "unknown timestep spacing 'karras'"),
    ({"timesteps": [10, 20, 0]}, "strictly decreasing"),
    ({"timesteps": [60, 0]}, "strictly decreasing integers in \\[0, 49\\]"),
    ({"steps": 5, "timesteps": [49, 0]}, "either steps or timesteps"),
    ({"steps": 5, "order": 3}, "order must be 1"),
])
def test_bad_arguments_are_refused_at_the_call(kwargs, match):
    diffusion = GaussianDiffusion(get_betas("linear", 50))
    calls = []

    def model(x, t):
        calls.append(1)
        return torch.zeros_like(x)

    with pytest.raises(ValueError, match=match):
        dpm_solver_sample_loop_progressive(diffusion, model, (2, 2), **kwargs)  # eager, not on next()
    assert calls == []


# --------------------------------------------------------------------------- models as the other samplers take them


def test_learned_variance_models_are_used_through_their_eps_channels():
    betas = get_betas("cosine", 100)
    fixed, learned = GaussianDiffusion(betas), GaussianDiffusion(betas, var_type="learned_range")
    eps = GaussianEps(fixed.alphas_cumprod)

    def with_variance(x, t):
        return torch.cat([eps(x, t), torch.full_like(x, 0.7)], dim=1)  # any variance channels

    x_T = torch.randn(8, 1, 4, 4, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    a = dpm_solver_sample_loop(fixed, eps, x_T.shape, 10, noise=x_T)
    b = dpm_solver_sample_loop(learned, with_variance, x_T.shape, 10, noise=x_T)
    assert torch.equal(a, b)


def test_model_kwargs_reach_the_model_and_x0_is_clipped():
    diffusion = GaussianDiffusion(get_betas("cosine", 100))
    base = GaussianEps(diffusion.alphas_cumprod, mean=3.0, std=0.1)  # data far outside [-1, 1]
    seen = []

    def model(x, t, y=None):
        seen.append(y)
        return base(x, t)

    labels = torch.tensor([1, 2, 3])
    outs = list(dpm_solver_sample_loop_progressive(diffusion, model, (3, 2), 6, model_kwargs={"y": labels},
                                                   generator=torch.Generator().manual_seed(0)))
    assert len(outs) == 6 == len(seen) and all(y is labels for y in seen)
    assert [o["t"] for o in outs] == list(solver_timesteps(diffusion.alphas_cumprod, 7)[:6])  # 7 timesteps
    assert all(o["pred_xstart"].abs().max() <= 1 for o in outs) and outs[-1]["sample"].abs().max() <= 1
    final = list(dpm_solver_sample_loop_progressive(diffusion, model, (3, 2), 6, model_kwargs={"y": labels},
                                                    denoise_final=True, generator=torch.Generator().manual_seed(0)))
    assert final[-1]["t"] == 0 and torch.equal(final[-1]["sample"], final[-1]["pred_xstart"])  # x_0 at t = 0
    unclipped = dpm_solver_sample_loop(diffusion, model, (3, 2), 6, clip_denoised=False,
                                       generator=torch.Generator().manual_seed(0))
    assert unclipped.mean() == pytest.approx(3.0, abs=0.3)


def test_cond_fn_guides_the_score_as_for_ddim():
    """Guidance through the score (Dhariwal & Nichol Algorithm 2): with order 1 the solver is DDIM, guided alike."""
    diffusion = GaussianDiffusion(get_betas("linear", 200))
    model = GaussianEps(diffusion.alphas_cumprod)

    def cond_fn(x, t, **kwargs):
        return torch.full_like(x, 0.5)  # the gradient of a log-likelihood that favours larger x

    x_T = torch.randn(16, 2, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    grid = solver_timesteps(diffusion.alphas_cumprod, 8)
    ours = dpm_solver_sample_loop(diffusion, model, (16, 2), timesteps=grid, noise=x_T, order=1, cond_fn=cond_fn,
                                  denoise_final=True)
    theirs = respace(diffusion, grid).ddim_sample_loop(model, (16, 2), noise=x_T, cond_fn=cond_fn)
    assert rms(ours, theirs) < 1e-6
    unguided = dpm_solver_sample_loop(diffusion, model, (16, 2), timesteps=grid, noise=x_T, order=1,
                                      denoise_final=True)
    assert (ours >= unguided).all() and (ours - unguided).mean() > 0.05
    # order 2: the first call's guided x_0 is DDIM's; the later ones are extrapolated (not a monotone shift:
    # the guided x_0 moves by sigma^2 / alpha * gradient, which is large at high noise)
    first = next(dpm_solver_sample_loop_progressive(diffusion, model, (16, 2), timesteps=grid, noise=x_T,
                                                    cond_fn=cond_fn))
    ddim_first = next(respace(diffusion, grid).ddim_sample_loop_progressive(model, (16, 2), noise=x_T,
                                                                            cond_fn=cond_fn))
    assert rms(first["pred_xstart"], ddim_first["pred_xstart"]) < 1e-9


def test_on_a_respaced_chain_it_solves_over_the_kept_timesteps(chain):
    """A SpacedDiffusion maps its indices to the original timesteps: solving over all of its K steps is solving the
    original chain over the kept timesteps."""
    model = MixtureEps(chain.alphas_cumprod)
    x_T = torch.randn(32, 2, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    grid = solver_timesteps(chain.alphas_cumprod, 15)
    spaced = respace(chain, grid)
    a = dpm_solver_sample_loop(spaced, model, (32, 2), noise=x_T, clip_denoised=False)  # all 15 of its steps
    b = dpm_solver_sample_loop(chain, model, (32, 2), timesteps=grid, noise=x_T, clip_denoised=False,
                               denoise_final=True)  # with every timestep, the last call is the x_0 prediction
    assert rms(a, b) < 1e-9


# --------------------------------------------------------------------------- generate()


class Recorder(torch.nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner, self.timesteps = inner, []
        self.weight = torch.nn.Parameter(torch.zeros(()))  # so generate() finds a device

    def forward(self, x, t, **kwargs):
        self.timesteps.append(int(t[0]))
        return self.inner(x, t).float()


def test_generate_runs_the_solver_with_steps_network_calls():
    diffusion = GaussianDiffusion(get_betas("cosine", 1000))
    model = Recorder(GaussianEps(diffusion.alphas_cumprod))
    model.train()
    out = generate(model, diffusion, (4, 1, 2, 2), steps=10, sampler="dpm++2m",
                   generator=torch.Generator().manual_seed(0))
    assert model.timesteps == list(solver_timesteps(diffusion.alphas_cumprod, 11)[:10]) and model.training
    noise = torch.randn(4, 1, 2, 2, generator=torch.Generator().manual_seed(0))
    assert torch.equal(out, dpm_solver_sample_loop(diffusion, model, (4, 1, 2, 2), 10, noise=noise))
    same = generate(model, diffusion, (4, 1, 2, 2), steps=10, ddim=True, generator=torch.Generator().manual_seed(0))
    assert torch.equal(same, generate(model, diffusion, (4, 1, 2, 2), steps=10, sampler="ddim",
                                      generator=torch.Generator().manual_seed(0)))


@pytest.mark.parametrize("kwargs,match", [
    ({"sampler": "euler"}, r"unknown sampler 'euler'.*dpm\+\+2m"),
    ({"sampler": "dpm++2m", "ddim": True}, "ddim=True asks for DDIM"),
    ({"sampler": "dpm++2m", "eta": 0.5}, "eta=0.5 is DDIM's noise level"),
    ({"sampler": "dpm++2m", "steps": 0}, r"steps must lie in \[1, 50\]"),
])
def test_generate_refuses_conflicting_sampler_options(kwargs, match):
    diffusion = GaussianDiffusion(get_betas("linear", 50))
    model = Recorder(GaussianEps(diffusion.alphas_cumprod))
    with pytest.raises(ValueError, match=match):
        generate(model, diffusion, (2, 2), **kwargs)
    assert model.timesteps == []


def test_the_shipped_digits_model_samples_in_ten_calls():
    from ddpm_lite.pretrained import load_pretrained

    model, diffusion, _ = load_pretrained("digits", device="cpu")
    out = generate(model, diffusion, (6, 1, 8, 8), steps=10, sampler="dpm++2m",
                   generator=torch.Generator().manual_seed(0))
    assert out.shape == (6, 1, 8, 8) and torch.isfinite(out).all() and out.abs().max() <= 1
    assert out.std() > 0.3  # digits (ink on a dark background), not a blur
