"""Noise schedules beta_1..beta_T, in float64.

- ``linear``: DDPM (Ho et al. 2020, section 4): betas rise linearly from 1e-4 to 0.02 for T = 1000.
  Improved DDPM (Nichol & Dhariwal 2021) scales both ends by 1000 / T so that any T gives the same curve.
- ``cosine``: Improved DDPM eq. 17: alpha_bar(t) = f(t) / f(0), f(t) = cos(((t/T + s) / (1 + s)) * pi/2)^2,
  s = 0.008, with beta_t = 1 - alpha_bar(t) / alpha_bar(t-1) clipped at 0.999 (section 3.2).
"""
from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np


def linear_betas(num_timesteps: int) -> np.ndarray:
    """DDPM's linear schedule, scaled by 1000 / T (Improved DDPM, footnote in section 3.2)."""
    scale = 1000 / num_timesteps
    return np.linspace(scale * 1e-4, scale * 0.02, num_timesteps, dtype=np.float64)


def betas_for_alpha_bar(num_timesteps: int, alpha_bar: Callable[[float], float], max_beta: float = 0.999) -> np.ndarray:
    """Discretise a continuous alpha_bar(tau), tau in [0, 1]: beta_t = 1 - alpha_bar(t/T) / alpha_bar((t-1)/T)."""
    betas = [min(1 - alpha_bar((i + 1) / num_timesteps) / alpha_bar(i / num_timesteps), max_beta)
             for i in range(num_timesteps)]
    return np.array(betas, dtype=np.float64)


def cosine_alpha_bar(tau: float, s: float = 0.008) -> float:
    """The unnormalised f(t) of Improved DDPM eq. 17 at tau = t / T."""
    return math.cos((tau + s) / (1 + s) * math.pi / 2) ** 2


def cosine_betas(num_timesteps: int, s: float = 0.008, max_beta: float = 0.999) -> np.ndarray:
    """Improved DDPM's cosine schedule (eq. 17), betas clipped at ``max_beta`` (section 3.2)."""
    return betas_for_alpha_bar(num_timesteps, lambda tau: cosine_alpha_bar(tau, s), max_beta)


SCHEDULES: dict[str, Callable[[int], np.ndarray]] = {"linear": linear_betas, "cosine": cosine_betas}


def get_betas(name: str, num_timesteps: int) -> np.ndarray:
    """The named schedule's betas as a float64 array of length ``num_timesteps``."""
    if name not in SCHEDULES:
        raise ValueError(f"unknown noise schedule {name!r}: choose one of {sorted(SCHEDULES)}")
    if not isinstance(num_timesteps, (int, np.integer)) or num_timesteps < 1:
        raise ValueError(f"num_timesteps must be a positive integer, got {num_timesteps!r}")
    return SCHEDULES[name](int(num_timesteps))
