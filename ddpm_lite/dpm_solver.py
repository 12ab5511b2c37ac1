"""DPM-Solver++(2M): few-step sampling by solving the probability-flow ODE (Lu et al. 2022, arXiv 2211.01095).

The models of this package are trained on a discrete chain (timesteps 0..T-1, ``alphas_cumprod``); the solver uses
them unchanged. Write alpha_t = sqrt(alpha_bar_t), sigma_t = sqrt(1 - alpha_bar_t) and the half log-SNR

    lambda_t = log(alpha_t / sigma_t) = 0.5 * log(alpha_bar_t / (1 - alpha_bar_t)),

which grows as t decreases. The deterministic (probability-flow) sampler of a diffusion with x_t = alpha_t x_0 +
sigma_t eps solves an ODE whose exact solution from s to t, written with the model's *data prediction*
x0_theta(x, lambda) (for an eps-model, x0 = (x - sigma eps) / alpha; clipped to [-1, 1] for images), is

    x_t = (sigma_t / sigma_s) x_s + sigma_t * Integral_{lambda_s}^{lambda_t} e^l x0_theta(x_l, l) dl.

With h = lambda_t - lambda_s, holding x0_theta constant over the step gives DDIM (eta = 0) exactly:
x_t = (sigma_t / sigma_s) x_s + alpha_t (1 - e^-h) x0_theta(x_s). DPM-Solver++(2M) replaces x0_theta by its linear
extrapolation from the previous step's prediction, at no extra network call (paper's Algorithm 2):

    D_i = (1 + 1/(2 r_i)) x0_i - 1/(2 r_i) x0_{i-1},   r_i = h_{i-1} / h_i,
    x_{i+1} = (sigma_{i+1} / sigma_i) x_i + alpha_{i+1} (1 - e^-h_i) D_i,

which is second-order accurate: the error at the end falls as 1/steps^2 (DDIM's as 1/steps). The first step has
no previous prediction and is first order (a DDIM step).

Time discretisation. The network only knows the integer timesteps it was trained on, so the solver's times are
integer timesteps of the chain, and alpha_bar, sigma and lambda are the chain's values there (no interpolation).
:func:`solver_timesteps` picks them from T-1 down to 0: ``"time_uniform"`` (evenly spaced in t, as respacing does:
the default), ``"logSNR"`` (evenly spaced in lambda) or ``"time_quadratic"`` (evenly spaced in sqrt(t), denser
near the data). On the shipped 8x8 digits model (cosine schedule, T = 1000; ``bench/sampler_speed.py``,
docs/benchmarks.md) ``"time_uniform"`` gave the lowest FID at every count from 5 to 20 calls (1.51 at 5, 1.24 at
8 and 10, against 2.59 and 1.78-1.87 for ``"time_quadratic"``); ``"logSNR"`` was far behind (15.2 at 5 calls, 2.5
at 10): the cosine schedule's last five timesteps (995-999, lambda from -5.1 down to -9.9, alpha_bar down to
2.4e-9) span a third of the lambda range while x_t is still pure noise.

``steps`` counts network calls, as for the other samplers: ``steps`` solver steps over ``steps + 1`` timesteps from
T-1 to 0, the last step first order (``lower_order_final``: the last interval is much the longest in lambda, and
extrapolating x_0 over it spoiled the digits, FID 1.8 against 1.2-1.3 at 8-20 calls). The result is x at t = 0
(sigma_0 = 0.006 on the digits model's chain: less than half a grey level of noise), clipped to [-1, 1] with
``clip_denoised``. ``denoise_final=True`` spends the last call on the x_0 prediction at t = 0 instead (DDIM's and
k-diffusion's last step to sigma = 0; ``steps`` timesteps): the same FID from 8 calls on, worse at 5 (1.90 against
1.51); it is what ``steps`` = T, every timestep, does.

Clipping x_0 (``clip_denoised``, the default) matters on a chain whose last alpha_bar is tiny: on the digits chain
(alpha = 4.9e-5 at T-1) the unclipped x_0 = (x - sigma eps) / alpha multiplies the network's eps error by 1/alpha,
and the samples are lost (FID 42 at 5 and at 10 calls, the same 640-sample draws as the table in
docs/benchmarks.md; so are k-diffusion's, which never clip, from t = T-1). With ``cond_fn`` the solver uses the
guided x_0 recomputed from the guided eps (Dhariwal & Nichol Algorithm 2, as DDIM does), which moves by
(sigma^2 / alpha) times the gradient, large at high noise; like DDIM's, it is not clipped again.

>>> from ddpm_lite.pretrained import load_pretrained
>>> model, diffusion, _ = load_pretrained("digits")
>>> images = dpm_solver_sample_loop(diffusion, model, (64, 1, 8, 8), steps=10)

or ``generate(model, diffusion, shape, steps=10, sampler="dpm++2m")`` (:func:`ddpm_lite.sampling.generate`).
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from .gaussian_diffusion import GaussianDiffusion
from .runtime import model_device

__all__ = ["SPACINGS", "DEFAULT_SPACING", "half_log_snr", "solver_timesteps", "SolverPlan", "solver_plan",
           "dpm_solver_sample_loop_progressive", "dpm_solver_sample_loop"]

SPACINGS = ("logSNR", "time_uniform", "time_quadratic")
DEFAULT_SPACING = "time_uniform"


def half_log_snr(alphas_cumprod) -> np.ndarray:
    """lambda_t = log(alpha_t / sigma_t) = 0.5 * log(alpha_bar_t / (1 - alpha_bar_t)), in float64."""
    abar = np.asarray(alphas_cumprod, dtype=np.float64)
    return 0.5 * (np.log(abar) - np.log1p(-abar))


def _distinct_decreasing(targets: np.ndarray, num_timesteps: int) -> np.ndarray:
    """Round fractional timesteps (decreasing from T-1 to 0) to integers, nudging collisions apart so that the
    result is strictly decreasing, starts at T-1 and ends at 0 (possible whenever len <= T)."""
    ts = np.floor(np.asarray(targets, dtype=np.float64) + 0.5).astype(np.int64)
    ts[0], ts[-1] = num_timesteps - 1, 0
    for i in range(1, len(ts)):  # below the one before, leaving room for the len - 1 - i still to come
        ts[i] = max(min(ts[i], ts[i - 1] - 1), len(ts) - 1 - i)
    return ts


def solver_timesteps(alphas_cumprod, count: int, spacing: str = DEFAULT_SPACING) -> np.ndarray:
    """``count`` distinct integer timesteps of a chain with ``alphas_cumprod`` (length T), from T-1 down to 0.

    ``spacing``: ``"time_uniform"`` (the default) -- evenly spaced in t; ``"logSNR"`` -- evenly spaced in
    lambda = 0.5 log(alpha_bar / (1 - alpha_bar)) between its values at T-1 and 0, each rounded to the timestep of
    nearest lambda; ``"time_quadratic"`` -- evenly spaced in sqrt((t + 1) / T) (DPM-Solver's quadratic time
    steps on the chain's times (t + 1) / T), so denser near the data. Rounding collisions (many steps on a short
    chain) are pushed apart, keeping exactly ``count`` steps.
    """
    abar = np.asarray(alphas_cumprod, dtype=np.float64)
    num = len(abar)
    if spacing not in SPACINGS:
        raise ValueError(f"unknown timestep spacing {spacing!r}: choose one of {list(SPACINGS)}")
    if isinstance(count, bool) or not isinstance(count, (int, np.integer)) or not 1 <= count <= num:
        raise ValueError(f"the number of solver timesteps must be an integer in [1, {num}], got {count!r}")
    if count == 1:
        return np.array([num - 1], dtype=np.int64)
    if spacing == "time_uniform":
        targets = np.linspace(num - 1, 0, count)
    elif spacing == "time_quadratic":
        targets = np.linspace(1.0, np.sqrt(1.0 / num), count) ** 2 * num - 1
    else:
        lam = half_log_snr(abar)  # decreasing in t
        wanted = np.linspace(lam[-1], lam[0], count)
        targets = np.interp(wanted, lam[::-1], np.arange(num - 1, -1, -1, dtype=np.float64))
    return _distinct_decreasing(targets, num)


@dataclass(frozen=True)
class SolverPlan:
    """The timesteps a solver visits and its update coefficients, computed once in float64.

    Step i goes from ``timesteps[i]`` to ``timesteps[i + 1]``:
    x_{i+1} = ``scale[i]`` * x_i + ``weight_current[i]`` * x0_i - ``weight_previous[i]`` * x0_{i-1}.
    With ``denoise_final`` the model is called once more at ``timesteps[-1]`` and its x_0 prediction is returned;
    otherwise the result is x at ``timesteps[-1]``.
    """
    timesteps: tuple[int, ...]
    scale: tuple[float, ...]
    weight_current: tuple[float, ...]
    weight_previous: tuple[float, ...]
    denoise_final: bool
    order: int

    @property
    def network_calls(self) -> int:
        return len(self.scale) + (1 if self.denoise_final else 0)


def solver_plan(alphas_cumprod, timesteps: Sequence[int], order: int = 2, denoise_final: bool = False,
                lower_order_final: bool = True) -> SolverPlan:
    """The coefficients of DPM-Solver++ of ``order`` 1 (DDIM) or 2 (2M) over ``timesteps`` (strictly decreasing
    integer timesteps of the chain with ``alphas_cumprod``). With ``lower_order_final`` the last step (into
    ``timesteps[-1]``) is first order too, as in DPM-Solver's ``lower_order_final``: the last interval is the
    longest in lambda (3.4 for 10 timesteps evenly spaced in t on the digits model's cosine chain, 0.4-0.7 before
    it), where the second-order update would extrapolate x_0 with weight 1/(2r) = 2.45."""
    if order not in (1, 2):
        raise ValueError(f"order must be 1 (DDIM) or 2 (DPM-Solver++(2M)), got {order!r}")
    abar = np.asarray(alphas_cumprod, dtype=np.float64)
    ts = np.asarray([int(t) for t in timesteps], dtype=np.int64)
    if ts.ndim != 1 or len(ts) < 1 or (np.diff(ts) >= 0).any() or ts[-1] < 0 or ts[0] >= len(abar):
        raise ValueError(f"timesteps must be strictly decreasing integers in [0, {len(abar) - 1}], got {list(ts)}")
    if len(ts) < 2 and not denoise_final:
        raise ValueError("without denoise_final the solver needs at least two timesteps (one step)")
    a = abar[ts]
    alpha, sigma, lam = np.sqrt(a), np.sqrt(1.0 - a), half_log_snr(a)
    h = np.diff(lam)  # > 0: lambda grows towards the data
    scale = sigma[1:] / sigma[:-1]
    phi = alpha[1:] * -np.expm1(-h)  # alpha_{i+1} (1 - e^-h_i)
    c = np.zeros_like(h)
    if order == 2 and len(h) > 1:
        c[1:] = h[1:] / (2.0 * h[:-1])  # 1 / (2 r_i), r_i = h_{i-1} / h_i
        if lower_order_final:
            c[-1] = 0.0
    return SolverPlan(tuple(int(t) for t in ts), tuple(scale.tolist()), tuple((phi * (1 + c)).tolist()),
                      tuple((phi * c).tolist()), bool(denoise_final), order)


def dpm_solver_sample_loop_progressive(diffusion: GaussianDiffusion, model, shape, steps: int | None = None, *,
                                       noise=None, clip_denoised: bool = True, denoised_fn=None, cond_fn=None,
                                       model_kwargs=None, device=None, progress: bool = False,
                                       spacing: str = DEFAULT_SPACING, timesteps: Sequence[int] | None = None,
                                       denoise_final: bool | None = None, order: int = 2,
                                       lower_order_final: bool = True,
                                       generator: torch.Generator | None = None) -> Iterator[dict]:
    """Yield, after each network call, ``{"sample", "pred_xstart", "t"}``: the solver's x after the update, the
    (clipped) x_0 prediction at timestep ``t`` (of ``diffusion``'s chain) and ``t``. The last ``sample`` is the
    result.

    ``diffusion`` is a :class:`~ddpm_lite.GaussianDiffusion` or a respaced one (its timesteps are then those the
    solver chooses from). ``steps`` network calls (None: every timestep of the chain) over timesteps chosen by
    ``spacing`` (see :func:`solver_timesteps`), or over the explicit ``timesteps`` (decreasing, ending at 0 unless
    you want to stop earlier). ``denoise_final`` (None: only when ``steps`` is the chain's length, there being no
    room for ``steps + 1`` timesteps) ends with a call that returns the x_0 prediction at the last timestep;
    ``lower_order_final`` makes the last solver step first order (see the module's notes). ``clip_denoised``
    (clips each x_0 prediction and the result to [-1, 1]), ``denoised_fn``, ``cond_fn`` (applied to the score, as
    DDIM does: Dhariwal & Nichol Algorithm 2) and ``model_kwargs`` (e.g. ``{"y": labels}``) as for the other
    samplers; a model with a learned variance is used through its eps (or x_0) channels only. ``order=1`` is DDIM
    (eta = 0) written in the same form. ``generator`` only draws the starting noise when ``noise`` is None.
    """
    plan = _plan_for(diffusion, steps, timesteps, spacing, denoise_final, order, lower_order_final)  # now, not later
    if device is None:
        device = noise.device if noise is not None else model_device(model)
    if noise is not None and tuple(noise.shape) != tuple(shape):
        raise ValueError(f"noise has shape {tuple(noise.shape)}, expected {tuple(shape)}")
    x = noise.to(device) if noise is not None else torch.randn(*shape, device=device, generator=generator)
    return _solve(diffusion, model, x, plan, clip_denoised, denoised_fn, cond_fn, model_kwargs, progress)


def _plan_for(diffusion, steps, timesteps, spacing, denoise_final, order, lower_order_final=True) -> SolverPlan:
    if timesteps is not None:
        if steps is not None:
            raise ValueError("pass either steps or timesteps, not both")
        return solver_plan(diffusion.alphas_cumprod, timesteps, order, bool(denoise_final), lower_order_final)
    if steps is None:
        steps = diffusion.num_timesteps
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)):
        raise ValueError(f"steps must be an integer, got {steps!r}")
    if denoise_final is None:
        denoise_final = steps >= diffusion.num_timesteps
    most = diffusion.num_timesteps - (0 if denoise_final else 1)
    if not 1 <= steps <= most:
        raise ValueError(f"steps must lie in [1, {most}] for a chain of {diffusion.num_timesteps} timesteps "
                         f"(denoise_final={denoise_final}), got {steps}")
    grid = solver_timesteps(diffusion.alphas_cumprod, int(steps) + (0 if denoise_final else 1), spacing)
    return solver_plan(diffusion.alphas_cumprod, grid, order, denoise_final, lower_order_final)


def _solve(diffusion, model, x, plan: SolverPlan, clip_denoised, denoised_fn, cond_fn, model_kwargs, progress):
    def data_prediction(x, t):
        out = diffusion.p_mean_variance(model, x, t, clip_denoised, denoised_fn, model_kwargs)
        if cond_fn is not None:
            out = diffusion.condition_score(cond_fn, out, x, t, model_kwargs)
        return out["pred_xstart"]

    calls = range(plan.network_calls)
    last_step = len(plan.scale) - 1
    previous = None
    for i in tqdm(calls, desc="DPM-Solver++", leave=False) if progress else calls:
        t = torch.full((len(x),), plan.timesteps[i], device=x.device, dtype=torch.long)
        with torch.no_grad():
            x0 = data_prediction(x, t)
            if i > last_step:  # the final denoising call
                x = x0
            else:
                x = x * plan.scale[i] + x0 * plan.weight_current[i]
                if previous is not None and plan.weight_previous[i] != 0.0:
                    x = x - previous * plan.weight_previous[i]
                if i == last_step and not plan.denoise_final and clip_denoised:
                    x = x.clamp(-1, 1)
        previous = x0
        yield {"sample": x, "pred_xstart": x0, "t": plan.timesteps[i]}


def dpm_solver_sample_loop(diffusion: GaussianDiffusion, model, shape, steps: int | None = None, **kwargs
                           ) -> torch.Tensor:
    """Samples of ``shape`` with DPM-Solver++(2M) in ``steps`` network calls; the keyword arguments are those of
    :func:`dpm_solver_sample_loop_progressive`."""
    final = None
    for out in dpm_solver_sample_loop_progressive(diffusion, model, shape, steps, **kwargs):
        final = out
    return final["sample"]
