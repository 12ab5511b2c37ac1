"""Sampling quality and speed against the number of steps (notebook 10; Improved DDPM section 4, DDIM).

A model trained on a chain of T steps samples with any K <= T of them by respacing (:func:`ddpm_lite.respace`),
ancestrally (DDPM Algorithm 2 with the learned variances) or with DDIM (Song et al. 2021, eq. 12; ``eta`` = 0 is
deterministic, 1 has the DDPM posterior's variance). :func:`sampling_sweep` runs each sampler at each step count
on the same starting noise, times it, and scores the samples with FID against reference statistics::

    sweep = sampling_sweep(model, diffusion, steps=[10, 25, 50, 100], n=256, extractor=net, reference=ref)
    sweep.get("DDIM η=0", 25).fid, sweep.table()

The timings are wall-clock seconds on the machine that ran the sweep (what "expensive" means there).
``"DPM-Solver++(2M)"`` (Lu et al. 2022, arXiv 2211.01095; :mod:`ddpm_lite.dpm_solver`) solves the probability-flow
ODE that DDIM with ``eta`` = 0 discretises, to second order, at one network call per step.

DDIM inversion (notebook 10): :func:`ddim_encode` runs the probability-flow ODE from data to the latent x_T
(:meth:`~ddpm_lite.gaussian_diffusion.GaussianDiffusion.ddim_reverse_sample_loop`), :func:`ddim_decode` back
(``eta`` = 0), on the same ``steps`` respaced steps; :func:`round_trip_rms` measures how well the two invert each
other, and :func:`slerp` mixes two latents along the great circle between them (their norm kept), where a linear mix
would shrink it.
"""
from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np
import torch

from ..runtime import eval_mode, model_device
from ..sampling import generate

__all__ = ["SAMPLERS", "SweepPoint", "Sweep", "sample_with", "time_sampler", "sampling_sweep", "slerp", "lerp",
           "ddim_encode", "ddim_decode", "round_trip_rms"]

# name -> the keyword arguments of ddpm_lite.sampling.generate that make that sampler
SAMPLERS: dict[str, dict] = {
    "ancestral": {"ddim": False},
    "DDIM η=0": {"ddim": True, "eta": 0.0},
    "DDIM η=1": {"ddim": True, "eta": 1.0},
    "DPM-Solver++(2M)": {"sampler": "dpm++2m"},
}


def _sampler_kwargs(sampler: str | Mapping) -> dict:
    if isinstance(sampler, Mapping):
        return dict(sampler)
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}: choose one of {list(SAMPLERS)}")
    return dict(SAMPLERS[sampler])


def sample_with(model, diffusion, n: int, steps: int, sampler: str = "ancestral", seed: int = 0,
                shape: tuple[int, ...] | None = None, device=None) -> torch.Tensor:
    """``n`` samples (on the CPU) with ``steps`` respaced steps of ``sampler`` (a name of :data:`SAMPLERS`), from
    the noise of ``seed``: every sampler and step count starts from the same x_T. ``shape`` is one sample's shape
    (default: the model's ``config.in_channels, image_size, image_size``)."""
    if shape is None:
        cfg = getattr(model, "config", None)
        if cfg is None:
            raise ValueError("pass shape=(C, H, W): the model has no config to read the image shape from")
        shape = (cfg.in_channels, cfg.image_size, cfg.image_size)
    generator = torch.Generator().manual_seed(seed)
    steps = min(int(steps), diffusion.num_timesteps)
    out = generate(model, diffusion, (n, *shape), steps=steps, generator=generator, device=device,
                   **_sampler_kwargs(sampler))
    return out.float().cpu()


def time_sampler(model, diffusion, n: int, steps: int, sampler: str = "ancestral", seed: int = 0,
                 shape: tuple[int, ...] | None = None, device=None) -> tuple[torch.Tensor, float]:
    """(samples, seconds): :func:`sample_with`, timed with ``time.perf_counter`` (CUDA synchronised)."""
    def sync():
        if torch.cuda.is_available():
            torch.cuda.synchronize()

    sync()
    start = time.perf_counter()
    samples = sample_with(model, diffusion, n, steps, sampler, seed, shape, device)
    sync()
    return samples, time.perf_counter() - start


@dataclass
class SweepPoint:
    """One sampler at one step count: its samples, wall-clock seconds and FID (NaN when not scored)."""
    sampler: str
    steps: int
    samples: torch.Tensor = field(repr=False)
    seconds: float
    fid: float = float("nan")

    @property
    def num_samples(self) -> int:
        return len(self.samples)

    @property
    def samples_per_second(self) -> float:
        return self.num_samples / self.seconds

    @property
    def network_calls(self) -> int:
        """Forward passes of the network per sample: one per step."""
        return self.steps


