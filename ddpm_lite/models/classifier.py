"""Noisy-image classifier for classifier guidance (Dhariwal & Nichol 2021, sec. 4).

The classifier is the first half of the ADM U-Net (downsampling path and middle
block, time-conditioned, reused from :mod:`.unet`) followed by attention pooling,
as guided-diffusion's ``EncoderUNetModel`` with ``pool="attention"``. Its gradient
``grad_x log p(y | x_t, t)`` steers sampling towards class ``y``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import UNetConfig
from .nn import normalization
from .unet import UNetEncoder, merge_heads, split_heads


class AttentionPool2d(nn.Module):
    """Pool a (B, C, S, S) map to (B, out_dim) with multi-head attention (as in CLIP).

    The mean of all pixels is prepended as an extra token, a learned position
    embedding is added to every token, and the mean token attends to all tokens.
    """

    def __init__(self, size: int, channels: int, num_heads: int, out_dim: int):
        super().__init__()
        self.num_heads = num_heads
        self.pos_emb = nn.Parameter(torch.randn(size * size + 1, channels) / channels**0.5)
        self.qkv = nn.Linear(channels, 3 * channels)
        self.proj = nn.Linear(channels, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = x.flatten(2).transpose(1, 2)  # (B, S*S, C)
        tokens = torch.cat([tokens.mean(1, keepdim=True), tokens], dim=1) + self.pos_emb
        q, k, v = split_heads(self.qkv(tokens), self.num_heads)
        pooled = F.scaled_dot_product_attention(q[:, :, :1], k, v)  # the mean token's query only
        return self.proj(merge_heads(pooled)[:, 0])


class EncoderUNetModel(UNetEncoder):
    """Time-conditioned classifier of noisy images: ``classifier(x_t, t)`` -> (B, num_classes) logits.

    Built from a :class:`UNetConfig` whose ``num_classes`` is the number of logits
    (``out_channels`` and ``learn_sigma`` are unused), e.g.
    ``EncoderUNetModel(UNetConfig.preset("digits8_classifier"))``.
    """

    def __init__(self, config: UNetConfig):
        if config.num_classes is None:
            raise ValueError("the classifier needs config.num_classes (the number of logits)")
        super().__init__(config)
        ch = self.channels
        pool = AttentionPool2d(config.resolutions[-1], ch, config.heads(ch), config.num_classes)
        self.out = nn.Sequential(normalization(ch), nn.SiLU(), pool)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Logits (B, num_classes) for noisy images ``x`` (B, C, H, W) at timesteps ``t`` (B,)."""
        self._check_inputs(x, t)
        h, _ = self.encode(x, F.silu(self.embed_time(t)))
        return self.out(h)


NoisyClassifier = EncoderUNetModel  # the name used in the course notebooks
