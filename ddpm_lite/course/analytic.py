"""Exact denoisers for data we know: a mixture of isotropic Gaussians.

If x_0 ~ sum_k w_k N(m_k, s^2 I), then x_t | k ~ N(sqrt(abar_t) m_k, (abar_t s^2 + 1 - abar_t) I), so the
posterior p(k | x_t), the optimal denoiser E[x_0 | x_t] and the optimal eps-prediction are all in closed form.
With s = 0 the components are point masses. These "perfect" models let us test samplers, guidance and
likelihoods without training, and show learners what a trained network is trying to approximate.
"""
from __future__ import annotations

import math

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
