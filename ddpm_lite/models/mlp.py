"""A residual MLP denoiser for 2-D toy data (rings, moons, Gaussian mixtures).

The time conditioning is the sinusoidal embedding of Ho et al. (2020) followed by
a small MLP, added inside every residual block.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .config import ArchitectureConfig
from .nn import check_timesteps, timestep_embedding


@dataclass
class MLPConfig(ArchitectureConfig):
    """Architecture of :class:`MLPDenoiser` (the fields are its constructor's arguments)."""

    data_dim: int = 2
    hidden: int = 128
    num_layers: int = 3
    time_embed_dim: int = 64
    out_mult: int = 1

    def __post_init__(self) -> None:
        from ..configs import check_field_types

        check_field_types(self, "model")
        for name in ("data_dim", "hidden", "num_layers", "time_embed_dim"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.time_embed_dim % 2:
            raise ValueError(f"time_embed_dim must be even (sines and cosines), got {self.time_embed_dim}")
        if self.out_mult not in (1, 2):
            raise ValueError(f"out_mult must be 1 (eps) or 2 (eps and v), got {self.out_mult}")


class _MLPBlock(nn.Module):
    """``h + fc2(SiLU(fc1(SiLU(h)) + W emb))``."""

    def __init__(self, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(hidden, hidden)
        self.emb_proj = nn.Linear(hidden, hidden)
        self.fc2 = nn.Linear(hidden, hidden)

    def forward(self, h: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        return h + self.fc2(F.silu(self.fc1(F.silu(h)) + self.emb_proj(emb)))


class MLPDenoiser(nn.Module):
    """Denoiser for points: ``model(x_t, t)`` -> (B, data_dim * out_mult).

    Args:
        data_dim: dimension of a data point.
        hidden: width of the residual stream.
        num_layers: number of residual blocks.
        time_embed_dim: width of the sinusoidal timestep embedding.
        out_mult: 1 to predict eps; 2 to predict ``[eps, v]`` concatenated on the
            last dim, where ``v`` interpolates the log-variance (Improved DDPM,
            Nichol & Dhariwal 2021).
    """

    def __init__(
        self,
        data_dim: int = 2,
        hidden: int = 128,
        num_layers: int = 3,
        time_embed_dim: int = 64,
        out_mult: int = 1,
    ):
        super().__init__()
        self.config = MLPConfig(data_dim, hidden, num_layers, time_embed_dim, out_mult)  # validates
        self.data_dim, self.time_embed_dim, self.out_mult = data_dim, time_embed_dim, out_mult
        self.time_embed = nn.Sequential(
            nn.Linear(time_embed_dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden)
        )
        self.inp = nn.Linear(data_dim, hidden)
        self.blocks = nn.ModuleList(_MLPBlock(hidden) for _ in range(num_layers))
        self.out = nn.Sequential(nn.SiLU(), nn.Linear(hidden, data_dim * out_mult))

    @classmethod
    def from_config(cls, config: MLPConfig) -> MLPDenoiser:
        return cls(**config.to_dict())

    @property
    def learn_sigma(self) -> bool:
        return self.out_mult == 2

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Predict from points ``x`` (B, data_dim) at integer timesteps ``t`` (B,)."""
        if not torch.is_tensor(x) or x.ndim != 2 or x.shape[1] != self.data_dim:
            got = tuple(x.shape) if torch.is_tensor(x) else type(x).__name__
            raise ValueError(f"x must have shape (B, {self.data_dim}); got {got}")
        check_timesteps(t, x.shape[0])
        emb = F.silu(self.time_embed(timestep_embedding(t, self.time_embed_dim)))
        h = self.inp(x)
        for block in self.blocks:
            h = block(h, emb)
        return self.out(h)
