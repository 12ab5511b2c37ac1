"""The checked exercises of the notebooks, in notebook order: a checker per exercise, diagnoses first.

In a notebook::

    q_sample = check_q_sample(q_sample)   # prints "✅ q_sample: correct — ..." or "❌ q_sample: <what is wrong> ..."
    hint("q_sample")                      # what to look at; hint("q_sample", 2): the formula or the line of code

Each exercise is a reference (``reference_*``: the package's own implementation), the inputs it is tried on
(``_*_cases``), what it must return (:class:`~ddpm_lite.course.checking.Output`: a tensor, its dtype, its shape),
the known mistakes (each computed by turning one knob of a ``_*_with`` generator) with their diagnosis and two hint
levels, its registration (:func:`~ddpm_lite.course.checking.register`) and its ``check_*`` function. How a checker
decides, the strict mode of the tests and how to add an exercise: :mod:`ddpm_lite.course.checking`, whose names are
importable from here too.

==  ================================================================================================================
01  ``check_q_sample``: q(x_t | x_0) (DDPM eq. 4)
02  ``check_q_posterior``: q(x_{t-1} | x_t, x_0) (eqs. 6-7); ``check_train_step``: one training step (Algorithm 1);
    ``check_p_sample``: one ancestral step (Algorithm 2)
03  ``check_normal_kl``: the KL of two Gaussians (the terms of eq. 5); ``check_decoder_nll_bits``: the discretised
    decoder L_0 in bits/dim (section 3.3, eq. 13); ``check_simple_loss``: L_simple (eq. 14)
04  ``check_learned_range_log_variance``: the learned variance (Improved DDPM eq. 15); ``check_hybrid_loss``:
    L_simple + lambda L_vlb with the stop-gradient on the mean (eq. 16)
05  ``check_cosine_betas``: the cosine schedule (Improved DDPM eq. 17)
06  ``check_importance_sampler_weights``: the importance sampler of L_vlb (Improved DDPM eq. 18)
07  ``check_timestep_embedding``: the sinusoidal timestep embedding; ``check_res_block_forward``: the residual block
    with adaptive group normalisation (ADM section 3)
08  ``check_guided_mean``: the classifier-guided mean (ADM Algorithm 1); ``check_classifier_grad``: the classifier's
    gradient grad_x log p(y | x_t); ``check_classifier_free_eps``: the classifier-free mix (Ho & Salimans)
09  ``check_frechet_distance_diag``, ``check_frechet_distance``: FID with diagonal, then full covariances
10  ``check_respaced_betas``: a shorter chain (Improved DDPM section 4); ``check_ddim_step``: one DDIM step (eq. 12)
11  ``check_snr_db``: the SNR of x_t in decibels
==  ================================================================================================================
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from ..gaussian_diffusion import GaussianDiffusion
from ..losses import discretized_gaussian_log_likelihood, mean_flat
from ..losses import normal_kl as _normal_kl
from ..schedules import cosine_betas as _cosine_betas
from .checking import (
    EXERCISES,
    Case,
    Exercise,
    ExerciseError,
    Mistake,
    Output,
    Run,
    Verdict,
    call_learner,
    hint,
    hint_text,
    register,
    strict_mode,
)

__all__ = [
    # the machinery, from ddpm_lite.course.checking
    "Case", "Mistake", "Output", "Exercise", "Verdict", "ExerciseError", "register", "EXERCISES", "strict_mode",
    "hint", "hint_text",
    # the checks, by notebook
    "check_q_sample",  # 01
    "check_q_posterior", "check_train_step", "check_p_sample",  # 02
    "check_normal_kl", "check_decoder_nll_bits", "check_simple_loss",  # 03
    "check_learned_range_log_variance", "check_hybrid_loss",  # 04
    "check_cosine_betas",  # 05
    "check_importance_sampler_weights",  # 06
    "check_timestep_embedding", "check_res_block_forward",  # 07
    "check_guided_mean", "check_classifier_grad", "check_classifier_free_eps",  # 08
    "check_frechet_distance_diag", "check_frechet_distance",  # 09
    "check_respaced_betas", "check_ddim_step",  # 10
    "check_snr_db",  # 11
    # helpers the notebooks use with the exercises
    "make_vlb_term",
]

BROADCAST = r"must match the size of tensor|not broadcastable|broadcast|shape .* (doesn't|does not) match|expand"


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


def _linear(T: int = 1000) -> torch.Tensor:
    return torch.from_numpy(np.linspace(1e-4, 0.02, T))


class _ToyEpsModel:
    """A fixed, deterministic "network" for the checks: eps_theta(x, t) = 0.6 x - 0.3 tanh(x) + t / 1000."""

    def __call__(self, x, t):
        return 0.6 * x - 0.3 * torch.tanh(x) + _per_example(t.to(x.dtype) / 1000, x)

    def __repr__(self):
        return "toy eps model"


BROADCAST_ERROR = (BROADCAST, "a value with one number per example (shape (B,)) did not broadcast against the batch",
                   "reshape per-example values to (B, 1, 1, ...): .reshape(-1, *[1] * (x.ndim - 1))")


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
    betas = _linear()
    t0 = torch.tensor([3, 90, 400, 650, 998])
    t1 = torch.tensor([0, 0, 999, 1])
    t2 = torch.tensor([10, 200, 700])
    return [
        Case((_randn(g, 5, 1, 4, 3), t0, _randn(g, 5, 1, 4, 3), betas), per_example={"t": t0}),
        Case((_randn(g, 4, 2, dtype=torch.float64), t1, _randn(g, 4, 2, dtype=torch.float64), betas),
             label="t = 0 and t = T-1 (2-D points in float64)", per_example={"t": t1}),
        Case((_randn(g, 3, 3, 5, 6), t2, _randn(g, 3, 3, 5, 6), torch.from_numpy(_cosine_betas(1000))),
             label="another schedule (cosine) and RGB images", per_example={"t": t2}),
    ]


Q_SAMPLE = register(Exercise(
    name="q_sample",
    reference=reference_q_sample,
    cases=_q_sample_cases,
    arg_names=("x0", "t", "noise", "betas"),
    outputs=[Output("x_t", dtype="atleast:x0",
                    why="the next cells compare it with float64 tensors and call .numpy() on its statistics")],
    look="eq. 4: x_t is a multiple of x0 plus a multiple of the noise. Which multiple goes with which, is each a "
         "variance or a standard deviation, and is alpha-bar_t the product of all the steps up to t?",
    formula="alpha_bar = torch.cumprod(1 - betas, dim=0)[t].reshape(-1, *[1] * (x0.ndim - 1)); "
            "x_t = alpha_bar.sqrt() * x0 + (1 - alpha_bar).sqrt() * noise (eq. 4)",
    errors=[BROADCAST_ERROR,
            (r"only integer tensors|index|indices", "t could not index the schedule",
             "index alpha_bar with the integer tensor t: alpha_bar[t]")],
    mistakes=[
        Mistake("both factors are the squares of what they should be: x0 and the noise are scaled by variances",
                "x_t = alpha_bar.sqrt() * x0 + (1 - alpha_bar).sqrt() * noise: eq. 4 gives variances, take their "
                "square roots", _q_with(_abar, _ident, _ident),
                look="eq. 4 gives the mean and the variance of x_t; x_t itself is the mean plus a standard "
                     "deviation times the noise"),
        Mistake("the noise is scaled by its variance, not its standard deviation (the factor of x0 is right)",
                "(1 - alpha_bar).sqrt() * noise", _q_with(_abar, torch.sqrt, _ident),
                look="the factor in front of the noise"),
        Mistake("x0 is scaled by the square of its factor (the factor of the noise is right)",
                "alpha_bar.sqrt() * x0", _q_with(_abar, _ident, torch.sqrt), look="the factor in front of x0"),
        Mistake("x_t is noised as if by one single step: only step t's own noise level is used, not that of all "
                "the steps up to t", "alpha_bar = torch.cumprod(1 - betas, dim=0)[t]", _q_with(lambda b: 1 - b),
                look="alpha-bar_t accumulates the alphas of every step from the first one to t"),
        Mistake("off by one step: the noise level is that of the step before t (x_t comes out one step too "
                "clean)", "torch.cumprod(1 - betas, dim=0)[t], not [t - 1]", _q_with(_abar_prev),
                look="which steps the product includes: code t = 0 is the paper's first step, and the product "
                     "for t includes step t itself"),
        Mistake("off by one step: the noise level is that of the step after t (one step too noisy)",
                "index with t itself: torch.cumprod(1 - betas, dim=0)[t]", _q_with(_abar_next),
                look="which steps the product includes: code t = 0 is the paper's first step"),
        Mistake("the noise level is only approximately right: close at small t, further and further off as t "
                "grows", "torch.cumprod(1 - betas, 0), not 1 - torch.cumsum(betas, 0) (its first-order "
                "approximation)", _q_with(lambda b: 1 - torch.cumsum(b, 0)),
                look="alpha-bar is a product over the steps, not a sum"),
        Mistake("x0 and the noise are swapped: your x_t keeps the noise at small t and the data at large t",
                "alpha_bar.sqrt() * x0 + (1 - alpha_bar).sqrt() * noise", _q_with(_abar, swap=True),
                look="which of the two factors multiplies x0"),
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
    """The posterior with one knob turned: the generator of the known mistakes (returns the pair)."""
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
        return coef1 * x0 + coef2 * x_t, _per_example(v[t], x0)
    return post


def _q_posterior_cases(g):
    betas = _linear()
    t0, t1, t2 = torch.tensor([0, 3, 90, 400, 998]), torch.tensor([1, 1, 999, 500]), torch.tensor([0, 50, 199])
    return [
        Case((_randn(g, 5, 1, 4, 3), _randn(g, 5, 1, 4, 3), t0, betas), per_example={"t": t0}),
        Case((_randn(g, 4, 2), _randn(g, 4, 2), t1, betas), label="2-D points", per_example={"t": t1}),
        Case((_randn(g, 3, 3, 2, 2), _randn(g, 3, 3, 2, 2), t2, torch.from_numpy(_cosine_betas(200))),
             label="another schedule (cosine, T = 200)", per_example={"t": t2}),
    ]


Q_POSTERIOR = register(Exercise(
    name="q_posterior",
    reference=reference_q_posterior,
    cases=_q_posterior_cases,
    arg_names=("x0", "x_t", "t", "betas"),
    outputs=[Output("the mean", why="the next cells call .item() and torch.allclose on it"),
             Output("the variance", per_example_of="x0", why="the next cells call .item() on it")],
    look="eq. 7: the mean weighs x0 and x_t with two coefficients built from beta_t, alpha_t and alpha-bar at t "
         "and at t-1 (1 before the first step); the variance is beta-tilde_t, the posterior's",
    formula="mean = beta_t sqrt(alpha_bar_{t-1}) / (1 - alpha_bar_t) x0 + (1 - alpha_bar_{t-1}) sqrt(alpha_t) / "
            "(1 - alpha_bar_t) x_t, variance = (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t) beta_t (eqs. 6-7), with "
            "alpha_bar_prev = torch.cat([torch.ones(1, dtype=betas.dtype), alpha_bar[:-1]])",
    errors=[BROADCAST_ERROR],
    mistakes=[
        Mistake("the first step (t = 0) looks back at the end of the chain: its previous noise level wraps around "
                "to the last step", "alpha_bar_prev = torch.cat([torch.ones(1, dtype=betas.dtype), "
                "alpha_bar[:-1]]), not alpha_bar[t - 1]", _posterior_with(abar_prev=_abar_prev_wrapped),
                look="what the noise level before the first step is: at code t = 0 there is no noise yet"),
        Mistake("the coefficient of x0 uses the noise level of step t where it needs that of the step before "
                "(off by one step)", "coef_x0 = beta_t * sqrt(alpha_bar_{t-1}) / (1 - alpha_bar_t)",
                _posterior_with(c1_abar="t"), look="the coefficient of x0 in eq. 7, and which step each of its "
                "factors belongs to"),
        Mistake("the coefficient of x_t is too small: one of its factors is squared (a square root is missing)",
                "coef_xt = sqrt(alpha_t) * (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t)",
                _posterior_with(c2_alpha="none"), look="the coefficient of x_t in eq. 7"),
        Mistake("the coefficient of x_t undoes all the steps up to t instead of the single step t",
                "coef_xt = sqrt(alpha_t) * (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t): alpha_t, one step, not "
                "alpha-bar", _posterior_with(c2_alpha="abar"),
                look="x_t comes from x_{t-1} by one single step"),
        Mistake("the two coefficients of the mean are swapped: x0's multiplies x_t and x_t's multiplies x0",
                "mean = coef_x0 * x0 + coef_xt * x_t with coef_x0 = beta_t sqrt(alpha_bar_{t-1}) / "
                "(1 - alpha_bar_t)", _posterior_with(swap=True),
                look="at t = 0 the posterior mean must be x0 itself"),
        Mistake("the variance is the forward step's, not the posterior's (a little too large, most of all at "
                "small t)", "variance = (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t) * beta_t (eq. 7)",
                _posterior_with(var="beta"), look="eq. 7's variance, beta-tilde_t, is smaller than beta_t"),
        Mistake("the variance has its ratio upside down (it comes out larger than the forward step's)",
                "beta_tilde = (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t) * beta_t: alpha_bar_{t-1} on top",
                _posterior_with(var="inverted"), look="which of the two noise levels goes on top of the ratio"),
        Mistake("the variance is a standard deviation (the square root of the right value)",
                "return beta-tilde_t = (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t) * beta_t itself, not "
                "its square root", _posterior_with(var="std"),
                look="the function returns a variance"),
    ],
))


def check_q_posterior(fn):
    """Check ``q_posterior(x0, x_t, t, betas) -> (mean, variance)`` (DDPM eqs. 6-7); returns the function to use."""
    return Q_POSTERIOR.check(fn)


# ======================================================================================================================
# 02: one training step (DDPM Algorithm 1)
# ======================================================================================================================
def reference_train_step(model, optimizer, diffusion, x0, generator):
    """Algorithm 1: t ~ uniform{0..T-1}, then the noise (both from ``generator``), x_t = q_sample(x0, t, noise),
    L_simple = mean((noise - model(x_t, t))^2) over the batch and the dimensions, one optimiser step; returns the
    loss as a number."""
    return _step_with()(model, optimizer, diffusion, x0, generator)


def _step_with(order="t-noise", low=0, high_shift=0, inp="x_t", target="noise", reduce="mean", zero_grad=True,
               step=True):
    """The training step with one knob turned: the generator of the known mistakes."""
    def train_step(model, optimizer, diffusion, x0, generator):
        T = diffusion.num_timesteps
        if order == "t-noise":
            t = torch.randint(low, T + high_shift, (len(x0),), generator=generator)
            noise = torch.randn(x0.shape, generator=generator, dtype=x0.dtype)
        else:
            noise = torch.randn(x0.shape, generator=generator, dtype=x0.dtype)
            t = torch.randint(low, T + high_shift, (len(x0),), generator=generator)
        x_t = diffusion.q_sample(x0, t, noise)
        pred = model({"x_t": x_t, "x0": x0}[inp], t)
        err = ({"noise": noise, "x0": x0}[target] - pred) ** 2
        loss = {"mean": err.mean(), "sum_batch": mean_flat(err).sum(), "sum": err.sum()}[reduce]
        if zero_grad:
            optimizer.zero_grad()
        loss.backward()
        if step:
            optimizer.step()
        return loss.item()
    return train_step


class _StepSetup:
    """A training-step case: a tiny network, its data batches and diffusion, built afresh for every call."""

    def __init__(self, g: torch.Generator, shape: tuple, T: int, steps: int, schedule: str = "linear",
                 lr: float = 0.05):
        self.shape, self.lr = shape, lr
        betas = np.linspace(1e-3, 0.2, T) if schedule == "linear" else _cosine_betas(T)
        self.diffusion = GaussianDiffusion(betas)
        self.batches = [_randn(g, *shape).clamp(-2, 2) for _ in range(steps)]
        self.model_seed = int(torch.randint(0, 2 ** 30, (1,), generator=g))
        self.seed = int(torch.randint(0, 2 ** 30, (1,), generator=g))

    def build_model(self) -> torch.nn.Module:
        return _TinyEpsNet(int(np.prod(self.shape[1:])), self.diffusion.num_timesteps,
                           torch.Generator().manual_seed(self.model_seed))


class _TinyEpsNet(torch.nn.Module):
    """eps_theta(x, t) = W2 tanh(W1 [x, t / T] + b1) + b2, reshaped to x: a network small enough to check with."""

    def __init__(self, dim: int, T: int, g: torch.Generator, hidden: int = 12):
        super().__init__()
        self.T = T
        self.l1, self.l2 = torch.nn.Linear(dim + 1, hidden), torch.nn.Linear(hidden, dim)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(0.4 * torch.randn(p.shape, generator=g))

    def forward(self, x, t):
        h = torch.cat([x.flatten(1), (torch.as_tensor(t).to(x.dtype) / self.T)[:, None]], 1)
        return self.l2(torch.tanh(self.l1(h))).reshape(x.shape)


def _train_step_runner(fn, case: Case) -> Run:
    """Train a fresh tiny network with ``fn`` (once per batch of the case, plain SGD so that the update is the
    gradient times the learning rate): the returned loss of the last call, and the change of the parameters."""
    setup = case.args[0]
    model = setup.build_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=setup.lr)
    before = torch.cat([p.detach().flatten() for p in model.parameters()]).clone()
    generator = torch.Generator().manual_seed(setup.seed)
    loss = None
    for x0 in setup.batches:
        loss = call_learner(fn, model, optimizer, setup.diffusion, x0.clone(), generator)
    after = torch.cat([p.detach().flatten() for p in model.parameters()])
    return Run(loss, (after - before,))


def _train_step_cases(g):
    return [
        Case((_StepSetup(g, (8, 2), 10, 1),)),
        Case((_StepSetup(g, (8, 2), 10, 2),), label="two steps in a row"),
        Case((_StepSetup(g, (4, 1, 3, 3), 20, 1, schedule="cosine"),),
             label="images on another diffusion (cosine, T = 20)"),
    ]


TRAIN_STEP = register(Exercise(
    name="train_step",
    reference=reference_train_step,
    cases=_train_step_cases,
    arg_names=("model", "optimizer", "diffusion", "x0", "generator"),
    runner=_train_step_runner,
    extra_first=True,
    outputs=[Output("the loss", kind="number",
                    why="the training loop stores one number per step to plot the loss curve")],
    extra_outputs=[Output("the parameter update", zero_says="did not happen: the parameters did not change")],
    also_correct=[_step_with(order="noise-t")],
    rtol=1e-4, atol=1e-6,
    look="Algorithm 1, line by line: draw t (one per example, uniformly over the code's steps 0..T-1) and the "
         "noise with `generator`, make x_t, compare the network's prediction at (x_t, t) with the noise, average, "
         "then the three calls of a PyTorch optimisation step",
    formula="t = torch.randint(0, diffusion.num_timesteps, (len(x0),), generator=generator); noise = "
            "torch.randn(x0.shape, generator=generator); x_t = diffusion.q_sample(x0, t, noise); loss = "
            "((noise - model(x_t, t)) ** 2).mean(); optimizer.zero_grad(); loss.backward(); optimizer.step(); "
            "return loss.item()",
    errors=[(r"timesteps must lie in|out of bounds", "t went past the last step: the code numbers the steps from 0 "
             "to T-1", "t = torch.randint(0, diffusion.num_timesteps, (len(x0),), generator=generator)"),
            (r"must be an integer torch\.Tensor|Long|expected.*integer", "t must hold whole steps (integers)",
             "torch.randint(0, diffusion.num_timesteps, (len(x0),), generator=generator)"),
            (r"element 0 of tensors does not require grad|does not have a grad_fn",
             "the loss has no gradient: it was computed without autograd (torch.no_grad, .detach() or numbers)",
             "compute the loss from model(x_t, t) directly, with autograd on, then loss.backward()")],
    mistakes=[
        Mistake("the parameters did not change: the loss is computed, but the model is never updated",
                "optimizer.zero_grad(); loss.backward(); optimizer.step()", _step_with(step=False),
                look="Algorithm 1's last line, 'take a gradient descent step': the gradient must be computed and "
                     "the optimiser must use it"),
        Mistake("the second step also applies the first step's gradient: the gradients add up from step to step",
                "optimizer.zero_grad() before loss.backward()", _step_with(zero_grad=False),
                look="what .backward() does with the gradients already stored in the parameters"),
        Mistake("t never reaches the last step: the range it is drawn from is one step short",
                "torch.randint(0, diffusion.num_timesteps, ...): the upper end is excluded",
                _step_with(high_shift=-1), look="the two ends of the range of t, and whether each is included"),
        Mistake("t is drawn from 1 to T: the code numbers the steps from 0 to T-1",
                "torch.randint(0, diffusion.num_timesteps, ...)", _step_with(low=1, high_shift=1),
                look="the code's t = 0 is the paper's first step"),
        Mistake("the model is given the clean x0 instead of the noisy input", "model(x_t, t) with x_t = "
                "diffusion.q_sample(x0, t, noise)", _step_with(inp="x0"),
                look="what the network sees in Algorithm 1"),
        Mistake("the loss compares the model's output with x0: the network is trained to predict the wrong thing",
                "loss = ((noise - model(x_t, t)) ** 2).mean(): the target is the noise (eq. 14)",
                _step_with(target="x0"), look="what eps_theta predicts in Algorithm 1"),
        Mistake("the update grows with the batch size: the loss is summed over the examples instead of averaged",
                "loss = ((noise - model(x_t, t)) ** 2).mean()", _step_with(reduce="sum_batch"),
                look="how the loss of the batch is reduced to one number"),
        Mistake("the update is far too large: the loss is summed over the examples and their dimensions",
                "loss = ((noise - model(x_t, t)) ** 2).mean()", _step_with(reduce="sum"),
                look="how the loss of the batch is reduced to one number"),
    ],
))


def check_train_step(fn):
    """Check ``train_step(model, optimizer, diffusion, x0, generator) -> loss`` (DDPM Algorithm 1) by training a
    tiny network with it; returns the function to use next."""
    return TRAIN_STEP.check(fn)


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
    betas = _linear()
    t0, t1, t2 = torch.tensor([0, 4, 120, 600, 999]), torch.tensor([0, 1, 2, 500]), torch.tensor([0, 20, 99])
    return [
        Case((model, _randn(g, 5, 1, 3, 3), t0, _randn(g, 5, 1, 3, 3), betas), per_example={"t": t0}),
        Case((model, _randn(g, 4, 2), t1, _randn(g, 4, 2), betas), label="2-D points", per_example={"t": t1}),
        Case((model, _randn(g, 3, 2), t2, _randn(g, 3, 2), torch.from_numpy(_cosine_betas(100))),
             label="another schedule (cosine, T = 100)", per_example={"t": t2}),
    ]


P_SAMPLE = register(Exercise(
    name="p_sample",
    reference=reference_p_sample,
    cases=_p_sample_cases,
    arg_names=("model", "x_t", "t", "noise", "betas"),
    outputs=[Output("x_{t-1}", why="the sampling loop calls .float() on it and feeds it back to the network")],
    look="Algorithm 2: the mean of eq. 11 (remove the scaled predicted noise from x_t, then undo the shrinking of "
         "one step), plus the step's standard deviation times the noise, except at the last step (t = 0)",
    formula="eps = model(x_t, t); mean = (x_t - beta_t / sqrt(1 - alpha_bar_t) * eps) / sqrt(alpha_t); "
            "x_{t-1} = mean + sqrt(beta-tilde_t) * noise, without the noise where t = 0 (Algorithm 2)",
    errors=[BROADCAST_ERROR],
    mistakes=[
        Mistake("no noise is added at any step: your x_{t-1} is the step's mean", "x_{t-1} = mean + sigma_t * noise, "
                "except at t = 0", _p_sample_with(no_noise=True), look="Algorithm 2 adds sigma_t z at every step "
                "but the last"),
        Mistake("the last step (t = 0) adds noise: its variance comes from a noise level that wrapped around to "
                "the end of the chain", "alpha_bar_prev = torch.cat([torch.ones(1), alpha_bar[:-1]]), and multiply "
                "the noise by (t != 0)", _p_sample_with(noise_at_zero=True, abar_prev=_abar_prev_wrapped),
                look="the noise level before the first step, and what the last step adds"),
        Mistake("the noise is scaled by the step's variance instead of its standard deviation",
                "sigma_t = sqrt(beta-tilde_t)", _p_sample_with(std=False), look="the factor in front of the noise"),
        Mistake("the noise has the forward step's variance, not the posterior's that this notebook uses",
                "sigma_t^2 = beta-tilde_t = (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t) beta_t; beta_t is DDPM's "
                "other choice (notebook 04)", _p_sample_with(var="beta"), look="which variance the step uses"),
        Mistake("the mean is not rescaled: the division that undoes the shrinking of one step is missing",
                "eq. 11: mean = (x_t - beta_t / sqrt(1 - alpha_bar_t) eps) / sqrt(alpha_t)",
                _p_sample_with(scale_alpha="none"), look="the factor in front of the bracket in eq. 11"),
        Mistake("the mean undoes the shrinking of all the steps up to t instead of the single step t",
                "divide by sqrt(alpha_t) = sqrt(1 - beta_t), one step", _p_sample_with(scale_alpha="abar"),
                look="one reverse step undoes one forward step"),
        Mistake("the predicted noise is removed too strongly: its coefficient misses a square root",
                "beta_t / sqrt(1 - alpha_bar_t)", _p_sample_with(eps_coef_sqrt=False),
                look="the coefficient of the predicted noise in eq. 11"),
        Mistake("the predicted noise is added to x_t instead of removed", "x_t - beta_t / sqrt(1 - alpha_bar_t) * eps",
                _p_sample_with(sign=1.0), look="the sign in front of the predicted noise"),
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
    outputs=[Output("the KL", dtype="same:mean1", why="the next cells compare it with float32 tensors")],
    look="the KL formula above, term by term; the arguments are log-variances, so a variance is exp(logvar) and a "
         "log of a ratio of variances is a difference of logvars",
    formula="KL = 0.5 * (-1 + logvar2 - logvar1 + torch.exp(logvar1 - logvar2) + (mean1 - mean2) ** 2 * "
            "torch.exp(-logvar2))",
    nan=("a log of a negative number, or a log of a log-variance?",
         "the arguments are already log sigma^2: log(sigma2^2 / sigma1^2) = logvar2 - logvar1"),
    mistakes=[
        Mistake("the log-variances are used as if they were variances", "the variance is exp(logvar): "
                "log(sigma2^2 / sigma1^2) = logvar2 - logvar1 and sigma1^2 / sigma2^2 = exp(logvar1 - logvar2)",
                lambda m1, lv1, m2, lv2: _kl(m1, lv1, m2, lv2, var=_ident),
                look="what the arguments logvar1 and logvar2 hold"),
        Mistake("the variances are squared once too often", "exp(logvar) is already the variance sigma^2; don't "
                "square it", lambda m1, lv1, m2, lv2: _kl(m1, lv1, m2, lv2, var=lambda lv: torch.exp(2 * lv)),
                look="exp(logvar) is a variance, not a standard deviation"),
        Mistake("the whole KL is 2 times too large: a factor in front of the bracket is missing",
                "KL = 0.5 * (...)", lambda m1, lv1, m2, lv2: _kl(m1, lv1, m2, lv2, half=1.0),
                look="the factor in front of the bracket"),
        Mistake("the KL of two identical Gaussians is not 0: your result is off by a constant",
                "keep the -1 in the bracket", lambda m1, lv1, m2, lv2: _kl(m1, lv1, m2, lv2, const=0.0),
                look="the constant term of the bracket"),
        Mistake("the KL is computed the other way round: the roles of the two Gaussians are swapped",
                "KL(N1 || N2): the variance ratio is sigma1^2 / sigma2^2 and the squared mean difference is "
                "divided by sigma2^2", lambda m1, lv1, m2, lv2: _normal_kl(m2, lv2, m1, lv1),
                look="the KL is not symmetric: which Gaussian's variance divides"),
        Mistake("the squared difference of the means is multiplied by the second variance instead of divided by it",
                "(mean1 - mean2) ** 2 * torch.exp(-logvar2)",
                lambda m1, lv1, m2, lv2: _kl(m1, lv1, m2, lv2, msq=lambda a, b, lv: (a - b) ** 2 * torch.exp(lv)),
                look="the last term of the bracket"),
        Mistake("the squared difference of the means is divided by a standard deviation instead of a variance",
                "(mean1 - mean2) ** 2 * torch.exp(-logvar2)",
                lambda m1, lv1, m2, lv2: _kl(m1, lv1, m2, lv2,
                                             msq=lambda a, b, lv: (a - b) ** 2 * torch.exp(-0.5 * lv)),
                look="the last term of the bracket"),
        Mistake("the difference of the means is not squared", "(mean1 - mean2) ** 2 * torch.exp(-logvar2)",
                lambda m1, lv1, m2, lv2: _kl(m1, lv1, m2, lv2, msq=lambda a, b, lv: (a - b) * torch.exp(-lv)),
                look="the last term of the bracket"),
        Mistake("returned one number, the sum over every element: the KL is elementwise",
                "return the KL of every element (no .sum()); the caller averages with mean_flat",
                lambda m1, lv1, m2, lv2: _normal_kl(m1, lv1, m2, lv2).sum(), look="the shape of the result"),
        Mistake("returned one number, the mean over every element: the KL is elementwise",
                "return the KL of every element (no .mean()); the caller averages with mean_flat",
                lambda m1, lv1, m2, lv2: _normal_kl(m1, lv1, m2, lv2).mean(), look="the shape of the result"),
    ],
))


def check_normal_kl(fn):
    """Check ``normal_kl(mean1, logvar1, mean2, logvar2)``; returns the function to use next."""
    return NORMAL_KL.check(fn)


# ======================================================================================================================
# 03: the discretised decoder L_0 in bits/dim (DDPM section 3.3, eq. 13)
# ======================================================================================================================
def reference_decoder_nll_bits(x0, mean, log_scale):
    """-log p(x0 | x_1) of the discretised Gaussian decoder, averaged over the dimensions, in bits: (B,)."""
    return -mean_flat(discretized_gaussian_log_likelihood(x0, means=mean, log_scales=log_scale)) / math.log(2.0)


def _ndtr(z):
    return 0.5 * (1 + torch.erf(z / math.sqrt(2.0)))


def _decoder_with(half_width=1.0 / 255, edges=True, reduce=mean_flat, log=lambda v: torch.log(v) / math.log(2.0),
                  sign=-1.0, std=lambda ls: torch.exp(ls), mode="bin"):
    """The decoder with one knob turned (exact normal CDF): the generator of the known mistakes."""
    def nll(x0, mean, log_scale):
        x, m, s = x0.double(), mean.double(), std(log_scale.double())
        if mode == "density":
            logp = -0.5 * ((x - m) / s) ** 2 - torch.log(s) - 0.5 * math.log(2 * math.pi)
            return sign * reduce(logp) / math.log(2.0)
        up, lo = _ndtr((x - m + half_width) / s), _ndtr((x - m - half_width) / s)
        p = up - lo
        if edges:
            p = torch.where(x < -0.999, up, torch.where(x > 0.999, 1 - lo, p))
        return sign * reduce(log(p.clamp(min=1e-12)))
    return nll


def _on_grid(g, *shape):
    """Pixels of 8-bit images scaled to [-1, 1], with both ends present."""
    x = torch.randint(0, 256, shape, generator=g).float() / 127.5 - 1
    x.view(-1)[:2] = torch.tensor([-1.0, 1.0])
    return x


def _decoder_cases(g):
    def case(x, spread=0.05, low=0.005, offset=0.7):
        log_scale = torch.log(low + spread * torch.rand(x.shape, generator=g))
        mean = x + offset * log_scale.exp() * _randn(g, *x.shape)
        return (x, mean, log_scale)
    edges = torch.tensor([[[[-1.0, 1.0], [1.0, -1.0]]], [[[1.0, 1.0], [-1.0, 0.0]]]])
    return [
        Case(case(_on_grid(g, 4, 1, 4, 4))),
        Case(case(edges), label="pixels at the two ends, -1 and +1"),
        Case(case(_on_grid(g, 2, 3, 2, 2), spread=0.3, low=0.05, offset=1.5),
             label="RGB images and a wide decoder"),
    ]


DECODER_NLL_BITS = register(Exercise(
    name="decoder_nll_bits",
    reference=reference_decoder_nll_bits,
    cases=_decoder_cases,
    arg_names=("x0", "mean", "log_scale"),
    outputs=[Output("the decoder's bits/dim", why="the next cell compares it with the package's L_0")],
    also_correct=[_decoder_with()],
    rtol=5e-4, atol=1e-5,
    look="eq. 13: each pixel value owns a bin of width 2/255 around it (the two outermost bins reach to -inf and "
         "+inf); the decoder's probability of x0 is the Gaussian's mass over that bin; then -log, averaged over "
         "the dimensions of each example, in bits",
    formula="cdf = lambda z: 0.5 * (1 + torch.erf(z / 2 ** 0.5)); s = log_scale.exp(); up = cdf((x0 - mean + "
            "1 / 255) / s); lo = cdf((x0 - mean - 1 / 255) / s); p = torch.where(x0 < -0.999, up, "
            "torch.where(x0 > 0.999, 1 - lo, up - lo)); return -mean_flat(torch.log(p.clamp(min=1e-12))) / "
            "math.log(2)",
    errors=[BROADCAST_ERROR],
    mistakes=[
        Mistake("is 0.693 times the right value: a number of nats, not bits", "divide the natural log by "
                "math.log(2) (or use torch.log2)", _decoder_with(log=torch.log),
                look="the unit: bits count in base-2 logarithms"),
        Mistake("uses base-10 logarithms", "bits: torch.log(p) / math.log(2), or torch.log2(p)",
                _decoder_with(log=torch.log10), look="the unit: bits count in base-2 logarithms"),
        Mistake("is the total over the dimensions of each example, not the value per dimension",
                "average over every dimension but the batch: mean_flat(...), not a sum",
                _decoder_with(reduce=lambda v: v.flatten(1).sum(1)), look="bits per dimension: how to reduce"),
        Mistake("is negative: a log-likelihood, not a negative log-likelihood (a code length)",
                "return -mean_flat(log p) / math.log(2)", _decoder_with(sign=1.0), look="the sign of L_0"),
        Mistake("is wrong for the pixels at -1 and +1 only (the outermost bins)",
                "p = torch.where(x0 < -0.999, up, torch.where(x0 > 0.999, 1 - lo, up - lo))",
                _decoder_with(edges=False), look="the bins of the two extreme pixel values, -1 and +1"),
        Mistake("the bins are twice too wide", "a bin reaches 1/255 on each side of the pixel value (the levels are "
                "2/255 apart)", _decoder_with(half_width=2.0 / 255), look="the width of one bin"),
        Mistake("the bins are half as wide as they should be", "a bin reaches 1/255 on each side of the pixel value "
                "(the levels are 2/255 apart)", _decoder_with(half_width=0.5 / 255), look="the width of one bin"),
        Mistake("uses the Gaussian's density at x0, not the probability of x0's bin",
                "p = cdf(upper end of the bin) - cdf(lower end)", _decoder_with(mode="density"),
                look="a discrete decoder gives probabilities, not densities"),
        Mistake("reads log_scale as the log of a variance; it is the log of the standard deviation",
                "s = log_scale.exp()", _decoder_with(std=lambda ls: torch.exp(0.5 * ls)),
                look="what log_scale holds"),
    ],
))


def check_decoder_nll_bits(fn):
    """Check ``decoder_nll_bits(x0, mean, log_scale)`` (DDPM eq. 13, L_0 in bits/dim); returns the function to use."""
    return DECODER_NLL_BITS.check(fn)


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
    t0, t1 = torch.tensor([5, 250, 500, 990]), torch.tensor([0, 100, 199])
    return [
        Case((model, diffusion, _randn(g, 4, 1, 3, 5), t0, _randn(g, 4, 1, 3, 5)), per_example={"t": t0}),
        Case((model, cosine, _randn(g, 3, 2), t1, _randn(g, 3, 2)), label="2-D points on another diffusion",
             per_example={"t": t1}),
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
    outputs=[Output("the loss", dtype="same:x0",
                    why="the next cell compares it with training_losses, one float value per example")],
    look="eq. 14: make the noisy input from x0 and the noise, ask the model what noise it sees (at the same t), "
         "and average the squared error over every dimension but the batch",
    formula="x_t = diffusion.q_sample(x0, t, noise); return mean_flat((noise - model(x_t, t)) ** 2)",
    mistakes=[
        Mistake("is a sum over the dimensions of each example where their mean is needed",
                "mean_flat(...) or .mean(dim=tuple(range(1, x0.ndim)))",
                _simple_with(reduce=lambda d: d.flatten(1).sum(1)), look="how each example's error is reduced"),
        Mistake("is one number: the loss is averaged over the batch too", "return one loss per example, shape (B,): "
                "mean_flat((noise - model(x_t, t)) ** 2); the training loop averages the batch",
                _simple_with(reduce=lambda d: d.mean()), look="the shape of the result: one loss per example"),
        Mistake("is one number: the loss is summed over the batch and the dimensions",
                "return one loss per example, shape (B,): mean_flat((noise - model(x_t, t)) ** 2)",
                _simple_with(reduce=lambda d: d.sum()), look="the shape of the result: one loss per example"),
        Mistake("compares the model's prediction with x0 instead of the noise", "the target is `noise`: "
                "(noise - model(x_t, t)) ** 2", _simple_with(target="x0"), look="what the network predicts in eq. 14"),
        Mistake("compares the model's prediction with x_t instead of the noise",
                "the target is `noise`: (noise - model(x_t, t)) ** 2", _simple_with(target="x_t"),
                look="what the network predicts in eq. 14"),
        Mistake("the model is given the clean x0; it should see the noisy input",
                "x_t = diffusion.q_sample(x0, t, noise), then model(x_t, t)", _simple_with(inp="x0"),
                look="what the network sees"),
        Mistake("the model is given the noise itself as its input", "x_t = diffusion.q_sample(x0, t, noise), "
                "then model(x_t, t)", _simple_with(inp="noise"), look="what the network sees"),
        Mistake("the error is not squared", "(noise - model(x_t, t)) ** 2", _simple_with(err=lambda d: d),
                look="L_simple is a squared error"),
        Mistake("the error is an absolute value, not a square", "(noise - model(x_t, t)) ** 2",
                _simple_with(err=torch.abs), look="L_simple is a squared error"),
        Mistake("the model is given the step after the one that made x_t (off by one step)",
                "model(x_t, t) with the same t as q_sample", _simple_with(t_shift=1),
                look="the timestep the model is given"),
        Mistake("the model is given the step before the one that made x_t (off by one step)",
                "model(x_t, t) with the same t as q_sample", _simple_with(t_shift=-1),
                look="the timestep the model is given"),
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
    t0, t1, t2 = torch.tensor([0, 1, 300, 999]), torch.tensor([5, 0, 60]), torch.tensor([10, 500])
    return [
        Case((torch.rand(4, 1, 3, 3, generator=g), t0, betas), per_example={"t": t0}),
        Case((torch.rand(3, 2, generator=g), t1, _linear(100)), label="2-D points, linear schedule with T = 100",
             per_example={"t": t1}),
        Case((torch.tensor([[0.0, 1.0], [1.0, 0.0]]), t2, betas), label="v = 0 and v = 1", per_example={"t": t2}),
    ]


LEARNED_RANGE = register(Exercise(
    name="learned_range_log_variance",
    reference=reference_learned_range_log_variance,
    cases=_lrv_cases,
    arg_names=("v", "t", "betas"),
    outputs=[Output("log Sigma", why="the next cell calls .float() and .numpy() on it")],
    look="eq. 15 mixes the two fixed variances in log space, with weight v on beta_t; beta-tilde_t is the posterior "
         "variance of notebook 02, and it is 0 at the first step",
    formula="log Sigma = v * log(beta_t) + (1 - v) * log(beta-tilde_t), beta-tilde_t = (1 - alpha_bar_{t-1}) / "
            "(1 - alpha_bar_t) beta_t, with beta-tilde_0 replaced by beta-tilde_1: "
            "torch.cat([beta_tilde[1:2], beta_tilde[1:]]) (eq. 15)",
    nan=("at t = 0 the posterior variance is 0, and its log is -inf",
         "use beta-tilde_1 at t = 0, as the reference code does (posterior_log_variance_clipped)"),
    errors=[BROADCAST_ERROR],
    mistakes=[
        Mistake("is -inf at t = 0: the posterior variance of the first step is 0, and so is the mix's",
                "clip: beta_tilde = torch.cat([beta_tilde[1:2], beta_tilde[1:]]) (the reference code's "
                "posterior_log_variance_clipped)", _lrv_with(clip=False),
                look="beta-tilde at the first step, and what the reference code puts there"),
        Mistake("v and 1 - v are swapped: your v = 1 gives the posterior's variance and v = 0 the forward step's",
                "v * log(beta_t) + (1 - v) * log(beta-tilde_t)", _lrv_with(swap=True),
                look="which variance v = 1 must give"),
        Mistake("mixes the variances themselves, not their logarithms", "eq. 15 mixes log-variances: "
                "v * log(beta_t) + (1 - v) * log(beta-tilde_t)", _lrv_with(in_log=False),
                look="in which space eq. 15 interpolates"),
        Mistake("is the variance itself, not its logarithm", "return the log-variance; the sampler takes exp() itself",
                _lrv_with(out="var"), look="the function returns log Sigma"),
        Mistake("is half the log-variance (the log of a standard deviation)", "return log Sigma itself (the log of the "
                "variance), not 0.5 * log Sigma", _lrv_with(out="half"), look="the function returns log Sigma"),
        Mistake("is wrong at t = 0: the noise level before the first step wraps around to the end of the chain",
                "alpha_bar_prev = torch.cat([torch.ones(1), alpha_bar[:-1]]), not alpha_bar[t - 1]; then clip "
                "beta-tilde_0", _lrv_with(abar_prev=_abar_prev_wrapped, clip=False),
                look="the noise level before the first step"),
        Mistake("maps v from [-1, 1] to [0, 1] once more: here v is already the weight of eq. 15",
                "use v as it is; the package maps the network's raw output with (output + 1) / 2 before this",
                _lrv_with(v_map=lambda v: (v + 1) / 2), look="the range of v"),
    ],
))


def check_learned_range_log_variance(fn):
    """Check ``learned_range_log_variance(v, t, betas)`` (Improved DDPM eq. 15); returns the function to use."""
    return LEARNED_RANGE.check(fn)


# ======================================================================================================================
# 04: the hybrid loss (Improved DDPM eq. 16)
# ======================================================================================================================
def make_vlb_term(diffusion: GaussianDiffusion, x0: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor):
    """``vlb_term(eps, v)``: one term L_t of the bound (bits/dim, per example) for a network output [eps, v] at
    (x_t, t): a KL for t > 0, the decoder L_0 at t = 0 (what ``training_losses`` adds for a learned variance)."""
    def vlb_term(eps, v):
        output = torch.cat([eps, v], dim=1)
        return diffusion._vb_terms_bpd(lambda *args, **kwargs: output, x0, x_t, t, clip_denoised=False)["output"]
    return vlb_term


def reference_hybrid_loss(model_output, noise, vlb_term, num_timesteps, lam=0.001):
    """L_simple + lam * L_vlb per example, L_vlb estimated by num_timesteps * L_t with the mean frozen (eq. 16)."""
    eps, v = model_output.chunk(2, dim=1)
    return mean_flat((noise - eps) ** 2) + lam * num_timesteps * vlb_term(eps.detach(), v)


def _hybrid_with(detach="eps", lam_on=True, steps=True, swap=False, simple="mean", vlb=True, reduce=None):
    def loss(model_output, noise, vlb_term, num_timesteps, lam=0.001):
        eps, v = model_output.chunk(2, dim=1)
        if swap:
            eps, v = v, eps
        e_in = eps.detach() if detach in ("eps", "both") else eps
        v_in = v.detach() if detach == "both" else v
        err = (noise - eps) ** 2
        total = {"mean": mean_flat(err), "sum": err.flatten(1).sum(1), "none": 0.0}[simple]
        if vlb:
            n = num_timesteps if steps is True else (1.0 if steps is False else steps)
            total = total + (lam if lam_on else 1.0) * n * vlb_term(e_in, v_in)
        return total.mean() if reduce == "mean" else total
    return loss


def _hybrid_runner(fn, case: Case) -> Run:
    """Call ``fn`` with a model output that requires grad; measure the gradient of the summed loss with respect to
    it (zeros where no gradient flows)."""
    output, noise, vlb_term, steps = case.args
    output = output.clone().requires_grad_(True)
    loss = call_learner(fn, output, noise.clone(), vlb_term, steps, **case.kwargs)
    grad = torch.zeros_like(output)
    if isinstance(loss, torch.Tensor) and loss.requires_grad and loss.is_floating_point():
        try:
            got = torch.autograd.grad(loss.sum(), output, allow_unused=True)[0]
            grad = grad if got is None else got
        except Exception:  # noqa: BLE001 - a loss that cannot be differentiated: judged by its kind
            pass
    return Run(loss, (grad.detach(),))


def _hybrid_cases(g):
    def case(T, shape, t, label=""):
        diffusion = GaussianDiffusion(_cosine_betas(T), var_type="learned_range")
        x0, noise = _randn(g, *shape).clamp(-1, 1), _randn(g, *shape)
        x_t = diffusion.q_sample(x0, t, _randn(g, *shape))
        output = torch.cat([_randn(g, *shape), torch.rand(shape, generator=g) * 2 - 1], dim=1)  # [eps, v]
        return Case((output, noise, make_vlb_term(diffusion, x0, x_t, t), T), label=label, per_example={"t": t})
    return [
        case(50, (3, 1, 4, 4), torch.tensor([0, 7, 49])),
        case(200, (4, 2), torch.tensor([1, 30, 100, 199]), "2-D points and T = 200"),
    ]


HYBRID_LOSS = register(Exercise(
    name="hybrid_loss",
    reference=reference_hybrid_loss,
    cases=_hybrid_cases,
    arg_names=("model_output", "noise", "vlb_term", "num_timesteps", "lam"),
    runner=_hybrid_runner,
    outputs=[Output("the loss", plain=False, needs_grad=True,
                    needs_grad_says="the optimiser could not train the network with it; keep it a function of "
                                    "model_output (no .item(), no .detach() or torch.no_grad() on the whole)",
                    why="the next cell backpropagates through it")],
    extra_outputs=[Output("the gradient of the loss with respect to model_output",
                          zero_says="is zero: no gradient reaches model_output")],
    look="eq. 16 and its stop-gradient: split model_output into its eps half and its v half; L_simple trains eps; "
         "in L_vlb the mean must be a constant, so that the bound trains only v; one term L_t stands for the whole "
         "bound once multiplied by the number of steps",
    formula="eps, v = model_output.chunk(2, dim=1); return mean_flat((noise - eps) ** 2) + lam * num_timesteps * "
            "vlb_term(eps.detach(), v)",
    errors=[BROADCAST_ERROR],
    mistakes=[
        Mistake("has the right value, but the L_vlb term also trains the mean: the gradient on the eps half of "
                "model_output comes from both terms", "vlb_term(eps.detach(), v): the stop-gradient of eq. 16",
                _hybrid_with(detach="none"), look="which half of model_output L_vlb may train"),
        Mistake("has the right value, but the v half of model_output gets no gradient: nothing trains the variance",
                "detach eps only: vlb_term(eps.detach(), v)", _hybrid_with(detach="both"),
                look="which half of model_output L_vlb may train"),
        Mistake("weighs the L_vlb part 1000 times too much: lam is not applied", "... + lam * num_timesteps * "
                "vlb_term(eps.detach(), v)", _hybrid_with(lam_on=False), look="the weight lambda of eq. 16"),
        Mistake("the L_vlb part is num_timesteps times too small: one term stands for the whole bound only once "
                "scaled up", "lam * num_timesteps * vlb_term(...): L_vlb is estimated by T * L_t",
                _hybrid_with(steps=False), look="how one term L_t estimates the whole bound L_vlb"),
        Mistake("weighs the L_vlb part as if num_timesteps were always 1000", "lam * num_timesteps * vlb_term(...), "
                "with the num_timesteps argument", _hybrid_with(steps=1000.0),
                look="how one term L_t estimates the whole bound L_vlb, for any number of steps"),
        Mistake("reads eps from the v half of model_output and v from the eps half",
                "eps, v = model_output.chunk(2, dim=1): eps first", _hybrid_with(swap=True),
                look="the order of the two halves of model_output"),
        Mistake("L_simple is a sum over the dimensions of each example, not their mean",
                "mean_flat((noise - eps) ** 2)", _hybrid_with(simple="sum"), look="how L_simple is reduced"),
        Mistake("has no L_simple part: nothing trains the mean", "mean_flat((noise - eps) ** 2) + lam * ...",
                _hybrid_with(simple="none"), look="the two terms of eq. 16"),
        Mistake("is one number: averaged over the batch", "return one loss per example, shape (B,)",
                _hybrid_with(reduce="mean"), look="the shape of the result: one loss per example"),
    ],
))


def check_hybrid_loss(fn):
    """Check ``hybrid_loss(model_output, noise, vlb_term, num_timesteps, lam=0.001)`` (Improved DDPM eq. 16),
    value and gradient; returns the function to use next."""
    return HYBRID_LOSS.check(fn)


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
        Case((100,), {"s": 0.02, "max_beta": 0.9}, label="s = 0.02 and max_beta = 0.9"),
    ]


COSINE_BETAS = register(Exercise(
    name="cosine_betas",
    reference=reference_cosine_betas,
    cases=_cosine_cases,
    arg_names=("num_timesteps", "s", "max_beta"),
    outputs=[Output("the betas", kind="array", dtype="float64", shape_says="one beta per step", plural=True,
                    why="the next cell compares them with 0.999 and with the package's float64 schedule; in float32 "
                        "the smallest betas lose their digits")],
    rtol=1e-4, atol=1e-6,
    look="eq. 17: alpha-bar comes from f, and each beta is one minus the ratio of neighbouring alpha-bars; then the "
         "two details of section 3.2, the offset s and the clip at max_beta",
    formula="f(t) = cos(((t/T + s) / (1 + s)) * pi/2)^2, alpha_bar_t = f(t)/f(0), beta_t = min(1 - alpha_bar_t / "
            "alpha_bar_{t-1}, max_beta) for t = 1..T: tau = np.arange(T + 1) / T; f = np.cos((tau + s) / (1 + s) * "
            "math.pi / 2) ** 2; return np.minimum(1 - f[1:] / f[:-1], max_beta)",
    mistakes=[
        Mistake("the last beta is 1: nothing caps the betas", "np.minimum(betas, max_beta) (section 3.2)",
                _cos_with(clip=False), look="what happens at t = T, where f reaches 0"),
        Mistake("the first betas are far too small: f is evaluated without its offset", "f(t) = cos(((t/T + s) / "
                "(1 + s)) * pi/2)^2 with the s argument", _cos_with(s_fixed=0.0), look="the role of s in f"),
        Mistake("off by one step: each beta is the one of the step before", "beta[i] = 1 - alpha_bar((i + 1) / T) / "
                "alpha_bar(i / T) for i = 0..T-1", _cos_with(shift=-1), look="which two neighbours the first beta "
                "divides"),
        Mistake("off by one step: each beta is the one of the step after", "beta[i] = 1 - alpha_bar((i + 1) / T) / "
                "alpha_bar(i / T) for i = 0..T-1", _cos_with(shift=1), look="which two neighbours the first beta "
                "divides"),
        Mistake("each beta is the total noise from the start up to its step, not one step's noise",
                "beta_t = 1 - alpha_bar_t / alpha_bar_{t-1}", _cos_with(ratio=False),
                look="a beta is one step of the chain"),
        Mistake("f is not squared", "f(t) = cos(...) ** 2", _cos_with(f=lambda tau, s: _f(tau, s, square=1)),
                look="the power in f"),
        Mistake("the angle inside the cosine runs twice too far", "the angle is (t/T + s) / (1 + s) * pi/2",
                _cos_with(f=lambda tau, s: _f(tau, s, angle=math.pi)), look="the range of the angle"),
        Mistake("the clip ignores the max_beta argument", "np.minimum(betas, max_beta) with the argument, not a "
                "constant", _cos_with(hard_max=0.999), look="the arguments of the function"),
        Mistake("the offset ignores the s argument", "use the s argument, not the constant 0.008",
                _cos_with(s_fixed=0.008), look="the arguments of the function"),
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
        return p, w
    return sampler


def _is_cases(g):
    def history(T, K):
        profile = torch.logspace(1, -2, T, dtype=torch.float64)[:, None]
        return profile * (0.5 + torch.rand(T, K, generator=g, dtype=torch.float64))
    return [
        Case((history(40, 10), 0.01)),
        Case((history(1000, 10),), label="T = 1000 with the default uniform_prob"),
        Case((history(30, 5), 0.2), label="uniform_prob = 0.2"),
    ]


IMPORTANCE = register(Exercise(
    name="importance_sampler_weights",
    reference=reference_importance_sampler_weights,
    cases=_is_cases,
    arg_names=("loss_history", "uniform_prob"),
    outputs=[Output("p", kind="array", dtype="float64", lists=True, shape_says="one probability per timestep",
                    why="numpy's random choice needs p to sum to 1 within about 1e-8, beyond float32"),
             Output("the weights", kind="array", dtype="float64", lists=True, shape_says="one weight per timestep",
                    plural=True,
                    why="they multiply float64 losses in the next cell")],
    look="eq. 18: p_t follows the root mean square of each t's recent losses (averaged over the history of that "
         "t), normalised; then (as the reference code does) mixed with a little of the uniform distribution; the "
         "weights undo the over-sampling",
    formula="p_t = sqrt(mean_k loss_history[t, k]^2), normalised to sum to 1, then (1 - uniform_prob) p_t + "
            "uniform_prob / T (the mixing is the reference code's, not eq. 18's); weights_t = 1 / (T p_t)",
    mistakes=[
        Mistake("p follows the second moment of the losses, without its square root",
                "p_t proportional to sqrt(mean of L_t^2): (loss_history ** 2).mean(dim=1).sqrt()",
                _is_with(moment="second"), look="eq. 18: the root of the second moment"),
        Mistake("p follows the mean loss of each t", "p_t proportional to sqrt(mean of L_t^2), not the mean of L_t",
                _is_with(moment="mean"), look="eq. 18: the root of the second moment"),
        Mistake("p does not sum to 1", "p = p / p.sum(), before mixing with the uniform", _is_with(normalise=False),
                look="p is a probability distribution over t"),
        Mistake("p has no uniform part: a t whose recent losses are all 0 could never be drawn again",
                "(1 - uniform_prob) * p + uniform_prob / T", _is_with(mix="none"), look="the mixing with the uniform"),
        Mistake("p's uniform part puts uniform_prob on every t instead of sharing it out (p sums to more than 1)",
                "(1 - uniform_prob) * p + uniform_prob / T", _is_with(mix="no_T"),
                look="the uniform distribution over T steps"),
        Mistake("the weights are T times too large: they should be 1 for a uniform p",
                "weights = 1 / (T * p)", _is_with(weights="no_T"), look="what weight a uniform p should give"),
        Mistake("the weights are upside down: large where p is large", "weights = 1 / (T * p): the weight undoes the "
                "over-sampling", _is_with(weights="inverted"), look="what the weight must undo"),
        Mistake("the mixing ignores the uniform_prob argument", "mix with the uniform_prob argument, not a constant",
                _is_with(fixed_prob=0.001), look="the arguments of the function"),
        Mistake("the losses are averaged over t instead of over the history of each t", "loss_history[t] holds the K "
                "recent losses of step t: average over the last axis, .mean(dim=1)", _is_with(axis=0),
                look="the two axes of loss_history, (T, K)"),
    ],
))


def check_importance_sampler_weights(fn):
    """Check ``importance_sampler_weights(loss_history, uniform_prob=0.001) -> (p, weights)`` (eq. 18)."""
    return IMPORTANCE.check(fn)


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
        return out.float()
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
    outputs=[Output("the embedding", dtype="float32", shape_says="one row per timestep, dim columns",
                    why="the network's layers are float32, and the next cell compares it with the package's")],
    rtol=1e-4, atol=5e-4,  # float32 sines of arguments up to ~1000: about 1e-4 of rounding
    look="the frequencies: dim // 2 of them, from 1 down to about 1/max_period, geometrically spaced; the columns: "
         "all the cosines, then all the sines, and one zero column when dim is odd",
    formula="half = dim // 2; freqs = torch.exp(-math.log(max_period) * torch.arange(half) / half); args = "
            "t[:, None].float() * freqs[None]; emb = torch.cat([torch.cos(args), torch.sin(args)], -1), then "
            "F.pad(emb, (0, 1)) when dim is odd",
    errors=[(r"must match the size|size of tensor|shape", "the timesteps and the frequencies did not combine into "
             "a (B, dim // 2) table", "t[:, None] * freqs[None] gives (B, half): one row per timestep, one column "
             "per frequency")],
    mistakes=[
        Mistake("the sines come first and the cosines second", "torch.cat([torch.cos(args), torch.sin(args)], dim=-1)",
                _emb_with(order="sin-cos"), look="the order of the two halves"),
        Mistake("sines and cosines alternate column by column", "all the cosines first, then all the sines: "
                "torch.cat([torch.cos(args), torch.sin(args)], dim=-1)", _emb_with(interleave=True),
                look="the order of the columns"),
        Mistake("the frequencies fall far too fast: all but the first are about 0", "freqs = torch.exp(-math.log("
                "max_period) * i / half) for i = 0..half-1", _emb_with(denom="none"),
                look="the exponent of the frequencies"),
        Mistake("the frequencies fall half as fast as they should: the slowest turns far more often than once per "
                "max_period steps",
                "divide the exponent by half = dim // 2 (the number of frequencies), not by dim",
                _emb_with(denom="dim"), look="the exponent of the frequencies"),
        Mistake("the frequencies span the wrong range: they were built with a base-10 logarithm",
                "freqs = torch.exp(-math.log(max_period) * i / half), i.e. max_period ** (-i / half)",
                _emb_with(log=math.log10), look="exp undoes the natural log"),
        Mistake("the frequencies span the wrong range: they were built with a base-2 logarithm",
                "freqs = torch.exp(-math.log(max_period) * i / half), i.e. max_period ** (-i / half)",
                _emb_with(log=math.log2), look="exp undoes the natural log"),
        Mistake("the frequencies grow with i instead of shrinking", "the exponent is negative: "
                "torch.exp(-math.log(max_period) * i / half)", _emb_with(sign=1.0),
                look="the sign of the exponent"),
        Mistake("has one column too few when dim is odd", "pad one column of zeros at the end when dim is odd: "
                "F.pad(emb, (0, 1))", _emb_with(pad=False), look="what dim // 2 sines and cosines give for an odd dim"),
        Mistake("ignores the max_period argument", "use the max_period argument, not the constant 10000",
                _emb_with(period=10000), look="the arguments of the function"),
    ],
))


def check_timestep_embedding(fn):
    """Check ``timestep_embedding(t, dim, max_period=10000)``; returns the function to use next."""
    return TIMESTEP_EMBEDDING.check(fn)


# ======================================================================================================================
# 07: the residual block with adaptive group normalisation (ADM section 3)
# ======================================================================================================================
def reference_res_block_forward(block, x, emb):
    """``ResBlock.forward`` written out: GN, SiLU, [resample], conv; AdaGN (1 + scale) GN(h) + shift with
    [scale, shift] = emb_proj(emb); SiLU, dropout, conv; plus the (resampled) skip of x."""
    return _block_with()(block, x, emb)


def _block_with(swap=False, one_plus=True, modulate="after", scale=True, skip=True, out_act=True, in_act=True,
                resample_h="before"):
    def forward(block, x, emb):
        h = F.silu(block.in_norm(x)) if in_act else x
        h = block.in_conv(block.resample(h)) if resample_h == "before" else block.resample(block.in_conv(h))
        x = block.resample(x)
        e = block.emb_proj(emb)[:, :, None, None]
        if block.use_scale_shift_norm:
            y_s, y_b = e.chunk(2, dim=1)
            if swap:
                y_s, y_b = y_b, y_s
            factor = (1 + y_s if one_plus else y_s) if scale else 1.0
            h = block.out_norm(h) * factor + y_b if modulate == "after" else block.out_norm(h * factor + y_b)
        else:
            h = block.out_norm(h + e)
        h = block.out_conv(block.dropout(F.silu(h) if out_act else h))
        return block.skip(x) + h if skip else h
    return forward


def _random_block(g: torch.Generator, channels: int, out_channels: int, emb_channels: int = 6, resample=None):
    """A ResBlock with random weights everywhere (its last conv too, which starts at zero in a real one)."""
    from ..models import ResBlock

    block = ResBlock(channels, emb_channels, out_channels, resample=resample).eval()
    with torch.no_grad():
        for name, p in block.named_parameters():
            p.copy_((1.0 if "norm.weight" in name else 0.0) + 0.3 * torch.randn(p.shape, generator=g))
    return block


def _block_cases(g):
    return [
        Case((_random_block(g, 8, 8), _randn(g, 2, 8, 4, 4), _randn(g, 2, 6))),
        Case((_random_block(g, 8, 16), _randn(g, 2, 8, 4, 4), _randn(g, 2, 6)),
             label="a block that widens 8 channels to 16"),
        Case((_random_block(g, 8, 8, resample="down"), _randn(g, 3, 8, 4, 4), _randn(g, 3, 6)),
             label="a downsampling block"),
    ]


RES_BLOCK = register(Exercise(
    name="res_block_forward",
    reference=reference_res_block_forward,
    cases=_block_cases,
    arg_names=("block", "x", "emb"),
    outputs=[Output("the block's output", dtype="same:x", shape_says="out_channels channels at the block's output "
                    "size", why="the next layers of the U-Net are float32")],
    look="the two equations of section 2 of the notebook, in order: the first GroupNorm, SiLU and (resample and) "
         "conv; then AdaGN, which scales and shifts the *normalised* h with the two halves of the projected "
         "embedding; SiLU, dropout, the last conv; and the skip connection",
    formula="h = block.in_conv(block.resample(F.silu(block.in_norm(x)))); scale, shift = "
            "block.emb_proj(emb)[:, :, None, None].chunk(2, dim=1); h = block.out_norm(h) * (1 + scale) + shift; "
            "h = block.out_conv(block.dropout(F.silu(h))); return block.skip(block.resample(x)) + h",
    errors=[(BROADCAST, "two tensors of different shapes met: check the embedding's shape, (B, 2C) against h's "
             "(B, C, H, W), and the skip path (a wider or resampled block changes x's shape too)",
             "scale, shift = block.emb_proj(emb)[:, :, None, None].chunk(2, dim=1); return "
             "block.skip(block.resample(x)) + h")],
    mistakes=[
        Mistake("uses the two halves of the projected embedding the other way round", "scale, shift = "
                "block.emb_proj(emb)[:, :, None, None].chunk(2, dim=1): the scale first", _block_with(swap=True),
                look="which half of the projected embedding is the scale"),
        Mistake("multiplies the normalised h by the scale alone: a zero embedding would switch every channel off",
                "block.out_norm(h) * (1 + scale) + shift", _block_with(one_plus=False),
                look="what AdaGN must do when the embedding gives scale 0 and shift 0"),
        Mistake("scales and shifts h before the GroupNorm, which then undoes most of it",
                "block.out_norm(h) * (1 + scale) + shift: normalise first", _block_with(modulate="before"),
                look="the order of GroupNorm and the modulation"),
        Mistake("shifts the normalised h but does not scale it", "block.out_norm(h) * (1 + scale) + shift",
                _block_with(scale=False), look="the two halves of the projected embedding"),
        Mistake("returns only the residual branch: the skip connection is missing", "return "
                "block.skip(block.resample(x)) + h", _block_with(skip=False), look="the last line of the block"),
        Mistake("one activation is missing, between AdaGN and the last convolution",
                "h = block.out_conv(block.dropout(F.silu(h)))", _block_with(out_act=False),
                look="the SiLU of the second line"),
        Mistake("the first convolution sees x itself: the first GroupNorm and activation are skipped",
                "h = block.in_conv(block.resample(F.silu(block.in_norm(x))))", _block_with(in_act=False),
                look="the first line of the block"),
        Mistake("h is resampled after the first convolution instead of before it",
                "h = block.in_conv(block.resample(F.silu(block.in_norm(x))))", _block_with(resample_h="after"),
                look="where the resampling sits in the first line"),
    ],
))


def check_res_block_forward(fn):
    """Check ``res_block_forward(block, x, emb)`` (a ResBlock with AdaGN, ADM section 3); returns the function to
    use next."""
    return RES_BLOCK.check(fn)


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
    outputs=[Output("the guided mean", dtype="same:mean", why="the next cells compare it with the package's float32 "
                    "mean and add float32 noise to it")],
    look="Algorithm 1: the mean moves along the classifier's gradient, by an amount set by the guidance scale and "
         "by the step's covariance",
    formula="mean + scale * variance * grad (Algorithm 1)",
    mistakes=[
        Mistake("the shift is not scaled by the step's variance", "mean + scale * variance * grad: a small Sigma, "
                "late in sampling, means a small shift", lambda m, v, gr, s: m + s * gr,
                look="what multiplies the gradient in Algorithm 1"),
        Mistake("the shift is scaled by the step's standard deviation instead of its variance",
                "`variance` is already Sigma = sigma^2: mean + scale * variance * grad",
                lambda m, v, gr, s: m + s * v.sqrt() * gr, look="what multiplies the gradient in Algorithm 1"),
        Mistake("the shift is scaled by the square of the step's variance", "`variance` is already Sigma: "
                "mean + scale * variance * grad", lambda m, v, gr, s: m + s * v ** 2 * gr,
                look="what multiplies the gradient in Algorithm 1"),
        Mistake("the mean moves away from the class: the shift has the wrong sign", "mean + scale * variance * grad: "
                "grad points to where the class is more likely", lambda m, v, gr, s: m - s * v * gr,
                look="the direction of the gradient of log p(y | x)"),
        Mistake("the guidance scale is not applied", "mean + scale * variance * grad",
                lambda m, v, gr, s: m + v * gr, look="the arguments of the function"),
        Mistake("the mean itself is multiplied by the scale, not just the shift", "mean + scale * (variance * grad)",
                lambda m, v, gr, s: s * (m + v * gr), look="what the scale multiplies"),
    ],
))


def check_guided_mean(fn):
    """Check ``guided_mean(mean, variance, grad, scale)`` (Dhariwal & Nichol 2021, Algorithm 1)."""
    return GUIDED_MEAN.check(fn)


# ======================================================================================================================
# 08: the classifier's gradient grad_x log p(y | x_t) (ADM section 4)
# ======================================================================================================================
def reference_classifier_grad(classifier, x_t, t, y):
    """grad_x sum_i log softmax(classifier(x_t, t))[i, y_i]: ``classifier_cond_fn(classifier, 1.0)``."""
    from ..guidance import classifier_cond_fn

    return classifier_cond_fn(classifier, 1.0)(x_t, t, y=y)


def _grad_with(of="log_softmax", reduce="sum", sign=1.0, target="y", softmax_dim=-1):
    def grad(classifier, x_t, t, y):
        with torch.enable_grad():
            x = x_t.detach().requires_grad_(True)
            logits = classifier(x, t)
            scores = {"log_softmax": F.log_softmax(logits, dim=softmax_dim), "logits": logits,
                      "softmax": F.softmax(logits, dim=-1)}[of]
            if target == "all":
                picked = scores.sum(-1)
            else:
                picked = scores[torch.arange(len(x)), y if target == "y" else logits.argmax(-1)]
            total = {"sum": picked.sum(), "mean": picked.mean()}[reduce]
            return sign * torch.autograd.grad(total, x)[0]
    return grad


class _ToyClassifier:
    """Logits (not normalised) of a small fixed network on x_t and t: for checking gradients."""

    def __init__(self, g: torch.Generator, dim: int, classes: int = 4, T: int = 100):
        self.W, self.V = 0.8 * _randn(g, dim, 6), 1.5 * _randn(g, 6, classes)
        self.c, self.T = _randn(g, 6), T

    def __call__(self, x, t):
        h = torch.tanh(x.flatten(1) @ self.W.to(x.dtype) + (t.to(x.dtype) / self.T)[:, None] * self.c.to(x.dtype))
        return h @ self.V.to(x.dtype) + 0.5

    def __repr__(self):
        return "toy classifier"


def _classifier_grad_cases(g):
    t0, t1, t2 = torch.tensor([0, 40, 99, 10]), torch.tensor([5, 50, 70, 90, 20]), torch.tensor([30])
    return [
        Case((_ToyClassifier(g, 9), _randn(g, 4, 1, 3, 3), t0, torch.tensor([0, 3, 1, 3])), per_example={"t": t0}),
        Case((_ToyClassifier(g, 2, classes=3), _randn(g, 5, 2), t1, torch.tensor([2, 0, 1, 1, 2])),
             label="2-D points", per_example={"t": t1}),
        Case((_ToyClassifier(g, 9), _randn(g, 1, 1, 3, 3), t2, torch.tensor([2])), label="a batch of one"),
    ]


CLASSIFIER_GRAD = register(Exercise(
    name="classifier_grad",
    reference=reference_classifier_grad,
    cases=_classifier_grad_cases,
    arg_names=("classifier", "x_t", "t", "y"),
    no_grad=False,
    outputs=[Output("the gradient", dtype="same:x_t",
                    why="the sampler adds it to a float32 mean, inside torch.no_grad()")],
    look="section 4.1: the gradient, with respect to x_t, of the log-probability the classifier gives the requested "
         "class y (a log-softmax over the classes), each example with its own label; summing over the batch gives "
         "every example its own gradient in one backward pass",
    formula="x = x_t.detach().requires_grad_(True); log_p = torch.log_softmax(classifier(x, t), dim=-1)"
            "[torch.arange(len(y)), y]; return torch.autograd.grad(log_p.sum(), x)[0]",
    errors=[(r"does not require grad|does not have a grad_fn", "autograd has nothing to differentiate: x_t does not "
             "require grad (or the computation ran under torch.no_grad())",
             "x = x_t.detach().requires_grad_(True), then the classifier on x, inside torch.enable_grad() if needed")],
    mistakes=[
        Mistake("differentiates the class's logit, not its log-probability: the other classes do not count",
                "log_p = torch.log_softmax(classifier(x, t), dim=-1)[torch.arange(len(y)), y]",
                _grad_with(of="logits"), look="p(y | x_t) is a softmax over the classes"),
        Mistake("differentiates the class's probability, not its log", "take the gradient of "
                "torch.log_softmax(...), not torch.softmax(...)", _grad_with(of="softmax"),
                look="guidance follows the gradient of log p(y | x_t)"),
        Mistake("divides each example's gradient by the batch size: the log-probabilities are averaged over the batch",
                "torch.autograd.grad(log_p.sum(), x): each example gets its own full gradient",
                _grad_with(reduce="mean"), look="how the batch's log-probabilities are reduced before the gradient"),
        Mistake("the gradient points away from the class: it is that of the negative log-probability (a "
                "cross-entropy)",
                "the gradient of +log p(y | x_t)", _grad_with(sign=-1.0),
                look="the sign: guidance climbs log p(y | x_t)"),
        Mistake("differentiates the log-probability of the class the classifier predicts, not of the requested y",
                "pick the log-probabilities of y: log_p[torch.arange(len(y)), y]", _grad_with(target="argmax"),
                look="which class's log-probability is differentiated"),
        Mistake("the softmax runs over the batch instead of over the classes", "torch.log_softmax(logits, dim=-1)",
                _grad_with(softmax_dim=0), look="the dimension of the softmax"),
        Mistake("sums the log-probabilities of all the classes instead of taking y's", "pick y's: "
                "log_p[torch.arange(len(y)), y]", _grad_with(target="all"),
                look="which class's log-probability is differentiated"),
    ],
))


def check_classifier_grad(fn):
    """Check ``classifier_grad(classifier, x_t, t, y)`` (grad_x log p(y | x_t), ADM section 4); returns the function
    to use next."""
    return CLASSIFIER_GRAD.check(fn)


# ======================================================================================================================
# 08: classifier-free guidance (Ho & Salimans)
# ======================================================================================================================
def reference_classifier_free_eps(eps_cond, eps_uncond, w):
    """(1 + w) eps(x, y) - w eps(x, null): ``ClassifierFreeGuidance``'s mix."""
    return (1 + w) * eps_cond - w * eps_uncond


