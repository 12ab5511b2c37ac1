"""Drawing samples from a trained denoiser: one call for every sampler of the course.

:func:`generate` starts from Gaussian noise x_T and runs the reverse chain of a
:class:`~ddpm_lite.GaussianDiffusion`: all T steps or a respaced subset (Improved DDPM section 4), ancestral
(DDPM Algorithm 2) or DDIM (Song et al. 2021, eq. 12), optionally guided (Dhariwal & Nichol 2021, Algorithm 1);
or solves the probability-flow ODE in a few steps with DPM-Solver++(2M) (Lu et al. 2022,
:mod:`ddpm_lite.dpm_solver`).

>>> from ddpm_lite.pretrained import load_pretrained
>>> model, diffusion, config = load_pretrained("digits")
>>> images = generate(model, diffusion, (64, 1, 8, 8), steps=50)
>>> images = generate(model, diffusion, (64, 1, 8, 8), steps=10, sampler="dpm++2m")
"""
from __future__ import annotations

import torch

from .dpm_solver import dpm_solver_sample_loop
from .gaussian_diffusion import GaussianDiffusion, check_eta
from .respace import respace, space_timesteps
from .runtime import eval_mode, model_device

SAMPLERS = ("ancestral", "ddim", "dpm++2m")


@torch.no_grad()
def generate(model, diffusion: GaussianDiffusion, shape, *, steps: int | None = None, sampler: str | None = None,
             ddim: bool = False, eta: float = 0.0, y: torch.Tensor | None = None,
             generator: torch.Generator | None = None, device=None, progress: bool = False,
             clip_denoised: bool = True, cond_fn=None) -> torch.Tensor:
    """Samples of ``shape`` from ``model`` (put in eval mode for the call) with ``steps`` network calls (all T
    when None).

    ``sampler``: ``"ancestral"`` (the default; ``steps`` respaced steps, Improved DDPM section 4), ``"ddim"``
    (the same as ``ddim=True``; ``eta``) or ``"dpm++2m"`` (DPM-Solver++(2M): ``steps`` solver steps between
    timesteps of the original chain evenly spaced in t, from T-1 to 0; see
    :func:`~ddpm_lite.dpm_solver.dpm_solver_sample_loop`, which also takes the solver's options). ``cond_fn``
    guides every step (e.g. :func:`~ddpm_lite.guidance.classifier_cond_fn`; it receives the labels ``y``).
    ``eta`` (DDIM only) must be a finite number in [0, 1] (ValueError otherwise), checked before anything runs."""
    if sampler is None:
        sampler = "ddim" if ddim else "ancestral"
    elif sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}: choose one of {list(SAMPLERS)}")
    elif ddim and sampler != "ddim":
        raise ValueError(f"ddim=True asks for DDIM but sampler={sampler!r}: pass one of them")
    if sampler == "ddim":
        eta = check_eta(eta)
    elif eta != 0:
        raise ValueError(f"eta={eta} is DDIM's noise level: pass ddim=True with it ({sampler} sampling has no eta)")
    if steps is not None and not 1 <= steps <= diffusion.num_timesteps:
        raise ValueError(f"steps must lie in [1, {diffusion.num_timesteps}], got {steps}")
    if sampler != "dpm++2m" and steps is not None and steps < diffusion.num_timesteps:
        try:
            kept = space_timesteps(diffusion.num_timesteps, f"ddim{steps}") if sampler == "ddim" else None
        except ValueError:
            kept = None
        diffusion = respace(diffusion, kept if kept is not None else space_timesteps(diffusion.num_timesteps, [steps]))
    if device is None:
        device = model_device(model)
    kwargs = {"y": y.to(device)} if y is not None else None
    noise = torch.randn(*shape, generator=generator, device=generator.device if generator is not None else device)
    same_device = generator is not None and generator.device.type == torch.device(device).type
    gen = generator if same_device else None
    common = dict(noise=noise.to(device), clip_denoised=clip_denoised, model_kwargs=kwargs, device=device,
                  progress=progress, cond_fn=cond_fn)
    with eval_mode(model):
        if sampler == "dpm++2m":
            return dpm_solver_sample_loop(diffusion, model, shape, steps, **common)
        if sampler == "ddim":
            return diffusion.ddim_sample_loop(model, shape, generator=gen, eta=eta, **common)
        return diffusion.p_sample_loop(model, shape, generator=gen, **common)
