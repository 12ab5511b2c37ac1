"""ddpm_lite: the math of DDPM, Improved DDPM and "Diffusion Models Beat GANs", small and tested.

>>> from ddpm_lite import GaussianDiffusion, get_betas
>>> diffusion = GaussianDiffusion(get_betas("cosine", 1000), var_type="learned_range")
"""
from .gaussian_diffusion import GaussianDiffusion
from .resample import LossSecondMomentResampler, UniformSampler, create_named_schedule_sampler
from .respace import SpacedDiffusion, respace, space_timesteps
from .schedules import get_betas

__all__ = ["GaussianDiffusion", "SpacedDiffusion", "get_betas", "space_timesteps", "respace", "UniformSampler",
           "LossSecondMomentResampler", "create_named_schedule_sampler"]
__version__ = "0.1.0"
