"""Sampling quality and speed against the number of steps (notebook 10; Improved DDPM section 4, DDIM).

A model trained on a chain of T steps samples with any K <= T of them by respacing (:func:`ddpm_lite.respace`),
ancestrally (DDPM Algorithm 2 with the learned variances) or with DDIM (Song et al. 2021, eq. 12; ``eta`` = 0 is
deterministic, 1 has the DDPM posterior's variance). :func:`sampling_sweep` runs each sampler at each step count
on the same starting noise, times it, and scores the samples with FID against reference statistics::

    sweep = sampling_sweep(model, diffusion, steps=[10, 25, 50, 100], n=256, extractor=net, reference=ref)
    sweep.get("DDIM η=0", 25).fid, sweep.table()

The timings are wall-clock seconds on the machine that ran the sweep (what "expensive" means there).
"""
from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np
import torch

from ..sampling import generate

__all__ = ["SAMPLERS", "SweepPoint", "Sweep", "sample_with", "time_sampler", "sampling_sweep"]

# name -> the keyword arguments of ddpm_lite.sampling.generate that make that sampler
SAMPLERS: dict[str, dict] = {
    "ancestral": {"ddim": False},
    "DDIM η=0": {"ddim": True, "eta": 0.0},
    "DDIM η=1": {"ddim": True, "eta": 1.0},
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

    def table(self) -> str:
        """A plain-text table: sampler, steps, FID, seconds, samples/s."""
        rows = [f"{'sampler':<12}{'steps':>7}{'FID':>9}{'seconds':>10}{'samples/s':>11}"]
        for p in sorted(self.points, key=lambda p: (self.samplers.index(p.sampler), p.steps)):
            rows.append(f"{p.sampler:<12}{p.steps:>7}{p.fid:>9.2f}{p.seconds:>10.2f}{p.samples_per_second:>11.1f}")
        if not np.isnan(self.real_fid):
            spread = f" ± {self.real_fid_std:.2f} (mean ± std of {len(self.real_fids)} draws)" \
                if len(self.real_fids) > 1 else ""
            rows.append(f"{'real data':<12}{'':>7}{self.real_fid:>9.2f}{spread}")
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
