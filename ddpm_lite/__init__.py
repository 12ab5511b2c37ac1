"""ddpm_lite: the math of DDPM, Improved DDPM and "Diffusion Models Beat GANs", small and tested.

The library (what a user of the papers' code needs): :mod:`~ddpm_lite.schedules`, :mod:`~ddpm_lite.losses`,
:mod:`~ddpm_lite.gaussian_diffusion`, :mod:`~ddpm_lite.respace`, :mod:`~ddpm_lite.resample`,
:mod:`~ddpm_lite.guidance`, :mod:`~ddpm_lite.sampling`, :mod:`~ddpm_lite.models`, :mod:`~ddpm_lite.metrics`,
:mod:`~ddpm_lite.configs`, :mod:`~ddpm_lite.train`, :mod:`~ddpm_lite.checkpoint`, :mod:`~ddpm_lite.data`,
:mod:`~ddpm_lite.images`, :mod:`~ddpm_lite.pretrained`, :mod:`~ddpm_lite.runtime`, :mod:`~ddpm_lite.cli`.
What only the notebooks use (figures, widgets, exercises, teaching toys) is in :mod:`ddpm_lite.course`.

>>> from ddpm_lite import GaussianDiffusion, get_betas
>>> diffusion = GaussianDiffusion(get_betas("cosine", 1000), var_type="learned_range")
"""
from . import _moved
from .gaussian_diffusion import GaussianDiffusion
from .resample import LossSecondMomentResampler, UniformSampler, create_named_schedule_sampler
from .respace import SpacedDiffusion, respace, space_timesteps
from .schedules import get_betas

__all__ = ["GaussianDiffusion", "SpacedDiffusion", "get_betas", "space_timesteps", "respace", "UniformSampler",
           "LossSecondMomentResampler", "create_named_schedule_sampler"]
__version__ = "0.1.0"

_moved.install()


def __getattr__(name: str):
    """``ddpm_lite.plotting`` and the other old names of the course modules, with a warning."""
    if name in _moved.MOVED:
        return _moved.resolve(name)
    raise AttributeError(f"module 'ddpm_lite' has no attribute {name!r}")
