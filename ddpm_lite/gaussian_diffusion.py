"""Gaussian diffusion: the forward process q, the learned reverse process p, their losses and samplers.

Papers and equations cited in the docstrings:

- DDPM: Ho, Jain & Abbeel 2020, arXiv 2006.11239.
- Improved DDPM: Nichol & Dhariwal 2021, arXiv 2102.09672.
- DDIM: Song, Meng & Ermon 2021, arXiv 2010.02502.
- Classifier guidance: Dhariwal & Nichol 2021, arXiv 2105.05233 (Algorithms 1 and 2).

One class holds the schedule in float64 and every quantity derived from it; each method is one equation.
A model is any callable ``model(x_t, t, **model_kwargs)`` taking integer timesteps ``t`` of shape (B,).
Its output has the shape of ``x_t``, or twice its channels (dim 1) when the variance is learned.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import numpy as np
import torch
from tqdm.auto import tqdm

from .losses import discretized_gaussian_log_likelihood, mean_flat, normal_kl
from .runtime import model_device

MEAN_TYPES = ("eps", "x0", "xprev")
VAR_TYPES = ("fixed_small", "fixed_large", "learned", "learned_range")
LOSS_TYPES = ("simple", "rescaled_mse", "kl", "rescaled_kl")


def check_eta(eta) -> float:
    """DDIM's eta as a float, or ValueError: it must be a finite number in [0, 1]. Beyond 1, sigma_t^2 exceeds
    1 - alpha_bar_{t-1} and the direction term sqrt(1 - alpha_bar_{t-1} - sigma_t^2) is NaN (black images)."""
    if isinstance(eta, torch.Tensor) and eta.numel() == 1:
        eta = eta.item()
    if isinstance(eta, bool) or not isinstance(eta, (int, float, np.integer, np.floating)):
        raise ValueError(f"eta must be a number in [0, 1] (0: deterministic DDIM, 1: DDPM-like noise), "
                         f"got {eta!r}")
    eta = float(eta)
    if not (math.isfinite(eta) and 0.0 <= eta <= 1.0):
        raise ValueError(f"eta must be a finite number in [0, 1] (0: deterministic DDIM, 1: DDPM-like noise), "
                         f"got {eta:g}")
    return eta


def _check_choice(kind: str, value: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ValueError(f"unknown {kind} {value!r}: choose one of {list(choices)}")
    return value


class GaussianDiffusion:
    """A diffusion of ``len(betas)`` steps.

    Args:
        betas: beta_1..beta_T (1-D, each in (0, 1]); see :func:`ddpm_lite.get_betas`.
        mean_type: what the model predicts: ``"eps"`` (the noise, DDPM eq. 11), ``"x0"`` or ``"xprev"`` (the mean
            of x_{t-1}).
        var_type: Sigma_theta: ``"fixed_small"`` (posterior beta-tilde), ``"fixed_large"`` (beta), ``"learned"``
            (the model outputs log Sigma) or ``"learned_range"`` (Improved DDPM eq. 15: log-space interpolation
            between beta and beta-tilde).
        loss_type: ``"simple"`` (L_simple, DDPM eq. 14; with a learned variance this is Improved DDPM's hybrid loss,
            eq. 16), ``"rescaled_mse"`` (the same with L_vlb scaled by T/1000), ``"kl"`` (L_vlb alone) or
            ``"rescaled_kl"`` (L_vlb times T).
    """

    def __init__(self, betas, mean_type: str = "eps", var_type: str = "fixed_small", loss_type: str = "simple"):
        self.mean_type = _check_choice("mean_type", mean_type, MEAN_TYPES)
        self.var_type = _check_choice("var_type", var_type, VAR_TYPES)
        self.loss_type = _check_choice("loss_type", loss_type, LOSS_TYPES)
        betas = np.asarray(betas.cpu() if isinstance(betas, torch.Tensor) else betas, dtype=np.float64)
        if betas.ndim != 1 or len(betas) < 1:
            raise ValueError(f"betas must be a non-empty 1-D array, got shape {betas.shape}")
        if not ((betas > 0).all() and (betas <= 1).all()):
            raise ValueError("every beta must lie in (0, 1]")
        self.betas = betas
        self.num_timesteps = len(betas)

        alphas = 1.0 - betas
        self.alphas_cumprod = np.cumprod(alphas)
        self.alphas_cumprod_prev = np.append(1.0, self.alphas_cumprod[:-1])
        self.alphas_cumprod_next = np.append(self.alphas_cumprod[1:], 0.0)
        # q(x_t | x_0), DDPM eq. 4
        self.sqrt_alphas_cumprod = np.sqrt(self.alphas_cumprod)
        self.sqrt_one_minus_alphas_cumprod = np.sqrt(1.0 - self.alphas_cumprod)
        self.log_one_minus_alphas_cumprod = np.log(1.0 - self.alphas_cumprod)
        self.sqrt_recip_alphas_cumprod = np.sqrt(1.0 / self.alphas_cumprod)
        self.sqrt_recipm1_alphas_cumprod = np.sqrt(1.0 / self.alphas_cumprod - 1)
        # q(x_{t-1} | x_t, x_0), DDPM eqs. 6-7
        self.posterior_variance = betas * (1.0 - self.alphas_cumprod_prev) / (1.0 - self.alphas_cumprod)
        # beta-tilde_0 is 0: clip its log to beta-tilde_1, as the reference code does
        self.posterior_log_variance_clipped = np.log(
            np.append(self.posterior_variance[1], self.posterior_variance[1:]) if self.num_timesteps > 1
            else self.betas)
        self.posterior_mean_coef1 = betas * np.sqrt(self.alphas_cumprod_prev) / (1.0 - self.alphas_cumprod)
        self.posterior_mean_coef2 = (1.0 - self.alphas_cumprod_prev) * np.sqrt(alphas) / (1.0 - self.alphas_cumprod)
        # the same tables the methods below index, computed once (each is copied to a device once: _extract)
        self.one_minus_alphas_cumprod = 1.0 - self.alphas_cumprod
        self.log_betas = np.log(betas)
        # fixed_large: beta_t, with beta-tilde_1 at t = 0 for a better decoder log-likelihood (as the reference code)
        self.large_variance = np.append(self.posterior_variance[1], betas[1:]) if self.num_timesteps > 1 else betas
        self.large_log_variance = np.log(self.large_variance)
        self.xprev_coef1 = 1.0 / self.posterior_mean_coef1  # x_0 from x_{t-1} (mean_type "xprev")
        self.xprev_coef2 = self.posterior_mean_coef2 / self.posterior_mean_coef1
        self._on_device = {}  # (id of a table, device) -> (the table, its float32 copy on that device)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(num_timesteps={self.num_timesteps}, mean_type={self.mean_type!r}, "
                f"var_type={self.var_type!r}, loss_type={self.loss_type!r})")

    @property
    def learns_sigma(self) -> bool:
        """True when the model outputs a variance too (twice the channels)."""
        return self.var_type in ("learned", "learned_range")

    # ---------------------------------------------------------------- input checks and indexing
    def _check(self, x: torch.Tensor, t: torch.Tensor, name: str = "x") -> None:
        if not isinstance(x, torch.Tensor) or not x.is_floating_point():
            raise ValueError(f"{name} must be a floating-point torch.Tensor, got "
                             f"{getattr(x, 'dtype', type(x).__name__)}")
        if not isinstance(t, torch.Tensor) or t.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
            raise ValueError(f"timesteps t must be an integer torch.Tensor (e.g. torch.long), got "
                             f"{getattr(t, 'dtype', type(t).__name__)}")
        if t.ndim != 1 or len(t) != len(x):
            raise ValueError(f"timesteps t must have shape ({len(x)},), one per item of {name} "
                             f"(shape {tuple(x.shape)}), got {tuple(t.shape)}")
        # The range check reads values on the host: free for a CPU tensor, a device sync for a CUDA (or MPS) one,
        # where it would stall every call (12 times per training step with a learned variance). There it is
        # skipped: an out-of-range t fails in the indexing of _extract instead (a device-side assert on CUDA).
        if len(t) and t.device.type == "cpu":
            lo, hi = int(t.min()), int(t.max())
            if lo < 0 or hi >= self.num_timesteps:
                raise ValueError(f"timesteps must lie in [0, {self.num_timesteps - 1}], got values in [{lo}, {hi}]")

    def _extract(self, arr: np.ndarray, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """arr[t] as float32, shaped to broadcast against x (B, 1, 1, ...).

        A table of this diffusion (an attribute: betas, alphas_cumprod, ...) is copied to t's device once and kept
        there: a copy from host memory to a GPU is a blocking transfer, and there are 10-20 lookups per training or
        sampling step. Any other array is copied at each call."""
        key = (id(arr), t.device)
        cached = self._on_device.get(key)
        if cached is None or cached[0] is not arr:
            table = torch.from_numpy(np.asarray(arr)).float().to(t.device)
            if any(arr is value for value in vars(self).values()):
                self._on_device[key] = (arr, table)
        else:
            table = cached[1]
        out = table[t.long()]
        return out.reshape(len(t), *([1] * (x.ndim - 1)))

    # ---------------------------------------------------------------- forward process q
    def q_mean_variance(self, x_start, t):
        """Mean, variance and log-variance of q(x_t | x_0) = N(sqrt(alpha_bar_t) x_0, (1 - alpha_bar_t) I),
        DDPM eq. 4."""
        self._check(x_start, t, "x_start")
        mean = self._extract(self.sqrt_alphas_cumprod, t, x_start) * x_start
        variance = self._extract(self.one_minus_alphas_cumprod, t, x_start)
        log_variance = self._extract(self.log_one_minus_alphas_cumprod, t, x_start)
        return mean, variance, log_variance

    def q_sample(self, x_start, t, noise=None):
        """Draw x_t ~ q(x_t | x_0): sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps (DDPM eq. 4)."""
        self._check(x_start, t, "x_start")
        noise = torch.randn_like(x_start) if noise is None else noise
        if noise.shape != x_start.shape:
            raise ValueError(f"noise must have the shape of x_start {tuple(x_start.shape)}, got {tuple(noise.shape)}")
        return (self._extract(self.sqrt_alphas_cumprod, t, x_start) * x_start
                + self._extract(self.sqrt_one_minus_alphas_cumprod, t, x_start) * noise)

    def q_posterior_mean_variance(self, x_start, x_t, t):
        """Mean, variance and clipped log-variance of q(x_{t-1} | x_t, x_0), DDPM eqs. 6-7."""
        self._check(x_start, t, "x_start")
        if x_start.shape != x_t.shape:
            raise ValueError(f"x_start and x_t must share a shape, got {tuple(x_start.shape)} and {tuple(x_t.shape)}")
        mean = (self._extract(self.posterior_mean_coef1, t, x_t) * x_start
                + self._extract(self.posterior_mean_coef2, t, x_t) * x_t)
        variance = self._extract(self.posterior_variance, t, x_t)
        log_variance = self._extract(self.posterior_log_variance_clipped, t, x_t)
        return mean, variance, log_variance

    # ---------------------------------------------------------------- conversions between parameterisations
    def _predict_xstart_from_eps(self, x_t, t, eps):
        """x_0 = (x_t - sqrt(1 - alpha_bar_t) eps) / sqrt(alpha_bar_t), DDPM eq. 4 solved for x_0."""
        return (self._extract(self.sqrt_recip_alphas_cumprod, t, x_t) * x_t
                - self._extract(self.sqrt_recipm1_alphas_cumprod, t, x_t) * eps)

    def _predict_eps_from_xstart(self, x_t, t, pred_xstart):
        """The inverse of :meth:`_predict_xstart_from_eps`."""
        return ((self._extract(self.sqrt_recip_alphas_cumprod, t, x_t) * x_t - pred_xstart)
                / self._extract(self.sqrt_recipm1_alphas_cumprod, t, x_t))

    def _predict_xstart_from_xprev(self, x_t, t, xprev):
        """Solve the posterior mean (DDPM eq. 7) for x_0."""
        return (self._extract(self.xprev_coef1, t, x_t) * xprev
                - self._extract(self.xprev_coef2, t, x_t) * x_t)

    # ---------------------------------------------------------------- reverse process p
    def _wrap_model(self, model: Callable) -> Callable:
        """Hook for respaced diffusions, which map their timesteps back to the original chain."""
        return model

    def _split_model_output(self, model_output, x):
        """Split the output into (mean part, variance part); the variance part is None for fixed variances."""
        channels = x.shape[1] if x.ndim > 1 else 1
        expected = (len(x), channels * (2 if self.learns_sigma else 1), *x.shape[2:])
        if tuple(model_output.shape) != expected:
            need = " (twice the input channels: the variance is learned)" if self.learns_sigma else ""
            raise ValueError(f"model output has shape {tuple(model_output.shape)}, expected {expected}{need}")
        if not self.learns_sigma:
            return model_output, None
        return torch.split(model_output, channels, dim=1)

    def _model_variance(self, var_values, x, t):
        """Sigma_theta(x_t, t) and its log, for each ``var_type`` (Improved DDPM section 3.1, eq. 15)."""
        if self.var_type == "learned":
            return torch.exp(var_values), var_values
        if self.var_type == "learned_range":
            min_log = self._extract(self.posterior_log_variance_clipped, t, x)
            max_log = self._extract(self.log_betas, t, x)
            frac = (var_values + 1) / 2  # the model's v in [-1, 1] mapped to [0, 1]
            log_variance = frac * max_log + (1 - frac) * min_log
            return torch.exp(log_variance), log_variance
        if self.var_type == "fixed_large":
            # beta_t, with beta-tilde_1 at t = 0 for a better decoder log-likelihood (as the reference code)
            return (self._extract(self.large_variance, t, x).expand_as(x),
                    self._extract(self.large_log_variance, t, x).expand_as(x))
        return (self._extract(self.posterior_variance, t, x).expand_as(x),
                self._extract(self.posterior_log_variance_clipped, t, x).expand_as(x))

    def p_mean_variance(self, model, x_t, t, clip_denoised: bool = True, denoised_fn=None, model_kwargs=None):
        """Apply the model to get p(x_{t-1} | x_t) = N(mu_theta, Sigma_theta) (DDPM eq. 1) and the predicted x_0.

        Returns a dict with ``mean``, ``variance``, ``log_variance``, ``pred_xstart`` and ``model_output``.
        ``clip_denoised`` clips the predicted x_0 to [-1, 1] before the posterior mean is formed.
        """
        self._check(x_t, t, "x_t")
        model = self._wrap_model(model)
        model_output = model(x_t, t, **(model_kwargs or {}))
        mean_out, var_values = self._split_model_output(model_output, x_t)
        mean_out = mean_out.to(x_t.dtype)
        if var_values is None:
            variance, log_variance = self._model_variance(None, x_t, t)
        else:
            variance, log_variance = self._model_variance(var_values.to(x_t.dtype), x_t, t)

        def process_xstart(x):
            x = denoised_fn(x) if denoised_fn is not None else x
            return x.clamp(-1, 1) if clip_denoised else x

        if self.mean_type == "xprev":
            pred_xstart = process_xstart(self._predict_xstart_from_xprev(x_t, t, mean_out))
            mean = mean_out
        else:
            pred_xstart = process_xstart(mean_out if self.mean_type == "x0"
                                         else self._predict_xstart_from_eps(x_t, t, mean_out))
            mean, _, _ = self.q_posterior_mean_variance(pred_xstart, x_t, t)
        return {"mean": mean, "variance": variance, "log_variance": log_variance,
                "pred_xstart": pred_xstart, "model_output": model_output}

    # ---------------------------------------------------------------- guidance (Dhariwal & Nichol 2021)
    def condition_mean(self, cond_fn, p_mean_var, x_t, t, model_kwargs=None):
        """Algorithm 1: shift the mean by Sigma * grad_x log p(y | x_t), where cond_fn returns s * grad."""
        gradient = self._wrap_model(cond_fn)(x_t, t, **(model_kwargs or {}))
        return p_mean_var["mean"].float() + p_mean_var["variance"] * gradient.float()

    def condition_score(self, cond_fn, p_mean_var, x_t, t, model_kwargs=None):
        """Algorithm 2: eps_hat = eps - sqrt(1 - alpha_bar_t) * grad_x log p(y | x_t); returns the updated dict."""
        eps = self._predict_eps_from_xstart(x_t, t, p_mean_var["pred_xstart"])
        gradient = self._wrap_model(cond_fn)(x_t, t, **(model_kwargs or {}))
        eps = eps - self._extract(self.sqrt_one_minus_alphas_cumprod, t, x_t) * gradient
        out = dict(p_mean_var)
        out["pred_xstart"] = self._predict_xstart_from_eps(x_t, t, eps)
        out["mean"], _, _ = self.q_posterior_mean_variance(out["pred_xstart"], x_t, t)
        return out

    # ---------------------------------------------------------------- ancestral sampling (DDPM Algorithm 2)
    def p_sample(self, model, x_t, t, clip_denoised=True, denoised_fn=None, cond_fn=None, model_kwargs=None,
                 generator: torch.Generator | None = None):
        """One reverse step x_{t-1} = mu_theta + sigma_t z (no noise at t = 0). Returns ``sample`` and
        ``pred_xstart``."""
        out = self.p_mean_variance(model, x_t, t, clip_denoised, denoised_fn, model_kwargs)
        if cond_fn is not None:
            out["mean"] = self.condition_mean(cond_fn, out, x_t, t, model_kwargs)
        noise = _randn_like(x_t, generator)
        nonzero = (t != 0).to(x_t.dtype).reshape(-1, *([1] * (x_t.ndim - 1)))
        sample = out["mean"] + nonzero * torch.exp(0.5 * out["log_variance"]) * noise
        return {"sample": sample, "pred_xstart": out["pred_xstart"]}

    def p_sample_loop_progressive(self, model, shape, noise=None, clip_denoised=True, denoised_fn=None,
                                  cond_fn=None, model_kwargs=None, device=None, progress=False,
                                  generator: torch.Generator | None = None) -> Iterator[dict]:
        """Yield the output of :meth:`p_sample` for t = T-1, ..., 0, starting from x_T ~ N(0, I) (or ``noise``)."""
        yield from self._loop(self.p_sample, model, shape, noise, progress, device, generator,
                              clip_denoised=clip_denoised, denoised_fn=denoised_fn, cond_fn=cond_fn,
                              model_kwargs=model_kwargs)

    def p_sample_loop(self, model, shape, noise=None, clip_denoised=True, denoised_fn=None, cond_fn=None,
                      model_kwargs=None, device=None, progress=False, generator: torch.Generator | None = None):
        """Generate samples of the given shape with ancestral sampling; returns x_0."""
        final = None
        for out in self.p_sample_loop_progressive(model, shape, noise, clip_denoised, denoised_fn, cond_fn,
                                                  model_kwargs, device, progress, generator):
            final = out
        return final["sample"]

    # ---------------------------------------------------------------- DDIM (Song et al. 2021, eq. 12)
    def ddim_sample(self, model, x_t, t, clip_denoised=True, denoised_fn=None, cond_fn=None, model_kwargs=None,
                    eta: float = 0.0, generator: torch.Generator | None = None):
        """One DDIM step. sigma_t = eta sqrt((1 - abar_{t-1}) / (1 - abar_t)) sqrt(1 - abar_t / abar_{t-1}) (eq. 16);
        eta = 1 gives the DDPM posterior variance, eta = 0 a deterministic sampler; eta must lie in [0, 1]."""
        eta = check_eta(eta)
        out = self.p_mean_variance(model, x_t, t, clip_denoised, denoised_fn, model_kwargs)
        if cond_fn is not None:
            out = self.condition_score(cond_fn, out, x_t, t, model_kwargs)
        eps = self._predict_eps_from_xstart(x_t, t, out["pred_xstart"])
        alpha_bar = self._extract(self.alphas_cumprod, t, x_t)
        alpha_bar_prev = self._extract(self.alphas_cumprod_prev, t, x_t)
        sigma = eta * torch.sqrt((1 - alpha_bar_prev) / (1 - alpha_bar)) * torch.sqrt(1 - alpha_bar / alpha_bar_prev)
        mean_pred = out["pred_xstart"] * torch.sqrt(alpha_bar_prev) + torch.sqrt(1 - alpha_bar_prev - sigma ** 2) * eps
        nonzero = (t != 0).to(x_t.dtype).reshape(-1, *([1] * (x_t.ndim - 1)))
        sample = mean_pred + nonzero * sigma * _randn_like(x_t, generator)
        return {"sample": sample, "pred_xstart": out["pred_xstart"]}

    def ddim_sample_loop_progressive(self, model, shape, noise=None, clip_denoised=True, denoised_fn=None,
                                     cond_fn=None, model_kwargs=None, device=None, progress=False, eta: float = 0.0,
                                     generator: torch.Generator | None = None) -> Iterator[dict]:
        """Yield the output of :meth:`ddim_sample` for t = T-1, ..., 0 (``eta`` is checked at the call)."""
        eta = check_eta(eta)
        return self._loop(self.ddim_sample, model, shape, noise, progress, device, generator,
                          clip_denoised=clip_denoised, denoised_fn=denoised_fn, cond_fn=cond_fn,
                          model_kwargs=model_kwargs, eta=eta)

    def ddim_sample_loop(self, model, shape, noise=None, clip_denoised=True, denoised_fn=None, cond_fn=None,
                         model_kwargs=None, device=None, progress=False, eta: float = 0.0,
                         generator: torch.Generator | None = None):
        """Generate samples with DDIM; returns x_0."""
        final = None
        for out in self.ddim_sample_loop_progressive(model, shape, noise, clip_denoised, denoised_fn, cond_fn,
                                                     model_kwargs, device, progress, eta, generator):
            final = out
        return final["sample"]

    # ---------------------------------------------------------------- DDIM inversion (Song et al. 2021, sec. 4.3)
    @staticmethod
    def _check_reverse_eta(eta) -> None:
        """The reverse ODE has no noise: eta must be 0 (a ValueError names what was given)."""
        if isinstance(eta, torch.Tensor) and eta.numel() == 1:
            eta = eta.item()
        if isinstance(eta, bool) or not isinstance(eta, (int, float, np.integer, np.floating)) or eta != 0:
            raise ValueError(f"DDIM inversion runs the deterministic ODE (eq. 12 with sigma = 0) forward in time: "
                             f"eta must be 0, got {eta!r}")

    def ddim_reverse_sample(self, model, x, t, clip_denoised=True, denoised_fn=None, model_kwargs=None,
                            eta: float = 0.0):
        """One deterministic DDIM step forward in time, x_t -> x_{t+1} (eq. 12 with sigma_t = 0, run backwards):

            x_{t+1} = sqrt(abar_{t+1}) x0_pred + sqrt(1 - abar_{t+1}) eps,

        where x0_pred and eps are the model's predictions at (x_t, t) (eps re-derived from x0_pred, so clipping and
        x0/xprev models are handled as in :meth:`ddim_sample`), and abar_T = 0 after the last step (the
        ``alphas_cumprod_next`` of the reference code). Returns ``sample`` and ``pred_xstart``; ``eta`` must be 0.
        """
        self._check_reverse_eta(eta)
        out = self.p_mean_variance(model, x, t, clip_denoised, denoised_fn, model_kwargs)
        eps = self._predict_eps_from_xstart(x, t, out["pred_xstart"])
        alpha_bar_next = self._extract(self.alphas_cumprod_next, t, x)
        sample = out["pred_xstart"] * torch.sqrt(alpha_bar_next) + torch.sqrt(1 - alpha_bar_next) * eps
        return {"sample": sample, "pred_xstart": out["pred_xstart"]}

    def _ddim_encode_first_step(self, model, x0, t, denoised_fn=None, model_kwargs=None):
        """From the data (abar = 1) to the level of step 0 (abar_0), with the eps the model predicts at (x_0, 0):
        x = sqrt(abar_0) x_0 + sqrt(1 - abar_0) eps. It inverts the last step of :meth:`ddim_sample` (t = 0), which
        returns the predicted x_0, up to the difference between eps at x_0 and at x (both at t = 0)."""
        out = self.p_mean_variance(model, x0, t, False, denoised_fn, model_kwargs)
        eps = self._predict_eps_from_xstart(x0, t, out["pred_xstart"])
        sample = (self._extract(self.sqrt_alphas_cumprod, t, x0) * x0
                  + self._extract(self.sqrt_one_minus_alphas_cumprod, t, x0) * eps)
        return {"sample": sample, "pred_xstart": out["pred_xstart"]}

    def ddim_reverse_sample_loop_progressive(self, model, x0, clip_denoised=True, denoised_fn=None,
                                             model_kwargs=None, device=None, progress=False,
                                             eta: float = 0.0) -> Iterator[dict]:
        """Yield the K steps of DDIM inversion of ``x0`` (K = ``num_timesteps``, respaced or not), in time order.

        The states are those of :meth:`ddim_sample_loop` visited backwards: step 0 goes from the data (abar = 1) to
        abar_0 with the eps predicted at (x_0, 0), then :meth:`ddim_reverse_sample` at t = 0, ..., K-2 reaches
        abar_{K-1}, where sampling starts. The last ``sample`` is the latent x_T to pass as ``noise`` to
        :meth:`ddim_sample_loop` on the same diffusion (K model calls each way); the round trip is exact in the
        limit of many steps. ``eta`` must be 0 (checked at the call).
        """
        self._check_reverse_eta(eta)
        if not isinstance(x0, torch.Tensor) or not x0.is_floating_point():
            raise ValueError(f"x0 must be a floating-point torch.Tensor of data, got "
                             f"{getattr(x0, 'dtype', type(x0).__name__)}")
        return self._reverse_loop(model, x0, clip_denoised, denoised_fn, model_kwargs, device, progress)

    def _reverse_loop(self, model, x0, clip_denoised, denoised_fn, model_kwargs, device, progress):
        x = x0.to(device) if device is not None else x0
        steps = range(self.num_timesteps)
        for i in tqdm(steps, desc="DDIM inversion", leave=False) if progress else steps:
            t = torch.full((len(x),), max(i - 1, 0), device=x.device, dtype=torch.long)
            with torch.no_grad():
                if i == 0:
                    out = self._ddim_encode_first_step(model, x, t, denoised_fn, model_kwargs)
                else:
                    out = self.ddim_reverse_sample(model, x, t, clip_denoised, denoised_fn, model_kwargs)
            yield out
            x = out["sample"]

    def ddim_reverse_sample_loop(self, model, x0, clip_denoised=True, denoised_fn=None, model_kwargs=None,
                                 device=None, progress=False, eta: float = 0.0):
        """Encode data ``x0`` into DDIM's latent x_T (see :meth:`ddim_reverse_sample_loop_progressive`)."""
        final = None
        for out in self.ddim_reverse_sample_loop_progressive(model, x0, clip_denoised, denoised_fn, model_kwargs,
                                                             device, progress, eta):
            final = out
        return final["sample"]

    def _loop(self, step, model, shape, noise, progress, device, generator, **kwargs):
        if device is None:
            device = noise.device if noise is not None else model_device(model)
        if noise is not None and tuple(noise.shape) != tuple(shape):
            raise ValueError(f"noise has shape {tuple(noise.shape)}, expected {tuple(shape)}")
        x = noise.to(device) if noise is not None else torch.randn(*shape, device=device, generator=generator)
        steps = range(self.num_timesteps - 1, -1, -1)
        for i in tqdm(steps, desc="sampling", leave=False) if progress else steps:
            t = torch.full((shape[0],), i, device=device, dtype=torch.long)
            with torch.no_grad():
                out = step(model, x, t, generator=generator, **kwargs)
            yield out
            x = out["sample"]

    # ---------------------------------------------------------------- losses
    def _vb_terms_bpd(self, model, x_start, x_t, t, clip_denoised=True, model_kwargs=None):
        """One term of L_vlb in bits: L_{t-1} = KL(q(x_{t-1}|x_t,x_0) || p(x_{t-1}|x_t)) for t > 0 (DDPM eq. 5),
        and the discretised decoder L_0 = -log p(x_0 | x_1) at t = 0 (DDPM eq. 13)."""
        true_mean, _, true_log_variance = self.q_posterior_mean_variance(x_start, x_t, t)
        out = self.p_mean_variance(model, x_t, t, clip_denoised=clip_denoised, model_kwargs=model_kwargs)
        kl = mean_flat(normal_kl(true_mean, true_log_variance, out["mean"], out["log_variance"])) / math.log(2.0)
        decoder_nll = -mean_flat(discretized_gaussian_log_likelihood(
            x_start, means=out["mean"], log_scales=0.5 * out["log_variance"])) / math.log(2.0)
        return {"output": torch.where(t == 0, decoder_nll, kl), "pred_xstart": out["pred_xstart"]}

    def training_losses(self, model, x_start, t, noise=None, model_kwargs=None):
        """Per-example losses at timesteps t: a dict with ``loss`` and, as applicable, ``mse`` and ``vb``.

        - ``simple``/``rescaled_mse``: mse = ||target - model||^2 averaged over pixels (DDPM eq. 14), with the target
          eps, x_0 or the posterior mean. With a learned variance this is the hybrid loss (Improved DDPM eq. 16):
          ``vb`` is one term L_t of the bound with a stop-gradient on the mean, so the vb part trains only Sigma.
          Since L_vlb is estimated by T * L_t, lambda = 0.001 gives lambda * L_vlb = (T / 1000) * L_t: that is
          ``rescaled_mse`` for any T, and ``simple`` (vb unscaled) coincides with it at T = 1000.
        - ``kl``/``rescaled_kl``: L_vlb alone (times T for ``rescaled_kl``).
        """
        self._check(x_start, t, "x_start")
        noise = torch.randn_like(x_start) if noise is None else noise
        x_t = self.q_sample(x_start, t, noise=noise)
        model = self._wrap_model(model)
        terms = {}
        if self.loss_type in ("kl", "rescaled_kl"):
            terms["loss"] = self._vb_terms_bpd(model, x_start, x_t, t, clip_denoised=False,
                                               model_kwargs=model_kwargs)["output"]
            if self.loss_type == "rescaled_kl":
                terms["loss"] = terms["loss"] * self.num_timesteps
            return terms

        model_output = model(x_t, t, **(model_kwargs or {}))
        mean_out, var_values = self._split_model_output(model_output, x_t)
        if var_values is not None:
            # the vb term trains only the variance: the mean is frozen (stop-gradient), Improved DDPM section 3.1
            frozen = torch.cat([mean_out.detach(), var_values], dim=1)
            terms["vb"] = self._vb_terms_bpd(lambda *args, **kwargs: frozen, x_start, x_t, t,
                                             clip_denoised=False)["output"]
            if self.loss_type == "rescaled_mse":
                terms["vb"] = terms["vb"] * self.num_timesteps / 1000.0
        target = {"eps": noise, "x0": x_start,
                  "xprev": self.q_posterior_mean_variance(x_start, x_t, t)[0]}[self.mean_type]
        terms["mse"] = mean_flat((target - mean_out.to(target.dtype)) ** 2)
        terms["loss"] = terms["mse"] + terms["vb"] if "vb" in terms else terms["mse"]
        return terms

    # ---------------------------------------------------------------- log-likelihood (Improved DDPM section 2.4)
    def _prior_bpd(self, x_start):
        """L_T = KL(q(x_T | x_0) || N(0, I)) in bits/dim: no parameters, close to 0 for a good schedule."""
        t = torch.full((len(x_start),), self.num_timesteps - 1, dtype=torch.long, device=x_start.device)
        mean, _, log_variance = self.q_mean_variance(x_start, t)
        return mean_flat(normal_kl(mean, log_variance, 0.0, 0.0)) / math.log(2.0)

    def calc_bpd_loop(self, model, x_start, clip_denoised=True, model_kwargs=None, progress=False,
                      generator: torch.Generator | None = None):
        """The full variational bound of each x_0 in bits/dim, over every timestep (Improved DDPM Table 2).

        Returns a dict: ``total_bpd`` (B,), ``prior_bpd`` (B,), and (B, T) arrays indexed by t: ``vb`` (the terms
        L_t), ``xstart_mse`` and ``mse`` (the errors of the predicted x_0 and eps). The reference code stacks these
        last three from t = T-1 down; here column t is timestep t.
        """
        vb, xstart_mse, mse = [], [], []
        steps = range(self.num_timesteps - 1, -1, -1)
        for i in tqdm(steps, desc="bits/dim", leave=False) if progress else steps:
            t = torch.full((len(x_start),), i, device=x_start.device, dtype=torch.long)
            noise = _randn_like(x_start, generator)
            x_t = self.q_sample(x_start, t, noise)
            with torch.no_grad():
                out = self._vb_terms_bpd(model, x_start, x_t, t, clip_denoised=clip_denoised,
                                         model_kwargs=model_kwargs)
            vb.append(out["output"])
            xstart_mse.append(mean_flat((out["pred_xstart"] - x_start) ** 2))
            mse.append(mean_flat((self._predict_eps_from_xstart(x_t, t, out["pred_xstart"]) - noise) ** 2))
        vb = torch.stack(vb[::-1], dim=1)
        prior_bpd = self._prior_bpd(x_start)
        return {"total_bpd": vb.sum(dim=1) + prior_bpd, "prior_bpd": prior_bpd, "vb": vb,
                "xstart_mse": torch.stack(xstart_mse[::-1], dim=1), "mse": torch.stack(mse[::-1], dim=1)}


def _randn_like(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    return torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)

