"""Small building blocks shared by the denoisers and the classifier.

References:
    Ho, Jain & Abbeel (2020), "Denoising Diffusion Probabilistic Models":
        sinusoidal timestep embedding, GroupNorm in every residual block.
    Nichol & Dhariwal (2021), "Improved Denoising Diffusion Probabilistic Models".
    Dhariwal & Nichol (2021), "Diffusion Models Beat GANs on Image Synthesis".
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000) -> torch.Tensor:
    """Sinusoidal embedding of (possibly fractional) timesteps (Ho et al. 2020, sec. 4).

    The same frequencies as the Transformer positional encoding, laid out as in
    openai/improved-diffusion: ``half = dim // 2`` frequencies
    ``exp(-log(max_period) * i / half)`` for ``i = 0 .. half-1``, the cosines first,
    then the sines, and one zero column at the end when ``dim`` is odd.

    Args:
        t: timesteps, shape (B,), any numeric dtype.
        dim: width of the embedding.
        max_period: the longest period, which sets the lowest frequency.

    Returns:
        A float32 tensor of shape (B, dim).
    """
    half = dim // 2
    steps = torch.arange(half, dtype=torch.float32, device=t.device)
    freqs = torch.exp(-math.log(max_period) * steps / half)
    args = t[:, None].float() * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = F.pad(emb, (0, 1))
    return emb


def zero_module(module: nn.Module) -> nn.Module:
    """Set every parameter of ``module`` to zero and return it.

    The last layer of each residual branch starts at zero, so every block starts
    as the identity (as in the reference implementation of Ho et al. 2020).
    """
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


def group_count(channels: int, max_groups: int = 32) -> int:
    """Number of GroupNorm groups for ``channels``.

    32 groups (the value of Ho et al. 2020) when ``channels`` divides by 32,
    else the largest divisor of ``channels`` below 32, so that tiny widths work
    too: 48 channels get 24 groups, 16 channels get 16 (one channel per group).
    """
    return max(g for g in range(1, min(channels, max_groups) + 1) if channels % g == 0)


class GroupNorm32(nn.GroupNorm):
    """GroupNorm computed in float32 whatever the input dtype (safe under AMP)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.float()).type(x.dtype)


def normalization(channels: int) -> GroupNorm32:
    """The normalization layer of every block: GroupNorm with :func:`group_count` groups."""
    return GroupNorm32(group_count(channels), channels)


def check_timesteps(t: torch.Tensor, batch: int) -> None:
    """Raise ValueError unless ``t`` is a tensor of ``batch`` timesteps, shape (B,)."""
    if not torch.is_tensor(t) or t.shape != (batch,):
        got = tuple(t.shape) if torch.is_tensor(t) else type(t).__name__
        raise ValueError(f"t must be a tensor of shape ({batch},), one timestep per sample; got {got}")


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Total number of parameter entries of ``model`` (only trainable ones if asked)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
