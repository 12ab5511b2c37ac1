"""Denoising networks and the noisy-image classifier.

* :class:`MLPDenoiser` -- 2-D toy data.
* :class:`UNetModel` -- the ADM U-Net (Dhariwal & Nichol 2021), configured by
  :class:`UNetConfig` (``UNetConfig.preset("digits8")`` etc.).
* :class:`EncoderUNetModel` (alias ``NoisyClassifier``) -- classifier for guidance.
"""

from .classifier import AttentionPool2d, EncoderUNetModel, NoisyClassifier
from .config import UNetConfig
from .mlp import MLPConfig, MLPDenoiser
from .nn import count_parameters, group_count, normalization, timestep_embedding, zero_module
from .unet import AttentionBlock, ResBlock, UNetModel

__all__ = [
    "AttentionBlock",
    "AttentionPool2d",
    "EncoderUNetModel",
    "MLPConfig",
    "MLPDenoiser",
    "NoisyClassifier",
    "ResBlock",
    "UNetConfig",
    "UNetModel",
    "count_parameters",
    "group_count",
    "normalization",
    "timestep_embedding",
    "zero_module",
]
