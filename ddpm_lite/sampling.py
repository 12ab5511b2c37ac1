"""Drawing samples from a trained denoiser: one call for every sampler of the course.

:func:`generate` starts from Gaussian noise x_T and runs the reverse chain of a
:class:`~ddpm_lite.GaussianDiffusion`: all T steps or a respaced subset (Improved DDPM section 4), ancestral
(DDPM Algorithm 2) or DDIM (Song et al. 2021, eq. 12), optionally guided (Dhariwal & Nichol 2021, Algorithm 1).

>>> from ddpm_lite.pretrained import load_pretrained
>>> model, diffusion, config = load_pretrained("digits")
>>> images = generate(model, diffusion, (64, 1, 8, 8), steps=50)
"""
from __future__ import annotations

import torch

from .gaussian_diffusion import GaussianDiffusion, check_eta
from .respace import respace, space_timesteps
from .runtime import model_device


@torch.no_grad()
def generate(model, diffusion: GaussianDiffusion, shape, *, steps: int | None = None, ddim: bool = False,
             eta: float = 0.0, y: torch.Tensor | None = None, generator: torch.Generator | None = None,
             device=None, progress: bool = False, clip_denoised: bool = True, cond_fn=None) -> torch.Tensor:
    """Samples of ``shape`` from ``model`` (put in eval mode for the call), with ``steps`` respaced steps
    (Improved DDPM section 4; all of them when None), ancestral or DDIM (``ddim=True``, ``eta``). ``cond_fn``
    guides every step (e.g. :func:`~ddpm_lite.guidance.classifier_cond_fn`; it receives the labels ``y``).
    ``eta`` (DDIM only) must be a finite number in [0, 1] (ValueError otherwise), checked before anything runs."""
    if ddim:
        eta = check_eta(eta)
    elif eta != 0:
        raise ValueError(f"eta={eta} is DDIM's noise level: pass ddim=True with it (ancestral sampling has no eta)")
    if steps is not None and not 1 <= steps <= diffusion.num_timesteps:
        raise ValueError(f"steps must lie in [1, {diffusion.num_timesteps}], got {steps}")
    if steps is not None and steps < diffusion.num_timesteps:
        try:
            kept = space_timesteps(diffusion.num_timesteps, f"ddim{steps}") if ddim else None
        except ValueError:
            kept = None
        diffusion = respace(diffusion, kept if kept is not None else space_timesteps(diffusion.num_timesteps, [steps]))
    if device is None:
        device = model_device(model)
    kwargs = {"y": y.to(device)} if y is not None else None
    noise = torch.randn(*shape, generator=generator, device=generator.device if generator is not None else device)
    was_training = model.training
    model.eval()
    try:
        loop = diffusion.ddim_sample_loop if ddim else diffusion.p_sample_loop
        extra = {"eta": eta} if ddim else {}
        same_device = generator is not None and generator.device.type == torch.device(device).type
        gen = generator if same_device else None
        return loop(model, shape, noise=noise.to(device), clip_denoised=clip_denoised, model_kwargs=kwargs,
                    device=device, progress=progress, generator=gen, cond_fn=cond_fn, **extra)
    finally:
        model.train(was_training)
