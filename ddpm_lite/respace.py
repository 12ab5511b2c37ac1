"""Sampling with fewer steps by respacing (Improved DDPM section 4).

Keep a subset S of the original timesteps and recompute the betas from the kept alpha_bar values:
beta_{S_i} = 1 - alpha_bar_{S_i} / alpha_bar_{S_{i-1}}. The respaced diffusion wraps a model trained on the
full chain, passing it the original timestep of each kept step.
"""
from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch

from .gaussian_diffusion import GaussianDiffusion

ACCEPTED_FORMS = ("accepted forms: 'ddimN' (N steps at a fixed stride, N >= 1, e.g. 'ddim50'); an integer N >= 1 "
                  "(N evenly spaced steps); counts per equal section as a comma-separated string ('10,15,20') or "
                  "a list ([10, 15, 20]), each count between 1 and its section's length")


def _spec_error(section_counts, num_timesteps: int, problem: str) -> ValueError:
    return ValueError(f"cannot respace {num_timesteps} timesteps with {section_counts!r}: {problem}; {ACCEPTED_FORMS}")


def _count(value, spec, num_timesteps: int) -> int:
    if isinstance(value, str):
        text = value.strip()
        if not text.lstrip("+-").isdigit():
            raise _spec_error(spec, num_timesteps, f"{value!r} is not an integer count")
        value = int(text)
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise _spec_error(spec, num_timesteps, f"{value!r} is not an integer count")
    return int(value)


def space_timesteps(num_timesteps: int, section_counts) -> set[int]:
    """The timesteps to keep from a chain of ``num_timesteps``.

    ``section_counts`` is either ``"ddimN"`` (a fixed stride, as in DDIM, giving exactly N steps), or counts per
    section: an int, a comma-separated string ``"10,15,20"`` or a list ``[10, 15, 20]`` splits the chain into
    that many equal sections and takes evenly spaced steps within each (the first and last step of a section
    included). ``space_timesteps(1000, [10, 15, 20])`` keeps 10 steps from the first third, 15 from the second...
    Anything else (an empty spec, a count that is not a positive integer or exceeds its section) raises one
    ValueError listing the accepted forms.
    """
    if isinstance(num_timesteps, bool) or not isinstance(num_timesteps, (int, np.integer)) or num_timesteps < 1:
        raise ValueError(f"num_timesteps must be a positive integer, got {num_timesteps!r}")
    spec = section_counts
    if isinstance(section_counts, str) and section_counts.strip().startswith("ddim"):
        desired = _count(section_counts.strip()[len("ddim"):], spec, num_timesteps)
        if not 1 <= desired <= num_timesteps:
            raise _spec_error(spec, num_timesteps, f"ddimN needs 1 <= N <= {num_timesteps}, got N = {desired}")
        if desired == 1:
            return {0}
        for stride in range(1, num_timesteps):
            if len(range(0, num_timesteps, stride)) == desired:
                return set(range(0, num_timesteps, stride))
        raise ValueError(f"no integer stride gives exactly {desired} steps out of {num_timesteps}; "
                         f"try a count that divides {num_timesteps}, or counts per section like [{desired}]")
    if isinstance(section_counts, str):
        if not section_counts.strip():
            raise _spec_error(spec, num_timesteps, "the spec is empty")
        section_counts = [_count(c, spec, num_timesteps) for c in section_counts.split(",")]
    elif isinstance(section_counts, (int, np.integer)) and not isinstance(section_counts, bool):
        section_counts = [int(section_counts)]
    elif isinstance(section_counts, (list, tuple, range, np.ndarray)):
        section_counts = [_count(c.item() if isinstance(c, np.generic) else c, spec, num_timesteps)
                          for c in section_counts]
    else:
        raise _spec_error(spec, num_timesteps, f"a {type(section_counts).__name__} is not a spec")
    if not section_counts:
        raise _spec_error(spec, num_timesteps, "the list of counts is empty")
    if len(section_counts) > num_timesteps:
        raise _spec_error(spec, num_timesteps, f"{len(section_counts)} sections are more than the {num_timesteps} "
                                               "timesteps")
    size_per, extra = divmod(num_timesteps, len(section_counts))
    start, kept = 0, []
    for i, count in enumerate(section_counts):
        size = size_per + (1 if i < extra else 0)
        if not 1 <= count <= size:
            raise ValueError(f"cannot take {count} steps from a section of {size} steps (sections of "
                             f"{num_timesteps} steps split {len(section_counts)} ways); {ACCEPTED_FORMS}")
        stride = (size - 1) / (count - 1) if count > 1 else 1
        position = 0.0
        for _ in range(count):  # accumulate the fractional stride, rounding each position (as the reference code)
            kept.append(start + round(position))
            position += stride
        start += size
    return set(kept)


class _WrappedModel:
    """Calls the model with the original chain's timesteps: model(x, timestep_map[t])."""

    def __init__(self, model, timestep_map: torch.Tensor):
        self.model, self.timestep_map = model, timestep_map

    def __call__(self, x, t, **kwargs):
        return self.model(x, self.timestep_map.to(t.device)[t], **kwargs)


class SpacedDiffusion(GaussianDiffusion):
    """A diffusion over a subset of another's timesteps; build it with :func:`respace`."""

    def __init__(self, base: GaussianDiffusion, timesteps: Iterable[int]):
        kept = sorted({int(t) for t in timesteps})
        if not kept or kept[0] < 0 or kept[-1] >= base.num_timesteps:
            raise ValueError(f"timesteps to keep must be a non-empty subset of 0..{base.num_timesteps - 1}")
        alpha_bar = base.alphas_cumprod[kept]
        betas = 1.0 - alpha_bar / np.append(1.0, alpha_bar[:-1])
        super().__init__(betas, base.mean_type, base.var_type, base.loss_type)
        self.base_num_timesteps = base.num_timesteps
        self.timestep_map = torch.tensor(kept, dtype=torch.long)

    def _wrap_model(self, model):
        return model if isinstance(model, _WrappedModel) else _WrappedModel(model, self.timestep_map)


def respace(diffusion: GaussianDiffusion, timesteps) -> SpacedDiffusion:
    """A diffusion that keeps only some timesteps of ``diffusion``.

    ``timesteps`` is an iterable of the steps to keep (e.g. from :func:`space_timesteps`), or a string or int
    that :func:`space_timesteps` accepts: ``respace(d, "ddim50")``, ``respace(d, 25)``, ``respace(d, "10,15")``.
    """
    if isinstance(diffusion, SpacedDiffusion):
        raise ValueError("respace the original diffusion, not an already respaced one")
    if isinstance(timesteps, (str, int, np.integer)):
        timesteps = space_timesteps(diffusion.num_timesteps, timesteps)
    return SpacedDiffusion(diffusion, timesteps)
