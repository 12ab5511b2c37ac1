"""Hyper-parameters of the ADM U-Net and of the noisy-image classifier.

The fields follow ``UNetModel`` of openai/guided-diffusion (Dhariwal & Nichol 2021),
with one change: ``attention_resolutions`` lists feature-map sizes in pixels
(``(16, 8)`` on a 32x32 model), where guided-diffusion lists downsample rates.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

_PRESETS: dict[str, dict[str, Any]] = {
    # Small models for the 8x8 scikit-learn digits and their 16x16 upsampling, sized to train
    # in minutes on one CPU core: 32 channels at 8x8, 64 at 4x4 and 2x2, one block per level.
    "digits8": dict(
        image_size=8, in_channels=1, model_channels=32, channel_mult=(1, 2, 2), num_res_blocks=1,
        attention_resolutions=(4,), num_head_channels=32, dropout=0.1,
    ),
    "digits16": dict(
        image_size=16, in_channels=1, model_channels=16, channel_mult=(1, 2, 4, 4),
        num_res_blocks=1, attention_resolutions=(8, 4), num_head_channels=32, dropout=0.1,
    ),
    # MNIST: 28 = 4 * 7 allows two halvings only, so three levels: 28, 14 and 7 pixels.
    "mnist28": dict(
        image_size=28, in_channels=1, model_channels=32, channel_mult=(1, 2, 2),
        num_res_blocks=2, attention_resolutions=(7,), num_head_channels=32, dropout=0.1,
    ),
    # The digits at MNIST's size on a CPU: the levels of mnist28 at half the width, one block per level
    # (about a twelfth of mnist28's FLOPs).
    "digits28": dict(
        image_size=28, in_channels=1, model_channels=16, channel_mult=(1, 2, 2),
        num_res_blocks=1, attention_resolutions=(7,), num_head_channels=32, dropout=0.1,
    ),
    # CIFAR-10 in minutes on one GPU (the course's GPU preset, not a paper's model): Improved DDPM's levels
    # (32, 16, 8, 4 pixels) and attention at 16 and the middle, at a quarter of its width and 2 blocks per level
    # instead of 3 (2.7M parameters against 52M).
    "cifar10_small": dict(
        image_size=32, in_channels=3, model_channels=32, channel_mult=(1, 2, 2, 2), num_res_blocks=2,
        attention_resolutions=(16,), num_head_channels=32, dropout=0.1,
    ),
    # Noisy-digit classifiers for classifier guidance (num_classes = number of logits).
    "digits8_classifier": dict(
        image_size=8, in_channels=1, model_channels=32, channel_mult=(1, 2, 2), num_res_blocks=1,
        attention_resolutions=(4,), num_head_channels=32, num_classes=10,
    ),
    "digits16_classifier": dict(
        image_size=16, in_channels=1, model_channels=16, channel_mult=(1, 2, 4, 4),
        num_res_blocks=1, attention_resolutions=(8, 4), num_head_channels=32, num_classes=10,
    ),
    # Improved DDPM, CIFAR-10 (Nichol & Dhariwal 2021): strided-conv resampling, 4 heads.
    "cifar10": dict(
        image_size=32, in_channels=3, model_channels=128, channel_mult=(1, 2, 2, 2),
        num_res_blocks=3, attention_resolutions=(16, 8), dropout=0.3, num_heads=4,
        resblock_updown=False, learn_sigma=True,
    ),
    # ADM, class-conditional ImageNet 64x64 (Dhariwal & Nichol 2021, table 14).
    "imagenet64": dict(
        image_size=64, in_channels=3, model_channels=192, channel_mult=(1, 2, 3, 4),
        num_res_blocks=3, attention_resolutions=(32, 16, 8), num_head_channels=64,
        dropout=0.1, num_classes=1000, learn_sigma=True,
    ),
}


class ArchitectureConfig:
    """Dict round trip of the architecture dataclasses (:class:`UNetConfig`, :class:`~ddpm_lite.models.MLPConfig`):
    what checkpoints store and ``--set model.KEY=VALUE`` edits."""

    def to_dict(self) -> dict[str, Any]:
        """The fields as plain JSON-able types (tuples become lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]):
        """Inverse of :meth:`to_dict`; unknown keys raise ValueError naming the known ones."""
        if not isinstance(d, dict):
            raise ValueError(f"a {cls.__name__} is read from a dict, got {type(d).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        extra = sorted(set(d) - known)
        if extra:
            raise ValueError(f"unknown {cls.__name__} fields {extra}; known fields: {sorted(known)}")
        return cls(**d)


@dataclass
class UNetConfig(ArchitectureConfig):
    """Architecture of :class:`UNetModel` and :class:`EncoderUNetModel`.

    Attributes:
        image_size: height = width of the images, in pixels.
        in_channels: image channels (1 for digits, 3 for RGB).
        model_channels: width of the first level; level ``i`` has
            ``model_channels * channel_mult[i]`` channels.
        out_channels: predicted channels; ``None`` means ``in_channels``.
        num_res_blocks: residual blocks per level.
        attention_resolutions: feature-map sizes (pixels) that get self-attention
            after each residual block. The middle block always has attention.
        dropout: dropout rate inside the residual blocks.
        channel_mult: width multiplier of each level; each level but the last halves
            the resolution, so ``image_size`` must divide by ``2 ** (len(channel_mult) - 1)``.
        num_classes: ``None`` for an unconditional U-Net; else the number of classes of
            a class-conditional U-Net, or the number of logits of the classifier.
        num_heads: attention heads, used when ``num_head_channels == -1``.
        num_head_channels: channels per head (ADM uses 64); ``-1`` means use ``num_heads``.
        use_scale_shift_norm: adaptive GroupNorm ``(1 + scale) * GN(h) + shift`` with
            scale and shift from the embedding (ADM); else the embedding is added.
        resblock_updown: BigGAN-style residual blocks for up/downsampling (ADM);
            else nearest/strided convolutions (DDPM, Improved DDPM).
        learn_sigma: also predict the variance interpolation ``v`` of Improved DDPM,
            which doubles the output channels.
    """

    image_size: int = 32
    in_channels: int = 3
    model_channels: int = 128
    out_channels: int | None = None
    num_res_blocks: int = 2
    attention_resolutions: tuple[int, ...] = (16, 8)
    dropout: float = 0.0
    channel_mult: tuple[int, ...] = (1, 2, 2, 2)
    num_classes: int | None = None
    num_heads: int = 4
    num_head_channels: int = -1
    use_scale_shift_norm: bool = True
    resblock_updown: bool = True
    learn_sigma: bool = False

    def __post_init__(self) -> None:
        from ..configs import check_field_types

        check_field_types(self, "model")
        self.channel_mult = tuple(self.channel_mult)
        self.attention_resolutions = tuple(self.attention_resolutions)
        self.validate()

    @property
    def resolutions(self) -> tuple[int, ...]:
        """Feature-map size (pixels) of each level, e.g. (28, 14, 7)."""
        return tuple(self.image_size >> level for level in range(len(self.channel_mult)))

    @property
    def time_embed_dim(self) -> int:
        """Width of the timestep (and class) embedding: 4 * model_channels."""
        return 4 * self.model_channels

    @property
    def model_out_channels(self) -> int:
        """Channels the U-Net outputs: twice ``out_channels`` when learning sigma."""
        return (self.out_channels or self.in_channels) * (2 if self.learn_sigma else 1)

    def heads(self, channels: int) -> int:
        """Number of attention heads of a layer with ``channels`` channels."""
        width = self.num_head_channels
        if width == -1:
            if channels % self.num_heads:
                raise ValueError(f"{channels} channels cannot be split into num_heads={self.num_heads}")
            return self.num_heads
        if channels % width:
            raise ValueError(f"{channels} channels cannot be split into heads of num_head_channels={width}")
        return channels // width

    def validate(self) -> None:
        """Raise ValueError when the fields do not describe a buildable U-Net."""
        for name in ("image_size", "in_channels", "model_channels", "num_res_blocks"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not self.channel_mult or min(self.channel_mult) < 1:
            raise ValueError(f"channel_mult must be non-empty positive ints, got {self.channel_mult}")
        if self.num_classes is not None and self.num_classes < 1:
            raise ValueError(f"num_classes must be None or >= 1, got {self.num_classes}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        self._check_image_size()
        unknown = sorted(set(self.attention_resolutions) - set(self.resolutions))
        if unknown:
            raise ValueError(
                f"attention_resolutions {unknown} are not feature-map sizes of this U-Net; "
                f"its levels are {self.resolutions} pixels"
            )
        for res in {*self.attention_resolutions, self.resolutions[-1]}:
            self.heads(self.model_channels * self.channel_mult[self.resolutions.index(res)])

    def _check_image_size(self) -> None:
        halvings = len(self.channel_mult) - 1
        factor = 2**halvings
        if self.image_size % factor == 0:
            return
        below = self.image_size // factor * factor
        sizes = [s for s in (below, below + factor) if s > 0]
        max_levels = (self.image_size & -self.image_size).bit_length()  # 1 + even halvings
        raise ValueError(
            f"image_size={self.image_size} cannot be halved {halvings} times "
            f"(channel_mult has {len(self.channel_mult)} levels): use a multiple of {factor} "
            f"such as {' or '.join(map(str, sizes))}, or give channel_mult at most "
            f"{max_levels} levels for this size"
        )

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> UNetConfig:
        """A named configuration, optionally with some fields changed.

        Known names: digits8, digits16, mnist28, digits28, cifar10_small,
        digits8_classifier, digits16_classifier, cifar10, imagenet64. Example:
        ``UNetConfig.preset("digits8", learn_sigma=True, num_classes=10)``.
        """
        if name not in _PRESETS:
            raise ValueError(f"unknown preset {name!r}; known presets: {', '.join(_PRESETS)}")
        return cls.from_dict({**_PRESETS[name], **overrides})

    @staticmethod
    def preset_names() -> list[str]:
        """Names accepted by :meth:`preset`."""
        return list(_PRESETS)
