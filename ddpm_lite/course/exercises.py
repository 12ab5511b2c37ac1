"""The checked exercises of the notebooks, in notebook order: a checker per exercise, diagnoses first.

In a notebook::

    q_sample = check_q_sample(q_sample)   # prints "✅ q_sample: correct — ..." or "❌ q_sample: <what> — <hint>"

Each exercise is a reference (``reference_*``: the package's own implementation), the inputs it is tried on
(``_*_cases``), the known mistakes with their hints (each computed by turning one knob of a ``_*_with`` generator),
its registration (:func:`~ddpm_lite.course.checking.register`) and its ``check_*`` function. How a checker decides,
the strict mode of the tests and how to add an exercise: :mod:`ddpm_lite.course.checking`, whose names are
importable from here too.

==  ================================================================================================================
01  ``check_q_sample``: q(x_t | x_0) (DDPM eq. 4)
02  ``check_q_posterior``: q(x_{t-1} | x_t, x_0) (eqs. 6-7); ``check_p_sample``: one ancestral step (Algorithm 2)
03  ``check_normal_kl``: the KL of two Gaussians (the terms of eq. 5); ``check_simple_loss``: L_simple (eq. 14)
04  ``check_learned_range_log_variance``: the learned variance (Improved DDPM eq. 15)
05  ``check_cosine_betas``: the cosine schedule (Improved DDPM eq. 17)
06  ``check_importance_sampler_weights``: the importance sampler of L_vlb (Improved DDPM eq. 18)
07  ``check_timestep_embedding``: the sinusoidal timestep embedding
08  ``check_guided_mean``: the classifier-guided mean (ADM Algorithm 1)
09  ``check_frechet_distance_diag``, ``check_frechet_distance``: FID with diagonal, then full covariances
10  ``check_respaced_betas``: a shorter chain (Improved DDPM section 4); ``check_ddim_step``: one DDIM step (eq. 12)
11  ``check_snr_db``: the SNR of x_t in decibels
==  ================================================================================================================
"""
from __future__ import annotations

import math

import numpy as np
import torch

from ..gaussian_diffusion import GaussianDiffusion
from ..losses import mean_flat
from ..losses import normal_kl as _normal_kl
from ..schedules import cosine_betas as _cosine_betas
from .checking import (
    EXERCISES,
    Case,
    Exercise,
    ExerciseError,
    Mistake,
    Verdict,
    _check_pair,
    _pair,
    register,
    strict_mode,
)

__all__ = [
    # the machinery, from ddpm_lite.course.checking
    "Case", "Mistake", "Exercise", "Verdict", "ExerciseError", "register", "EXERCISES", "strict_mode",
    # the checks, by notebook
    "check_q_sample",  # 01
    "check_q_posterior", "check_p_sample",  # 02
    "check_normal_kl", "check_simple_loss",  # 03
    "check_learned_range_log_variance",  # 04
    "check_cosine_betas",  # 05
    "check_importance_sampler_weights",  # 06
    "check_timestep_embedding",  # 07
    "check_guided_mean",  # 08
    "check_frechet_distance_diag", "check_frechet_distance",  # 09
    "check_respaced_betas", "check_ddim_step",  # 10
    "check_snr_db",  # 11
]


# ======================================================================================================================
# shared by the exercises: random inputs, per-example values, alpha-bar, a toy model
# ======================================================================================================================
def _randn(g: torch.Generator, *shape, dtype=torch.float32) -> torch.Tensor:
    return torch.randn(*shape, generator=g, dtype=dtype)