@dataclass
class Sweep:
    """The points of :func:`sampling_sweep`, with ``real_fids``: the FIDs of a few random draws of as many real
    images as samples. Their mean :attr:`real_fid` is what a perfect sampler would score at this sample size, their
    spread :attr:`real_fid_std` how much FID moves from draw to draw alone (NaN when not measured)."""
    points: list[SweepPoint]
    num_timesteps: int
    real_fids: list[float] = field(default_factory=list)

    @property
    def real_fid(self) -> float:
        return float(np.mean(self.real_fids)) if len(self.real_fids) else float("nan")

    @property
    def real_fid_std(self) -> float:
        return float(np.std(self.real_fids, ddof=1)) if len(self.real_fids) > 1 else float("nan")

    @property
    def samplers(self) -> list[str]:
        return list(dict.fromkeys(p.sampler for p in self.points))

    def steps_of(self, sampler: str) -> list[int]:
        return sorted(p.steps for p in self.points if p.sampler == sampler)

    @property
    def steps(self) -> list[int]:
        return sorted({p.steps for p in self.points})

    def get(self, sampler: str, steps: int) -> SweepPoint:
        for p in self.points:
            if p.sampler == sampler and p.steps == steps:
                return p
        raise KeyError(f"no point for sampler {sampler!r} at {steps} steps; have {self.steps_of(sampler)}")

    def has(self, sampler: str, steps: int) -> bool:
        return any(p.sampler == sampler and p.steps == steps for p in self.points)

    def merged(self, other: Sweep) -> Sweep:
        """This sweep with the points of ``other`` (another sampler run on the same noise, samples and reference)
        added; the real-data floor stays this sweep's. Both must be of the same chain."""
        if other.num_timesteps != self.num_timesteps:
            raise ValueError(f"cannot merge a sweep of {other.num_timesteps} timesteps into one of "
                             f"{self.num_timesteps}")
        clash = [(p.sampler, p.steps) for p in other.points if self.has(p.sampler, p.steps)]
        if clash:
            raise ValueError(f"both sweeps have points for {clash}")
        return Sweep(self.points + other.points, self.num_timesteps, list(self.real_fids))

    def table(self) -> str:
        """A plain-text table: sampler, steps, FID, seconds, samples/s."""
        w = max([12] + [len(s) + 2 for s in self.samplers])
        rows = [f"{'sampler':<{w}}{'steps':>7}{'FID':>9}{'seconds':>10}{'samples/s':>11}"]
        for p in sorted(self.points, key=lambda p: (self.samplers.index(p.sampler), p.steps)):
            rows.append(f"{p.sampler:<{w}}{p.steps:>7}{p.fid:>9.2f}{p.seconds:>10.2f}{p.samples_per_second:>11.1f}")
        if not np.isnan(self.real_fid):
            spread = f" ± {self.real_fid_std:.2f} (mean ± std of {len(self.real_fids)} draws)" \
                if len(self.real_fids) > 1 else ""
            rows.append(f"{'real data':<{w}}{'':>7}{self.real_fid:>9.2f}{spread}")
        return "\n".join(rows)


def sampling_sweep(model, diffusion, steps: Iterable[int], n: int, samplers: Iterable[str] | None = None,
                   extractor=None, reference=None, real_images=None, seed: int = 0,
                   shape: tuple[int, ...] | None = None, device=None, skip: Iterable[tuple[str, int]] = (),
                   real_repeats: int = 5, progress: bool = False) -> Sweep:
    """Run every sampler (default: all of :data:`SAMPLERS`) at every step count on ``n`` samples from the same
    noise, timing each run; with an ``extractor`` and ``reference`` (images or ``(mu, sigma)``, see
    :func:`ddpm_lite.metrics.compute_fid`) score each with FID, and ``real_repeats`` random draws of ``n`` of the
    ``real_images`` (at least ``n``) with theirs: the floor at this sample size, and its noise. ``skip`` lists
    (sampler, steps) pairs not to run. One small warm-up call comes first so that the first timing does not pay
    for it."""
    from ..metrics import compute_fid

    samplers = list(samplers) if samplers is not None else list(SAMPLERS)
    steps = sorted({min(int(s), diffusion.num_timesteps) for s in steps})
    skip = {(s, int(k)) for s, k in skip}
    sample_with(model, diffusion, 2, 2, samplers[0], seed, shape, device)  # warm-up
    points = []
    todo = [(s, k) for s in samplers for k in steps if (s, k) not in skip]
    for i, (sampler, k) in enumerate(todo):
        samples, seconds = time_sampler(model, diffusion, n, k, sampler, seed, shape, device)
        fid = compute_fid(samples, reference, extractor) if extractor is not None and reference is not None \
            else float("nan")
        points.append(SweepPoint(sampler, k, samples, seconds, fid))
        if progress:
            print(f"[{i + 1}/{len(todo)}] {sampler:<10} {k:>5} steps: {seconds:7.2f} s, FID {fid:.2f}", flush=True)
    real_fids = []
    if real_images is not None and extractor is not None and reference is not None:
        real = torch.as_tensor(real_images)
        if len(real) < n:
            raise ValueError(f"need at least n = {n} real images for the floor, got {len(real)}")
        g = torch.Generator().manual_seed(seed)
        for _ in range(real_repeats):
            real_fids.append(compute_fid(real[torch.randperm(len(real), generator=g)[:n]], reference, extractor))
    return Sweep(points, diffusion.num_timesteps, real_fids)


