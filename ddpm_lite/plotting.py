"""The course's figures: pure functions that return a matplotlib Figure.

The notebooks show them, the widgets (:mod:`ddpm_lite.widgets`) render them to PNG, and the slides save them.
Every noisy image is drawn with the package's own :meth:`GaussianDiffusion.q_sample`, so a figure shows exactly
what the code computes.

``schedules`` arguments take either schedule names (``("linear", "cosine")``, built with ``num_timesteps``
steps) or a mapping ``{label: GaussianDiffusion}``.
"""
from __future__ import annotations

import io
import math
from functools import lru_cache
from typing import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch

from .gaussian_diffusion import GaussianDiffusion
from .schedules import get_betas

SCHEDULE_COLORS = {"linear": "tab:blue", "cosine": "tab:orange"}
SUBSCRIPT_T = "\u209c"  # ₜ


# ---------------------------------------------------------------------- helpers
def diffusions(schedules: Sequence[str] | Mapping[str, GaussianDiffusion] = ("linear", "cosine"),
               num_timesteps: int = 1000) -> dict[str, GaussianDiffusion]:
    """``{label: GaussianDiffusion}`` from schedule names (or a mapping, returned as a dict)."""
    if isinstance(schedules, Mapping):
        return dict(schedules)
    if isinstance(schedules, str):
        schedules = (schedules,)
    return {name: GaussianDiffusion(get_betas(name, num_timesteps)) for name in schedules}


def snr(alphas_cumprod) -> np.ndarray:
    """The signal-to-noise ratio of q(x_t | x_0): alpha_bar_t / (1 - alpha_bar_t)."""
    ab = np.asarray(alphas_cumprod, dtype=np.float64)
    with np.errstate(divide="ignore"):
        return ab / (1.0 - ab)


def to_display(image) -> np.ndarray:
    """An image (C, H, W) or (H, W) in [-1, 1] -> (H, W) or (H, W, 3) in [0, 1] for ``imshow``."""
    x = image.detach().cpu().float().numpy() if isinstance(image, torch.Tensor) else np.asarray(image, np.float32)
    if x.ndim == 3:
        x = x[0] if x.shape[0] == 1 else np.moveaxis(x, 0, -1)
    return np.clip((x + 1.0) / 2.0, 0.0, 1.0)


