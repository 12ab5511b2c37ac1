"""The ADM U-Net of Dhariwal & Nichol (2021), "Diffusion Models Beat GANs", section 3.

It is the DDPM U-Net of Ho et al. (2020) -- a PixelCNN++-like stack of residual
blocks with GroupNorm, a sinusoidal timestep embedding and self-attention -- with
the changes of Nichol & Dhariwal (2021) and Dhariwal & Nichol (2021, sec. 3):

* adaptive GroupNorm: ``(1 + scale) * GroupNorm(h) + shift``, scale and shift
  projected from the timestep (+ class) embedding;
* BigGAN residual blocks for up- and downsampling;
* multi-head self-attention at several resolutions, 64 channels per head;
* class conditioning by adding a label embedding to the timestep embedding.

Semantics follow ``unet.py`` of openai/guided-diffusion; the hyper-parameters are
the fields of :class:`~ddpm_lite.models.config.UNetConfig`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import UNetConfig
from .nn import check_timesteps, normalization, timestep_embedding, zero_module


def upsample(channels: int, use_conv: bool) -> nn.Module:
    """Nearest-neighbour 2x upsampling, followed by a 3x3 convolution if ``use_conv``."""
    up = nn.Upsample(scale_factor=2, mode="nearest")
    return nn.Sequential(up, nn.Conv2d(channels, channels, 3, padding=1)) if use_conv else up


def downsample(channels: int, use_conv: bool) -> nn.Module:
    """2x downsampling: a stride-2 3x3 convolution if ``use_conv``, else 2x2 average pooling."""
    return nn.Conv2d(channels, channels, 3, stride=2, padding=1) if use_conv else nn.AvgPool2d(2)


class ResBlock(nn.Module):
    """Residual block conditioned on an embedding, optionally resampling (BigGAN style).

    ``GN -> SiLU -> [resample] -> conv3x3 -> (adaptive) GN -> SiLU -> dropout -> conv3x3``,
    plus a skip connection (resampled, and a 1x1 conv when the width changes).
    The last conv starts at zero, so the block starts as the (resampled) identity.
    """

    def __init__(
        self,
        channels: int,
        emb_channels: int,
        out_channels: int,
        dropout: float = 0.0,
        use_scale_shift_norm: bool = True,
        resample: str | None = None,
    ):
        super().__init__()
        self.use_scale_shift_norm = use_scale_shift_norm
        self.in_norm = normalization(channels)
        self.resample = {
            None: nn.Identity(), "up": upsample(channels, False), "down": downsample(channels, False)
        }[resample]
        self.in_conv = nn.Conv2d(channels, out_channels, 3, padding=1)
        self.emb_proj = nn.Linear(emb_channels, out_channels * (2 if use_scale_shift_norm else 1))
        self.out_norm = normalization(out_channels)
        self.dropout = nn.Dropout(dropout)
        self.out_conv = zero_module(nn.Conv2d(out_channels, out_channels, 3, padding=1))
        same = out_channels == channels
        self.skip = nn.Identity() if same else nn.Conv2d(channels, out_channels, 1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        """``x``: (B, C, H, W) features; ``emb``: (B, E) embedding, already SiLU-activated."""
        h = self.in_conv(self.resample(F.silu(self.in_norm(x))))
        x = self.resample(x)
        e = self.emb_proj(emb)[:, :, None, None]
        if self.use_scale_shift_norm:
            scale, shift = e.chunk(2, dim=1)
            h = torch.addcmul(shift, self.out_norm(h), 1 + scale)
        else:
            h = self.out_norm(h + e)
        h = self.out_conv(self.dropout(F.silu(h)))
        return self.skip(x) + h


def split_heads(qkv: torch.Tensor, num_heads: int) -> tuple[torch.Tensor, ...]:
    """Split packed ``(B, L, 3 * C)`` projections into q, k, v of shape (B, heads, L, C / heads)."""
    batch, length, _ = qkv.shape
    return qkv.view(batch, length, 3, num_heads, -1).permute(2, 0, 3, 1, 4).unbind(0)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """Inverse of the head split: (B, heads, L, D) -> (B, L, heads * D)."""
    return x.transpose(1, 2).flatten(2)


class AttentionBlock(nn.Module):
    """Multi-head self-attention between all pixels, with a residual connection.

    ``x + proj(attention(GN(x)))`` where each head computes
    ``softmax(q k^T / sqrt(d)) v`` (fused ``scaled_dot_product_attention``).
    The output projection starts at zero, so the block starts as the identity.
    """

    def __init__(self, channels: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.norm = normalization(channels)
        self.qkv = nn.Linear(channels, 3 * channels)
        self.proj_out = zero_module(nn.Linear(channels, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, height, width = x.shape
        tokens = self.norm(x).flatten(2).transpose(1, 2)  # (B, HW, C)
        q, k, v = split_heads(self.qkv(tokens), self.num_heads)
        h = self.proj_out(merge_heads(F.scaled_dot_product_attention(q, k, v)))
        return x + h.transpose(1, 2).reshape(b, c, height, width)


class EmbedSequential(nn.Sequential):
    """A sequence of layers; the residual blocks among them also receive the embedding."""

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        for layer in self:
            x = layer(x, emb) if isinstance(layer, ResBlock) else layer(x)
        return x


class UNetEncoder(nn.Module):
    """The first half of the U-Net: timestep embedding, downsampling path and middle block.

    :class:`UNetModel` adds the upsampling path; :class:`EncoderUNetModel` (the
    noisy-image classifier) adds attention pooling.
    """

    def __init__(self, config: UNetConfig):
        super().__init__()
        config.validate()
        self.config = config
        mc, emb_dim = config.model_channels, config.time_embed_dim
        self.time_embed = nn.Sequential(nn.Linear(mc, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        ch = mc * config.channel_mult[0]
        self.input_blocks = nn.ModuleList([EmbedSequential(nn.Conv2d(config.in_channels, ch, 3, padding=1))])
        self.skip_channels = [ch]  # width of each input block's output, for the decoder
        for level, mult in enumerate(config.channel_mult):
            for _ in range(config.num_res_blocks):
                self.input_blocks.append(self._stage(ch, mc * mult, config.resolutions[level]))
                ch = mc * mult
                self.skip_channels.append(ch)
            if level < len(config.channel_mult) - 1:
                self.input_blocks.append(EmbedSequential(self._resample(ch, "down")))
                self.skip_channels.append(ch)
        self.middle_block = EmbedSequential(
            self._res_block(ch, ch), AttentionBlock(ch, config.heads(ch)), self._res_block(ch, ch)
        )
        self.channels = ch  # width of the middle block

    def _res_block(self, channels: int, out_channels: int, resample: str | None = None) -> ResBlock:
        cfg = self.config
        return ResBlock(
            channels, cfg.time_embed_dim, out_channels, cfg.dropout, cfg.use_scale_shift_norm, resample
        )

    def _stage(self, channels: int, out_channels: int, resolution: int) -> EmbedSequential:
        """A residual block, followed by attention at the attention resolutions."""
        stage = EmbedSequential(self._res_block(channels, out_channels))
        if resolution in self.config.attention_resolutions:
            stage.append(AttentionBlock(out_channels, self.config.heads(out_channels)))
        return stage

    def _resample(self, channels: int, direction: str) -> nn.Module:
        if self.config.resblock_updown:
            return self._res_block(channels, channels, direction)
        return (upsample if direction == "up" else downsample)(channels, True)

    def _check_inputs(self, x: torch.Tensor, t: torch.Tensor) -> None:
        cfg = self.config
        expected = (cfg.in_channels, cfg.image_size, cfg.image_size)
        if not torch.is_tensor(x) or x.ndim != 4 or tuple(x.shape[1:]) != expected:
            got = tuple(x.shape) if torch.is_tensor(x) else type(x).__name__
            raise ValueError(f"x must have shape (B, {', '.join(map(str, expected))}); got {got}")
        check_timesteps(t, x.shape[0])

    def embed_time(self, t: torch.Tensor) -> torch.Tensor:
        """Timestep embedding (B, 4 * model_channels): sinusoids, then a 2-layer MLP."""
        return self.time_embed(timestep_embedding(t, self.config.model_channels))

    def encode(self, x: torch.Tensor, emb: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Run the downsampling path and middle block; also return every input block's output."""
        skips = []
        h = x
        for block in self.input_blocks:
            h = block(h, emb)
            skips.append(h)
        return self.middle_block(h, emb), skips


