"""The reverse process, seen from outside: whole sampling trajectories, and the exact reverse of a noising step.

- :func:`sample_trajectory` runs ancestral sampling (DDPM Algorithm 2) and keeps every x_t, for pictures of
  noise turning into data; :func:`trajectory_distances` measures how close each step's cloud is to the data.
- :func:`reverse_step_mixture` gives the *true* reverse of a forward jump, q(x_s | x_t) for s < t, when the data
  are a 1-D mixture of Gaussians: it is again a mixture of Gaussians, known exactly. For one small step it is
  almost a single Gaussian (Feller 1949; Sohl-Dickstein et al. 2015), which is why DDPM can model
  p(x_{t-1} | x_t) as a Gaussian; for a large jump it is not (:func:`gaussian_fit_kl` measures by how much).
- :func:`score_from_eps` and :func:`score_field`: the score view (DDPM section 3.2, eq. 11): a model that predicts
  eps predicts the score, grad log p(x_t) = -eps / sqrt(1 - alpha_bar_t); :func:`score_agreement` compares two
  score fields by the mean cosine of their arrows.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from ..gaussian_diffusion import GaussianDiffusion

__all__ = ["sample_trajectory", "nearest_distance", "trajectory_distances", "reverse_step_mixture",
           "mixture_pdf", "gaussian_fit", "gaussian_fit_kl", "score_from_eps", "score_grid", "score_field",
           "score_agreement"]


@torch.no_grad()
def sample_trajectory(diffusion: GaussianDiffusion, model, noise: torch.Tensor, clip_denoised: bool = False,
                      generator: torch.Generator | None = None, model_kwargs=None) -> torch.Tensor:
    """Every state of one run of ancestral sampling from ``noise`` = x_T: a tensor (K + 1, *noise.shape).

    Entry 0 is x_T, entry k the state after k reverse steps (x_{T-k}), the last entry the sample x_0; K is the
    number of steps of ``diffusion`` (respaced diffusions work too). ``clip_denoised`` is off by default: 2-D
    toy data are not confined to [-1, 1] as images are.
    """
    states = [noise]
    for out in diffusion.p_sample_loop_progressive(model, tuple(noise.shape), noise=noise,
                                                   clip_denoised=clip_denoised, generator=generator,
                                                   model_kwargs=model_kwargs):
        states.append(out["sample"])
    return torch.stack([s.detach().float().cpu() for s in states])


def nearest_distance(points: torch.Tensor, data: torch.Tensor) -> float:
    """The mean distance from each point (N, D) to its nearest neighbour in ``data`` (M, D)."""
    points, data = torch.as_tensor(points).float(), torch.as_tensor(data).float()
    return torch.cdist(points, data).min(dim=1).values.mean().item()


def trajectory_distances(trajectory: torch.Tensor, data: torch.Tensor, num: int = 101,
                         max_data: int = 2000) -> tuple[np.ndarray, np.ndarray]:
    """(steps k, mean nearest-neighbour distance of the cloud after k reverse steps to ``data``), at ``num``
    evenly spaced k from 0 to K (the last step included); ``data`` is thinned to ``max_data`` points."""
    data = torch.as_tensor(data).float()
    if len(data) > max_data:
        data = data[torch.linspace(0, len(data) - 1, max_data).long()]
    steps = np.unique(np.round(np.linspace(0, len(trajectory) - 1, num)).astype(int))
    return steps, np.array([nearest_distance(trajectory[k], data) for k in steps])


def reverse_step_mixture(x_t: float, alpha_bar_s: float, alpha_bar_t: float, means: Sequence[float],
                         std: float, weights: Sequence[float] | None = None):
    """The exact q(x_s | x_t), s < t, for 1-D data x_0 ~ sum_k w_k N(m_k, std^2): (weights, means, stds).

    q(x_s) is the mixture of N(sqrt(abar_s) m_k, abar_s std^2 + 1 - abar_s), and x_t = sqrt(a) x_s +
    sqrt(1 - a) eps with a = abar_t / abar_s (one step of the forward process when t = s + 1). Bayes' rule
    per component gives a Gaussian, with weight w_k N(x_t; sqrt(a) mu_k, a v_k + 1 - a).
    """
    means = np.asarray(means, dtype=np.float64)
    w = np.full(len(means), 1.0 / len(means)) if weights is None else np.asarray(weights, dtype=np.float64)
    a = alpha_bar_t / alpha_bar_s
    beta = 1.0 - a
    mu = math.sqrt(alpha_bar_s) * means  # q(x_s | k)
    v = alpha_bar_s * std ** 2 + 1.0 - alpha_bar_s
    marginal_var = a * v + beta  # q(x_t | k)
    log_w = np.log(w) - 0.5 * (x_t - math.sqrt(a) * mu) ** 2 / marginal_var - 0.5 * np.log(marginal_var)
    post_w = np.exp(log_w - log_w.max())
    post_w /= post_w.sum()
    post_var = 1.0 / (1.0 / v + a / beta)
    post_mean = post_var * (mu / v + math.sqrt(a) * x_t / beta)
    return post_w, post_mean, np.full(len(means), math.sqrt(post_var))


def mixture_pdf(grid, weights, means, stds) -> np.ndarray:
    """The density of a 1-D Gaussian mixture on ``grid``."""
    grid = np.asarray(grid, dtype=np.float64)[:, None]
    z = (grid - np.asarray(means)[None]) / np.asarray(stds)[None]
    return (np.asarray(weights)[None] * np.exp(-0.5 * z ** 2) / (np.sqrt(2 * np.pi) * np.asarray(stds)[None])).sum(1)


def gaussian_fit(weights, means, stds) -> tuple[float, float]:
    """(mean, std) of the single Gaussian with the mixture's mean and variance (moment matching)."""
    weights, means, stds = (np.asarray(a, dtype=np.float64) for a in (weights, means, stds))
    mean = float((weights * means).sum())
    var = float((weights * (stds ** 2 + means ** 2)).sum() - mean ** 2)
    return mean, math.sqrt(max(var, 0.0))


