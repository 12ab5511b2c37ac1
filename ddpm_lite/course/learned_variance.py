"""Learned variances (Improved DDPM section 3.1): what the network's variance channels say, and how to ignore them.

A ``learned_range`` model outputs, beside eps, a value per pixel that GaussianDiffusion maps to the weight
v = (output + 1) / 2 of eq. 15, log Sigma = v log beta_t + (1 - v) log beta-tilde_t.

- :func:`interpolation_weights`: the model's v at chosen timesteps, averaged over images and pixels.
- :func:`log_variance_bounds`: log beta_t and log beta-tilde_t (clipped at t = 0), the two ends of eq. 15.
- :class:`MeanOnly` and :func:`with_variance`: the same network sampled with a *fixed* variance instead, by
  dropping its variance channels and switching the diffusion's ``var_type``.
- :func:`xstart_errors` and :func:`kl_optimal_variance`: the variance a reverse step *should* have, given how well
  the model knows x_0: the Sigma that minimises the step's KL term, and the v of eq. 15 that gives it.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..gaussian_diffusion import GaussianDiffusion
from ..metrics.variance import kl_optimal_v
from ..respace import SpacedDiffusion
from ..runtime import model_device

__all__ = ["MeanOnly", "with_variance", "log_variance_bounds", "interpolation_weights", "sigma_from_v",
           "xstart_errors", "kl_optimal_variance"]


class MeanOnly(nn.Module):
    """Wrap a learned-variance model: keep only its first ``x.shape[1]`` output channels (eps, the mean part)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x, t, **kwargs):
        return self.model(x, t, **kwargs)[:, : x.shape[1]]


def with_variance(diffusion: GaussianDiffusion, var_type: str) -> GaussianDiffusion:
    """A copy of ``diffusion`` with another ``var_type`` (the same betas); respace the result if needed:
    ``respace(with_variance(diffusion, "fixed_small"), 25)``."""
    if isinstance(diffusion, SpacedDiffusion):
        raise ValueError("pass the original diffusion to with_variance, then respace the result")
    return GaussianDiffusion(diffusion.betas, diffusion.mean_type, var_type, diffusion.loss_type)


def log_variance_bounds(diffusion: GaussianDiffusion) -> tuple[np.ndarray, np.ndarray]:
    """(log beta_t, log beta-tilde_t) for every t: the top and bottom of eq. 15. beta-tilde_0 = 0, so its log is
    clipped to log beta-tilde_1, as in the reference code (``posterior_log_variance_clipped``)."""
    return np.log(diffusion.betas), diffusion.posterior_log_variance_clipped.copy()


def sigma_from_v(diffusion: GaussianDiffusion, v) -> np.ndarray:
    """Sigma_t = exp(v log beta_t + (1 - v) log beta-tilde_t) (eq. 15) for every t; ``v`` a number or (T,)."""
    log_beta, log_beta_tilde = log_variance_bounds(diffusion)
    v = np.asarray(v, dtype=np.float64)
    return np.exp(v * log_beta + (1.0 - v) * log_beta_tilde)