def _cfg_cases(g):
    shape = (3, 1, 4, 4)
    return [
        Case((_randn(g, *shape), _randn(g, *shape), 3.0)),
        Case((_randn(g, *shape), _randn(g, *shape), 0.0), label="w = 0 (the plain conditional model)"),
        Case((_randn(g, 5, 2), _randn(g, 5, 2), 0.5), label="2-D points and w = 0.5"),
    ]


CLASSIFIER_FREE = register(Exercise(
    name="classifier_free_eps",
    reference=reference_classifier_free_eps,
    cases=_cfg_cases,
    arg_names=("eps_cond", "eps_uncond", "w"),
    outputs=[Output("the guided noise", dtype="same:eps_cond", why="the sampler gives it back to the float32 "
                    "network's chain")],
    look="guidance extrapolates from the unconditional prediction through the conditional one, further as w grows; "
         "w = 0 is the plain conditional model",
    formula="(1 + w) * eps_cond - w * eps_uncond, i.e. torch.lerp(eps_uncond, eps_cond, 1 + w)",
    mistakes=[
        Mistake("the conditional and the unconditional predictions are swapped: guidance pushes away from the class",
                "(1 + w) * eps_cond - w * eps_uncond", lambda c, u, w: (1 + w) * u - w * c,
                look="which prediction gets the weight larger than 1"),
        Mistake("reads w as the whole guidance scale: w = 0 gives the unconditional prediction, where it must give "
                "the conditional one", "(1 + w) * eps_cond - w * eps_uncond: the paper's weight w is a scale of 1 + w",
                lambda c, u, w: u + w * (c - u), look="what w = 0 must give"),
        Mistake("is only the guidance direction, without the conditional prediction it starts from",
                "(1 + w) * eps_cond - w * eps_uncond = eps_cond + w * (eps_cond - eps_uncond)",
                lambda c, u, w: w * (c - u), look="what w = 0 must give"),
        Mistake("adds the unconditional prediction instead of subtracting it", "(1 + w) * eps_cond - w * eps_uncond",
                lambda c, u, w: (1 + w) * c + w * u, look="the sign of the unconditional term"),
        Mistake("interpolates towards the unconditional prediction instead of extrapolating away from it",
                "(1 + w) * eps_cond - w * eps_uncond", lambda c, u, w: (1 - w) * c + w * u,
                look="the weights of the two predictions"),
        Mistake("the conditional prediction keeps weight 1: the two weights do not add up to 1",
                "(1 + w) * eps_cond - w * eps_uncond", lambda c, u, w: c - w * u,
                look="the weights of the two predictions"),
    ],
))