def _imshow(ax, image, title: str | None = None) -> None:
    ax.imshow(to_display(image), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax.set_xticks([]), ax.set_yticks([])
    if title is not None:
        ax.set_title(title, fontsize=9)


@lru_cache(maxsize=8)
def _photo(size: int, color: bool) -> torch.Tensor:
    from matplotlib import cbook

    with cbook.get_sample_data("grace_hopper.jpg") as f:
        rgb = plt.imread(f, format="jpg")  # (H, W, 3) uint8, Grace Hopper, shipped with matplotlib
    h, w = rgb.shape[:2]
    side = min(h, w)
    top, left = (h - side) // 4, (w - side) // 2  # square crop, a little above the centre: the face
    x = torch.from_numpy(np.array(rgb[top:top + side, left:left + side])).permute(2, 0, 1).float()
    x = x[None] / 127.5 - 1.0
    if not color:
        x = (x * torch.tensor([0.299, 0.587, 0.114]).reshape(1, 3, 1, 1)).sum(1, keepdim=True)
    x = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return x[0].clamp(-1, 1)


def sample_photo(size: int = 64, color: bool = False) -> torch.Tensor:
    """A real photo that ships with matplotlib (Grace Hopper), (C, size, size) float32 in [-1, 1]; C = 1 or 3."""
    return _photo(int(size), bool(color)).clone()


def figure_to_png(fig, dpi: int | None = None, close: bool = True) -> bytes:
    """The figure as PNG bytes; closes it (``plt.close``) unless ``close=False``."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    if close:
        plt.close(fig)
    return buf.getvalue()


def _noised(diffusion: GaussianDiffusion, x0: torch.Tensor, timesteps, noise: torch.Tensor | None = None,
            seed: int = 0) -> torch.Tensor:
    """q_sample of one x0 at several timesteps with the same noise: (len(timesteps), *x0.shape)."""
    if noise is None:
        noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(seed))
    t = torch.as_tensor(list(timesteps), dtype=torch.long)
    return diffusion.q_sample(x0.expand(len(t), *x0.shape).float(), t, noise.expand(len(t), *x0.shape).float())


def evenly_spaced(num_timesteps: int, n: int) -> list[int]:
    """n timesteps from 0 to T-1, evenly spaced (Improved DDPM Figure 3)."""
    return [int(round(v)) for v in np.linspace(0, num_timesteps - 1, n)]


# ---------------------------------------------------------------------- axes-level drawers
def draw_snr(ax, schedules: Mapping[str, GaussianDiffusion], t: int | None = None, highlight: str | None = None):
    """log SNR(t) = alpha_bar / (1 - alpha_bar) per schedule; a marker at ``t`` on the ``highlight`` curve."""
    for name, d in schedules.items():
        faint = highlight is not None and name != highlight
        ax.plot(np.arange(d.num_timesteps), snr(d.alphas_cumprod), label=name, lw=2 if not faint else 1,
                alpha=0.35 if faint else 1.0, color=SCHEDULE_COLORS.get(name))
    ax.set_yscale("log")
    ax.set_xlabel("t")
    ax.set_ylabel("SNR = ᾱ / (1 − ᾱ)")
    ax.axhline(1.0, color="gray", lw=0.8, ls=":")
    if t is not None:
        name = highlight or next(iter(schedules))
        value = snr(schedules[name].alphas_cumprod)[t]
        ax.plot([t], [value], "o", color="crimson", ms=7, zorder=5)
        ax.axvline(t, color="crimson", lw=0.8, alpha=0.6)
        ax.set_title(f"SNR({t}) = {value:.3g}", fontsize=9)
    ax.legend(fontsize=8, loc="upper right")
    ax.grid(alpha=0.3, which="major")


def draw_alpha_bar(ax, schedules: Mapping[str, GaussianDiffusion], t: int | None = None):
    """alpha_bar_t against t/T per schedule (Improved DDPM Figure 5); a vertical line at ``t``."""
    for name, d in schedules.items():
        ax.plot(np.arange(d.num_timesteps) / d.num_timesteps, d.alphas_cumprod, label=name, lw=2,
                color=SCHEDULE_COLORS.get(name))
    ax.set_xlabel("diffusion step t / T")
    ax.set_ylabel("ᾱ" + SUBSCRIPT_T)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlim(0, 1)
    if t is not None:
        T = next(iter(schedules.values())).num_timesteps
        ax.axvline(t / T, color="crimson", lw=1)
        for name, d in schedules.items():
            ax.plot([t / T], [d.alphas_cumprod[t]], "o", color=SCHEDULE_COLORS.get(name), ms=6, mec="k")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)


# ---------------------------------------------------------------------- figures
def snr_curve(schedules=("linear", "cosine"), t: int | None = None, num_timesteps: int = 1000,
              highlight: str | None = None, figsize=(5, 3.2)):
    """The signal-to-noise ratio of each schedule against t, log scale, with a marker at ``t``."""
    fig, ax = plt.subplots(figsize=figsize, layout="constrained")
    draw_snr(ax, diffusions(schedules, num_timesteps), t, highlight)
    return fig


def alpha_bar_curves(schedules=("linear", "cosine"), t: int | None = None, num_timesteps: int = 1000,
                     figsize=(5, 3.2)):
    """alpha_bar_t throughout the diffusion for each schedule, like Improved DDPM Figure 5."""
    fig, ax = plt.subplots(figsize=figsize, layout="constrained")
    draw_alpha_bar(ax, diffusions(schedules, num_timesteps), t)
    ax.set_title("ᾱ" + SUBSCRIPT_T + " throughout diffusion", fontsize=10)
    return fig


def forward_chain_grid(images: torch.Tensor, schedule="linear", timesteps: Sequence[int] | None = None,
                       num_timesteps: int = 1000, seed: int = 0, row_labels: Sequence[str] | None = None):
    """Rows: images (N, C, H, W); columns: x_t at ``timesteps`` (default: 8 evenly spaced), one noise per row."""
    d = next(iter(diffusions(schedule, num_timesteps).values()))
    timesteps = list(timesteps) if timesteps is not None else evenly_spaced(d.num_timesteps, 8)
    images = images if images.ndim == 4 else images[None]
    g = torch.Generator().manual_seed(seed)
    fig, axes = plt.subplots(len(images), len(timesteps), squeeze=False, layout="constrained",
                             figsize=(1.3 * len(timesteps), 1.4 * len(images) + 0.3))
    for r, x0 in enumerate(images):
        noisy = _noised(d, x0, timesteps, torch.randn(x0.shape, generator=g))
        for c, (t, x) in enumerate(zip(timesteps, noisy)):
            _imshow(axes[r, c], x, f"t = {t}" if r == 0 else None)
        if row_labels is not None:
            axes[r, 0].set_ylabel(row_labels[r], fontsize=9)
    return fig


def latent_grid(x0: torch.Tensor, schedules=("linear", "cosine"), n_cols: int = 10, num_timesteps: int = 1000,
                seed: int = 0):
    """Improved DDPM Figure 3: x_t at evenly spaced t from 0 to T-1, one row per schedule, the same noise."""
    ds = diffusions(schedules, num_timesteps)
    fig, axes = plt.subplots(len(ds), n_cols, squeeze=False, figsize=(1.25 * n_cols, 1.4 * len(ds) + 0.3),
                             layout="constrained")
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(seed))
    for r, (name, d) in enumerate(ds.items()):
        ts = evenly_spaced(d.num_timesteps, n_cols)
        for c, (t, x) in enumerate(zip(ts, _noised(d, x0, ts, noise))):
            _imshow(axes[r, c], x, f"t = {t}" if r == 0 else None)
        axes[r, 0].set_ylabel(name, fontsize=10)
    return fig


def forward_noising_figure(diffusion: GaussianDiffusion, t: int, images: Mapping[str, torch.Tensor],
                           points: torch.Tensor | None = None, noise: Mapping[str, torch.Tensor] | None = None,
                           seed: int = 0, schedule_name: str = "",
                           compare: Mapping[str, GaussianDiffusion] | None = None, figsize=None):
    """One row: each image of ``images`` at step t, the 2-D ``points`` at step t, and the SNR curve with t marked.

    ``noise`` (same keys as ``images``, plus ``"points"``) fixes epsilon so that moving t shows one sample path;
    by default it is drawn from ``seed``. ``compare`` adds faint SNR curves of other schedules.
    """
    g = torch.Generator().manual_seed(seed)
    noise = dict(noise or {})
    for key, x in [*images.items(), *([("points", points)] if points is not None else [])]:
        if key not in noise:
            noise[key] = torch.randn(x.shape, generator=g)
    n = len(images) + (points is not None) + 1
    fig, axes = plt.subplots(1, n, figsize=figsize or (3.0 * n, 3.3), layout="constrained",
                             gridspec_kw={"width_ratios": [1] * (n - 1) + [1.5]})
    tt = torch.tensor([t])
    for ax, (name, x0) in zip(axes, images.items()):
        x_t = diffusion.q_sample(x0[None].float(), tt, noise[name][None].float())[0]
        _imshow(ax, x_t, f"{name}, t = {t}")
    if points is not None:
        ax = axes[len(images)]
        x_t = diffusion.q_sample(points.float(), tt.expand(len(points)), noise["points"].float())
        ax.scatter(points[:, 0], points[:, 1], s=2, color="lightgray", label="x₀")
        ax.scatter(x_t[:, 0], x_t[:, 1], s=2, color="tab:blue", label="xₜ")
        ax.set_xlim(-4, 4), ax.set_ylim(-4, 4), ax.set_aspect("equal")
        ax.set_xticks([]), ax.set_yticks([])
        ax.set_title(f"2-D points, t = {t}", fontsize=9)
        ax.legend(fontsize=7, loc="lower right", markerscale=4)
    label = schedule_name or "schedule"
    curves = {label: diffusion, **{k: v for k, v in (compare or {}).items() if k != label}}
    draw_snr(axes[-1], curves, t, highlight=label)
    ab = float(diffusion.alphas_cumprod[t])
    fig.suptitle(f"{label}: t = {t}, ᾱ{SUBSCRIPT_T} = {ab:.4f}, "
                 f"x{SUBSCRIPT_T} = {math.sqrt(ab):.3f}·x₀ + {math.sqrt(1 - ab):.3f}·ε", fontsize=10)
    return fig


def schedule_comparison_figure(x0: torch.Tensor, t: int, schedules=("linear", "cosine"), n_cols: int = 8,
                               num_timesteps: int = 1000, seed: int = 0):
    """Top: alpha_bar curves with t marked, and x_t at t under each schedule. Below: the latent grid (Figure 3)."""
    ds = diffusions(schedules, num_timesteps)
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(seed))
    k = len(ds)
    fig = plt.figure(figsize=(1.3 * n_cols, 2.9 + 1.45 * k), layout="constrained")
    top, bottom = fig.subfigures(2, 1, height_ratios=[2.9, 1.45 * k])
    axes_top = top.subplots(1, 1 + k, width_ratios=[2.4] + [1] * k)
    draw_alpha_bar(axes_top[0], ds, t)
    axes_top[0].set_title(f"ᾱ{SUBSCRIPT_T}, t = {t}", fontsize=9)
    grid = bottom.subplots(k, n_cols, squeeze=False)
    for i, (name, d) in enumerate(ds.items()):
        _imshow(axes_top[1 + i], _noised(d, x0, [t], noise)[0], f"{name}: t = {t}, ᾱ = {d.alphas_cumprod[t]:.3f}")
        ts = evenly_spaced(d.num_timesteps, n_cols)
        for c, (tc, x) in enumerate(zip(ts, _noised(d, x0, ts, noise))):
            _imshow(grid[i, c], x, f"t = {tc}" if i == 0 else None)
        grid[i, 0].set_ylabel(name, fontsize=9)
    return fig


def vb_terms_figure(vb, prior_bpd, title: str | None = None):
    """The terms of the variational bound (DDPM eq. 5) per timestep, in bits/dim.

    ``vb``: (T,) or (B, T) with column 0 = L_0 (the decoder) and column t = L_t, as ``calc_bpd_loop`` returns;
    ``prior_bpd``: L_T, a number or (B,). Left: each term, log scale. Right: the running share of the total.
    """
    vb = np.asarray(vb.detach().cpu() if isinstance(vb, torch.Tensor) else vb, dtype=np.float64)
    prior = np.asarray(prior_bpd.detach().cpu() if isinstance(prior_bpd, torch.Tensor) else prior_bpd, np.float64)
    vb = vb.mean(0) if vb.ndim == 2 else vb
    prior = float(prior.mean())
    T = len(vb)
    total = vb.sum() + prior
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(10, 3.4), layout="constrained")
    ts = np.arange(1, T)
    ax.plot(ts, vb[1:], color="tab:blue", lw=1.5,
            label=r"$L_{t-1} = D_{KL}(q(x_{t-1}|x_t,x_0)\,\Vert\,p_\theta(x_{t-1}|x_t))$")
    ax.plot([0], [vb[0]], "s", color="tab:green", ms=8, label=r"$L_0 = -\log p_\theta(x_0|x_1)$")
    ax.plot([T], [max(prior, 1e-12)], "^", color="tab:red", ms=8,
            label=r"$L_T = D_{KL}(q(x_T|x_0)\,\Vert\,\mathcal{N}(0, I))$")
    ax.set_yscale("log")
    ax.set_xlabel("t")
    ax.set_ylabel("bits/dim")
    ax.set_title(title or f"terms of the bound: total {total:.3f} bits/dim", fontsize=10)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    share = np.cumsum(np.concatenate([vb, [prior]])) / total
    ax2.plot(np.arange(T + 1), share, color="k")
    ax2.set_xlabel("t")
    ax2.set_ylabel("share of the bound from steps ≤ t")
    ax2.set_ylim(0, 1.02)
    ax2.grid(alpha=0.3)
    ax2.set_title(f"L_0: {vb[0] / total:.0%}, steps 1–{T // 10}: {vb[1:T // 10 + 1].sum() / total:.0%}, "
                  f"L_T: {prior / total:.1%}", fontsize=10)
    return fig


def vlb_weights(diffusion: GaussianDiffusion, figsize=(5, 3.2)):
    """The weight of ||eps - eps_theta||^2 in L_{t-1} (DDPM eq. 12): beta_t^2 / (2 sigma_t^2 alpha_t (1 - alpha_bar_t)).

    With sigma_t^2 = beta-tilde_t. L_simple (eq. 14) sets every weight to 1.
    """
    w = vlb_weight(diffusion)
    fig, ax = plt.subplots(figsize=figsize, layout="constrained")
    ax.plot(np.arange(1, diffusion.num_timesteps), w[1:], label=r"$L_{vlb}$: $\lambda_t$ of eq. 12")
    ax.axhline(1.0, color="k", ls="--", lw=1, label=r"$L_{simple}$ (eq. 14): 1")
    ax.set_yscale("log")
    ax.set_xlabel("t")
    ax.set_ylabel(r"weight of $\Vert\epsilon - \epsilon_\theta\Vert^2$")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return fig


def vlb_weight(diffusion: GaussianDiffusion) -> np.ndarray:
    """lambda_t = beta_t^2 / (2 sigma_t^2 alpha_t (1 - alpha_bar_t)), sigma_t^2 = beta-tilde_t; NaN at t = 0."""
    d = diffusion
    with np.errstate(divide="ignore", invalid="ignore"):
        w = d.betas ** 2 / (2 * d.posterior_variance * (1 - d.betas) * (1 - d.alphas_cumprod))
    w[0] = np.nan
    return w


__all__ = ["diffusions", "snr", "to_display", "sample_photo", "figure_to_png", "evenly_spaced", "draw_snr",
           "draw_alpha_bar", "snr_curve", "alpha_bar_curves", "forward_chain_grid", "latent_grid",
           "forward_noising_figure", "schedule_comparison_figure", "vb_terms_figure", "vlb_weights", "vlb_weight"]

