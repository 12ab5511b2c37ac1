"""Learned variances (Improved DDPM section 3.1): what the network's variance channels say, and how to ignore them.

A ``learned_range`` model outputs, beside eps, a value per pixel that GaussianDiffusion maps to the weight
v = (output + 1) / 2 of eq. 15, log Sigma = v log beta_t + (1 - v) log beta-tilde_t.

- :func:`interpolation_weights`: the model's v at chosen timesteps, averaged over images and pixels.
- :func:`log_variance_bounds`: log beta_t and log beta-tilde_t (clipped at t = 0), the two ends of eq. 15.
- :class:`MeanOnly` and :func:`with_variance`: the same network sampled with a *fixed* variance instead, by
  dropping its variance channels and switching the diffusion's ``var_type``.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..gaussian_diffusion import GaussianDiffusion
from ..respace import SpacedDiffusion
from ..runtime import model_device

__all__ = ["MeanOnly", "with_variance", "log_variance_bounds", "interpolation_weights", "sigma_from_v"]


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


@torch.no_grad()
def interpolation_weights(model, diffusion: GaussianDiffusion, images: torch.Tensor, timesteps,
                          generator: torch.Generator | None = None, batch_size: int = 512) -> np.ndarray:
    """The mean v of eq. 15 that ``model`` predicts at each of ``timesteps`` (averaged over ``images`` and pixels).

    ``images`` (N, C, H, W) are noised with q(x_t | x_0) at each t; v = (variance output + 1) / 2. Raises
    ValueError when ``diffusion`` does not learn the variance (``var_type`` "learned_range").
    """
    if diffusion.var_type != "learned_range":
        raise ValueError(f"interpolation weights need var_type='learned_range', not {diffusion.var_type!r}")
    device = model_device(model)
    images = images.to(device).float()
    n, c = len(images), images.shape[1]
    timesteps = [int(t) for t in timesteps]
    out = np.empty(len(timesteps))
    # each batch holds several timesteps' copies of the images: one forward pass for many t
    per_batch = max(1, batch_size // n)
    for start in range(0, len(timesteps), per_batch):
        ts = timesteps[start:start + per_batch]
        t = torch.tensor(ts, device=device).repeat_interleave(n)
        x0 = images.repeat(len(ts), *[1] * (images.ndim - 1))
        noise = torch.randn(x0.shape, generator=generator, device=generator.device if generator else device)
        x_t = diffusion.q_sample(x0, t, noise.to(device))
        raw = model(x_t, t)[:, c:].float()
        v = (raw + 1) / 2
        out[start:start + len(ts)] = v.reshape(len(ts), -1).mean(1).cpu().numpy()
    return out