def check_classifier_free_eps(fn):
    """Check ``classifier_free_eps(eps_cond, eps_uncond, w)`` (Ho & Salimans: (1 + w) eps(x, y) - w eps(x));
    returns the function to use next."""
    return CLASSIFIER_FREE.check(fn)


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
    outputs=[Output("the distance", kind="number", shape_says="the sum over the dimensions",
                    why="the next cell formats it with :.3f")],
    rtol=1e-6, atol=1e-8,
    look="two terms: the squared distance between the means, and, summed over the dimensions, the squared "
         "difference of the standard deviations written with the variances",
    formula="np.sum((mu1 - mu2) ** 2) + np.sum(var1 + var2 - 2 * np.sqrt(var1 * var2))",
    mistakes=[
        Mistake("the cross term is half what it should be", "(s1 - s2)^2 = s1^2 + s2^2 - 2 s1 s2: the cross term is "
                "2 * np.sqrt(var1 * var2)", _fd_diag_with(two=1.0), look="the factor of the cross term"),
        Mistake("the cross term uses the product of the variances instead of the standard deviations",
                "the cross term is 2 * np.sqrt(var1 * var2)", _fd_diag_with(root=lambda v: v),
                look="the units of the cross term: it must be a variance"),
        Mistake("the distance of the means is not squared", "the mean term is the squared norm "
                "np.sum((mu1 - mu2) ** 2)", _fd_diag_with(square=False), look="the mean term"),
        Mistake("var1 and var2 are treated as standard deviations", "they are variances: np.sum(var1 + var2 - 2 * "
                "np.sqrt(var1 * var2)) = np.sum((np.sqrt(var1) - np.sqrt(var2)) ** 2)", _fd_diag_with(as_std=True),
                look="what var1 and var2 hold"),
        Mistake("is averaged over the dimensions instead of summed", "FID sums over the feature dimensions (a trace "
                "and a squared norm)", _fd_diag_mean, look="how the dimensions are combined"),
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
    outputs=[Output("the distance", kind="number", why="the next cell formats it with :.3f")],
    rtol=1e-5, atol=1e-7,
    look="the diagonal formula again, with traces for the sums, and a matrix square root for the cross term: the "
         "square root of the product of the two covariances",
    formula="np.sum((mu1 - mu2) ** 2) + np.trace(sigma1) + np.trace(sigma2) - 2 * "
            "np.trace(scipy.linalg.sqrtm(sigma1 @ sigma2).real)",
    nan=("a square root of negative numbers: entries of sigma1 @ sigma2 can be negative",
         "use the matrix square root scipy.linalg.sqrtm(sigma1 @ sigma2), not np.sqrt"),
    mistakes=[
        Mistake("the cross term is half what it should be", "the cross term is 2 * np.trace(sqrtm(sigma1 @ sigma2)), "
                "as 2 s1 s2 in (s1 - s2)^2", _fd_with(two=1.0), look="the factor of the cross term"),
        Mistake("the cross term has no square root at all: it has the units of a variance squared",
                "np.trace(scipy.linalg.sqrtm(sigma1 @ sigma2).real)",
                _fd_with(cross=lambda s1, s2: np.trace(s1 @ s2)), look="the units of the cross term"),
        Mistake("the square root is taken entry by entry instead of as a matrix square root",
                "scipy.linalg.sqrtm(sigma1 @ sigma2): np.sqrt works entry by entry",
                _fd_with(cross=lambda s1, s2: np.trace(_entrywise_sqrt(s1 @ s2))),
                look="what the square root of a matrix is"),
        Mistake("the cross term uses the product of the two square roots instead of the root of the product",
                "np.trace(sqrtm(sigma1 @ sigma2)): sqrtm(sigma1) @ sqrtm(sigma2) differs unless the covariances "
                "commute", _fd_with(cross=lambda s1, s2: np.trace(_sqrtm(s1) @ _sqrtm(s2))),
                look="the cross term couples the two covariances"),
        Mistake("the cross term adds the two square roots instead of rooting their product",
                "2 * np.trace(sqrtm(sigma1 @ sigma2))",
                _fd_with(cross=lambda s1, s2: np.trace(_sqrtm(s1) + _sqrtm(s2))),
                look="the cross term couples the two covariances"),
        Mistake("the distance of the means is not squared", "the mean term is the squared norm "
                "np.sum((mu1 - mu2) ** 2)", _fd_with(square=False), look="the mean term"),
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
    outputs=[Output("the new betas", kind="array", dtype="float64", lists=True, shape_says="one beta per kept step",
                    plural=True,
                    why="in float32 the smallest betas lose their digits, and the next cell compares them with the "
                        "package's float64 ones")],
    rtol=1e-4, atol=1e-6,
    look="a respaced step jumps from the previous kept step to the next one: its beta carries all the noise of the "
         "steps in between, read from alpha-bar at the two kept steps (the first kept step jumps from the clean "
         "data)",
    formula="alpha_bar = np.cumprod(1 - betas); over the sorted kept steps S: beta_i = 1 - alpha_bar[S_i] / "
            "alpha_bar[S_{i-1}], with alpha_bar[S_{-1}] = 1: ab = np.cumprod(1 - betas)[sorted(kept)]; "
            "return 1 - ab / np.append(1.0, ab[:-1])",
    mistakes=[
        Mistake("each new beta is one step of the old chain, not the jump from the previous kept step",
                "beta_i = 1 - alpha_bar[S_i] / alpha_bar[S_{i-1}], the product of every alpha in between",
                _respaced_with(source="betas"), look="what one respaced step covers"),
        Mistake("off by one step: the noise levels are read one step before each kept step",
                "the code counts t from 0 and alpha_bar[t] includes step t: alpha_bar[S_i]",
                _respaced_with(index=lambda s: s - 1), look="which alpha-bar belongs to a kept step"),
        Mistake("is one beta short: the first kept step has none", "the first kept step needs a beta too: "
                "beta_0 = 1 - alpha_bar[S_0] (nothing before it, alpha_bar_prev = 1)", _respaced_with(prev="drop"),
                look="the first kept step"),
        Mistake("the first kept step jumps from the end of the chain: its previous noise level wrapped around",
                "np.roll moves the last alpha_bar to the front: use np.append(1.0, ab[:-1])",
                _respaced_with(prev="roll"), look="the first kept step"),
        Mistake("the first kept step keeps its old one-step beta instead of jumping from the clean data",
                "beta_0 = 1 - alpha_bar[S_0] (alpha_bar_prev = 1)", _respaced_with(prev="original"),
                look="the first kept step"),
        Mistake("each beta is the whole way from the clean data, not from the previous kept step",
                "beta_i = 1 - alpha_bar[S_i] / alpha_bar[S_{i-1}]", _respaced_with(ratio=False),
                look="what one respaced step covers"),
        Mistake("the kept steps are used in the order given, not in increasing t", "sort them first: sorted(kept) "
                "(space_timesteps returns a set)", _respaced_with(sort=False), look="the order of `kept`"),
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
    return _ddim(x_t, eps, alpha_bar, alpha_bar_prev, eta, noise)


def _ddim(x_t, eps, ab, ab_prev, eta, noise, *, sigma_fn=None, direction_sigma=True, noise_power=1,
          x0_fn=None, from_x0=True, complex_roots=False):
    """The DDIM step with one knob turned, computed in float64 and returned in the dtype of x_t. ``complex_roots``:
    square roots of negative numbers are imaginary, as Python's ``** 0.5`` makes them for floats; the real part is
    returned (what the checker compares)."""
    dtype, out_dtype = (torch.complex128 if complex_roots else torch.float64), x_t.dtype
    ab, ab_prev = torch.as_tensor(ab, dtype=dtype), torch.as_tensor(ab_prev, dtype=dtype)
    x_t, eps, noise = x_t.to(dtype), eps.to(dtype), noise.to(dtype)
    x0 = (x_t - (1 - ab).sqrt() * eps) / ab.sqrt() if x0_fn is None else x0_fn(x_t, eps, ab)
    sigma = (eta * ((1 - ab_prev) / (1 - ab)).sqrt() * (1 - ab / ab_prev).sqrt() if sigma_fn is None
             else sigma_fn(eta, ab, ab_prev))
    direction = (1 - ab_prev - (sigma ** 2 if direction_sigma else 0)).sqrt() * eps
    out = ab_prev.sqrt() * (x0 if from_x0 else x_t) + direction + sigma ** noise_power * noise
    return (out.real if complex_roots else out).to(out_dtype)


def _ddim_cases(g):
    shape = (3, 1, 4, 4)
    return [
        Case((_randn(g, *shape), _randn(g, *shape), 0.3, 0.55, 0.6, _randn(g, *shape))),
        Case((_randn(g, *shape), _randn(g, *shape), 0.2, 0.35, 0.0, _randn(g, *shape)),
             label="eta = 0 (deterministic)"),
        Case((_randn(g, 4, 2), _randn(g, 4, 2), 0.8, 0.9, 1.0, _randn(g, 4, 2)), label="eta = 1 on 2-D points"),
        Case((_randn(g, *shape), _randn(g, *shape), 0.97, 1.0, 1.0, _randn(g, *shape)),
             label="the last step, to the clean image (x_{t-1} is the predicted x_0)"),
    ]


DDIM_STEP = register(Exercise(
    name="ddim_step",
    reference=reference_ddim_step,
    cases=_ddim_cases,
    arg_names=("x_t", "eps", "alpha_bar", "alpha_bar_prev", "eta", "noise"),
    outputs=[Output("x_{t-1}", dtype="same:x_t", why="the next cell feeds it back to the float32 network")],
    look="eq. 12 in three parts: the predicted x_0 moved to the previous step, the direction pointing to x_t (which "
         "leaves room for the noise), and the noise itself with its sigma from eq. 16",
    formula="x0_hat = (x_t - (1 - alpha_bar) ** 0.5 * eps) / alpha_bar ** 0.5; sigma = eta * ((1 - alpha_bar_prev) "
            "/ (1 - alpha_bar)) ** 0.5 * (1 - alpha_bar / alpha_bar_prev) ** 0.5; x_prev = alpha_bar_prev ** 0.5 * "
            "x0_hat + (1 - alpha_bar_prev - sigma ** 2) ** 0.5 * eps + sigma * noise",
    nan=("a square root of a negative number: are alpha_bar and alpha_bar_prev the right way round, and is sigma "
         "right?", "1 - abar / abar_prev >= 0 only if abar_prev (the step you go to, less noisy) is the larger one, "
                   "and 1 - abar_prev - sigma^2 >= 0 only with the right sigma"),
    errors=[(r"math domain error", "a square root of a negative number (math.sqrt): are alpha_bar and "
             "alpha_bar_prev the right way round?", "abar_prev (the step you go to, less noisy) is the larger one: "
             "1 - abar / abar_prev >= 0")],
    mistakes=[
        Mistake("adds no noise, whatever eta is", "sigma = eta * sqrt((1 - abar_prev) / (1 - abar)) * "
                "sqrt(1 - abar / abar_prev) (eq. 16); eta = 0 is the deterministic case",
                lambda x, e, a, ap, eta, z: _ddim(x, e, a, ap, 0.0, z), look="where eta enters"),
        Mistake("the direction pointing to x_t does not make room for the added noise",
                "sqrt(1 - abar_prev - sigma^2) * eps, so that x_{t-1} keeps the marginal variance of q (eq. 12)",
                lambda x, e, a, ap, eta, z: _ddim(x, e, a, ap, eta, z, direction_sigma=False),
                look="the coefficient of eps in eq. 12"),
        Mistake("sigma is missing one of its two factors", "sigma = eta * sqrt((1 - abar_prev) / (1 - abar)) * "
                "sqrt(1 - abar / abar_prev): with eta = 1 this is the DDPM posterior's beta-tilde (eq. 16)",
                lambda x, e, a, ap, eta, z: _ddim(x, e, a, ap, eta, z,
                                                  sigma_fn=lambda n, ab, abp: n * (1 - ab / abp).sqrt()),
                look="eq. 16"),
        Mistake("the noise is scaled by sigma squared", "sigma * noise: sigma is a standard deviation",
                lambda x, e, a, ap, eta, z: _ddim(x, e, a, ap, eta, z, noise_power=2),
                look="the factor in front of the noise"),
        Mistake("the predicted x_0 is divided by the wrong power of alpha_bar",
                "x0_hat = (x_t - sqrt(1 - abar) eps) / sqrt(abar)",
                lambda x, e, a, ap, eta, z: _ddim(x, e, a, ap, eta, z,
                                                  x0_fn=lambda xt, ep, ab: (xt - (1 - ab).sqrt() * ep) / ab),
                look="eq. 4 solved for x_0"),
        Mistake("alpha_bar and alpha_bar_prev are used the other way round", "x0_hat uses abar (the current step "
                "t), the update sqrt(abar_prev) and sqrt(1 - abar_prev - sigma^2) the step it goes to",
                lambda x, e, a, ap, eta, z: _ddim(x, e, ap, a, eta, z, complex_roots=True),
                look="which step each alpha-bar belongs to"),
        Mistake("moves x_t itself instead of the predicted x_0", "sqrt(abar_prev) * x0_hat, with x0_hat = (x_t - "
                "sqrt(1 - abar) eps) / sqrt(abar)", lambda x, e, a, ap, eta, z: _ddim(x, e, a, ap, eta, z,
                                                                                    from_x0=False),
                look="DDIM first predicts x_0, then moves it to step t-1"),
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
    outputs=[Output("the SNR", why="the next cell compares it with 0 and calls .nonzero() on it")],
    look="the power of the signal part of x_t over the power of its noise part, per signal; then decibels of a "
         "ratio of powers",
    formula="power = x0.pow(2).flatten(1).mean(1); return 10 * torch.log10(alpha_bar * power / (1 - alpha_bar))",
    mistakes=[
        Mistake("has twice the right number of decibels: the rule for amplitude ratios is applied to a power ratio",
                "decibels are 10 log10 of a ratio of powers (20 log10 is for a ratio of amplitudes)",
                _snr_with(factor=20.0), look="decibels of a power ratio"),
        Mistake("ignores the power of the signal (as if it were 1)", "multiply by mean(x0^2): "
                "x0.pow(2).flatten(1).mean(1)", _snr_with(power=lambda x: 1.0),
                look="notebook 01's SNR assumes data of unit variance; a tone of peak 0.7 has much less"),
        Mistake("is a ratio of amplitudes, not of powers (half the decibels)", "the signal's power is alpha_bar * "
                "mean(x0^2) and the noise's 1 - alpha_bar",
                _snr_with(power=lambda x: x.pow(2).flatten(1).mean(1).sqrt(), signal=torch.sqrt, noise=lambda ab:
                          (1 - ab).sqrt()), look="powers are squares of amplitudes"),
        Mistake("uses the natural logarithm", "decibels use log10: 10 * torch.log10(...)", _snr_with(log=torch.log),
                look="the base of the logarithm"),
        Mistake("uses the peak power of each signal instead of its mean power", "a signal's power is the mean of "
                "x0^2 over its samples", _snr_with(power=lambda x: x.pow(2).flatten(1).amax(1)),
                look="the power of a signal"),
        Mistake("the power of the noise is squared", "the noise sqrt(1 - alpha_bar) eps has power 1 - alpha_bar",
                _snr_with(noise=lambda ab: (1 - ab) ** 2), look="the power of the noise part"),
        Mistake("is one number for the whole batch", "one SNR per signal: x0.pow(2).flatten(1).mean(1)",
                _snr_with(power=lambda x: x.pow(2).mean()), look="the shape of the result: one SNR per signal"),
    ],
))


def check_snr_db(fn):
    """Check ``snr_db(x0, alpha_bar)`` (the SNR of x_t in decibels); returns the function to use next."""
    return SNR_DB.check(fn)
