"""Exact denoisers for data we know: a mixture of isotropic Gaussians.

If x_0 ~ sum_k w_k N(m_k, s^2 I), then x_t | k ~ N(sqrt(abar_t) m_k, (abar_t s^2 + 1 - abar_t) I), so the
posterior p(k | x_t), the optimal denoiser E[x_0 | x_t] and the optimal eps-prediction are all in closed form.
With s = 0 the components are point masses. These "perfect" models let us test samplers, guidance and
likelihoods without training, and show learners what a trained network is trying to approximate.
"""
from __future__ import annotations

import math

import numpy as np
import torch


class GaussianMixture:
    """A mixture of isotropic Gaussians in D dimensions: ``means`` (K, D), component ``std`` s, ``weights`` (K,).

    ``eps_model(diffusion)`` is the optimal eps-prediction model ``model(x_t, t, y=None)``: with labels y it is
    the class-conditional optimum (the component y alone), with y=None (or y = K, the null label) the mixture's.
    ``classifier(diffusion)`` gives the exact noisy-classifier logits log p(y | x_t) + const.
    """

    def __init__(self, means, std: float = 0.0, weights=None):
        self.means = torch.as_tensor(means, dtype=torch.float32)
        if self.means.ndim != 2:
            raise ValueError(f"means must have shape (K, D), got {tuple(self.means.shape)}")
        k = len(self.means)
        self.weights = torch.full((k,), 1.0 / k) if weights is None else torch.as_tensor(weights, dtype=torch.float32)
        if self.weights.shape != (k,) or (self.weights < 0).any():
            raise ValueError(f"weights must be {k} non-negative numbers")
        self.weights = self.weights / self.weights.sum()
        self.std = float(std)
        self.num_classes = k

    def sample(self, n: int, generator: torch.Generator | None = None):
        """n draws of (x_0, label)."""
        labels = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        x = self.means[labels] + self.std * torch.randn(n, self.means.shape[1], generator=generator)
        return x, labels

    def _coefficients(self, diffusion, t):
        abar = torch.from_numpy(diffusion.alphas_cumprod).float()[t][:, None]
        var_t = abar * self.std ** 2 + 1 - abar  # variance of x_t given the component
        return abar, var_t

    def log_posterior(self, diffusion, x_t, t):
        """log p(k | x_t) for every component k: (B, K)."""
        abar, var_t = self._coefficients(diffusion, t)
        sq = ((x_t[:, None, :] - abar.sqrt()[:, None] * self.means[None]) ** 2).sum(-1)
        return torch.log_softmax(torch.log(self.weights)[None] - sq / (2 * var_t), dim=-1)

    def denoise(self, diffusion, x_t, t, y=None):
        """E[x_0 | x_t] (and E[x_0 | x_t, y] where y names a component)."""
        abar, var_t = self._coefficients(diffusion, t)
        gain = abar.sqrt() * self.std ** 2 / var_t  # E[x_0 | x_t, k] = m_k + gain (x_t - sqrt(abar) m_k)
        per_component = self.means[None] + gain[:, None] * (x_t[:, None, :] - abar.sqrt()[:, None] * self.means[None])
        probs = self.log_posterior(diffusion, x_t, t).exp()
        if y is not None:
            conditional = y < self.num_classes
            one_hot = torch.nn.functional.one_hot(y.clamp(max=self.num_classes - 1), self.num_classes).float()
            probs = torch.where(conditional[:, None], one_hot, probs)
        return (probs[:, :, None] * per_component).sum(1)

    def eps_model(self, diffusion):
        """The optimal eps-prediction model for this data under ``diffusion``'s schedule."""
        def model(x_t, t, y=None):
            abar = torch.from_numpy(diffusion.alphas_cumprod).float()[t][:, None]
            return (x_t - abar.sqrt() * self.denoise(diffusion, x_t, t, y)) / (1 - abar).sqrt()
        return model

    def classifier(self, diffusion):
        """Logits of the exact noisy classifier p(y | x_t)."""
        return lambda x_t, t: self.log_posterior(diffusion, x_t, t)

    def log_density(self, x):
        """log q(x_0) of the data (for s > 0)."""
        if self.std == 0:
            raise ValueError("a mixture of point masses has no density; use std > 0")
        d = self.means.shape[1]
        sq = ((x[:, None, :] - self.means[None]) ** 2).sum(-1)
        log_normal = -sq / (2 * self.std ** 2) - d / 2 * math.log(2 * math.pi * self.std ** 2)
        return torch.logsumexp(torch.log(self.weights)[None] + log_normal, dim=-1)


# --------------------------------------------------------------------------- Gaussian data: samplers in closed form

# the reverse steps gaussian_sampler_moments knows, with the label figures and tables give each
SAMPLER_VARIANCES = {"fixed_small": "Σ = β̃", "fixed_large": "Σ = β", "optimal_isotropic": "Σ* per step",
                     "optimal_diagonal": "Σ* per pixel", "optimal": "Σ* (the true reverse step)",
                     "ddim": "DDIM η = 0"}