def _per_example(v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """A value per example (B,) reshaped to (B, 1, ...) so that it multiplies x (B, ...) example by example."""
    return v.reshape(len(v), *([1] * (x.ndim - 1)))


def _betas64(betas) -> torch.Tensor:
    """A schedule (tensor, array or list of betas) as a float64 CPU tensor."""
    return torch.as_tensor(betas).detach().cpu().double()


def _abar(b):
    return torch.cumprod(1 - b, 0)


def _abar_prev(b):
    return torch.cat([b.new_ones(1), _abar(b)[:-1]])


def _abar_next(b):
    return torch.cat([_abar(b)[1:], b.new_zeros(1)])


def _abar_prev_wrapped(b):
    """alpha_bar_{t-1} read as cumprod[t - 1]: at t = 0 that is cumprod[-1], the last alpha_bar."""
    return torch.roll(_abar(b), 1)


def _ident(v):
    return v


class _ToyEpsModel:
    """A fixed, deterministic "network" for the checks: eps_theta(x, t) = 0.6 x - 0.3 tanh(x) + t / 1000."""

    def __call__(self, x, t):
        return 0.6 * x - 0.3 * torch.tanh(x) + _per_example(t.to(x.dtype) / 1000, x)

    def __repr__(self):
        return "toy eps model"


# ======================================================================================================================
# 01: q_sample (DDPM eq. 4)
# ======================================================================================================================
def reference_q_sample(x0, t, noise, betas):
    """x_t = sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) noise, alpha_bar_t = prod_{s<=t} (1 - beta_s)."""
    return GaussianDiffusion(_betas64(betas).numpy()).q_sample(x0, t, noise)


def _q_with(abar_fn, mean_fn=torch.sqrt, std_fn=torch.sqrt, swap=False):
    def q(x0, t, noise, betas):
        ab = _per_example(abar_fn(_betas64(betas))[t], x0)
        a, b = (noise, x0) if swap else (x0, noise)
        return mean_fn(ab) * a + std_fn(1 - ab) * b
    return q


def _q_sample_cases(g):
    betas = torch.from_numpy(np.linspace(1e-4, 0.02, 1000))
    x0 = _randn(g, 5, 1, 4, 3)
    return [
        Case((x0, torch.tensor([3, 90, 400, 650, 998]), _randn(g, 5, 1, 4, 3), betas), label=""),
        Case((_randn(g, 4, 2), torch.tensor([0, 0, 999, 1]), _randn(g, 4, 2), betas),
             label="t = 0 and t = T-1 (2-D points)"),
        Case((_randn(g, 3, 3, 5, 6), torch.tensor([10, 200, 700]), _randn(g, 3, 3, 5, 6),
              torch.from_numpy(_cosine_betas(1000))), label="another schedule (cosine) and RGB images"),
    ]


Q_SAMPLE = register(Exercise(
    name="q_sample",
    reference=reference_q_sample,
    cases=_q_sample_cases,
    arg_names=("x0", "t", "noise", "betas"),
    hint="x_t = sqrt(alpha_bar_t) * x0 + sqrt(1 - alpha_bar_t) * noise, alpha_bar_t = cumprod(1 - betas)[t] (eq. 4)",
    shape_hint="x_t must have the shape of x0: reshape alpha_bar[t] to (B, 1, 1, ...) so it broadcasts",
    errors=[(r"must match the size of tensor|shape .* (doesn't|does not) match|not broadcastable|broadcast",
             "alpha_bar[t] has shape (B,): reshape it to (B, 1, 1, ...) with "
             "`.reshape(-1, *[1] * (x0.ndim - 1))` so it multiplies each example of x0"),
            (r"only integer tensors|index|indices", "index alpha_bar with the integer tensor t: `alpha_bar[t]`")],
    mistakes=[
        Mistake("missing square roots", "the mean is sqrt(alpha_bar_t) * x0 and the std sqrt(1 - alpha_bar_t): "
                "eq. 4 gives variances, take their square root", _q_with(_abar, _ident, _ident)),
        Mistake("the noise is scaled by the variance 1 - alpha_bar_t",
                "scale it by the standard deviation: a missing square root, sqrt(1 - alpha_bar_t) * noise",
                _q_with(_abar, torch.sqrt, _ident)),
        Mistake("x0 is scaled by alpha_bar_t", "a missing square root: the mean is sqrt(alpha_bar_t) * x0",
                _q_with(_abar, _ident, torch.sqrt)),
        Mistake("alpha_t used in place of alpha_bar_t",
                "alpha_t = 1 - beta_t is one step; q(x_t | x_0) needs alpha-bar, the product of all alphas up to t: "
                "torch.cumprod(1 - betas, dim=0)[t]", _q_with(lambda b: 1 - b)),
        Mistake("off by one in t: alpha_bar_{t-1} (the product stops before step t)",
                "alpha_bar_t includes alpha_t: torch.cumprod(1 - betas, dim=0)[t], with t = 0 the first step",
                _q_with(_abar_prev)),
        Mistake("off by one in t: alpha_bar_{t+1}", "index with t itself: torch.cumprod(1 - betas, dim=0)[t]",
                _q_with(_abar_next)),
        Mistake("alpha_bar computed as 1 - sum of betas",
                "that is only its first-order approximation: alpha_bar_t is the product torch.cumprod(1 - betas, 0)",
                _q_with(lambda b: 1 - torch.cumsum(b, 0))),
        Mistake("x0 and noise swapped", "sqrt(alpha_bar_t) multiplies the data x0, sqrt(1 - alpha_bar_t) the noise",
                _q_with(_abar, swap=True)),
    ],
))


def check_q_sample(fn):
    """Check ``q_sample(x0, t, noise, betas)`` (DDPM eq. 4); returns the function to use next."""
    return Q_SAMPLE.check(fn)


# ======================================================================================================================
# 02: q_posterior (DDPM eqs. 6-7)
# ======================================================================================================================
def reference_q_posterior(x0, x_t, t, betas):
    """(mean, variance) of q(x_{t-1} | x_t, x_0): mean = coef1 x0 + coef2 x_t, variance = beta-tilde_t (B, 1, ...)."""
    b = _betas64(betas)
    ab, ab_prev = _abar(b), _abar_prev(b)
    coef1 = _per_example(b[t] * ab_prev[t].sqrt() / (1 - ab[t]), x0)
    coef2 = _per_example((1 - ab_prev[t]) * (1 - b[t]).sqrt() / (1 - ab[t]), x0)
    variance = _per_example((1 - ab_prev[t]) / (1 - ab[t]) * b[t], x0)
    return coef1 * x0 + coef2 * x_t, variance


def _posterior_with(abar_prev=_abar_prev, c1_abar="prev", c2_alpha="sqrt", swap=False, var="tilde"):
    """The posterior with one knob turned: the generator of the known mistakes (returns the packed pair)."""
    def post(x0, x_t, t, betas):
        b = _betas64(betas)
        ab, ab_prev = _abar(b), abar_prev(b)
        c1_ab = {"prev": ab_prev, "t": ab}[c1_abar]
        alpha = 1 - b
        c2_a = {"sqrt": alpha.sqrt(), "none": alpha, "abar": ab.sqrt()}[c2_alpha]
        coef1 = _per_example(b[t] * c1_ab[t].sqrt() / (1 - ab[t]), x0)
        coef2 = _per_example((1 - ab_prev[t]) * c2_a[t] / (1 - ab[t]), x0)
        if swap:
            coef1, coef2 = coef2, coef1
        tilde = (1 - ab_prev) / (1 - ab) * b
        v = {"tilde": tilde, "beta": b, "std": tilde.sqrt(),
             "inverted": (1 - ab) / (1 - ab_prev) * b}[var]
        mean = coef1 * x0 + coef2 * x_t
        return torch.stack([mean.double(), _per_example(v[t], x0).expand_as(mean).double()])
    return post


def _q_posterior_cases(g):
    betas = torch.from_numpy(np.linspace(1e-4, 0.02, 1000))
    return [
        Case((_randn(g, 5, 1, 4, 3), _randn(g, 5, 1, 4, 3), torch.tensor([0, 3, 90, 400, 998]), betas)),
        Case((_randn(g, 4, 2), _randn(g, 4, 2), torch.tensor([1, 1, 999, 500]), betas), label="2-D points"),
        Case((_randn(g, 3, 3, 2, 2), _randn(g, 3, 3, 2, 2), torch.tensor([0, 50, 199]),
              torch.from_numpy(_cosine_betas(200))), label="another schedule (cosine, T = 200)"),
    ]


Q_POSTERIOR = register(Exercise(
    name="q_posterior",
    reference=_pair(reference_q_posterior, "q_posterior", "(mean, variance)"),
    cases=_q_posterior_cases,
    arg_names=("x0", "x_t", "t", "betas"),
    hint="mean = beta_t sqrt(alpha_bar_{t-1}) / (1 - alpha_bar_t) x0 + (1 - alpha_bar_{t-1}) sqrt(alpha_t) / "
         "(1 - alpha_bar_t) x_t, variance = (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t) beta_t (eqs. 6-7)",
    shape_hint="return a pair (mean, variance): the mean has the shape of x0, the variance one value per example "
               "(shape (B,) or (B, 1, ...))",
    errors=[(r"must return a pair", "return both: `return mean, variance`"),
            (r"must match the size of tensor|not broadcastable|broadcast|expand",
             "coefficients indexed by t have shape (B,): reshape them to (B, 1, 1, ...) to multiply x0 and x_t")],
    mistakes=[
        Mistake("alpha_bar_{t-1} wraps around at t = 0",
                "cumprod(...)[t - 1] at t = 0 reads the *last* alpha_bar; alpha_bar_{t-1} at t = 0 is 1 (no noise "
                "yet): alpha_bar_prev = torch.cat([torch.ones(1), alpha_bar[:-1]])",
                _posterior_with(abar_prev=_abar_prev_wrapped)),
        Mistake("alpha_bar_t in place of alpha_bar_{t-1} in the coefficient of x0",
                "eq. 7: the x0 coefficient is beta_t sqrt(alpha_bar_{t-1}) / (1 - alpha_bar_t)",
                _posterior_with(c1_abar="t")),
        Mistake("alpha_t without its square root in the coefficient of x_t",
                "eq. 7: the x_t coefficient is sqrt(alpha_t) (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t)",
                _posterior_with(c2_alpha="none")),
        Mistake("alpha_bar_t in place of alpha_t in the coefficient of x_t",
                "x_t comes from x_{t-1} by one step, scaled by sqrt(alpha_t) = sqrt(1 - beta_t), not sqrt(alpha_bar_t)",
                _posterior_with(c2_alpha="abar")),
        Mistake("the coefficients of x0 and x_t are swapped",
                "x0 gets beta_t sqrt(alpha_bar_{t-1}) / (1 - alpha_bar_t); x_t gets sqrt(alpha_t) "
                "(1 - alpha_bar_{t-1}) / (1 - alpha_bar_t)", _posterior_with(swap=True)),
        Mistake("the variance is beta_t", "beta_t is the forward step's variance; the posterior's is smaller: "
                "beta-tilde_t = (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t) beta_t (eq. 7)", _posterior_with(var="beta")),
        Mistake("the variance ratio is upside down",
                "beta-tilde_t = (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t) * beta_t: alpha_bar_{t-1} on top",
                _posterior_with(var="inverted")),
        Mistake("a standard deviation, not a variance", "return beta-tilde_t itself, not its square root",
                _posterior_with(var="std")),
    ],
))


def check_q_posterior(fn):
    """Check ``q_posterior(x0, x_t, t, betas) -> (mean, variance)`` (DDPM eqs. 6-7); returns the function to use."""
    return _check_pair(Q_POSTERIOR, fn, reference_q_posterior, "q_posterior", "(mean, variance)")


# ======================================================================================================================
# 02: one ancestral sampling step (DDPM Algorithm 2)
# ======================================================================================================================
def reference_p_sample(model, x_t, t, noise, betas):
    """x_{t-1} = (x_t - beta_t / sqrt(1 - alpha_bar_t) eps) / sqrt(alpha_t) + sigma_t z, sigma_t^2 = beta-tilde_t,
    z = noise except at t = 0 (DDPM eq. 11 and Algorithm 2)."""
    return _p_sample_with()(model, x_t, t, noise, betas)


def _p_sample_with(noise_at_zero=False, no_noise=False, var="tilde", std=True, scale_alpha="sqrt",
                   eps_coef_sqrt=True, sign=-1.0, abar_prev=_abar_prev):
    def step(model, x_t, t, noise, betas):
        b = _betas64(betas)
        ab, ab_prev = _abar(b), abar_prev(b)
        alpha = 1 - b
        eps = model(x_t, t)
        eps_coef = b / ((1 - ab).sqrt() if eps_coef_sqrt else (1 - ab))
        scale = {"sqrt": alpha.sqrt(), "none": torch.ones_like(alpha), "abar": ab.sqrt()}[scale_alpha]
        mean = (x_t + sign * _per_example(eps_coef[t], x_t) * eps) / _per_example(scale[t], x_t)
        variance = {"tilde": (1 - ab_prev) / (1 - ab) * b, "beta": b}[var]
        sigma = _per_example(variance[t].sqrt() if std else variance[t], x_t)
        if no_noise:
            return mean
        nonzero = torch.ones_like(t, dtype=torch.float64) if noise_at_zero else (t != 0).double()
        return mean + _per_example(nonzero, x_t) * sigma * noise
    return step


def _p_sample_cases(g):
    model = _ToyEpsModel()
    betas = torch.from_numpy(np.linspace(1e-4, 0.02, 1000))
    return [
        Case((model, _randn(g, 5, 1, 3, 3), torch.tensor([0, 4, 120, 600, 999]), _randn(g, 5, 1, 3, 3), betas)),
        Case((model, _randn(g, 4, 2), torch.tensor([0, 1, 2, 500]), _randn(g, 4, 2), betas), label="2-D points"),
        Case((model, _randn(g, 3, 2), torch.tensor([0, 20, 99]), _randn(g, 3, 2), torch.from_numpy(_cosine_betas(100))),
             label="another schedule (cosine, T = 100)"),
    ]


P_SAMPLE = register(Exercise(
    name="p_sample",
    reference=reference_p_sample,
    cases=_p_sample_cases,
    arg_names=("model", "x_t", "t", "noise", "betas"),
    hint="eps = model(x_t, t); mean = (x_t - beta_t / sqrt(1 - alpha_bar_t) * eps) / sqrt(alpha_t); "
         "x_{t-1} = mean + sqrt(beta-tilde_t) * noise, without the noise where t = 0 (Algorithm 2)",
    shape_hint="x_{t-1} has the shape of x_t: reshape per-example values (B,) to (B, 1, ...)",
    errors=[(r"must match the size of tensor|not broadcastable|broadcast",
             "values indexed by t have shape (B,): reshape them to (B, 1, 1, ...) to multiply x_t")],
    mistakes=[
        Mistake("no noise added", "Algorithm 2 adds sigma_t z at every step but the last: x_{t-1} = mean + sigma_t z",
                _p_sample_with(no_noise=True)),
        Mistake("alpha_bar_{t-1} wraps around at t = 0, and the last step adds noise",
                "at t = 0 (the paper's t = 1) alpha_bar_{t-1} is 1, so beta-tilde_0 = 0: the last step returns the "
                "mean. alpha_bar_prev = torch.cat([torch.ones(1), alpha_bar[:-1]]), and multiply the noise by (t != 0)",
                _p_sample_with(noise_at_zero=True, abar_prev=_abar_prev_wrapped)),
        Mistake("the noise is scaled by the variance", "scale it by the standard deviation sigma_t = "
                "sqrt(beta-tilde_t)", _p_sample_with(std=False)),
        Mistake("sigma_t^2 = beta_t", "this notebook uses the posterior variance sigma_t^2 = beta-tilde_t = "
                "(1 - alpha_bar_{t-1}) / (1 - alpha_bar_t) beta_t; beta_t is DDPM's other choice (notebook 04)",
                _p_sample_with(var="beta")),
        Mistake("the division by sqrt(alpha_t) is missing",
                "eq. 11: mean = (x_t - beta_t / sqrt(1 - alpha_bar_t) eps) / sqrt(alpha_t)",
                _p_sample_with(scale_alpha="none")),
        Mistake("divided by sqrt(alpha_bar_t) instead of sqrt(alpha_t)", "one reverse step undoes one forward step: "
                "divide by sqrt(alpha_t) = sqrt(1 - beta_t)", _p_sample_with(scale_alpha="abar")),
        Mistake("the eps coefficient is beta_t / (1 - alpha_bar_t)",
                "a missing square root: beta_t / sqrt(1 - alpha_bar_t)", _p_sample_with(eps_coef_sqrt=False)),
        Mistake("the predicted noise is added", "remove the predicted noise: x_t - beta_t / sqrt(1 - alpha_bar_t) eps",
                _p_sample_with(sign=1.0)),
    ],
))


def check_p_sample(fn):
    """Check ``p_sample(model, x_t, t, noise, betas) -> x_{t-1}`` (DDPM Algorithm 2); returns the function to use."""
    return P_SAMPLE.check(fn)


# ======================================================================================================================
# 03: normal_kl (the terms of DDPM eq. 5)
# ======================================================================================================================
def reference_normal_kl(mean1, logvar1, mean2, logvar2):
    """KL(N(mean1, exp(logvar1)) || N(mean2, exp(logvar2))), elementwise."""
    return _normal_kl(mean1, logvar1, mean2, logvar2)


def _kl(m1, lv1, m2, lv2, *, half=0.5, const=-1.0, var=torch.exp, ratio=None, msq=None):
    """The KL formula with one knob turned: the generator of the known mistakes."""
    v1, v2 = var(lv1), var(lv2)
    r = v1 / v2 if ratio is None else ratio(lv1, lv2)
    m = (m1 - m2) ** 2 / v2 if msq is None else msq(m1, m2, lv2)
    return half * (const + torch.log(v2) - torch.log(v1) + r + m)


def _kl_cases(g):
    shape = (6, 5)
    m1, m2 = _randn(g, *shape), _randn(g, *shape)
    lv1, lv2 = 0.8 * _randn(g, *shape), 0.8 * _randn(g, *shape)
    return [
        Case((m1, lv1, m2, lv2)),
        Case((m1, lv1, m1.clone(), lv1.clone()), label="two identical Gaussians (the KL must be 0)"),
        Case((_randn(g, 2, 3, 4, 4), -2 + _randn(g, 2, 3, 4, 4), _randn(g, 2, 3, 4, 4), torch.zeros(2, 3, 4, 4)),
             label="images against N(0, I)"),
    ]


NORMAL_KL = register(Exercise(
    name="normal_kl",
    reference=reference_normal_kl,
    cases=_kl_cases,
    arg_names=("mean1", "logvar1", "mean2", "logvar2"),
    hint="KL = 1/2 [-1 + logvar2 - logvar1 + exp(logvar1 - logvar2) + (mean1 - mean2)^2 exp(-logvar2)]",
    shape_hint="the KL is elementwise: return a tensor of the inputs' shape; don't sum or average",
    nan_hint="did you take the log of a log-variance? The arguments are already log sigma^2: "
             "log(sigma2^2 / sigma1^2) = logvar2 - logvar1",
    mistakes=[
        Mistake("the log-variances are used as variances",
                "the arguments are log sigma^2: the variance is exp(logvar), and log(var2 / var1) = logvar2 - logvar1",
                lambda m1, lv1, m2, lv2: _kl(m1, lv1, m2, lv2, var=_ident)),
        Mistake("exp(logvar) used as a standard deviation",
                "logvar is log sigma^2, so exp(logvar) is already the variance sigma^2; don't square it again",
                lambda m1, lv1, m2, lv2: _kl(m1, lv1, m2, lv2, var=lambda lv: torch.exp(2 * lv))),
        Mistake("the factor 1/2 is missing", "the whole bracket is multiplied by 1/2",
                lambda m1, lv1, m2, lv2: _kl(m1, lv1, m2, lv2, half=1.0)),
        Mistake("the -1 is missing", "the KL between two identical Gaussians must be 0: keep the -1 in the bracket",
                lambda m1, lv1, m2, lv2: _kl(m1, lv1, m2, lv2, const=0.0)),
        Mistake("you computed KL(N2 || N1), the other direction",
                "the KL is not symmetric: the variance ratio is sigma1^2 / sigma2^2 and the squared mean difference "
                "is divided by sigma2^2", lambda m1, lv1, m2, lv2: _normal_kl(m2, lv2, m1, lv1)),
        Mistake("the squared mean difference is multiplied by the variance",
                "divide it by sigma2^2: multiply by exp(-logvar2), not exp(logvar2)",
                lambda m1, lv1, m2, lv2: _kl(m1, lv1, m2, lv2, msq=lambda a, b, lv: (a - b) ** 2 * torch.exp(lv))),
        Mistake("the squared mean difference is divided by the standard deviation",
                "divide it by the variance sigma2^2 = exp(logvar2)",
                lambda m1, lv1, m2, lv2: _kl(m1, lv1, m2, lv2,
                                             msq=lambda a, b, lv: (a - b) ** 2 * torch.exp(-0.5 * lv))),
        Mistake("the mean difference is not squared", "the mean term is (mean1 - mean2)^2 / sigma2^2",
                lambda m1, lv1, m2, lv2: _kl(m1, lv1, m2, lv2, msq=lambda a, b, lv: (a - b) * torch.exp(-lv))),
        Mistake("sum instead of elementwise", "return the KL of every element; the caller averages (mean_flat)",
                lambda m1, lv1, m2, lv2: _normal_kl(m1, lv1, m2, lv2).sum()),
        Mistake("mean instead of elementwise", "return the KL of every element; the caller averages (mean_flat)",
                lambda m1, lv1, m2, lv2: _normal_kl(m1, lv1, m2, lv2).mean()),
    ],
))


def check_normal_kl(fn):
    """Check ``normal_kl(mean1, logvar1, mean2, logvar2)``; returns the function to use next."""
    return NORMAL_KL.check(fn)


# ======================================================================================================================
# 03: the simple loss (DDPM eq. 14)
# ======================================================================================================================
def reference_simple_loss(model, diffusion, x0, t, noise):
    """L_simple per example: mean over pixels of (noise - model(x_t, t))^2, x_t = q_sample(x0, t, noise)."""
    x_t = diffusion.q_sample(x0, t, noise)
    return mean_flat((noise - model(x_t, t)) ** 2)


def _simple_cases(g):
    model = _ToyEpsModel()
    diffusion = GaussianDiffusion(np.linspace(1e-4, 0.02, 1000))
    cosine = GaussianDiffusion(_cosine_betas(200))
    return [
        Case((model, diffusion, _randn(g, 4, 1, 3, 5), torch.tensor([5, 250, 500, 990]), _randn(g, 4, 1, 3, 5))),
        Case((model, cosine, _randn(g, 3, 2), torch.tensor([0, 100, 199]), _randn(g, 3, 2)),
             label="2-D points on another diffusion"),
    ]


def _simple_with(target="noise", inp="x_t", err=lambda d: d ** 2, reduce=mean_flat, t_shift=0):
    def loss(model, diffusion, x0, t, noise):
        x_t = diffusion.q_sample(x0, t, noise)
        tt = (t + t_shift).clamp(0, diffusion.num_timesteps - 1)
        pred = model({"x_t": x_t, "x0": x0, "noise": noise}[inp], tt)
        return reduce(err({"noise": noise, "x0": x0, "x_t": x_t}[target] - pred))
    return loss


SIMPLE_LOSS = register(Exercise(
    name="simple_loss",
    reference=reference_simple_loss,
    cases=_simple_cases,
    arg_names=("model", "diffusion", "x0", "t", "noise"),
    hint="x_t = diffusion.q_sample(x0, t, noise); the loss is the mean over every dim but the batch of "
         "(noise - model(x_t, t))^2",
    shape_hint="return one loss per example, shape (B,): average over every dimension but the batch (mean_flat)",
    mistakes=[
        Mistake("sum over pixels instead of mean", "average over every dimension but the batch: "
                "`((noise - eps) ** 2).mean(dim=tuple(range(1, x0.ndim)))`, i.e. mean_flat",
                _simple_with(reduce=lambda d: d.flatten(1).sum(1))),
        Mistake("a single number: averaged over the batch too", "return one loss per example, shape (B,): "
                "average over every dimension but the batch (mean_flat); the training loop averages the batch",
                _simple_with(reduce=lambda d: d.mean())),
        Mistake("summed over everything", "return one loss per example, shape (B,), the mean over its pixels",
                _simple_with(reduce=lambda d: d.sum())),
        Mistake("the target is x0", "in eq. 14 the network predicts the noise: the target is `noise`, not x0",
                _simple_with(target="x0")),
        Mistake("the target is x_t", "the network predicts the noise that was added: the target is `noise`",
                _simple_with(target="x_t")),
        Mistake("the model is applied to x0", "the network only sees the noisy x_t: "
                "x_t = diffusion.q_sample(x0, t, noise), then model(x_t, t)", _simple_with(inp="x0")),
        Mistake("the model is applied to the noise",
                "the network sees the noisy x_t = diffusion.q_sample(x0, t, noise)",
                _simple_with(inp="noise")),
        Mistake("the error is not squared", "L_simple is the squared error ||noise - eps_theta||^2",
                _simple_with(err=lambda d: d)),
        Mistake("absolute error instead of squared", "L_simple is the squared error ||noise - eps_theta||^2",
                _simple_with(err=torch.abs)),
        Mistake("the model gets t + 1", "pass the same t that made x_t: model(x_t, t)", _simple_with(t_shift=1)),
        Mistake("the model gets t - 1", "pass the same t that made x_t: model(x_t, t)", _simple_with(t_shift=-1)),
    ],
))


def check_simple_loss(fn):
    """Check ``simple_loss(model, diffusion, x0, t, noise)`` (DDPM eq. 14); returns the function to use next."""
    return SIMPLE_LOSS.check(fn)


# ======================================================================================================================
# 04: learned-range variance (Improved DDPM eq. 15)
# ======================================================================================================================
def reference_learned_range_log_variance(v, t, betas):
    """log Sigma_t = v log beta_t + (1 - v) log beta-tilde_t, with log beta-tilde_0 clipped to log beta-tilde_1."""
    return _lrv_with()(v, t, betas)


def _lrv_with(swap=False, in_log=True, out="log", clip=True, abar_prev=_abar_prev, v_map=_ident):
    def log_var(v, t, betas):
        b = _betas64(betas)
        ab, ab_prev = _abar(b), abar_prev(b)
        tilde = (1 - ab_prev) / (1 - ab) * b
        if clip:
            tilde = torch.cat([tilde[1:2], tilde[1:]])
        hi, lo = _per_example(b[t], v), _per_example(tilde[t], v)
        w = v_map(v.double())
        if swap:
            w = 1 - w
        log_sigma = w * torch.log(hi) + (1 - w) * torch.log(lo) if in_log else torch.log(w * hi + (1 - w) * lo)
        return {"log": log_sigma, "var": torch.exp(log_sigma), "half": 0.5 * log_sigma}[out]
    return log_var


def _lrv_cases(g):
    betas = torch.from_numpy(_cosine_betas(1000))
    return [
        Case((torch.rand(4, 1, 3, 3, generator=g), torch.tensor([0, 1, 300, 999]), betas)),
        Case((torch.rand(3, 2, generator=g), torch.tensor([5, 0, 60]), torch.from_numpy(np.linspace(1e-4, 0.02, 100))),
             label="2-D points, linear schedule with T = 100"),
        Case((torch.tensor([[0.0, 1.0], [1.0, 0.0]]), torch.tensor([10, 500]), betas),
             label="v = 0 (beta-tilde) and v = 1 (beta)"),
    ]


LEARNED_RANGE = register(Exercise(
    name="learned_range_log_variance",
    reference=reference_learned_range_log_variance,
    cases=_lrv_cases,
    arg_names=("v", "t", "betas"),
    hint="log Sigma = v * log(beta_t) + (1 - v) * log(beta-tilde_t), beta-tilde_t = (1 - alpha_bar_{t-1}) / "
         "(1 - alpha_bar_t) beta_t, with beta-tilde_0 replaced by beta-tilde_1 (eq. 15)",
    shape_hint="return one log-variance per element of v: reshape beta_t and beta-tilde_t (B,) to (B, 1, ...)",
    nan_hint="beta-tilde_0 = 0 and log(0) = -inf: use beta-tilde_1 at t = 0, as the reference code does",
    errors=[(r"must match the size of tensor|not broadcastable|broadcast",
             "beta[t] has shape (B,): reshape it to (B, 1, ...) to multiply v")],
    mistakes=[
        Mistake("log beta-tilde_0 is -inf", "beta-tilde_0 = 0: clip it, i.e. use beta-tilde_1 at t = 0 "
                "(the reference code's posterior_log_variance_clipped)", _lrv_with(clip=False)),
        Mistake("v and 1 - v are swapped", "v = 1 gives beta_t, v = 0 gives beta-tilde_t: v log beta_t + "
                "(1 - v) log beta-tilde_t", _lrv_with(swap=True)),
        Mistake("the variances are interpolated, not their logs", "eq. 15 mixes log-variances: "
                "v log beta_t + (1 - v) log beta-tilde_t (an interpolation in log space)", _lrv_with(in_log=False)),
        Mistake("returned Sigma instead of log Sigma", "return the log-variance; the sampler takes exp() itself",
                _lrv_with(out="var")),
        Mistake("returned log sigma (half the log-variance)", "return log Sigma, the log of the variance",
                _lrv_with(out="half")),
        Mistake("alpha_bar_{t-1} wraps around at t = 0", "alpha_bar_{t-1} at t = 0 is 1: "
                "torch.cat([torch.ones(1), alpha_bar[:-1]]), not alpha_bar[t - 1]; then clip beta-tilde_0",
                _lrv_with(abar_prev=_abar_prev_wrapped, clip=False)),
        Mistake("v is mapped from [-1, 1] to [0, 1]", "here v is already the weight of eq. 15, in [0, 1]; the package "
                "maps the network's raw output with (output + 1) / 2 before this",
                _lrv_with(v_map=lambda v: (v + 1) / 2)),
    ],
))


def check_learned_range_log_variance(fn):
    """Check ``learned_range_log_variance(v, t, betas)`` (Improved DDPM eq. 15); returns the function to use."""
    return LEARNED_RANGE.check(fn)


# ======================================================================================================================
# 05: cosine_betas (Improved DDPM eq. 17)
# ======================================================================================================================
def reference_cosine_betas(num_timesteps, s=0.008, max_beta=0.999):
    """beta_t = min(1 - alpha_bar_t / alpha_bar_{t-1}, max_beta), alpha_bar_t = f(t) / f(0)."""
    return _cosine_betas(num_timesteps, s=s, max_beta=max_beta)


def _f(tau, s=0.008, square=2, angle=math.pi / 2):
    return np.cos((tau + s) / (1 + s) * angle) ** square


def _cos_with(f=_f, clip=True, shift=0, ratio=True, hard_max=None, s_fixed=None):
    def betas(num_timesteps, s=0.008, max_beta=0.999):
        s = s if s_fixed is None else s_fixed
        i = np.arange(num_timesteps, dtype=np.float64) + shift
        ab = f((i + 1) / num_timesteps, s) / f(0.0, s)
        ab_prev = f(i / num_timesteps, s) / f(0.0, s)
        b = 1 - ab / ab_prev if ratio else 1 - ab
        top = max_beta if hard_max is None else hard_max
        return np.minimum(b, top) if clip else b
    return betas


def _cosine_cases(g):
    return [
        Case((1000,)),
        Case((50,), label="T = 50"),
        Case((100,), {"s": 0.02, "max_beta": 0.9}, label="s = 0.02 and max_beta = 0.9 (use the arguments)"),
    ]


COSINE_BETAS = register(Exercise(
    name="cosine_betas",
    reference=reference_cosine_betas,
    cases=_cosine_cases,
    arg_names=("num_timesteps", "s", "max_beta"),
    rtol=1e-4, atol=1e-6,
    hint="f(t) = cos(((t/T + s) / (1 + s)) * pi/2)^2, alpha_bar_t = f(t)/f(0), "
         "beta_t = min(1 - alpha_bar_t / alpha_bar_{t-1}, max_beta) for t = 1..T (eq. 17)",
    shape_hint="return T betas, one per step t = 1..T",
    mistakes=[
        Mistake("the clip at max_beta = 0.999 is missing",
                "the last beta is 1 (alpha_bar_T = 0), a singularity at the end of the chain: "
                "clip with np.minimum(betas, max_beta) (section 3.2)", _cos_with(clip=False)),
        Mistake("the offset s is missing", "f(t) = cos(((t/T + s) / (1 + s)) * pi/2)^2 with s = 0.008: "
                "without s the first betas are tiny (section 3.2)", _cos_with(s_fixed=0.0)),
        Mistake("off by one in t: beta_t uses alpha_bar_{t-1} / alpha_bar_{t-2}",
                "the first beta is 1 - alpha_bar(1/T) / alpha_bar(0): use (i + 1)/T and i/T for i = 0..T-1",
                _cos_with(shift=-1)),
        Mistake("off by one in t: beta_t uses alpha_bar_{t+1} / alpha_bar_t",
                "the first beta is 1 - alpha_bar(1/T) / alpha_bar(0): use (i + 1)/T and i/T for i = 0..T-1",
                _cos_with(shift=1)),
        Mistake("beta_t = 1 - alpha_bar_t", "beta_t is one step's noise: 1 - alpha_bar_t / alpha_bar_{t-1}",
                _cos_with(ratio=False)),
        Mistake("the cosine is not squared", "f(t) = cos(...)^2", _cos_with(f=lambda tau, s: _f(tau, s, square=1))),
        Mistake("the angle runs to pi instead of pi/2",
                "f(t) = cos(((t/T + s) / (1 + s)) * pi/2)^2: the angle goes from about 0 to pi/2",
                _cos_with(f=lambda tau, s: _f(tau, s, angle=math.pi))),
        Mistake("max_beta is ignored", "clip with the max_beta argument, not a constant",
                _cos_with(hard_max=0.999)),
        Mistake("s is ignored", "use the s argument, not the constant 0.008", _cos_with(s_fixed=0.008)),
    ],
))


def check_cosine_betas(fn):
    """Check ``cosine_betas(num_timesteps, s=0.008, max_beta=0.999)`` (Improved DDPM eq. 17)."""
    return COSINE_BETAS.check(fn)


# ======================================================================================================================
# 06: the importance sampler (Improved DDPM eq. 18)
# ======================================================================================================================
def reference_importance_sampler_weights(loss_history, uniform_prob=0.001):
    """(p, weights), both (T,): p_t proportional to sqrt(mean of loss_history[t]^2), mixed with the uniform
    distribution (weight ``uniform_prob``); weights_t = 1 / (T p_t). Exactly ``LossSecondMomentResampler``."""
    from ..resample import LossSecondMomentResampler

    history = torch.as_tensor(loss_history).detach().cpu().double().numpy()
    sampler = LossSecondMomentResampler(history.shape[0], history_per_term=history.shape[1],
                                        uniform_prob=float(uniform_prob))
    sampler.loss_history = history.copy()
    sampler.loss_counts[:] = history.shape[1]
    p = torch.from_numpy(sampler.weights())
    return p, 1.0 / (len(p) * p)


def _is_with(moment="rms", normalise=True, mix="ok", weights="ok", axis=-1, fixed_prob=None):
    def sampler(loss_history, uniform_prob=0.001):
        uniform_prob = uniform_prob if fixed_prob is None else fixed_prob
        h = torch.as_tensor(loss_history).double()
        m = {"rms": (h ** 2).mean(axis).sqrt(), "second": (h ** 2).mean(axis), "mean": h.mean(axis)}[moment]
        T = len(m)
        p = m / m.sum() if normalise else m
        if mix == "ok":
            p = (1 - uniform_prob) * p + uniform_prob / T
        elif mix == "no_T":
            p = (1 - uniform_prob) * p + uniform_prob
        w = {"ok": 1 / (T * p), "no_T": 1 / p, "inverted": T * p}[weights]
        return torch.stack([p, w])
    return sampler


def _is_cases(g):
    def history(T, K):
        profile = torch.logspace(1, -2, T, dtype=torch.float64)[:, None]
        return profile * (0.5 + torch.rand(T, K, generator=g, dtype=torch.float64))
    return [
        Case((history(40, 10), 0.01)),
        Case((history(1000, 10),), label="T = 1000 with the default uniform_prob"),
        Case((history(30, 5), 0.2), label="uniform_prob = 0.2 (use the argument)"),
    ]


IMPORTANCE = register(Exercise(
    name="importance_sampler_weights",
    reference=_pair(reference_importance_sampler_weights, "importance_sampler_weights", "(p, weights)"),
    cases=_is_cases,
    arg_names=("loss_history", "uniform_prob"),
    hint="p_t = sqrt(mean_k loss_history[t, k]^2), normalised to sum to 1, then (1 - uniform_prob) p_t + "
         "uniform_prob / T; weights_t = 1 / (T p_t) (eq. 18)",
    shape_hint="return (p, weights), each with one value per timestep: loss_history is (T, K), K recent losses "
               "per t; average over the last axis",
    errors=[(r"must return a pair", "return both: `return p, weights`")],
    mistakes=[
        Mistake("p_t proportional to E[L_t^2], without the square root",
                "eq. 18 takes the root mean square: p_t proportional to sqrt(E[L_t^2])", _is_with(moment="second")),
        Mistake("p_t proportional to the mean loss E[L_t]",
                "eq. 18 uses the root of the second moment, sqrt(mean of L_t^2), not the mean of L_t",
                _is_with(moment="mean")),
        Mistake("p is not normalised", "divide by the sum so that p sums to 1 (before mixing with the uniform)",
                _is_with(normalise=False)),
        Mistake("the uniform mixture is missing", "mix in uniform_prob of the uniform distribution: "
                "(1 - uniform_prob) p_t + uniform_prob / T, so that no t ever gets probability 0",
                _is_with(mix="none")),
        Mistake("the uniform part is not divided by T", "the uniform distribution puts 1 / T on each t: "
                "(1 - uniform_prob) p_t + uniform_prob / T", _is_with(mix="no_T")),
        Mistake("weights = 1 / p_t", "the factor 1 / T is missing: weights_t = 1 / (T p_t), which is 1 for the "
                "uniform p_t = 1 / T", _is_with(weights="no_T")),
        Mistake("weights = T p_t", "upside down: the weight undoes the over-sampling, weights_t = 1 / (T p_t)",
                _is_with(weights="inverted")),
        Mistake("uniform_prob is ignored", "mix with the uniform_prob argument, not the constant 0.001",
                _is_with(fixed_prob=0.001)),
        Mistake("averaged over t instead of over the history", "loss_history[t] holds the K recent losses of step "
                "t: average over the last axis, one value per t", _is_with(axis=0)),
    ],
))


def check_importance_sampler_weights(fn):
    """Check ``importance_sampler_weights(loss_history, uniform_prob=0.001) -> (p, weights)`` (eq. 18)."""
    return _check_pair(IMPORTANCE, fn, reference_importance_sampler_weights, "importance_sampler_weights",
                       "(p, weights)")


# ======================================================================================================================
# 07: timestep_embedding (Ho et al. 2020, section 4)
# ======================================================================================================================
def reference_timestep_embedding(t, dim, max_period=10000):
    """half = dim // 2 frequencies exp(-ln(max_period) i / half); [cos(t f), sin(t f)], a zero column if dim is odd."""
    from ..models import timestep_embedding as _timestep_embedding

    return _timestep_embedding(t, dim, max_period)


def _emb_with(order="cos-sin", denom="half", log=math.log, sign=-1.0, pad=True, period=None, interleave=False):
    """The sinusoidal embedding with one knob turned: the generator of the known mistakes."""
    def emb(t, dim, max_period=10000):
        p = max_period if period is None else period
        half = dim // 2
        i = torch.arange(half, dtype=torch.float64)
        scale = {"half": half, "dim": dim, "none": 1}[denom]
        freqs = torch.exp(sign * log(p) * i / scale)
        args = t.double()[:, None] * freqs[None]
        first, second = (torch.cos(args), torch.sin(args)) if order == "cos-sin" else (torch.sin(args), torch.cos(args))
        out = torch.stack([first, second], -1).flatten(1) if interleave else torch.cat([first, second], -1)
        if pad and dim % 2:
            out = torch.cat([out, torch.zeros(len(t), 1, dtype=out.dtype)], -1)
        return out
    return emb


def _emb_cases(g):
    return [
        Case((torch.tensor([0, 1, 7, 50, 250, 999]), 16)),
        Case((torch.tensor([3, 400, 998]), 7), label="an odd dim (7)"),
        Case((torch.tensor([0.5, 12.25, 80.0]), 10), {"max_period": 100}, label="max_period = 100 and fractional t"),
    ]


TIMESTEP_EMBEDDING = register(Exercise(
    name="timestep_embedding",
    reference=reference_timestep_embedding,
    cases=_emb_cases,
    arg_names=("t", "dim", "max_period"),
    rtol=1e-4, atol=5e-4,  # float32 sines of arguments up to ~1000: about 1e-4 of rounding
    hint="half = dim // 2; freqs = exp(-ln(max_period) * arange(half) / half); args = t[:, None] * freqs[None]; "
         "cat([cos(args), sin(args)], -1), plus one zero column when dim is odd",
    shape_hint="return (B, dim): half cosines, then half sines, and one column of zeros at the end when dim is odd",
    errors=[(r"must match the size|size of tensor|shape", "t[:, None] * freqs[None] gives (B, half): "
             "one row per timestep, one column per frequency")],
    mistakes=[
        Mistake("sin and cos swapped", "the cosines come first, then the sines: cat([cos(args), sin(args)], dim=-1)",
                _emb_with(order="sin-cos")),
        Mistake("sin and cos interleaved (sin, cos, sin, cos, ...)",
                "this layout puts all the cosines first, then all the sines: cat([cos(args), sin(args)], dim=-1)",
                _emb_with(interleave=True)),
        Mistake("the exponent is not divided by half",
                "the frequencies are exp(-ln(max_period) * i / half) for i = 0..half-1: they run from 1 down to "
                "about 1/max_period; without / half all but the first are ~0", _emb_with(denom="none")),
        Mistake("the exponent is divided by dim instead of half",
                "divide by half = dim // 2 (the number of frequencies), so the lowest frequency is ~1/max_period",
                _emb_with(denom="dim")),
        Mistake("log base 10 instead of the natural log",
                "exp undoes the natural log: freqs = exp(-math.log(max_period) * i / half), "
                "i.e. max_period ** (-i/half)",
                _emb_with(log=math.log10)),
        Mistake("log base 2 instead of the natural log",
                "exp undoes the natural log: freqs = exp(-math.log(max_period) * i / half), "
                "i.e. max_period ** (-i/half)",
                _emb_with(log=math.log2)),
        Mistake("the frequencies grow instead of shrinking (a sign)",
                "the exponent is negative: exp(-ln(max_period) * i / half) goes from 1 down to ~1/max_period",
                _emb_with(sign=1.0)),
        Mistake("no zero column for an odd dim",
                "cos and sin give 2 * (dim // 2) columns: when dim is odd, pad one column of zeros at the end "
                "(F.pad(emb, (0, 1)))", _emb_with(pad=False)),
        Mistake("max_period is ignored", "use the max_period argument, not the constant 10000",
                _emb_with(period=10000)),
    ],
))


def check_timestep_embedding(fn):
    """Check ``timestep_embedding(t, dim, max_period=10000)``; returns the function to use next."""
    return TIMESTEP_EMBEDDING.check(fn)


# ======================================================================================================================
# 08: the guided mean (ADM Algorithm 1)
# ======================================================================================================================
def reference_guided_mean(mean, variance, grad, scale):
    """mu + s * Sigma * grad_x log p(y | x_t): GaussianDiffusion.condition_mean with cond_fn = s * grad."""
    diffusion = GaussianDiffusion(np.linspace(1e-4, 0.02, 10))  # condition_mean only uses the mean and Sigma
    t = torch.zeros(len(mean), dtype=torch.long)
    return diffusion.condition_mean(lambda x, t, **kwargs: scale * grad, {"mean": mean, "variance": variance},
                                    mean, t)


def _guided_cases(g):
    shape = (3, 1, 4, 4)
    var = torch.exp(-1.5 + 0.5 * _randn(g, *shape))  # a learned Sigma: different for every pixel, below 1
    return [
        Case((_randn(g, *shape), var, _randn(g, *shape), 3.0)),
        Case((_randn(g, 4, 2), torch.full((4, 1), 0.3), _randn(g, 4, 2), 0.5),
             label="2-D points with a variance of shape (B, 1)"),
        Case((_randn(g, *shape), var, _randn(g, *shape), 0.0), label="scale 0 (no guidance)"),
    ]


GUIDED_MEAN = register(Exercise(
    name="guided_mean",
    reference=reference_guided_mean,
    cases=_guided_cases,
    arg_names=("mean", "variance", "grad", "scale"),
    hint="Algorithm 1: the guided mean is mean + scale * variance * grad",
    shape_hint="the guided mean has the shape of mean: multiply elementwise, don't sum",
    mistakes=[
        Mistake("Sigma is missing", "the step is scaled by the reverse step's covariance: "
                "mean + scale * variance * grad (a small Sigma, late in sampling, means a small shift)",
                lambda m, v, gr, s: m + s * gr),
        Mistake("sqrt(Sigma) used", "`variance` is already Sigma = sigma^2: multiply by it, not by its square root",
                lambda m, v, gr, s: m + s * v.sqrt() * gr),
        Mistake("Sigma squared", "`variance` is already Sigma = sigma^2: don't square it again",
                lambda m, v, gr, s: m + s * v ** 2 * gr),
        Mistake("the sign is flipped", "grad is the gradient of log p(y | x): go up it, towards the class: "
                "mean + scale * variance * grad", lambda m, v, gr, s: m - s * v * gr),
        Mistake("the scale is missing", "multiply by the guidance scale s too: mean + scale * variance * grad",
                lambda m, v, gr, s: m + v * gr),
        Mistake("the mean is scaled too", "only the shift is scaled: mean + scale * (variance * grad)",
                lambda m, v, gr, s: s * (m + v * gr)),
    ],
))


def check_guided_mean(fn):
    """Check ``guided_mean(mean, variance, grad, scale)`` (Dhariwal & Nichol 2021, Algorithm 1)."""
    return GUIDED_MEAN.check(fn)


# ======================================================================================================================
# 09: the Frechet distance (FID), diagonal covariances then full ones
# ======================================================================================================================
def _fd_reference(mu1, sigma1, mu2, sigma2):
    from ..metrics.fid import frechet_distance as _frechet_distance

    return _frechet_distance(mu1, sigma1, mu2, sigma2)


def reference_frechet_distance_diag(mu1, var1, mu2, var2):
    """|mu1 - mu2|^2 + sum(var1 + var2 - 2 sqrt(var1 var2)): FID for diagonal covariances."""
    return _fd_reference(mu1, np.diag(var1), mu2, np.diag(var2))


def _fd_diag_with(two=2.0, root=np.sqrt, square=True, reduce=np.sum, as_std=False):
    def fd(mu1, var1, mu2, var2):
        d = np.linalg.norm(mu1 - mu2)
        mean_term = d ** 2 if square else d
        if as_std:  # the arguments read as standard deviations: sum (s1 - s2)^2 with s = var
            return mean_term + reduce((var1 - var2) ** 2)
        return mean_term + reduce(var1 + var2 - two * root(var1 * var2))
    return fd


def _fd_diag_mean(mu1, var1, mu2, var2):
    return (np.sum((mu1 - mu2) ** 2) + np.sum(var1 + var2 - 2 * np.sqrt(var1 * var2))) / len(mu1)


def _fd_diag_cases(g):
    def vec(*shape, scale=1.0):
        return scale * _randn(g, *shape, dtype=torch.float64).numpy()

    mu1, mu2 = vec(6), vec(6)
    var1, var2 = np.exp(vec(6, scale=0.8)), np.exp(vec(6, scale=0.8))
    mu3, var3 = vec(3), np.exp(vec(3))
    return [
        Case((mu1, var1, mu2, var2)),
        Case((mu3, var3, mu3.copy(), var3.copy()), label="two identical Gaussians (the distance is 0)"),
        Case((vec(1), np.array([4.0]), vec(1), np.array([0.25])), label="one dimension"),
    ]


FRECHET_DISTANCE_DIAG = register(Exercise(
    name="frechet_distance_diag",
    reference=reference_frechet_distance_diag,
    cases=_fd_diag_cases,
    arg_names=("mu1", "var1", "mu2", "var2"),
    rtol=1e-6, atol=1e-8,
    hint="d^2 = |mu1 - mu2|^2 + sum(var1 + var2 - 2 sqrt(var1 * var2)), summed over the dimensions",
    shape_hint="return one number: sum over the dimensions",
    mistakes=[
        Mistake("the factor 2 is missing", "(s1 - s2)^2 = s1^2 + s2^2 - 2 s1 s2: the cross term is "
                "2 sqrt(var1 * var2)", _fd_diag_with(two=1.0)),
        Mistake("the square root is missing", "var1 * var2 is a product of variances; the cross term needs the "
                "product of standard deviations, sqrt(var1 * var2)", _fd_diag_with(root=lambda v: v)),
        Mistake("the distance of the means is not squared",
                "the mean term is the squared norm |mu1 - mu2|^2 = sum((mu1 - mu2) ** 2)", _fd_diag_with(square=False)),
        Mistake("var1 and var2 used as standard deviations",
                "they are variances: sum(var1 + var2 - 2 sqrt(var1 var2)) = sum((sqrt(var1) - sqrt(var2)) ** 2)",
                _fd_diag_with(as_std=True)),
        Mistake("averaged over the dimensions instead of summed",
                "FID sums over the feature dimensions (a trace and a squared norm), it does not average",
                _fd_diag_mean),
    ],
))


def check_frechet_distance_diag(fn):
    """Check ``frechet_distance_diag(mu1, var1, mu2, var2)`` (FID with diagonal covariances)."""
    return FRECHET_DISTANCE_DIAG.check(fn)


def reference_frechet_distance(mu1, sigma1, mu2, sigma2):
    """|mu1 - mu2|^2 + tr(sigma1 + sigma2 - 2 (sigma1 sigma2)^(1/2)): ddpm_lite.metrics.fid.frechet_distance."""
    return _fd_reference(mu1, sigma1, mu2, sigma2)


def _sqrtm(m):
    import scipy.linalg

    return np.real(scipy.linalg.sqrtm(m))


def _entrywise_sqrt(m):
    with np.errstate(invalid="ignore"):  # negative off-diagonal entries: NaN there, as the learner's np.sqrt gives
        return np.sqrt(m)


def _fd_with(cross=lambda s1, s2: np.trace(_sqrtm(s1 @ s2)), two=2.0, square=True):
    def fd(mu1, sigma1, mu2, sigma2):
        d = np.linalg.norm(mu1 - mu2)
        return (d ** 2 if square else d) + np.trace(sigma1) + np.trace(sigma2) - two * cross(sigma1, sigma2)
    return fd


def _spd(g, d, scale=1.0):
    a = _randn(g, d, d, dtype=torch.float64).numpy()
    return scale * (a @ a.T / d + 0.1 * np.eye(d))


def _fd_cases(g):
    d = 5
    mu1, mu2 = _randn(g, d, dtype=torch.float64).numpy(), _randn(g, d, dtype=torch.float64).numpy()
    s1, s2 = _spd(g, d), _spd(g, d, 2.0)
    return [
        Case((mu1, s1, mu2, s2)),
        Case((mu1, s1, mu1.copy(), s1.copy()), label="two identical Gaussians (the distance is 0)"),
        Case((mu2, np.diag([1.0, 2.0, 3.0, 4.0, 5.0]), mu1, np.diag([4.0, 1.0, 0.5, 2.0, 1.0])),
             label="diagonal covariances"),
    ]


FRECHET_DISTANCE = register(Exercise(
    name="frechet_distance",
    reference=reference_frechet_distance,
    cases=_fd_cases,
    arg_names=("mu1", "sigma1", "mu2", "sigma2"),
    rtol=1e-5, atol=1e-7,
    hint="d^2 = |mu1 - mu2|^2 + tr(sigma1) + tr(sigma2) - 2 tr(sqrtm(sigma1 @ sigma2)), with the matrix square "
         "root scipy.linalg.sqrtm (keep its .real part)",
    shape_hint="return one number",
    nan_hint="np.sqrt takes the square root of every entry, and entries of sigma1 @ sigma2 can be negative: use the "
             "matrix square root scipy.linalg.sqrtm",
    mistakes=[
        Mistake("the factor 2 is missing", "the cross term is 2 tr(sqrtm(sigma1 @ sigma2)), as 2 s1 s2 in "
                "(s1 - s2)^2", _fd_with(two=1.0)),
        Mistake("the matrix square root is missing", "tr(sigma1 @ sigma2) has the units of a variance squared: take "
                "the matrix square root first, tr(sqrtm(sigma1 @ sigma2))",
                _fd_with(cross=lambda s1, s2: np.trace(s1 @ s2))),
        Mistake("an elementwise square root (np.sqrt) instead of the matrix square root",
                "np.sqrt works entry by entry; (sigma1 sigma2)^(1/2) is the matrix square root: "
                "scipy.linalg.sqrtm(sigma1 @ sigma2)",
                _fd_with(cross=lambda s1, s2: np.trace(_entrywise_sqrt(s1 @ s2)))),
        Mistake("the product of the square roots instead of the square root of the product",
                "sqrtm(sigma1) @ sqrtm(sigma2) differs from sqrtm(sigma1 @ sigma2) unless the covariances commute: "
                "use tr(sqrtm(sigma1 @ sigma2))", _fd_with(cross=lambda s1, s2: np.trace(_sqrtm(s1) @ _sqrtm(s2)))),
        Mistake("the trace of the sum of the square roots instead of the square root of the product",
                "the cross term couples the two covariances: 2 tr(sqrtm(sigma1 @ sigma2)), not "
                "tr(sqrtm(sigma1) + sqrtm(sigma2))", _fd_with(cross=lambda s1, s2: np.trace(_sqrtm(s1) + _sqrtm(s2)))),
        Mistake("the distance of the means is not squared",
                "the mean term is the squared norm |mu1 - mu2|^2 = sum((mu1 - mu2) ** 2)", _fd_with(square=False)),
    ],
))


def check_frechet_distance(fn):
    """Check ``frechet_distance(mu1, sigma1, mu2, sigma2)`` (FID) against ddpm_lite.metrics.fid.frechet_distance."""
    return FRECHET_DISTANCE.check(fn)


# ======================================================================================================================
# 10: respaced betas (Improved DDPM section 4)
# ======================================================================================================================
def reference_respaced_betas(betas, kept):
    """beta_i = 1 - alpha_bar[S_i] / alpha_bar[S_{i-1}] over the sorted kept steps S, alpha_bar[S_{-1}] = 1."""
    from ..respace import respace

    return respace(GaussianDiffusion(_betas64(betas).numpy()), [int(k) for k in kept]).betas


def _respaced_with(index=lambda s: s, prev="one", ratio=True, sort=True, source="alpha_bar"):
    """The respacing formula with one knob turned: the generator of the known mistakes."""
    def fn(betas, kept):
        b = np.asarray(betas, np.float64)
        s = np.array(sorted(int(k) for k in kept) if sort else [int(k) for k in kept])
        if source == "betas":
            return b[s]
        ab = np.cumprod(1 - b)[index(s)]
        if not ratio:
            return 1 - ab
        if prev == "drop":
            return 1 - ab[1:] / ab[:-1]
        first = {"one": 1.0, "roll": ab[-1], "original": np.cumprod(1 - b)[s[0] - 1] if s[0] > 0 else 1.0}[prev]
        return 1 - ab / np.append(first, ab[:-1])
    return fn


def _respaced_cases(g):
    linear = np.linspace(1e-4, 0.02, 1000)
    shuffled = [int(k) for k in torch.randperm(10, generator=g) * 111]
    return [
        Case((linear, [3, 40, 150, 400, 700, 999])),
        Case((linear, shuffled), label="kept steps given in any order (space_timesteps returns a set)"),
        Case((_cosine_betas(100), list(range(0, 100, 10))), label="the cosine schedule, every 10th step"),
    ]


RESPACED_BETAS = register(Exercise(
    name="respaced_betas",
    reference=reference_respaced_betas,
    cases=_respaced_cases,
    arg_names=("betas", "kept"),
    rtol=1e-4, atol=1e-6,
    hint="alpha_bar = cumprod(1 - betas); over the sorted kept steps S: beta_i = 1 - alpha_bar[S_i] / "
         "alpha_bar[S_{i-1}], with alpha_bar[S_{-1}] = 1 for the first kept step",
    shape_hint="return one beta per kept step: len(kept) values",
    mistakes=[
        Mistake("the original betas at the kept steps (one step of the old chain, not the jump between kept steps)",
                "a respaced step jumps from the previous *kept* step: "
                "beta_i = 1 - alpha_bar[S_i] / alpha_bar[S_{i-1}], the product of every alpha in between; "
                "1 - alpha_bar[S_i] / alpha_bar[S_i - 1] is just beta[S_i]",
                _respaced_with(source="betas")),
        Mistake("off by one: alpha_bar at S_i - 1 (counting t from 1)",
                "the code counts t from 0 and alpha_bar[t] includes step t: index alpha_bar with the kept steps "
                "themselves, alpha_bar[S_i]", _respaced_with(index=lambda s: s - 1)),
        Mistake("one beta short: the first kept step has no beta",
                "the first kept step S_0 needs a beta too: there is nothing before it, alpha_bar_prev = 1, so "
                "beta_0 = 1 - alpha_bar[S_0]", _respaced_with(prev="drop")),
        Mistake("the first kept step's alpha_bar_prev wraps around to the last one (np.roll?)",
                "np.roll moves the last alpha_bar to the front: the first kept step uses alpha_bar_prev = 1",
                _respaced_with(prev="roll")),
        Mistake("the first kept step keeps its original beta",
                "the first kept step jumps from x_0 itself: alpha_bar_prev = 1, so beta_0 = 1 - alpha_bar[S_0], "
                "not the old chain's one-step beta at S_0", _respaced_with(prev="original")),
        Mistake("beta_i = 1 - alpha_bar[S_i]", "that is the whole way from x_0; one respaced step is the ratio "
                "1 - alpha_bar[S_i] / alpha_bar[S_{i-1}]", _respaced_with(ratio=False)),
        Mistake("the kept steps are not sorted", "sort them first (`sorted(kept)`): space_timesteps returns a set, "
                "and the chain must run in increasing t", _respaced_with(sort=False)),
    ],
))


def check_respaced_betas(fn):
    """Check ``respaced_betas(betas, kept)`` (Improved DDPM section 4); returns the function to use next."""
    return RESPACED_BETAS.check(fn)


# ======================================================================================================================
# 10: one DDIM step (Song et al. 2021, eq. 12)
# ======================================================================================================================
def reference_ddim_step(x_t, eps, alpha_bar, alpha_bar_prev, eta, noise):
    """x_{t-1} = sqrt(abar_prev) x0_hat + sqrt(1 - abar_prev - sigma^2) eps + sigma noise, with
    x0_hat = (x_t - sqrt(1 - abar) eps) / sqrt(abar), sigma = eta sqrt((1 - abar_prev) / (1 - abar))
    sqrt(1 - abar / abar_prev) (DDIM eqs. 12 and 16). Computed in float64, returned in the dtype of x_t."""
    return _ddim(x_t, eps, alpha_bar, alpha_bar_prev, eta, noise).to(x_t.dtype)


def _ddim(x_t, eps, ab, ab_prev, eta, noise, *, sigma_fn=None, direction_sigma=True, noise_power=1,
          x0_fn=None, from_x0=True, complex_roots=False):
    """The DDIM step with one knob turned. ``complex_roots``: square roots of negative numbers are imaginary, as
    Python's ``** 0.5`` makes them for floats; the real part is returned (what the checker compares)."""
    dtype = torch.complex128 if complex_roots else torch.float64
    ab, ab_prev = torch.as_tensor(ab, dtype=dtype), torch.as_tensor(ab_prev, dtype=dtype)
    x_t, eps, noise = x_t.to(dtype), eps.to(dtype), noise.to(dtype)
    x0 = (x_t - (1 - ab).sqrt() * eps) / ab.sqrt() if x0_fn is None else x0_fn(x_t, eps, ab)
    sigma = (eta * ((1 - ab_prev) / (1 - ab)).sqrt() * (1 - ab / ab_prev).sqrt() if sigma_fn is None
             else sigma_fn(eta, ab, ab_prev))
    direction = (1 - ab_prev - (sigma ** 2 if direction_sigma else 0)).sqrt() * eps
    out = ab_prev.sqrt() * (x0 if from_x0 else x_t) + direction + sigma ** noise_power * noise
    return out.real if complex_roots else out


def _ddim_cases(g):
    shape = (3, 1, 4, 4)
    return [
        Case((_randn(g, *shape), _randn(g, *shape), 0.3, 0.55, 0.6, _randn(g, *shape))),
        Case((_randn(g, *shape), _randn(g, *shape), 0.2, 0.35, 0.0, _randn(g, *shape)),
             label="eta = 0 (deterministic)"),
        Case((_randn(g, 4, 2), _randn(g, 4, 2), 0.8, 0.9, 1.0, _randn(g, 4, 2)), label="eta = 1 on 2-D points"),
        Case((_randn(g, *shape), _randn(g, *shape), 0.97, 1.0, 1.0, _randn(g, *shape)),
             label="the last step (alpha_bar_prev = 1: x_{t-1} is the predicted x_0)"),
    ]


DDIM_STEP = register(Exercise(
    name="ddim_step",
    reference=reference_ddim_step,
    cases=_ddim_cases,
    arg_names=("x_t", "eps", "alpha_bar", "alpha_bar_prev", "eta", "noise"),
    hint="x0_hat = (x_t - sqrt(1 - abar) eps) / sqrt(abar); sigma = eta sqrt((1 - abar_prev) / (1 - abar)) "
         "sqrt(1 - abar / abar_prev); x_prev = sqrt(abar_prev) x0_hat + sqrt(1 - abar_prev - sigma^2) eps "
         "+ sigma noise",
    shape_hint="x_{t-1} has the shape of x_t",
    nan_hint="a square root of a negative number? 1 - abar / abar_prev >= 0 only if abar_prev (the step you go "
             "to, less noisy) is the larger one, and 1 - abar_prev - sigma^2 >= 0 only with the right sigma",
    errors=[(r"math domain error", "a square root of a negative number: 1 - abar / abar_prev >= 0 only if abar_prev "
             "(the step you go to, less noisy) is the larger one; are alpha_bar and alpha_bar_prev swapped?")],
    mistakes=[
        Mistake("eta is ignored: no noise at all", "sigma = eta * sqrt((1 - abar_prev) / (1 - abar)) * "
                "sqrt(1 - abar / abar_prev) (eq. 16); eta = 0 is the deterministic case, eta = 1 has DDPM's variance",
                lambda x, e, a, ap, eta, z: _ddim(x, e, a, ap, 0.0, z)),
        Mistake("the direction term ignores sigma: sqrt(1 - abar_prev) * eps",
                "the noise added takes its variance from the direction term: sqrt(1 - abar_prev - sigma^2) * eps, "
                "so that x_{t-1} keeps the marginal variance of q (eq. 12)",
                lambda x, e, a, ap, eta, z: _ddim(x, e, a, ap, eta, z, direction_sigma=False)),
        Mistake("sigma misses its first factor sqrt((1 - abar_prev) / (1 - abar))",
                "sigma = eta * sqrt((1 - abar_prev) / (1 - abar)) * sqrt(1 - abar / abar_prev): with eta = 1 this is "
                "the DDPM posterior's beta-tilde (eq. 16)",
                lambda x, e, a, ap, eta, z: _ddim(x, e, a, ap, eta, z,
                                                  sigma_fn=lambda n, ab, abp: n * (1 - ab / abp).sqrt())),
        Mistake("the noise is scaled by the variance sigma^2", "scale the noise by the standard deviation sigma",
                lambda x, e, a, ap, eta, z: _ddim(x, e, a, ap, eta, z, noise_power=2)),
        Mistake("the predicted x_0 misses a square root: (x_t - sqrt(1 - abar) eps) / abar",
                "x_t = sqrt(abar) x_0 + sqrt(1 - abar) eps, so x0_hat = (x_t - sqrt(1 - abar) eps) / sqrt(abar)",
                lambda x, e, a, ap, eta, z: _ddim(x, e, a, ap, eta, z,
                                                  x0_fn=lambda xt, ep, ab: (xt - (1 - ab).sqrt() * ep) / ab)),
        Mistake("alpha_bar and alpha_bar_prev swapped", "x0_hat uses abar (the current step t), the update "
                "sqrt(abar_prev) and sqrt(1 - abar_prev - sigma^2) the step it goes to; abar_prev > abar",
                lambda x, e, a, ap, eta, z: _ddim(x, e, ap, a, eta, z, complex_roots=True)),
        Mistake("x_t in place of the predicted x_0", "DDIM first predicts x_0 from x_t and eps, then moves it to "
                "step t-1: sqrt(abar_prev) * x0_hat, with x0_hat = (x_t - sqrt(1 - abar) eps) / sqrt(abar)",
                lambda x, e, a, ap, eta, z: _ddim(x, e, a, ap, eta, z, from_x0=False)),
    ],
))


def check_ddim_step(fn):
    """Check ``ddim_step(x_t, eps, alpha_bar, alpha_bar_prev, eta, noise)`` (DDIM eq. 12); returns the function
    to use next."""
    return DDIM_STEP.check(fn)


# ======================================================================================================================
# 11: the SNR of x_t in decibels
# ======================================================================================================================
def reference_snr_db(x0, alpha_bar):
    """10 log10(alpha_bar * mean(x0^2) / (1 - alpha_bar)) per signal (the mean over every dim but the batch)."""
    from .waveforms import snr_db

    return snr_db(x0, alpha_bar)


def _snr_with(log=torch.log10, factor=10.0, power=lambda x: x.pow(2).flatten(1).mean(1), signal=lambda ab: ab,
              noise=lambda ab: 1 - ab):
    def fn(x0, alpha_bar):
        ab = torch.as_tensor(alpha_bar, dtype=torch.float64)
        return factor * log(signal(ab) * power(x0.double()) / noise(ab))
    return fn


def _snr_cases(g):
    from .waveforms import sine_tones

    tones = sine_tones(4, length=64, seed=int(torch.randint(0, 1000, (1,), generator=g)))
    stereo = torch.cat([sine_tones(3, length=48, seed=1), 0.5 * sine_tones(3, length=48, seed=2)], dim=1)
    return [
        Case((tones, 0.3)),
        Case((tones[:1], 0.95), label="one signal at a low noise level"),
        Case((stereo, torch.tensor([0.2, 0.6, 0.9], dtype=torch.float64)),
             label="stereo signals (B, 2, L), one alpha_bar per signal"),
    ]


SNR_DB = register(Exercise(
    name="snr_db",
    reference=reference_snr_db,
    cases=_snr_cases,
    arg_names=("x0", "alpha_bar"),
    hint="SNR = power of sqrt(alpha_bar) x0 over power of sqrt(1 - alpha_bar) eps = alpha_bar mean(x0^2) / "
         "(1 - alpha_bar); in dB: 10 * log10(SNR)",
    shape_hint="one SNR per signal, shape (B,): average x0 ** 2 over every dimension but the batch",
    mistakes=[
        Mistake("20 log10 of a power ratio", "decibels are 10 log10 of a ratio of powers (20 log10 is for a ratio "
                "of amplitudes)", _snr_with(factor=20.0)),
        Mistake("the signal's power is left out", "the SNR(t) of notebook 01 assumes data of unit variance; a tone "
                "of peak 0.7 has power mean(x0^2) of about 0.25: multiply by it", _snr_with(power=lambda x: 1.0)),
        Mistake("amplitudes in place of powers", "the signal's power is alpha_bar * mean(x0^2) and the noise's "
                "1 - alpha_bar: square the amplitudes sqrt(alpha_bar) * rms, or take 20 log10 of the amplitude ratio",
                _snr_with(power=lambda x: x.pow(2).flatten(1).mean(1).sqrt(), signal=torch.sqrt, noise=lambda ab:
                          (1 - ab).sqrt())),
        Mistake("a natural log", "decibels use log10: 10 * torch.log10(...)", _snr_with(log=torch.log)),
        Mistake("the peak power max(x0^2) in place of the mean", "a signal's power is the mean of x0^2 over its "
                "samples", _snr_with(power=lambda x: x.pow(2).flatten(1).amax(1))),
        Mistake("the noise power is (1 - alpha_bar)^2", "the noise sqrt(1 - alpha_bar) eps has variance (power) "
                "1 - alpha_bar", _snr_with(noise=lambda ab: (1 - ab) ** 2)),
        Mistake("one number for the whole batch", "one SNR per signal: average x0 ** 2 over each signal's samples "
                "(`x0.pow(2).flatten(1).mean(1)`), not over the batch",
                _snr_with(power=lambda x: x.pow(2).mean())),
    ],
))


def check_snr_db(fn):
    """Check ``snr_db(x0, alpha_bar)`` (the SNR of x_t in decibels); returns the function to use next."""
    return SNR_DB.check(fn)