# ---------------------------------------------------------------------------------------------- DDIM inversion
def _batch_dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a.flatten(1) * b.flatten(1)).sum(1)


def slerp(a: torch.Tensor, b: torch.Tensor, w) -> torch.Tensor:
    """Spherical interpolation between batches ``a`` and ``b`` (one pair per row) with weight ``w`` (a number, or
    one per row; 0 gives ``a``, 1 gives ``b``):

        slerp(a, b, w) = sin((1 - w) Ω) / sin Ω · a + sin(w Ω) / sin Ω · b,   cos Ω = <a, b> / (|a| |b|),

    the point a fraction ``w`` of the way along the great circle from ``a`` to ``b``: for ``a`` and ``b`` of equal
    norm its norm is theirs at every ``w``, where the linear mix (:func:`lerp`) shrinks it (to |a| cos(Ω/2) at
    w = 1/2). Rows with Ω below 1e-4 fall back to the linear mix (the same point to float precision)."""
    a, b = torch.as_tensor(a), torch.as_tensor(b)
    if a.shape != b.shape or a.dim() < 1:
        raise ValueError(f"slerp needs two batches of one shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    w = torch.as_tensor(w, dtype=a.dtype, device=a.device).reshape(-1)
    if not torch.isfinite(w).all():
        raise ValueError(f"the weight w must be finite, got {w.tolist()}")
    cos = _batch_dot(a, b) / (a.flatten(1).norm(dim=1) * b.flatten(1).norm(dim=1))
    omega = torch.arccos(cos.clamp(-1, 1))
    small = omega < 1e-4
    sin = torch.sin(omega).where(~small, torch.ones_like(omega))
    ca = torch.where(small, 1 - w, torch.sin((1 - w) * omega) / sin)
    cb = torch.where(small, w, torch.sin(w * omega) / sin)
    shape = (-1,) + (1,) * (a.dim() - 1)
    return ca.reshape(shape) * a + cb.reshape(shape) * b


def lerp(a: torch.Tensor, b: torch.Tensor, w) -> torch.Tensor:
    """The linear mix (1 - w) a + w b (``w`` a number or one per row), for comparison with :func:`slerp`."""
    a, b = torch.as_tensor(a), torch.as_tensor(b)
    w = torch.as_tensor(w, dtype=a.dtype, device=a.device).reshape((-1,) + (1,) * (a.dim() - 1))
    return (1 - w) * a + w * b


def _chain(diffusion, steps: int):
    from ..respace import respace

    steps = int(steps)
    if not 1 <= steps <= diffusion.num_timesteps:
        raise ValueError(f"steps must lie in [1, {diffusion.num_timesteps}], got {steps}")
    return diffusion if steps == diffusion.num_timesteps else respace(diffusion, steps)


def ddim_encode(model, diffusion, x0: torch.Tensor, steps: int, device=None, progress: bool = False) -> torch.Tensor:
    """DDIM inversion: the latents x_T of the images ``x0`` (in [-1, 1]), by the probability-flow ODE run from the
    data to t = T on ``steps`` evenly respaced steps (``steps`` network calls); on the CPU."""
    device = model_device(model) if device is None else device
    with eval_mode(model):
        x_T = _chain(diffusion, steps).ddim_reverse_sample_loop(model, x0.float().to(device), progress=progress)
    return x_T.float().cpu()


def ddim_decode(model, diffusion, x_T: torch.Tensor, steps: int, device=None, progress: bool = False
                ) -> torch.Tensor:
    """DDIM with ``eta`` = 0 from the latents ``x_T`` on the same ``steps`` respaced steps as :func:`ddim_encode`
    (``steps`` network calls): the images, on the CPU."""
    device = model_device(model) if device is None else device
    x_T = x_T.float().to(device)
    with eval_mode(model):
        x0 = _chain(diffusion, steps).ddim_sample_loop(model, x_T.shape, noise=x_T, eta=0.0, progress=progress)
    return x0.float().cpu()


def round_trip_rms(model, diffusion, x0: torch.Tensor, steps: Iterable[int], device=None, progress: bool = False
                   ) -> dict[int, float]:
    """{steps: RMS of decode(encode(x0)) - x0 over all pixels of all images}, each on ``steps`` respaced steps
    (2 ``steps`` network calls per image); in the units of the data, [-1, 1] (2/255 is one grey level)."""
    out = {}
    for k in steps:
        back = ddim_decode(model, diffusion, ddim_encode(model, diffusion, x0, k, device), k, device)
        out[int(k)] = float((back - x0.float().cpu()).pow(2).mean().sqrt())
        if progress:
            print(f"{int(k):>5} steps each way: RMS {out[int(k)]:.4f}", flush=True)
    return out