class UNetModel(UNetEncoder):
    """The ADM U-Net denoiser: ``model(x_t, t, y=None)`` -> (B, model_out_channels, H, W).

    With ``learn_sigma`` the output is ``[eps, v]`` concatenated on the channel dim.
    A class-conditional model (``config.num_classes = K``) embeds ``K + 1`` labels:
    label ``K`` is the null label of classifier-free guidance, used when ``y`` is None.
    """

    def __init__(self, config: UNetConfig):
        super().__init__(config)
        mc, k = config.model_channels, config.num_classes
        self.label_emb = None if k is None else nn.Embedding(k + 1, config.time_embed_dim)
        skips, ch = list(self.skip_channels), self.channels
        self.output_blocks = nn.ModuleList()
        for level in reversed(range(len(config.channel_mult))):
            out = mc * config.channel_mult[level]
            for i in range(config.num_res_blocks + 1):
                block = self._stage(ch + skips.pop(), out, config.resolutions[level])
                ch = out
                if level and i == config.num_res_blocks:
                    block.append(self._resample(ch, "up"))
                self.output_blocks.append(block)
        self.out = nn.Sequential(
            normalization(ch), nn.SiLU(), zero_module(nn.Conv2d(ch, config.model_out_channels, 3, padding=1))
        )

    @property
    def learn_sigma(self) -> bool:
        return self.config.learn_sigma

    @property
    def num_classes(self) -> int | None:
        return self.config.num_classes

    def _labels(self, y: torch.Tensor | None, batch: int, device: torch.device) -> torch.Tensor | None:
        k = self.config.num_classes
        if k is None:
            if y is not None:
                raise ValueError("this U-Net is unconditional (num_classes=None) but y was given")
            return None
        if y is None:
            return torch.full((batch,), k, dtype=torch.long, device=device)
        if not torch.is_tensor(y) or y.shape != (batch,) or y.dtype not in (torch.long, torch.int):
            got = f"{y.dtype} tensor of shape {tuple(y.shape)}" if torch.is_tensor(y) else type(y).__name__
            raise ValueError(f"y must be an integer tensor of shape ({batch},); got {got}")
        lo, hi = torch.stack(torch.aminmax(y)).tolist()
        if lo < 0 or hi > k:
            raise ValueError(f"labels must be in [0, {k}] ({k} = null label); got min {lo}, max {hi}")
        return y

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """Predict from noisy images ``x`` (B, C, H, W), timesteps ``t`` (B,), labels ``y`` (B,)."""
        self._check_inputs(x, t)
        emb = self.embed_time(t)
        labels = self._labels(y, x.shape[0], x.device)
        if labels is not None:
            emb = emb + self.label_emb(labels)
        emb = F.silu(emb)  # every block's embedding projection starts with SiLU
        h, skips = self.encode(x, emb)
        for block in self.output_blocks:
            h = block(torch.cat([h, skips.pop()], dim=1), emb)
        return self.out(h)