def gaussian_sampler_moments(diffusion, mean, cov, variance: str = "fixed_small", exact_ends: bool = False):
    """The exact (mean, covariance) of what a sampler draws when the data are N(mean, cov) and the model is
    perfect: float64 numpy arrays (D,) and (D, D).

    For Gaussian data every step is linear in x_t: E[x_0 | x_t] = mean + G (x_t - sqrt(abar_t) mean) with
    G = sqrt(abar_t) cov (abar_t cov + (1 - abar_t) I)^-1, and Cov(x_0 | x_t) = cov - sqrt(abar_t) G cov. So the
    sample distribution after the chain (from x_T ~ N(0, I), through every step of ``diffusion``, a respaced one
    for few steps) is Gaussian, tracked here step by step. ``variance`` is the reverse step's Sigma:

    - ``fixed_small``: beta~_t (DDPM's sigma^2 = beta~); ``fixed_large``: beta_t (sigma^2 = beta);
    - ``optimal``: beta~_t I + c_t^2 Cov(x_0 | x_t), c_t the coefficient of x_0 in the posterior mean (DDPM eq. 7).
      This is the covariance of the true reverse step q(x_{t-1} | x_t): the minimiser of the
      bound's term L_{t-1} (it puts back the x_0 uncertainty that beta~ leaves out), exact at every step count;
    - ``optimal_diagonal``: its diagonal, the best Sigma a model with one variance per pixel (as Improved DDPM's
      learned Sigma) can output;
    - ``optimal_isotropic``: the best single variance per step, beta~_t + c_t^2 tr Cov(x_0 | x_t) / D (the v*(t) of
      :mod:`ddpm_lite.metrics.variance`, one v for every pixel);
    - ``ddim``: DDIM with eta = 0 (Song et al. 2021, eq. 12), no noise.

    As the samplers do, the chain starts from N(0, I) and its last step adds no noise (x_0 is the mean of
    p(x_0 | x_1)); x_0 is not clipped (``clip_denoised=False``). ``exact_ends``: start from q(x_T) itself and
    let the last step add its noise too; then ``optimal`` gives the data exactly, whatever the step count.
    """
    if variance not in SAMPLER_VARIANCES:
        raise ValueError(f"unknown variance {variance!r}: choose one of {list(SAMPLER_VARIANCES)}")
    mu = np.asarray(mean, dtype=np.float64)
    c = np.asarray(cov, dtype=np.float64)
    if mu.ndim != 1 or c.shape != (len(mu), len(mu)):
        raise ValueError(f"mean must have shape (D,) and cov (D, D); got {mu.shape} and {c.shape}")
    eye = np.eye(len(mu))
    m, s = np.zeros(len(mu)), eye.copy()  # x_T ~ N(0, I)
    if exact_ends:  # x_T ~ q(x_T) = N(sqrt(abar_T) mean, abar_T cov + (1 - abar_T) I)
        abar = diffusion.alphas_cumprod[-1]
        m, s = np.sqrt(abar) * mu, abar * c + (1 - abar) * eye
    for i in reversed(range(diffusion.num_timesteps)):
        abar, abar_prev = diffusion.alphas_cumprod[i], diffusion.alphas_cumprod_prev[i]
        gain = np.sqrt(abar) * np.linalg.solve(abar * c + (1 - abar) * eye, c).T  # c (abar c + (1-abar) I)^-1
        offset = (eye - np.sqrt(abar) * gain) @ mu  # x0_hat = gain x_t + offset
        if variance == "ddim":
            to_eps = np.sqrt((1 - abar_prev) / (1 - abar))  # x_{t-1} = sqrt(abar') x0_hat + sqrt(1-abar') eps_hat
            a = np.sqrt(abar_prev) * gain + to_eps * (eye - np.sqrt(abar) * gain)
            b = (np.sqrt(abar_prev) - to_eps * np.sqrt(abar)) * offset
            noise = np.zeros_like(eye)
        else:
            c1, c2 = diffusion.posterior_mean_coef1[i], diffusion.posterior_mean_coef2[i]
            a, b = c1 * gain + c2 * eye, c1 * offset
            x0_cov = c - np.sqrt(abar) * gain @ c
            beta_tilde = diffusion.posterior_variance[i]
            noise = {"fixed_small": beta_tilde * eye, "fixed_large": diffusion.betas[i] * eye,
                     "optimal": beta_tilde * eye + c1 ** 2 * x0_cov,
                     "optimal_diagonal": np.diag(beta_tilde + c1 ** 2 * np.diag(x0_cov)),
                     "optimal_isotropic": (beta_tilde + c1 ** 2 * np.trace(x0_cov) / len(mu)) * eye}[variance]
            if i == 0 and not exact_ends:
                noise = np.zeros_like(eye)
        m, s = a @ m + b, a @ s @ a.T + noise
    return m, (s + s.T) / 2


def gaussian_sampler_distance(diffusion, mean, cov, variance: str = "fixed_small", exact_ends: bool = False) -> float:
    """The Frechet distance between the data N(mean, cov) and what the sampler draws with a perfect model
    (:func:`gaussian_sampler_moments`): the FID formula on the exact distributions, no sampling error."""
    from ddpm_lite.metrics import frechet_distance

    m, s = gaussian_sampler_moments(diffusion, mean, cov, variance, exact_ends)
    return frechet_distance(m, s, mean, cov)
