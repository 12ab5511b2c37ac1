"""Is the learned variance trained? The model's v(t) against the v*(t) its own loss would converge to.

A ``learned_range`` model (Improved DDPM section 3.1) outputs, beside eps, a number per pixel that sets the
variance of the reverse step through eq. 15, ``log Sigma = v log beta_t + (1 - v) log beta~_t``, where
``v = (output + 1) / 2``. The hybrid loss (eq. 16) trains v only through the terms L_{t-1} of the bound, with a
stop-gradient on the mean. Which v those terms ask for follows from the model's own error in x_0.

**Derivation.** For t >= 1 the true reverse step is q(x_{t-1} | x_t, x_0) = N(mu~_t, beta~_t I) with
mu~_t = c_t x_0 + d_t x_t (DDPM eqs. 6-7; c_t = beta_t sqrt(abar_{t-1}) / (1 - abar_t) is the posterior mean's
coefficient of x_0, ``posterior_mean_coef1``). The model's step is N(mu_theta, Sigma I) with the same formula
applied to its prediction x0_hat (DDPM eq. 11 for an eps model), so mu~_t - mu_theta = c_t (x_0 - x0_hat). The KL
of two one-dimensional Gaussians is

    KL(N(a, s^2) || N(b, S)) = 1/2 [log(S / s^2) + (s^2 + (a - b)^2) / S - 1],

so the term L_{t-1} of the bound, per dimension and averaged over q(x_0, x_t), is

    E L_{t-1}(Sigma) = 1/2 [log(Sigma / beta~_t) + (beta~_t + c_t^2 e_t) / Sigma - 1],
    e_t = E ||x_0 - x0_hat(x_t, t)||^2 / D.

As a function of u = log Sigma this is 1/2 [u + (beta~_t + c_t^2 e_t) exp(-u)] + const, strictly convex, with
its minimum where the derivative 1/2 [1 - (beta~_t + c_t^2 e_t) / Sigma] vanishes:

    Sigma*_t = beta~_t + c_t^2 e_t          (the true reverse variance around the model's mean)
    v*_t = log(Sigma*_t / beta~_t) / log(beta_t / beta~_t)         (eq. 15 solved for v)
         = log1p(c_t^2 e_t / beta~_t) / log1p((beta_t - beta~_t) / beta~_t).

Both logs are taken with ``log1p`` of gaps computed without cancellation (beta_t - beta~_t =
beta_t^2 abar_{t-1} / (1 - abar_t)), so v* stays accurate where beta_t and beta~_t agree to many digits.
Sigma* >= beta~_t, so v* >= 0; v* <= 1 exactly when e_t <= 1 - abar_t (with c_t^2 = beta_t^2 abar_{t-1} /
(1 - abar_t)^2): a model whose x_0 is worse than that asks for more than beta_t. ``v_star`` is clipped to [0, 1],
the interval eq. 15 spans between the two fixed choices of DDPM; ``v_star_raw`` is not.

**Why v trains slowly.** In terms of v, d E L / dv = 1/2 delta_t [1 - (beta~_t + c_t^2 e_t) / Sigma] with
delta_t = log(beta_t / beta~_t), and the curvature at v* is 1/2 delta_t^2. With the cosine schedule and T = 1000,
delta_t is 0.75 at t = 1 and 0.003 at the median t (0.0008 for T = 4000): near the optimum the loss pulls v(t)
toward v*(t) with a force delta_t^2 (v - v*), 10^-5 of the pull at t = 1 for most t. The hybrid loss's weight
lambda = 0.001 does not change this picture (Adam rescales a constant factor away); the ratio between timesteps is
what starves v.

**Undefined points.** At t = 0 the term is the decoder's -log p(x_0 | x_1) (DDPM eq. 13), not a KL, and beta~_0 = 0
(the reference code, and :class:`~ddpm_lite.GaussianDiffusion`, clip log beta~_0 to log beta~_1): v*_0 is NaN,
and so are the KL columns at t = 0; the model's v at t = 0 is still reported. Where delta_t < ``tol`` (1e-6: the
last steps of a cosine chain with T = 4000) beta and beta~ differ by less than a part in a million: every v gives
the same step, the loss says nothing about v, and v* is NaN.

**Per pixel or per step.** The network outputs one v per pixel and per x_t: its loss is minimised by the v of the
*conditional* error E[(x_0 - x0_hat)^2 | x_t] of each pixel. v*_t here is the best *single* v per step. Since
log1p is concave, the mean over pixels of the per-pixel optima is at most v*_t (Jensen): a perfectly trained
network's mean v may sit a little below v*_t where the error varies across pixels, and then its KL is *below*
the one of Sigma* (``kl_model`` < ``kl_star``). The KL columns say which of the two is better per step.

>>> fit = variance_fit(model, diffusion, test_images)       # v(t) and v*(t) at ~50 t, dense at both ends
>>> fit.rms_gap, fit.excess_bpd                             # how far v is from v*, and what that costs
>>> ddpm_lite.course.plotting.variance_fit_figure(fit)     # v(t) and v*(t) against t, log x (the course draws it)
>>> trainer = Trainer.from_config(cfg, callbacks=[every(500, log_variance_fit(test_images))])
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm.auto import tqdm

from ..runtime import eval_mode, model_device

__all__ = ["VarianceFit", "FixedV", "kl_optimal_v", "variance_fit", "log_variance_fit",
           "default_timesteps", "DELTA_TOL"]

DELTA_TOL = 1e-6  # log(beta_t / beta~_t) below this: beta and beta~ are the same step, v* is undefined (NaN)


def default_timesteps(num_timesteps: int, n: int = 40) -> np.ndarray:
    """The default grid of :func:`variance_fit`: about ``n`` distinct timesteps log-spaced from 1 to T - 1 (the
    first steps, where beta_t and beta~_t differ most; a log axis shows them), and about n / 4 more log-spaced
    back from T - 1 (the last steps, where the cosine schedule's beta rises to 0.999, x_t is nearly pure noise,
    the clipped x0_hat is worse than a guess and v* jumps above 1): dense at both ends, so that the trapezoid
    weights of :attr:`VarianceFit.rms_gap` give each end the few steps it is, not the span to a far grid point."""
    if num_timesteps < 2:
        raise ValueError(f"a variance fit needs a chain of at least 2 steps, got {num_timesteps}")
    last = num_timesteps - 1
    head = np.round(np.geomspace(1, last, n))
    tail = last + 1 - np.round(np.geomspace(1, max(1.0, num_timesteps / 2), max(2, n // 4)))
    return np.unique(np.concatenate([head, tail]).astype(np.int64).clip(1, last))


def _step_constants(diffusion, t: np.ndarray) -> dict[str, np.ndarray]:
    """beta, beta~, c (the posterior mean's x_0 coefficient), beta - beta~ and delta = log(beta / beta~) at
    timesteps ``t`` of ``diffusion`` (float64; at t = 0, beta~ = 0 and delta = inf)."""
    beta = diffusion.betas[t]
    abar = diffusion.alphas_cumprod[t]
    abar_prev = diffusion.alphas_cumprod_prev[t]
    beta_tilde = diffusion.posterior_variance[t]
    gap = beta ** 2 * abar_prev / (1.0 - abar)  # beta - beta~, without the cancellation of the difference
    with np.errstate(divide="ignore", invalid="ignore"):
        delta = np.log1p(gap / beta_tilde)
    return {"beta": beta, "beta_tilde": beta_tilde, "c": diffusion.posterior_mean_coef1[t], "gap": gap,
            "delta": delta}


def kl_optimal_v(diffusion, xstart_mse, timesteps=None, tol: float = DELTA_TOL) -> dict[str, np.ndarray]:
    """Sigma*_t = beta~_t + c_t^2 e_t and v*_t (the module's derivation) from the model's x_0 errors ``xstart_mse``.

    ``diffusion``: any :class:`~ddpm_lite.GaussianDiffusion`, respaced ones included (then t indexes its own steps
    and beta, beta~ are the respaced ones). ``xstart_mse``: e_t = E ||x_0 - x0_hat||^2 / D at each of ``timesteps``
    (default: every step 0..K-1). Returns float64 arrays: ``t``, ``beta``, ``beta_tilde``, ``sigma_star``,
    ``v_star`` (clipped to [0, 1]; NaN at t = 0 and where log(beta / beta~) < ``tol``), ``v_star_raw`` (not
    clipped, NaN at the same places) and ``delta`` = log(beta_t / beta~_t).
    """
    t = np.arange(diffusion.num_timesteps) if timesteps is None else np.asarray(timesteps, dtype=np.int64)
    e = np.asarray(xstart_mse, dtype=np.float64)
    if e.shape != t.shape:
        raise ValueError(f"xstart_mse must hold one error per timestep ({t.shape[0]}), got shape {e.shape}")
    if t.size and (t.min() < 0 or t.max() >= diffusion.num_timesteps):
        raise ValueError(f"timesteps must lie in [0, {diffusion.num_timesteps - 1}]")
    if (e < 0).any() or not np.isfinite(e).all():
        raise ValueError("xstart_mse must be finite and non-negative (mean squared errors)")
    k = _step_constants(diffusion, t)
    sigma = k["beta_tilde"] + k["c"] ** 2 * e
    defined = (t > 0) & (k["delta"] >= tol)
    with np.errstate(divide="ignore", invalid="ignore"):
        raw = np.where(defined, np.log1p(k["c"] ** 2 * e / k["beta_tilde"]) / k["delta"], np.nan)
    return {"t": t, "beta": k["beta"], "beta_tilde": k["beta_tilde"], "sigma_star": sigma,
            "v_star": np.clip(raw, 0.0, 1.0), "v_star_raw": raw, "delta": k["delta"]}


def _expected_kl_bits(beta_tilde, c, e, sigma):
    """E L_{t-1} in bits/dim for a variance ``sigma`` shared by all pixels (the module's formula)."""
    return 0.5 * (np.log(sigma / beta_tilde) + (beta_tilde + c ** 2 * e) / sigma - 1.0) / math.log(2.0)


@dataclass
class VarianceFit:
    """The result of :func:`variance_fit`: one entry per timestep ``t`` (numpy arrays, float64).

    ``v``: the model's mean v (over images and pixels; NaN for a model with a fixed variance); ``v_star``,
    ``v_star_raw``, ``sigma_star``: see :func:`kl_optimal_v`; ``xstart_mse``: e_t; ``beta``, ``beta_tilde``;
    ``kl_model``: the mean term L_{t-1} (bits/dim) with the model's own variance; ``kl_star``, ``kl_small``,
    ``kl_large``: the same with Sigma*_t, beta~_t and beta_t, from e_t in closed form (NaN at t = 0, where the term
    is the decoder's).
    """

    t: np.ndarray
    v: np.ndarray
    v_star: np.ndarray
    v_star_raw: np.ndarray
    sigma_star: np.ndarray
    xstart_mse: np.ndarray
    beta: np.ndarray
    beta_tilde: np.ndarray
    kl_model: np.ndarray
    kl_star: np.ndarray
    kl_small: np.ndarray
    kl_large: np.ndarray
    num_timesteps: int
    num_images: int
    clip_denoised: bool = True
    step: int | None = field(default=None, compare=False)  # the training step, when logged during training

    def _weights(self, mask: np.ndarray) -> np.ndarray:
        """Trapezoid weights over the points ``mask`` selects, for a mean uniform in t (grid-independent)."""
        t = self.t[mask].astype(np.float64)
        if len(t) == 1:
            return np.ones(1)
        w = np.zeros(len(t))
        w[:-1] += np.diff(t) / 2
        w[1:] += np.diff(t) / 2
        return w / w.sum()

    @property
    def gap(self) -> np.ndarray:
        """v - v* at each t (NaN where v* is undefined)."""
        return self.v - self.v_star

    @property
    def rms_gap(self) -> float:
        """sqrt of the mean of (v - v*)^2, uniform in t over the grid's span (trapezoid rule over its points,
        so a log-spaced grid is not biased towards small t): how far v is from v* where a respaced chain of
        evenly spaced steps evaluates it. NaN for a fixed-variance model."""
        ok = np.isfinite(self.gap)
        if not ok.any():
            return float("nan")
        return float(np.sqrt(np.sum(self._weights(ok) * self.gap[ok] ** 2)))

    @property
    def rms_gap_log(self) -> float:
        """The same, uniform in log t: weights the first steps, where beta_t and beta~_t differ most."""
        ok = np.isfinite(self.gap) & (self.t > 0)
        if not ok.any():
            return float("nan")
        logt = np.log(self.t[ok].astype(np.float64))
        w = np.ones(len(logt)) if len(logt) == 1 else np.convolve(np.diff(logt), [0.5, 0.5])
        return float(np.sqrt(np.sum(w / w.sum() * self.gap[ok] ** 2)))

    @property
    def excess_bpd(self) -> float:
        """sum over the grid's span of t of (kl_model - kl_star), in bits/dim, integrated (trapezoid): what
        the model's variance costs the bound beyond the best single variance per step (negative when the
        per-pixel variances do better than Sigma*)."""
        d = self.kl_model - self.kl_star
        ok = np.isfinite(d) & (self.t > 0)
        if not ok.any():
            return float("nan")
        t = self.t[ok].astype(np.float64)
        if len(t) == 1:
            return float(d[ok][0])
        span = t[-1] - t[0] + 1  # the number of terms the grid covers
        return float(np.sum(self._weights(ok) * d[ok]) * span)

    def v_star_every_step(self) -> np.ndarray:
        """v*(t) for every t = 0..T-1, interpolated linearly in log t between the grid's points and held constant
        beyond its ends and across undefined points (t = 0 takes v*(1)'s value): what :class:`FixedV` needs to
        sample with the oracle variance."""
        ok = np.isfinite(self.v_star) & (self.t > 0)
        if not ok.any():
            raise ValueError("this fit has no finite v*")
        t_all = np.arange(self.num_timesteps, dtype=np.float64)
        return np.interp(np.log(np.maximum(t_all, 1.0)), np.log(self.t[ok].astype(np.float64)), self.v_star[ok])

    def at(self, t: int) -> dict[str, float]:
        """The row of timestep ``t`` as a dict of floats."""
        where = np.flatnonzero(self.t == t)
        if not len(where):
            raise KeyError(f"t = {t} is not on this fit's grid ({self.t.min()}..{self.t.max()}, {len(self.t)} steps)")
        i = int(where[0])
        return {name: float(getattr(self, name)[i]) for name in
                ("v", "v_star", "v_star_raw", "sigma_star", "xstart_mse", "beta", "beta_tilde", "kl_model",
                 "kl_star", "kl_small", "kl_large")}

    def summary(self) -> str:
        """One line: the RMS gap, the range of v and v*, and the excess bits/dim."""
        finite = np.isfinite(self.v_star)
        where = f"step {self.step}: " if self.step is not None else ""
        if np.isnan(self.v).all():
            return (f"{where}fixed variance; v* {np.nanmax(self.v_star):.2f} (t = {int(self.t[finite][0])}) to "
                    f"{np.nanmin(self.v_star):.2f}")
        return (f"{where}RMS(v - v*) {self.rms_gap:.3f} (uniform in t), {self.rms_gap_log:.3f} (in log t); "
                f"v {np.nanmin(self.v):.2f}..{np.nanmax(self.v):.2f}, v* {np.nanmin(self.v_star):.2f}.."
                f"{np.nanmax(self.v_star):.2f}; variance costs {self.excess_bpd:+.4f} bits/dim over Sigma*")

    def to_dict(self) -> dict:
        """A JSON-able dict (lists of floats, NaN as None) with the summary numbers."""
        def clean(a):
            return [None if not np.isfinite(x) else float(x) for x in np.asarray(a, dtype=np.float64)]
        out = {name: clean(getattr(self, name)) for name in _ARRAYS}
        out.update(t=[int(x) for x in self.t], num_timesteps=self.num_timesteps, num_images=self.num_images,
                   clip_denoised=self.clip_denoised, step=self.step, rms_gap=_none_if_nan(self.rms_gap),
                   rms_gap_log=_none_if_nan(self.rms_gap_log), excess_bpd=_none_if_nan(self.excess_bpd))
        return out

    @classmethod
    def from_dict(cls, d: dict) -> VarianceFit:
        """The inverse of :meth:`to_dict` (the summary numbers are recomputed, not read)."""
        arrays = {name: np.array([np.nan if x is None else x for x in d[name]], dtype=np.float64) for name in _ARRAYS}
        return cls(t=np.asarray(d["t"], dtype=np.int64), **arrays, num_timesteps=int(d["num_timesteps"]),
                   num_images=int(d["num_images"]), clip_denoised=bool(d.get("clip_denoised", True)),
                   step=d.get("step"))


_ARRAYS = ("v", "v_star", "v_star_raw", "sigma_star", "xstart_mse", "beta", "beta_tilde", "kl_model", "kl_star",
           "kl_small", "kl_large")


def _none_if_nan(x: float):
    return None if not math.isfinite(x) else x


@torch.no_grad()
def variance_fit(model, diffusion, images: torch.Tensor, timesteps=None, *, clip_denoised: bool = True,
                 seed: int | None = 0, batch_size: int = 1024, model_kwargs: dict | None = None,
                 tol: float = DELTA_TOL, progress: bool = False) -> VarianceFit:
    """Measure the model's v(t) and the KL-optimal v*(t) from its own x_0 errors, at ``timesteps``.

    ``images`` (N, C, ...) in [-1, 1] are noised with q(x_t | x_0) at every t (one draw of noise per image and t,
    from ``seed``: the same x_t at every call, so fits logged during training are paired); the model (put in eval
    mode for the call) predicts eps and v. ``clip_denoised`` (default True): clip x0_hat to [-1, 1] before the
    errors and the KL, as sampling does, so Sigma* is the best variance for the sampler's steps. With False the
    errors are the ones the hybrid loss sees (``training_losses`` does not clip), so v* is exactly the v the
    loss converges to; on the digits the two agree except at the first ~10 steps (v*(1) 0.68 clipped, 0.80
    not) and at the last step of a cosine chain, where beta is clipped to 0.999 and the unclipped x0_hat, divided
    by sqrt(abar_{T-1}) ~ 5e-5, is huge. ``timesteps`` of ``diffusion`` (default :func:`default_timesteps`).
    ``model_kwargs`` (e.g. ``{"y": labels}``) are given to the model for every t and must match ``images``.
    """
    images = torch.as_tensor(images)
    if images.ndim < 2 or not images.is_floating_point() or len(images) == 0:
        raise ValueError(f"images must be a non-empty float tensor (N, C, ...) in [-1, 1], got "
                         f"{tuple(images.shape)} {images.dtype}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    t_all = default_timesteps(diffusion.num_timesteps) if timesteps is None else \
        np.unique(np.asarray(timesteps, dtype=np.int64))
    if t_all.size == 0 or t_all.min() < 0 or t_all.max() >= diffusion.num_timesteps:
        raise ValueError(f"timesteps must be a non-empty set in [0, {diffusion.num_timesteps - 1}]")
    learned = diffusion.var_type == "learned_range"
    device = model_device(model) if isinstance(model, torch.nn.Module) else images.device
    images = images.to(device).float()
    n, channels = len(images), images.shape[1]
    generator = torch.Generator().manual_seed(seed) if seed is not None else None
    k = _step_constants(diffusion, t_all)
    v_mean, e_mean, kl_model = (np.full(len(t_all), np.nan) for _ in range(3))
    per_batch = max(1, batch_size // n)
    with eval_mode(model):
        chunks = range(0, len(t_all), per_batch)
        for start in tqdm(chunks, desc="variance fit", leave=False, disable=not progress):
            ts = t_all[start:start + per_batch]
            t = torch.from_numpy(ts).to(device).repeat_interleave(n)
            x0 = images.repeat(len(ts), *[1] * (images.ndim - 1))
            noise = torch.randn(x0.shape, generator=generator).to(device)
            x_t = diffusion.q_sample(x0, t, noise)
            kwargs = None
            if model_kwargs:
                kwargs = {key: value.repeat(len(ts), *[1] * (value.ndim - 1)) if isinstance(value, torch.Tensor)
                          else value for key, value in model_kwargs.items()}
            out = diffusion.p_mean_variance(model, x_t, t, clip_denoised=clip_denoised, model_kwargs=kwargs)
            true_mean, _, _ = diffusion.q_posterior_mean_variance(x0, x_t, t)
            rows = len(ts)
            err = ((out["pred_xstart"].double() - x0.double()) ** 2).reshape(rows, -1).mean(1)
            e_mean[start:start + rows] = err.cpu().numpy()
            log_sigma = out["log_variance"].double()
            beta_tilde = torch.from_numpy(k["beta_tilde"][start:start + rows]).to(device).repeat_interleave(n)
            beta_tilde = beta_tilde.reshape(-1, *[1] * (x0.ndim - 1))
            log_bt = torch.log(beta_tilde)  # -inf at t = 0: that column is set to NaN below
            kl = 0.5 * (log_sigma - log_bt + (beta_tilde + (true_mean.double() - out["mean"].double()) ** 2)
                        * torch.exp(-log_sigma) - 1.0) / math.log(2.0)
            kl_model[start:start + rows] = kl.reshape(rows, -1).mean(1).cpu().numpy()
            if learned:
                raw = out["model_output"][:, channels:].double()
                v_mean[start:start + rows] = ((raw + 1) / 2).reshape(rows, -1).mean(1).cpu().numpy()
    opt = kl_optimal_v(diffusion, e_mean, t_all, tol=tol)
    step_ok = t_all > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        kl_star = np.where(step_ok, _expected_kl_bits(k["beta_tilde"], k["c"], e_mean, opt["sigma_star"]), np.nan)
        kl_small = np.where(step_ok, _expected_kl_bits(k["beta_tilde"], k["c"], e_mean, k["beta_tilde"]), np.nan)
        kl_large = np.where(step_ok, _expected_kl_bits(k["beta_tilde"], k["c"], e_mean, k["beta"]), np.nan)
    kl_model = np.where(step_ok, kl_model, np.nan)
    return VarianceFit(t=t_all, v=v_mean, v_star=opt["v_star"], v_star_raw=opt["v_star_raw"],
                       sigma_star=opt["sigma_star"], xstart_mse=e_mean, beta=k["beta"], beta_tilde=k["beta_tilde"],
                       kl_model=kl_model, kl_star=kl_star, kl_small=kl_small, kl_large=kl_large,
                       num_timesteps=diffusion.num_timesteps, num_images=n, clip_denoised=clip_denoised)


class FixedV(torch.nn.Module):
    """A learned-variance model whose variance output is replaced by a given v per timestep of the original chain
    (``v`` of shape (T,), e.g. :meth:`VarianceFit.v_star_every_step`): its mean (eps) is the model's, its
    Sigma_t = exp(v_t log beta_t + (1 - v_t) log beta~_t) (eq. 15; on a respaced chain, with the respaced beta'
    and beta~'). Sampling it with the model's own diffusion gives the "oracle variance" sampler."""

    def __init__(self, model: torch.nn.Module, v):
        super().__init__()
        self.model = model
        self.register_buffer("v", torch.as_tensor(np.asarray(v, dtype=np.float32)))

    def forward(self, x, t, **kwargs):
        out = self.model(x, t, **kwargs)
        c = x.shape[1]
        raw = (2 * self.v.to(out.device)[t.long()] - 1).to(out.dtype).reshape(-1, *[1] * (x.ndim - 1))
        return torch.cat([out[:, :c], raw.expand_as(out[:, c:])], dim=1)


def log_variance_fit(images: torch.Tensor, timesteps=None, *, use_ema: bool = True, clip_denoised: bool = True,
                     seed: int = 0, verbose: bool = True):
    """A Trainer callback that measures :func:`variance_fit` on ``images`` (use it through
    :func:`ddpm_lite.train.every`): ``Trainer(..., callbacks=[every(500, log_variance_fit(test_images))])``.

    Each call fits the EMA weights (``use_ema``) or the raw ones, appends the :class:`VarianceFit` (with its
    ``step``) to the callback's ``fits`` list, puts ``v_rms_gap`` in ``trainer.logs`` and, if ``verbose``, prints
    the fit's summary line above the progress bar. The same x_t noise every time (``seed``): the fits are paired.
    Only the main process of a distributed run measures.
    """
    images = torch.as_tensor(images)

    def callback(trainer, step, logs):
        if not getattr(trainer, "is_main_process", True):
            return
        model = trainer.ema if use_ema else trainer.model
        fit = variance_fit(model, trainer.diffusion, images, timesteps, clip_denoised=clip_denoised, seed=seed)
        fit.step = step
        callback.fits.append(fit)
        trainer.logs["v_rms_gap"] = fit.rms_gap
        if verbose:
            tqdm.write(fit.summary())

    callback.fits = []
    callback.__name__ = "log_variance_fit"
    return callback
