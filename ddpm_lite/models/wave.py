"""A small DiffWave-style denoiser for 1-D signals (Kong et al. 2021, "DiffWave", arXiv 2009.09761, section 3).

The network is a stack of residual layers with dilated 1-D convolutions, without any down- or up-sampling: every
layer works at the full time resolution, and the dilations ``1, 2, 4, ...`` (repeated in cycles) let the
receptive field grow exponentially with depth. Each layer (DiffWave Figure 2)::

    h = x + W_t emb(t)                                  # the timestep, broadcast over time
    a, b = split(DilatedConv(h))                        # kernel 3, dilation 2^(i mod cycle), 2C channels
    y = tanh(a) * sigmoid(b)                            # gated activation (WaveNet)
    residual, skip = split(Conv1x1(y))
    x <- (x + residual) / sqrt(2);  skips += skip

and the output is ``Conv1x1(ReLU(Conv1x1(ReLU(sum(skips) / sqrt(layers)))))``, its last layer zero-initialised.
The timestep embedding is the sinusoidal one of the image models (:func:`~ddpm_lite.models.timestep_embedding`)
followed by a small MLP, as in DiffWave. The network is fully convolutional: it accepts any length.

``model(x_t, t)`` takes ``(B, C, L)`` and returns ``(B, C, L)``, or ``(B, 2C, L)`` with ``learn_sigma=True``
(eps and the variance interpolation v of Improved DDPM eq. 15, concatenated on the channels, as the U-Net does),
so it works with :class:`~ddpm_lite.GaussianDiffusion` and :class:`~ddpm_lite.train.Trainer` unchanged.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .nn import check_timesteps, timestep_embedding, zero_module

__all__ = ["WaveDenoiser", "DilatedResidualLayer", "receptive_field"]


class DilatedResidualLayer(nn.Module):
    """One DiffWave residual layer: timestep bias, dilated conv, gated tanh * sigmoid, 1x1 conv to (residual, skip)."""

    def __init__(self, channels: int, embed_dim: int, dilation: int, kernel_size: int = 3):
        super().__init__()
        self.dilation = dilation
        self.emb_proj = nn.Linear(embed_dim, channels)
        self.conv = nn.Conv1d(channels, 2 * channels, kernel_size, dilation=dilation,
                              padding=dilation * (kernel_size - 1) // 2)
        self.out = nn.Conv1d(channels, 2 * channels, 1)
        nn.init.kaiming_normal_(self.conv.weight)
        nn.init.kaiming_normal_(self.out.weight)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = x + self.emb_proj(emb)[:, :, None]
        filt, gate = self.conv(h).chunk(2, dim=1)
        y = torch.tanh(filt) * torch.sigmoid(gate)
        residual, skip = self.out(y).chunk(2, dim=1)
        return (x + residual) / math.sqrt(2.0), skip


def receptive_field(num_layers: int, dilation_cycle: int, kernel_size: int = 3) -> int:
    """How many input samples one output sample sees: 1 + (kernel_size - 1) * sum of the dilations."""
    return 1 + (kernel_size - 1) * sum(2 ** (i % dilation_cycle) for i in range(num_layers))


class WaveDenoiser(nn.Module):
    """DiffWave-style denoiser for waveforms ``(B, in_channels, L)``: ``model(x_t, t)`` -> eps (and v).

    Args:
        in_channels: channels of the signal (1 for mono audio).
        channels: width C of the residual stream (DiffWave uses 64; 32 trains in minutes on a CPU).
        num_layers: residual layers (DiffWave: 30).
        dilation_cycle: dilations 1, 2, ..., 2^(cycle - 1), repeated (DiffWave: cycle 10).
        time_embed_dim: width of the sinusoidal timestep embedding (DiffWave: 128, then an MLP to 512).
        learn_sigma: also output the variance interpolation v (2 * in_channels outputs).
    """

    def __init__(self, in_channels: int = 1, channels: int = 32, num_layers: int = 10, dilation_cycle: int = 5,
                 time_embed_dim: int = 64, learn_sigma: bool = False):
        super().__init__()
        if channels < 1 or num_layers < 1 or dilation_cycle < 1:
            raise ValueError(f"channels, num_layers and dilation_cycle must be >= 1, got {channels}, {num_layers}, "
                             f"{dilation_cycle}")
        self.in_channels, self.channels, self.num_layers = in_channels, channels, num_layers
        self.dilation_cycle, self.time_embed_dim, self.learn_sigma = dilation_cycle, time_embed_dim, learn_sigma
        embed = 4 * time_embed_dim
        self.time_embed = nn.Sequential(nn.Linear(time_embed_dim, embed), nn.SiLU(), nn.Linear(embed, embed),
                                        nn.SiLU())
        self.inp = nn.Conv1d(in_channels, channels, 1)
        self.layers = nn.ModuleList(DilatedResidualLayer(channels, embed, 2 ** (i % dilation_cycle))
                                    for i in range(num_layers))
        self.skip_out = nn.Conv1d(channels, channels, 1)
        self.out = zero_module(nn.Conv1d(channels, in_channels * (2 if learn_sigma else 1), 1))

    @property
    def out_channels(self) -> int:
        return self.in_channels * (2 if self.learn_sigma else 1)

    @property
    def receptive_field(self) -> int:
        return receptive_field(self.num_layers, self.dilation_cycle)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Predict from signals ``x`` (B, in_channels, L) at integer timesteps ``t`` (B,)."""
        if not torch.is_tensor(x) or x.ndim != 3 or x.shape[1] != self.in_channels:
            got = tuple(x.shape) if torch.is_tensor(x) else type(x).__name__
            raise ValueError(f"x must have shape (B, {self.in_channels}, L); got {got}")
        check_timesteps(t, x.shape[0])
        emb = self.time_embed(timestep_embedding(t, self.time_embed_dim))
        h = F.relu(self.inp(x))
        skips = 0
        for layer in self.layers:
            h, skip = layer(h, emb)
            skips = skips + skip
        h = F.relu(self.skip_out(F.relu(skips / math.sqrt(self.num_layers))))
        return self.out(h)