def gaussian_fit_kl(weights, means, stds, num: int = 4001) -> float:
    """KL(mixture || its moment-matched Gaussian) in nats, by quadrature: 0 when the mixture is one Gaussian."""
    mean, std = gaussian_fit(weights, means, stds)
    lo = min(np.min(np.asarray(means) - 8 * np.asarray(stds)), mean - 8 * std)
    hi = max(np.max(np.asarray(means) + 8 * np.asarray(stds)), mean + 8 * std)
    grid = np.linspace(lo, hi, num)
    p = mixture_pdf(grid, weights, means, stds)
    q = mixture_pdf(grid, [1.0], [mean], [std])
    mask = p > 1e-300
    integrand = np.zeros_like(p)
    integrand[mask] = p[mask] * (np.log(p[mask]) - np.log(np.maximum(q[mask], 1e-300)))
    return float(max(np.trapezoid(integrand, grid) if hasattr(np, "trapezoid") else np.trapz(integrand, grid), 0.0))


def score_from_eps(eps: torch.Tensor, diffusion: GaussianDiffusion, t) -> torch.Tensor:
    """The score grad log p(x_t) that an eps-prediction stands for: -eps / sqrt(1 - alpha_bar_t) (DDPM section 3.2;
    exact for the optimal eps, which is E[eps | x_t]). ``t``: code timesteps, one per example or one number."""
    ab = torch.as_tensor(diffusion.alphas_cumprod, dtype=torch.float64)[torch.as_tensor(t)]
    sigma = (1 - ab).sqrt().to(eps.dtype).to(eps.device)
    return -eps / sigma.reshape(-1, *[1] * (eps.ndim - 1)) if sigma.ndim else -eps / sigma


def score_grid(lim: float = 3.0, n: int = 15) -> torch.Tensor:
    """An n x n grid of 2-D points on [-lim, lim]^2, row by row: (n * n, 2) float32."""
    axis = torch.linspace(-lim, lim, n)
    xs, ys = torch.meshgrid(axis, axis, indexing="xy")
    return torch.stack([xs.reshape(-1), ys.reshape(-1)], dim=1)


@torch.no_grad()
def score_field(model, diffusion: GaussianDiffusion, t: int, points: torch.Tensor) -> torch.Tensor:
    """The score -eps_theta(x, t) / sqrt(1 - alpha_bar_t) of an eps-prediction ``model`` at ``points`` (N, D) and
    code timestep ``t``: (N, D)."""
    tt = torch.full((len(points),), int(t), dtype=torch.long)
    return score_from_eps(model(points.float(), tt).float(), diffusion, int(t))


def score_agreement(a: torch.Tensor, b: torch.Tensor) -> float:
    """The mean cosine between two score fields (N, D) at the same points: 1 when every arrow points the same way.
    Points where either arrow has (almost) no length, like the centre of a symmetric mixture, have no direction and
    are left out."""
    a, b = torch.as_tensor(a).double(), torch.as_tensor(b).double()
    na, nb = a.norm(dim=1), b.norm(dim=1)
    keep = (na > 1e-6 * na.median()) & (nb > 1e-6 * nb.median())
    return torch.nn.functional.cosine_similarity(a[keep], b[keep], dim=1).mean().item()