def _noised_batches(model, diffusion: GaussianDiffusion, images: torch.Tensor, timesteps, generator, batch_size: int):
    """(rows, t, x0, x_t) batches for a per-timestep measurement: ``images`` noised with q(x_t | x_0) at each of
    ``timesteps``, several timesteps' copies per batch (one forward pass for many t); ``rows`` is the slice of
    ``timesteps`` a batch covers. One draw of noise per batch from ``generator``, in the order of ``timesteps``."""
    device = model_device(model)
    images = images.to(device).float()
    n = len(images)
    timesteps = [int(t) for t in timesteps]
    per_batch = max(1, batch_size // n)
    for start in range(0, len(timesteps), per_batch):
        ts = timesteps[start:start + per_batch]
        t = torch.tensor(ts, device=device).repeat_interleave(n)
        x0 = images.repeat(len(ts), *[1] * (images.ndim - 1))
        noise = torch.randn(x0.shape, generator=generator, device=generator.device if generator else device)
        yield slice(start, start + len(ts)), t, x0, diffusion.q_sample(x0, t, noise.to(device))


@torch.no_grad()
def interpolation_weights(model, diffusion: GaussianDiffusion, images: torch.Tensor, timesteps,
                          generator: torch.Generator | None = None, batch_size: int = 512) -> np.ndarray:
    """The mean v of eq. 15 that ``model`` predicts at each of ``timesteps`` (averaged over ``images`` and pixels).

    ``images`` (N, C, H, W) are noised with q(x_t | x_0) at each t; v = (variance output + 1) / 2. Raises
    ValueError when ``diffusion`` does not learn the variance (``var_type`` "learned_range").
    """
    if diffusion.var_type != "learned_range":
        raise ValueError(f"interpolation weights need var_type='learned_range', not {diffusion.var_type!r}")
    c = images.shape[1]
    out = np.empty(len(timesteps))
    for rows, t, _, x_t in _noised_batches(model, diffusion, images, timesteps, generator, batch_size):
        v = (model(x_t, t)[:, c:].float() + 1) / 2
        out[rows] = v.reshape(rows.stop - rows.start, -1).mean(1).cpu().numpy()
    return out


@torch.no_grad()
def xstart_errors(model, diffusion: GaussianDiffusion, images: torch.Tensor, timesteps,
                  generator: torch.Generator | None = None, batch_size: int = 512) -> np.ndarray:
    """The mean squared error per pixel of ``model``'s prediction of x_0 (clipped to [-1, 1], as sampling does) at
    each of ``timesteps`` (of ``diffusion``, not respaced), over ``images`` noised with q(x_t | x_0)."""
    out = np.empty(len(timesteps))
    for rows, t, x0, x_t in _noised_batches(model, diffusion, images, timesteps, generator, batch_size):
        pred = diffusion.p_mean_variance(model, x_t, t, clip_denoised=True)["pred_xstart"]
        out[rows] = ((pred - x0) ** 2).reshape(rows.stop - rows.start, -1).mean(1).cpu().numpy()
    return out


def kl_optimal_variance(diffusion: GaussianDiffusion, xstart_mse) -> dict[str, np.ndarray]:
    """The KL-optimal variance of each reverse step of ``diffusion`` (respaced or not), given the model's error.

    A step from x_t back to x_s (s the previous step kept) with mean mu_theta = mu~(x_t, x0_hat) has the KL term
    E KL(q(x_s | x_t, x_0) || N(mu_theta, Sigma)) per pixel = 1/2 [log(Sigma / beta~') + (beta~' + c^2 e) / Sigma - 1],
    c the x_0-coefficient of mu~ (DDPM eq. 7) and e = E(x0_hat - x_0)^2; it is smallest at Sigma* = beta~' + c^2 e,
    the variance of the true reverse step q(x_s | x_t) around the model's mean. ``xstart_mse``: e at each of the
    diffusion's steps (K,), from :func:`xstart_errors` at its timesteps (``timestep_map`` for a respaced one).

    Returns, for the steps 1..K-1 (step 0, the decoder, has beta~ = 0): ``t`` (timesteps of the original chain),
    ``beta``, ``beta_tilde``, ``sigma`` (Sigma*) and ``v``, the weight of eq. 15 that gives Sigma* (0: beta~', 1:
    beta'; above 1 where the model's x_0 is worse than the prior's guess).
    """
    e = np.asarray(xstart_mse, dtype=np.float64)
    if e.shape != (diffusion.num_timesteps,):
        raise ValueError(f"xstart_mse must hold one error per step of the diffusion ({diffusion.num_timesteps}), "
                         f"got shape {e.shape}")
    optimum = kl_optimal_v(diffusion, e, tol=0.0)  # the library's v*, unclipped, at every step but the decoder
    timesteps = getattr(diffusion, "timestep_map", None)
    t = np.arange(diffusion.num_timesteps) if timesteps is None else timesteps.cpu().numpy()
    return {"t": t[1:], "beta": optimum["beta"][1:], "beta_tilde": optimum["beta_tilde"][1:],
            "sigma": optimum["sigma_star"][1:], "v": optimum["v_star_raw"][1:]}
