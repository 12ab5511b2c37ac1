"""The course's figures: pure functions that return a matplotlib Figure.

The notebooks show them, the widgets (:mod:`ddpm_lite.course.widgets`) render them to PNG, and the slides save
them. Every noisy image is drawn with the package's own :meth:`GaussianDiffusion.q_sample`, so a figure shows
exactly what the code computes.

``schedules`` arguments take either schedule names (``("linear", "cosine")``, built with ``num_timesteps``
steps) or a mapping ``{label: GaussianDiffusion}``. ``draw_*`` functions draw on an axes you give them; the
others make and return a whole figure.

The module reads in the order of the notebooks, after the machinery every figure shares:

====================================  ==================================================================================
the figure machinery                  schedules by name, images to display, the photo, PNG bytes, noised copies
01 forward noising                    the map of generative models, the SNR curve, x_t along the chain, the
                                      forward-noising explorer's figure
02 reverse process                    the exact reverse of a jump, its shift by the score, ancestral sampling in
                                      2-D, the score field
03 the loss                           the terms of the variational bound, the weights of L_vlb against L_simple
04 learned variance                   beta-tilde / beta, the interpolation of eq. 15, samples side by side
05 cosine schedule                    alpha-bar curves, the latent grid (Improved DDPM Figures 3 and 5)
06 importance sampling                loss curves, where L_vlb lives and how often to sample each t
07 U-Net                              the timestep embedding, the U-Net diagram, training progress
08 guidance                           the fidelity / diversity trade-off
09 FID                                FID of spoiled images, the features' Gaussians, the floor by sample
                                      count, FID against the Inception Score
10 fast sampling and likelihood       FID and speed against the number of steps, where a learned variance
                                      matters, one x_T through every step count
11 beyond images                      waveforms and spectrograms
====================================  ==================================================================================
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from functools import lru_cache

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib import ticker

from ..gaussian_diffusion import GaussianDiffusion
from ..schedules import get_betas
from . import style

style.apply()  # the course's sizes, fonts and dpi (course/style.py), for these figures and the notebooks' own

__all__ = [
    # the figure machinery
    "diffusions", "to_display", "draw_grid", "sample_photo", "figure_to_png", "evenly_spaced", "plain_ticks",
    "legend_below",
    # 01 forward noising
    "generative_landscape_figure", "snr", "draw_snr", "snr_curve", "forward_chain_grid", "forward_noising_figure",
    # 02 reverse process
    "PATH_COLORS", "reverse_step_figure", "score_shift_figure", "trajectory_figure", "score_field_figure",
    # 03 the loss
    "vb_terms_figure", "vlb_weight", "vlb_weights",
    # 04 learned variance
    "variance_ratio_figure", "variance_interpolation_figure", "sample_grids_figure", "variance_fit_figure",
    # 05 cosine schedule
    "draw_alpha_bar", "alpha_bar_curves", "latent_grid", "schedule_comparison_figure",
    # 06 importance sampling
    "moving_average", "loss_curves_figure", "timestep_importance_figure",
    # 07 U-Net
    "timestep_embedding_figure", "unet_diagram", "training_progress_figure",
    # 08 guidance
    "draw_guidance_metrics", "guidance_explorer_figure", "guidance_tradeoff_figure",
    # 09 FID
    "fid_explorer_figure", "feature_gaussians_figure", "fid_floor_figure", "fid_is_figure",
    # 10 fast sampling and likelihood
    "SAMPLER_COLORS", "draw_fid_vs_steps", "draw_speed_vs_steps", "sampling_sweep_figure", "same_noise_figure",
    "variance_gap_figure", "inversion_figure", "latent_interpolation_figure",
    # 11 beyond images
    "draw_waveform", "draw_spectrogram", "waveform_figure", "waveform_noising_figure", "waveform_explorer_figure",
]


# ======================================================================================================================
# the figure machinery: schedules by name, images on axes, the photo, PNG bytes, noised copies
# ======================================================================================================================
SCHEDULE_COLORS = {"linear": "tab:blue", "cosine": "tab:orange"}
SUBSCRIPT_T = "\u209c"  # ₜ
LINE_STYLES = ("-", "--", ":", "-.")  # one per curve where curves may coincide


def diffusions(schedules: Sequence[str] | Mapping[str, GaussianDiffusion] = ("linear", "cosine"),
               num_timesteps: int = 1000) -> dict[str, GaussianDiffusion]:
    """``{label: GaussianDiffusion}`` from schedule names (or a mapping, returned as a dict)."""
    if isinstance(schedules, Mapping):
        return dict(schedules)
    if isinstance(schedules, str):
        schedules = (schedules,)
    return {name: GaussianDiffusion(get_betas(name, num_timesteps)) for name in schedules}


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
        ax.set_title(title)


def draw_grid(ax, images, ncol: int | None = None, title: str | None = None) -> None:
    """A grid of images (N, C, H, W) in [-1, 1] on one axes (images.make_grid), without ticks."""
    from ..images import make_grid

    grid = make_grid(torch.as_tensor(images).detach().float().cpu(), ncol=ncol)
    ax.imshow(grid, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
    ax.set_xticks([]), ax.set_yticks([])
    if title is not None:
        ax.set_title(title)


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
    """The figure as PNG bytes at ``dpi`` (default: the figure's), through :func:`style.render_png` (no text
    under the course's smallest font; the PNG records its dpi and smallest font); closes it (``plt.close``) unless
    ``close=False``."""
    png, _ = style.render_png(fig, dpi)
    if close:
        plt.close(fig)
    return png


def _noised(diffusion: GaussianDiffusion, x0: torch.Tensor, timesteps, noise: torch.Tensor | None = None,
            seed: int = 0) -> torch.Tensor:
    """q_sample of one x0 at several timesteps with the same noise: (len(timesteps), *x0.shape)."""
    if noise is None:
        noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(seed))
    t = torch.as_tensor(list(timesteps), dtype=torch.long)
    return diffusion.q_sample(x0.expand(len(t), *x0.shape).float(), t, noise.expand(len(t), *x0.shape).float())


def _draw_noised_row(axes, diffusion: GaussianDiffusion, x0: torch.Tensor, timesteps, noise: torch.Tensor,
                     titles: bool = True, label: str | None = None, fontsize: float | None = None) -> None:
    """One row of axes: x0 noised at each of ``timesteps`` with the same ``noise``, titled "t = ..." when
    ``titles``, and ``label`` on the left of the row."""
    for ax, t, x in zip(axes, timesteps, _noised(diffusion, x0, timesteps, noise)):
        _imshow(ax, x, f"t = {t}" if titles else None)
        ax.title.set_fontsize(style.FONT_PT)  # narrow panels: titles at the size of the labels
    if label is not None:
        axes[0].set_ylabel(label, fontsize=fontsize)


def plain_ticks(axis, values=None) -> None:
    """Label an axis (``ax.xaxis``, ``ax.yaxis``; set its scale first) with plain numbers: "25", not "2.5×10¹".

    With ``values`` (e.g. the step counts that were run): ticks exactly there, no minor ticks, and a label left
    out where it would touch the one before it. Without: the axis keeps its ticks; a log axis reads 0.1, 1, 10
    (and its minor ticks, where matplotlib labels some, 2, 3, 5 rather than 2×10⁰)."""
    if values is not None:
        axis.set_major_locator(ticker.FixedLocator(sorted({float(v) for v in values})))
        axis.set_minor_locator(ticker.NullLocator())
        axis.set_major_formatter(SpacedLabels())
    elif axis.get_scale() == "log":
        axis.set_major_formatter(PlainLogLabels(labelOnlyBase=False))
        axis.set_minor_formatter(PlainLogLabels(labelOnlyBase=False, minor_thresholds=(1, 0.4)))
    else:
        axis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))


class PlainLogLabels(ticker.LogFormatter):
    """matplotlib's labels of a log axis (which minor ticks to label), written plainly: 0.6, not 6e-01."""

    def _num_to_string(self, x, vmin, vmax):
        return f"{x:g}"


class SpacedLabels(ticker.Formatter):
    """Plain tick labels ("25"), leaving out a label that would come closer than half a character to the one
    before it (crowded step counts on a log axis: 25, 50, 100)."""

    def __call__(self, x, pos=None):
        return f"{x:g}"

    def format_ticks(self, values):
        labels = [f"{v:g}" for v in values]
        axis = self.axis
        if axis is None or len(values) < 2:
            return labels
        horizontal = axis.axis_name == "x"
        scale = axis.get_transform()  # log10 on a log axis
        lo, hi = axis.axes.viewLim.intervalx if horizontal else axis.axes.viewLim.intervaly
        ends = scale.transform(np.array([lo, hi], dtype=float))
        length = axis.axes.bbox.width if horizontal else axis.axes.bbox.height
        pos = (scale.transform(np.asarray(values, dtype=float)) - ends[0]) / ((ends[1] - ends[0]) or 1.0) * length
        size = axis.majorTicks[0].label1.get_fontsize() * axis.figure.dpi / 72
        extent = [(0.64 * len(s) if horizontal else 1.0) * size for s in labels]
        kept = None
        for i in np.argsort(pos):
            if kept is not None and abs(pos[i] - pos[kept]) < (extent[i] + extent[kept]) / 2 + 0.5 * size:
                labels[i] = ""
            else:
                kept = i
        return labels


def legend_below(fig, *axes, ncols: int = 3):
    """One legend for ``axes`` (each label once, in order), below the figure (constrained layout makes room):
    where a legend inside a small panel would hide the curves."""
    handles, labels = [], []
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            if label not in labels:
                handles.append(handle), labels.append(label)
    return fig.legend(handles, labels, loc="outside lower center", ncols=min(ncols, max(len(labels), 1)))


def evenly_spaced(num_timesteps: int, n: int) -> list[int]:
    """n timesteps from 0 to T-1, evenly spaced (Improved DDPM Figure 3)."""
    return [int(round(v)) for v in np.linspace(0, num_timesteps - 1, n)]


# ======================================================================================================================
# 01 forward noising: q(x_t | x_0) and the signal-to-noise ratio
# ======================================================================================================================
def generative_landscape_figure(figsize=(8.0, 5.7)):
    """Four families of generative models in one picture (the notebooks' map): data x on the left, the latent z on
    the right, the networks each family learns drawn as arrows in the direction they run (blue: learned, grey: fixed,
    no parameters), and, on the right, what each learns, what it trains on, and what one sample costs."""
    from matplotlib.patches import FancyBboxPatch

    fig = plt.figure(figsize=figsize)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set(xlim=(0, 8), ylim=(0, figsize[1]))
    ax.axis("off")
    learned, fixed = "tab:blue", "0.45"
    xl, xr, xt = 1.45, 4.05, 4.65  # the data box, the latent box, the descriptions

    def box(x, y, text, w=0.56):
        ax.add_patch(FancyBboxPatch((x - w / 2, y - 0.21), w, 0.42, boxstyle="round,pad=0.04", fc="white",
                                    ec="k", lw=1.5))
        ax.text(x, y, text, ha="center", va="center")

    def arrow(x0, x1, y, color, lw=2.0):
        ax.annotate("", (x1, y), (x0, y), arrowprops=dict(arrowstyle="-|>", color=color, lw=lw, shrinkA=0,
                                                           shrinkB=0))

    def label(x, y, text, color, above):
        ax.text(x, y + (0.06 if above else -0.06), text, ha="center", va="bottom" if above else "top", color=color)

    top = figsize[1] - 0.3
    ax.text(xl, top, "data x", ha="center", va="center", weight="bold")
    ax.text(xr, top, "latent z", ha="center", va="center", weight="bold")
    ax.text(xt, top, "learns · trains on · costs", ha="left", va="center", weight="bold")
    k = (figsize[1] - 0.6) / 5.1  # the rows spread over the height: 1 at the notebook's 5.7 in (the deck's 4.8: 0.82)
    rows = {name: 0.6 + (y - 0.6) * k for name, y in {"GAN": 4.65, "VAE": 3.5, "flow": 2.35, "diffusion": 1.2}.items()}
    texts = {
        "GAN": "a generator G and a critic D\nG against D (a two-player game)\n1 pass of G",
        "VAE": "an encoder and a decoder\na bound on log p(x)\n1 pass of the decoder",
        "flow": "one invertible network f\nthe exact log p(x)\n1 pass of f⁻¹ (f run backwards)",
        "diffusion": "one denoiser εθ(xₜ, t)\na reweighted bound on log p(x)\nT passes (or fewer)",
    }
    for name, y in rows.items():
        ax.text(0.1, y, name, ha="left", va="center", weight="bold")
        ax.text(xt, y, texts[name], ha="left", va="center", linespacing=1.35)
        if name != "GAN":
            ax.plot([0.1, 7.9], [y + 0.6 * k, y + 0.6 * k], color="0.85", lw=1)
        box(xl, y, "$x_0$" if name == "diffusion" else "x")
        box(xr, y, "$x_T$" if name == "diffusion" else "z")
    a, b = xl + 0.34, xr - 0.34  # where arrows start and end
    y = rows["GAN"]
    arrow(b, a, y, learned)
    label((a + b) / 2, y, "G", learned, above=False)
    label(xl, y + 0.25, "D(x): real or fake?", learned, above=True)
    y = rows["VAE"]
    arrow(a, b, y + 0.1, learned), arrow(b, a, y - 0.1, learned)
    label((a + b) / 2, y + 0.1, "encoder", learned, above=True)
    label((a + b) / 2, y - 0.1, "decoder", learned, above=False)
    y = rows["flow"]
    arrow(a, b, y + 0.1, learned), arrow(b, a, y - 0.1, learned)
    label((a + b) / 2, y + 0.1, "f", learned, above=True)
    label((a + b) / 2, y - 0.1, "f⁻¹", learned, above=False)
    y = rows["diffusion"]
    stops = [a, a + (b - a) / 3, a + 2 * (b - a) / 3, b]
    for s0, s1 in zip(stops[:-1], stops[1:]):
        arrow(s0 + 0.03, s1 - 0.03, y + 0.1, fixed, lw=1.5), arrow(s1 - 0.03, s0 + 0.03, y - 0.1, learned, lw=1.5)
    label((a + b) / 2, y + 0.1, "q: add noise", fixed, above=True)
    label((a + b) / 2, y - 0.1, "pθ: denoise", learned, above=False)
    ax.text(0.1, 0.08, "Blue: learned networks; grey: fixed, nothing to learn. Sampling runs right to left,\n"
            "from z to x. In diffusion, z = $x_T$ is Gaussian noise of the same size as x.",
            ha="left", va="bottom", color="0.3", linespacing=1.35)
    return fig



def snr(alphas_cumprod) -> np.ndarray:
    """The signal-to-noise ratio of q(x_t | x_0): alpha_bar_t / (1 - alpha_bar_t)."""
    ab = np.asarray(alphas_cumprod, dtype=np.float64)
    with np.errstate(divide="ignore"):
        return ab / (1.0 - ab)


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
        ax.set_title(f"SNR({t}) = {value:.3g}")
    ax.legend(loc="upper right")
    ax.grid(alpha=0.3, which="major")


def snr_curve(schedules=("linear", "cosine"), t: int | None = None, num_timesteps: int = 1000,
              highlight: str | None = None, figsize=(5, 3.2)):
    """The signal-to-noise ratio of each schedule against t, log scale, with a marker at ``t``."""
    fig, ax = plt.subplots(figsize=figsize, layout="constrained")
    draw_snr(ax, diffusions(schedules, num_timesteps), t, highlight)
    return fig


def forward_chain_grid(images: torch.Tensor, schedule="linear", timesteps: Sequence[int] | None = None,
                       num_timesteps: int = 1000, seed: int = 0, row_labels: Sequence[str] | None = None):
    """Rows: images (N, C, H, W); columns: x_t at ``timesteps`` (default: 8 evenly spaced), one noise per row."""
    d = next(iter(diffusions(schedule, num_timesteps).values()))
    timesteps = list(timesteps) if timesteps is not None else evenly_spaced(d.num_timesteps, 8)
    images = images if images.ndim == 4 else images[None]
    g = torch.Generator().manual_seed(seed)
    fig, axes = plt.subplots(len(images), len(timesteps), squeeze=False, layout="constrained",
                             figsize=(min(style.WIDTH_IN, 0.95 * len(timesteps) + 0.4), 1.0 * len(images) + 0.35))
    for r, x0 in enumerate(images):
        _draw_noised_row(axes[r], d, x0, timesteps, torch.randn(x0.shape, generator=g), titles=r == 0,
                         label=row_labels[r] if row_labels is not None else None)
    return fig


def forward_noising_figure(diffusion: GaussianDiffusion, t: int, images: Mapping[str, torch.Tensor],
                           points: torch.Tensor | None = None, noise: Mapping[str, torch.Tensor] | None = None,
                           seed: int = 0, schedule_name: str = "",
                           compare: Mapping[str, GaussianDiffusion] | None = None, figsize=None):
    """One row: each image of ``images`` at step t, the 2-D ``points`` at step t, and the SNR curve with t marked;
    the title gives t, alpha-bar_t and x_t.

    ``noise`` (same keys as ``images``, plus ``"points"``) fixes epsilon so that moving t shows one sample path;
    by default it is drawn from ``seed``. ``compare`` adds faint SNR curves of other schedules.
    """
    g = torch.Generator().manual_seed(seed)
    noise = dict(noise or {})
    for key, x in [*images.items(), *([("points", points)] if points is not None else [])]:
        if key not in noise:
            noise[key] = torch.randn(x.shape, generator=g)
    n = len(images) + (points is not None) + 1
    fig, axes = plt.subplots(1, n, figsize=figsize or (min(style.WIDTH_IN, 1.75 * n + 1.0), 2.6),
                             layout="constrained", gridspec_kw={"width_ratios": [1] * (n - 1) + [1.6]})
    tt = torch.tensor([t])
    for ax, (name, x0) in zip(axes, images.items()):
        x_t = diffusion.q_sample(x0[None].float(), tt, noise[name][None].float())[0]
        _imshow(ax, x_t, name)
    if points is not None:
        ax = axes[len(images)]
        x_t = diffusion.q_sample(points.float(), tt.expand(len(points)), noise["points"].float())
        ax.scatter(points[:, 0], points[:, 1], s=2, color="lightgray", label="x₀")
        ax.scatter(x_t[:, 0], x_t[:, 1], s=2, color="tab:blue", label="xₜ")
        ax.set_xlim(-4, 4), ax.set_ylim(-4, 4), ax.set_aspect("equal")
        ax.set_xticks([]), ax.set_yticks([])
        ax.set_title("2-D points")
        ax.legend(loc="lower right", markerscale=4, handlelength=1, borderpad=0.3, handletextpad=0.3)
    label = schedule_name or "schedule"
    curves = {label: diffusion, **{k: v for k, v in (compare or {}).items() if k != label}}
    draw_snr(axes[-1], curves, t, highlight=label)
    axes[-1].set_ylabel("SNR")
    ab = float(diffusion.alphas_cumprod[t])
    fig.suptitle(f"{label}: t = {t}, ᾱ{SUBSCRIPT_T} = {ab:.4f}, "
                 f"x{SUBSCRIPT_T} = {math.sqrt(ab):.3f}·x₀ + {math.sqrt(1 - ab):.3f}·ε")
    return fig


# ======================================================================================================================
# 02 reverse process: the exact reverse of a jump, ancestral sampling in 2-D
# ======================================================================================================================
PATH_COLORS = ("tab:red", "tab:green", "tab:purple", "tab:orange", "tab:brown", "tab:pink", "tab:olive", "tab:cyan")


def reverse_step_figure(means, std: float, x_t: float, t: int, jumps: Sequence[int], diffusion: GaussianDiffusion,
                        weights=None, figsize=None):
    """Why one reverse step is Gaussian (DDPM section 2, after Sohl-Dickstein et al. 2015): for 1-D data
    x_0 ~ mixture of N(m_k, std^2), the exact q(x_{t-k} | x_t) (blue) beside its moment-matched Gaussian (dashed),
    one panel per jump size k in ``jumps`` (two per row); each title gives k, the jump's beta and the KL to the
    Gaussian."""
    from .reverse_process import gaussian_fit, gaussian_fit_kl, mixture_pdf, reverse_step_mixture

    ab = np.append(1.0, diffusion.alphas_cumprod)  # ab[s] = alpha_bar after s steps (paper's indexing)
    ncols = min(len(jumps), 2)
    nrows = math.ceil(len(jumps) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=figsize or (style.WIDTH_IN if ncols > 1 else 4.0, 2.5 * nrows + 0.4),
                             layout="constrained", squeeze=False)
    for ax in axes.flat[len(jumps):]:
        ax.axis("off")
    for ax, k in zip(axes.flat, jumps):
        s = t - k
        w, m, sd = reverse_step_mixture(x_t, ab[s], ab[t], means, std, weights)
        mean, fit_std = gaussian_fit(w, m, sd)
        lo, hi = min(m.min() - 4 * sd.max(), mean - 4 * fit_std), max(m.max() + 4 * sd.max(), mean + 4 * fit_std)
        grid = np.linspace(lo, hi, 800)
        ax.plot(grid, mixture_pdf(grid, w, m, sd), color="tab:blue", lw=2, label=r"exact $q(x_{t-k} \mid x_t)$")
        ax.plot(grid, mixture_pdf(grid, [1.0], [mean], [fit_std]), "k--", lw=1.2, label="Gaussian fit")
        kl = gaussian_fit_kl(w, m, sd)
        ax.set_title(f"k = {k} step{'s' if k > 1 else ''}: β = {1 - ab[t] / ab[s]:.2g}\nKL to the Gaussian "
                     f"{kl:.2g} nats")
        ax.set_yticks([])
        ax.set_xlabel(f"$x_{{{t}-k}}$")
    fig.legend(*axes[0, 0].get_legend_handles_labels(), loc="outside lower center", ncols=2)
    fig.suptitle(f"The exact reverse of a jump of k steps, from $x_{{{t}}}$ = {x_t:g}")
    return fig


def score_shift_figure(means, std: float, x_t: float, t: int, diffusion, weights=None, figsize=(8.0, 3.4)):
    """Why one reverse step is a Gaussian with a *shifted* mean, for 1-D data x_0 ~ mixture of N(m_k, std^2).

    Left: log q(x_{t-1}) (paper's t; ``diffusion``'s betas) with the window of one step around x_t / sqrt(alpha_t)
    shaded and the tangent there: over so short a range log q is nearly a straight line. Right, inside that window:
    the Gaussian of the step alone (x_t's likelihood as a function of x_{t-1}) and the exact q(x_{t-1} | x_t), the
    same width but shifted by beta_t * d/dx log q_t(x_t) / sqrt(alpha_t) (the score; exact for the mean).
    """
    from .reverse_process import gaussian_fit, mixture_pdf, reverse_step_mixture

    means = np.asarray(means, dtype=np.float64).reshape(-1)
    w = np.full(len(means), 1 / len(means)) if weights is None else np.asarray(weights, np.float64)
    ab = np.append(1.0, diffusion.alphas_cumprod)  # ab[s]: alpha_bar after s steps (paper's t)
    alpha = ab[t] / ab[t - 1]
    beta = 1 - alpha

    def marginal(s):  # q(x_s): the data blurred by s steps of noise, as (weights, means, stds)
        return w, math.sqrt(ab[s]) * means, np.full(len(means), math.sqrt(ab[s] * std ** 2 + 1 - ab[s]))

    def log_q(x, s):
        return np.log(mixture_pdf(x, *marginal(s)))

    def score(x, s):  # d/dx log q_s(x)
        ws, ms, ss = marginal(s)
        p = ws * np.exp(-0.5 * ((x - ms) / ss) ** 2) / ss
        return float((p * (ms - x) / ss ** 2).sum() / p.sum())

    centre, width = x_t / math.sqrt(alpha), math.sqrt(beta / alpha)  # the step alone: N(centre, width^2)
    pw, pm, ps = reverse_step_mixture(x_t, ab[t - 1], ab[t], means, std, w)
    mean, _ = gaussian_fit(pw, pm, ps)
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=figsize, layout="constrained")
    grid = np.linspace(means.min() - 1.2, means.max() + 1.2, 600)
    ax.plot(grid, log_q(grid, t - 1), color="tab:blue", lw=2, label=f"log q($x_{{{t - 1}}}$)")
    lo, hi = centre - 3 * width, centre + 3 * width
    ax.axvspan(lo, hi, color="tab:orange", alpha=0.3, label="one step")
    near = np.linspace(centre - 0.5, centre + 0.5, 2)
    ax.plot(near, log_q(np.array([centre]), t - 1)[0] + score(centre, t - 1) * (near - centre), ":", color="k",
            lw=1.5, label="tangent")
    ax.set(xlabel=f"$x_{{{t - 1}}}$", title="log q: nearly straight over one step")
    ax.legend(loc="lower center")
    near = np.linspace(lo, hi, 400)
    step = np.exp(-0.5 * ((near - centre) / width) ** 2)
    exact = mixture_pdf(near, pw, pm, ps)
    ax2.plot(near, step, "--", color="0.4", lw=2, label="the step alone")
    ax2.plot(near, exact / exact.max(), color="tab:blue", lw=2, label="exact")
    ax2.axvline(centre, color="0.4", lw=1)
    ax2.axvline(mean, color="tab:blue", lw=1)
    ax2.annotate("", (mean, 0.5), (centre, 0.5), arrowprops=dict(arrowstyle="-|>", color="crimson", lw=2,
                                                                  shrinkA=0, shrinkB=0, mutation_scale=12))
    ax2.set(xlabel=f"$x_{{{t - 1}}}$", yticks=[], ylim=(0, 1.35), xlim=(lo, hi),
            title=f"shift {mean - centre:+.4f} = β∇log q / √α")
    ax2.legend(loc="upper center", ncols=2, handlelength=1.5, columnspacing=1)
    ax2.xaxis.set_major_locator(plt.MaxNLocator(4))
    fig.suptitle(f"one step back from $x_{{{t}}}$ = {x_t:g} ($β_{{{t}}}$ = {beta:.2g})")
    return fig



def trajectory_figure(trajectory, step: int, data=None, n_paths: int = 5, distances=None, title: str = "",
                      lim: float = 3.0, max_points: int = 2000, figsize=(8.0, 3.9)):
    """One moment of ancestral sampling (DDPM Algorithm 2) in 2-D.

    ``trajectory``: (K + 1, N, 2), entry k the cloud after k reverse steps
    (:func:`~ddpm_lite.course.reverse_process.sample_trajectory`). Left: the cloud at ``step`` over the data (grey),
    and the paths of ``n_paths`` particles so far. Right, when ``distances`` = (steps, values) is given: the mean
    distance from the cloud to the data along the way.
    """
    traj = torch.as_tensor(trajectory).detach().float().cpu().numpy()
    K = len(traj) - 1
    step = int(min(max(step, 0), K))
    with_curve = distances is not None
    fig, axes = plt.subplots(1, 2 if with_curve else 1, figsize=figsize if with_curve else (4.4, 4.2),
                             layout="constrained", squeeze=False, width_ratios=[1, 1] if with_curve else None)
    ax = axes[0, 0]
    if data is not None:
        d = torch.as_tensor(data).float().cpu().numpy()[:max_points]
        ax.scatter(d[:, 0], d[:, 1], s=2, color="0.82", label="data")
    cloud = traj[step, :max_points]
    ax.scatter(cloud[:, 0], cloud[:, 1], s=3, color="tab:blue", alpha=0.7, label="samples")
    for i in range(min(n_paths, traj.shape[1])):
        color = PATH_COLORS[i % len(PATH_COLORS)]
        ax.plot(traj[: step + 1, i, 0], traj[: step + 1, i, 1], color=color, lw=0.6, alpha=0.6)
        ax.plot(traj[step, i, 0], traj[step, i, 1], "o", color=color, mec="k", ms=6, zorder=5)
    ax.set(xlim=(-lim, lim), ylim=(-lim, lim), aspect="equal")
    ax.set_xticks([]), ax.set_yticks([])
    ax.legend(loc="lower right", markerscale=3, handlelength=1, borderpad=0.3, handletextpad=0.3)
    ax.set_title(f"after {step} of {K} reverse steps: x_{K - step}")
    if with_curve:
        ax2 = axes[0, 1]
        steps, values = distances
        ax2.plot(np.asarray(steps), np.asarray(values), color="tab:blue")
        current = float(np.interp(step, steps, values))
        ax2.plot([step], [current], "o", color="crimson", ms=7, zorder=5)
        ax2.axvline(step, color="crimson", lw=0.8, alpha=0.6)
        ax2.set_yscale("log")
        plain_ticks(ax2.yaxis)
        ax2.set_xlabel("reverse steps done (x_T → x_0)")
        ax2.set_ylabel("mean distance to the data")
        ax2.set_title(f"distance to the data: {current:.3f}")
        ax2.grid(alpha=0.3, which="both")
    if title:
        fig.suptitle(title)
    return fig


def score_field_figure(grid, learned, exact=None, cloud=None, data=None, title: str = "", lim: float = 3.0,
                       agreement: float | None = None, figsize=(8.0, 4.3)):
    """The score field grad log p_t(x) of a 2-D model as arrows on a grid, over the data (grey) and the samples at
    that step (blue): left, the model's (``learned``, e.g. -eps_theta / sqrt(1 - alpha_bar_t)); right, when given,
    the ``exact`` score, with ``agreement`` (the mean cosine between the two) in its title.

    ``grid`` (N, 2) and the fields (N, 2) come from :func:`ddpm_lite.course.reverse_process.score_field`. The arrows
    all have one length: they show the direction; the titles give the typical size (the median of |score|).
    """
    fields = {"learned": learned} if exact is None else {"learned": learned, "exact": exact}
    fig, axes = plt.subplots(1, len(fields), figsize=figsize if exact is not None else (4.3, 4.3),
                             layout="constrained", squeeze=False)
    grid = np.asarray(grid, dtype=np.float64)
    spacing = 2 * lim / (math.sqrt(len(grid)) - 1)
    for ax, (name, field) in zip(axes[0], fields.items()):
        f = np.asarray(field, dtype=np.float64)
        size = np.linalg.norm(f, axis=1)
        direction = f / np.maximum(size, 1e-12)[:, None]
        if data is not None:
            d = np.asarray(data)[:2000]
            ax.scatter(d[:, 0], d[:, 1], s=2, color="0.8", label="data")
        if cloud is not None:
            c = np.asarray(cloud)[:1000]
            ax.scatter(c[:, 0], c[:, 1], s=3, color="tab:blue", alpha=0.6, label="samples at t")
        ax.quiver(grid[:, 0], grid[:, 1], direction[:, 0], direction[:, 1], color="crimson" if name == "learned"
                  else "k", angles="xy", scale_units="xy", scale=1 / (0.8 * spacing), width=0.006, pivot="mid")
        ax.set(xlim=(-lim, lim), ylim=(-lim, lim), aspect="equal", xticks=[], yticks=[])
        head = "the model's score" if name == "learned" else "the exact score"
        if name == "exact" and agreement is not None:
            head += f": cos {agreement:.2f}"
        ax.set_title(f"{head}\n|score| ~ {np.median(size):.3g}")
    if data is not None or cloud is not None:
        axes[0, 0].legend(loc="lower right", markerscale=4, handlelength=1, borderpad=0.3, handletextpad=0.3)
    if title:
        fig.suptitle(title)
    return fig



# ======================================================================================================================
# 03 the loss: the terms of the variational bound, L_vlb against L_simple
# ======================================================================================================================
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
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(style.WIDTH_IN, 4.2), layout="constrained")
    ts = np.arange(1, T)
    ax.plot(ts, vb[1:], color="tab:blue", lw=1.5,
            label=r"$L_{t-1} = D_{KL}(q(x_{t-1}|x_t,x_0)\,\Vert\,p_\theta(x_{t-1}|x_t))$")
    ax.plot([0], [vb[0]], "s", color="tab:green", ms=8, label=r"$L_0 = -\log p_\theta(x_0|x_1)$")
    ax.plot([T], [max(prior, 1e-12)], "^", color="tab:red", ms=8,
            label=r"$L_T = D_{KL}(q(x_T|x_0)\,\Vert\,\mathcal{N}(0, I))$")
    ax.set_yscale("log")
    ax.set_xlabel("t")
    ax.set_ylabel("bits/dim")
    ax.set_title("each term (log scale)")
    fig.legend(*ax.get_legend_handles_labels(), loc="outside lower center", ncols=2)
    fig.suptitle(title or f"terms of the bound: total {total:.3f} bits/dim")
    ax.grid(alpha=0.3)
    share = np.cumsum(np.concatenate([vb, [prior]])) / total
    ax2.plot(np.arange(T + 1), share, color="k")
    ax2.set_xlabel("t")
    ax2.set_ylabel("share from steps ≤ t")
    ax2.set_ylim(0, 1.02)
    ax2.grid(alpha=0.3)
    ax2.set_title(f"L₀ {vb[0] / total:.0%}, steps 1–{T // 10} {vb[1:T // 10 + 1].sum() / total:.0%}, "
                  f"L_T {prior / total:.1%}")
    return fig


def vlb_weight(diffusion: GaussianDiffusion) -> np.ndarray:
    """lambda_t = beta_t^2 / (2 sigma_t^2 alpha_t (1 - alpha_bar_t)), sigma_t^2 = beta-tilde_t; NaN at t = 0."""
    d = diffusion
    with np.errstate(divide="ignore", invalid="ignore"):
        w = d.betas ** 2 / (2 * d.posterior_variance * (1 - d.betas) * (1 - d.alphas_cumprod))
    w[0] = np.nan
    return w


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
    ax.legend()
    ax.grid(alpha=0.3)
    return fig


# ======================================================================================================================
# 04 learned variance: beta-tilde against beta, eq. 15, samples side by side
# ======================================================================================================================
def variance_ratio_figure(num_timesteps: Sequence[int] = (100, 1000, 4000), schedules=("linear", "cosine"),
                          figsize=(8.0, 3.4)):
    """Improved DDPM Figure 1: beta-tilde_t / beta_t against t / T for chains of several lengths, one panel per
    schedule. The two fixed choices of Sigma only differ near t = 0, and less so the longer the chain."""
    fig, axes = plt.subplots(1, len(schedules), figsize=figsize, layout="constrained", squeeze=False, sharey=True)
    for ax, name in zip(axes[0], schedules):
        for i, T in enumerate(num_timesteps):  # the curves meet near 1: solid, dashed, dotted, to see each
            d = GaussianDiffusion(get_betas(name, T))
            ax.plot(np.arange(1, T) / T, d.posterior_variance[1:] / d.betas[1:], label=f"T = {T}",
                    ls=LINE_STYLES[i % len(LINE_STYLES)], lw=2.5 if i == 0 else 1.8)
        ax.set_xscale("log")
        plain_ticks(ax.xaxis)
        ax.set_xlabel("diffusion step t / T (log scale)")
        ax.set_title(f"{name} schedule")
        ax.grid(alpha=0.3, which="both")
        ax.legend()
    axes[0, 0].set_ylabel("β̃ₜ / βₜ")
    return fig


def variance_interpolation_figure(diffusion: GaussianDiffusion, v: float, t: int, learned=None, figsize=(8.0, 3.8)):
    """Eq. 15 of Improved DDPM: Sigma_t = exp(v log beta_t + (1 - v) log beta-tilde_t).

    Left: Sigma_t / beta_t against t (log-log): beta (1), beta-tilde, Sigma for the constant ``v``, and for the
    learned v(t) when ``learned`` = (timesteps, v) is given (interpolated over t). Right: v against t.
    """
    from .learned_variance import sigma_from_v

    T = diffusion.num_timesteps
    ts = np.arange(1, T)
    beta, beta_tilde = diffusion.betas, np.exp(diffusion.posterior_log_variance_clipped)
    sigma_v = sigma_from_v(diffusion, v)
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=figsize, layout="constrained", width_ratios=[1.3, 1])
    ax.plot(ts, np.ones_like(ts, dtype=float), color="k", lw=1.2, label="βₜ (fixed_large)")
    ax.plot(ts, beta_tilde[1:] / beta[1:], color="tab:gray", lw=1.5, label="β̃ₜ (fixed_small)")
    ax.plot(ts, sigma_v[1:] / beta[1:], color="tab:orange", lw=2, ls="--", label=f"Σₜ with v = {v:.2f}")
    if learned is not None:
        lt, lv = (np.asarray(a, dtype=np.float64) for a in learned)
        v_all = np.interp(np.arange(T), lt, lv)
        ax.plot(ts, sigma_from_v(diffusion, v_all)[1:] / beta[1:], color="tab:blue", lw=2, label="Σₜ with learned v(t)")
        ax2.plot(lt, lv, "o-", color="tab:blue", ms=3, label="learned v(t)")
    ax.axvline(max(t, 1), color="crimson", lw=0.8)
    ax.set(xscale="log", xlabel="t (log scale)", ylabel="Σₜ / βₜ")
    plain_ticks(ax.xaxis)
    ax.set_title(f"t = {t}: β = {beta[t]:.3g}, β̃ = {diffusion.posterior_variance[t]:.3g},\n"
                 f"Σ(v = {v:.2f}) = {sigma_v[t]:.3g}")
    ax.grid(alpha=0.3, which="both")
    ax.legend(loc="lower right")
    ax2.axhline(v, color="tab:orange", ls="--", lw=2, label=f"v = {v:.2f}")
    ax2.axhline(0, color="tab:gray", lw=1), ax2.axhline(1, color="k", lw=1)
    ax2.axvline(t, color="crimson", lw=0.8)
    ax2.set(xscale="symlog", xlabel="t (log scale above 1)", ylabel="v: 0 gives β̃ₜ, 1 gives βₜ", xlim=(0, T))
    plain_ticks(ax2.xaxis)
    ax2.set_title("the weight v of eq. 15")
    ax2.grid(alpha=0.3)
    ax2.legend()
    return fig


def sample_grids_figure(grids, titles=None, ncol: int | None = None, suptitle: str = "", figsize=None):
    """Grids of images side by side: ``grids`` = {label: images (N, C, H, W) in [-1, 1]}; ``titles`` (same keys)
    replace the labels as panel titles."""
    width = min(style.WIDTH_IN, 2.7 * len(grids))
    fig, axes = plt.subplots(1, len(grids), figsize=figsize or (width, width / len(grids) + 0.9),
                             layout="constrained", squeeze=False)
    for ax, (label, images) in zip(axes[0], grids.items()):
        draw_grid(ax, images, ncol=ncol, title=(titles or {}).get(label, label))
    if suptitle:
        fig.suptitle(suptitle)
    return fig


def variance_fit_figure(fits, title: str | None = None, ax=None):
    """v(t) (solid) and v*(t) (dashed, same colour) against t on a log axis, for one fit or several (a dict
    label -> fit, or a list of fits logged during training, labelled by their step): the diagnostic of
    :mod:`ddpm_lite.metrics.variance`. Returns the figure."""
    from ..metrics.variance import VarianceFit

    if isinstance(fits, VarianceFit):
        fits = {"": fits}
    elif not isinstance(fits, Mapping):
        fits = {(f"step {f.step}" if f.step is not None else f"fit {i + 1}"): f for i, f in enumerate(fits)}
    if not fits:
        raise ValueError("no fits to plot")
    with plt.rc_context(style.RC):
        if ax is None:
            fig, ax = plt.subplots(figsize=(7.5, 4.2), layout="constrained")
        else:
            fig = ax.figure
        colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
        for i, (label, fit) in enumerate(fits.items()):
            color = colors[i % len(colors)]
            ok = fit.t > 0
            prefix = f"{label}: " if label else ""
            if not np.isnan(fit.v).all():
                gap = f" (RMS gap {fit.rms_gap:.2f})" if len(fits) <= 4 else ""
                ax.plot(fit.t[ok], fit.v[ok], "-", color=color, lw=2, label=f"{prefix}learned v{gap}")
            ax.plot(fit.t[ok], fit.v_star[ok], "--", color=color, lw=1.5, label=f"{prefix}v* (KL-optimal)")
        ax.set_xscale("log")
        ax.set_ylim(-0.03, 1.1)
        ax.axhline(0, color="0.6", lw=0.8)
        ax.axhline(1, color="0.6", lw=0.8)
        ax.set_xlabel("timestep t")
        ax.set_ylabel(r"v   (0: $\tilde\beta_t$,  1: $\beta_t$)")
        ax.set_title(title if title is not None else "learned v(t) against the v*(t) the loss asks for")
        ax.grid(alpha=0.3, which="both")
        ax.legend(loc="best", fontsize=style.FONT_PT)
    return fig


def gaussian_sampler_figure(moments, mean, cov, steps: Sequence[int], labels: Mapping[str, str] | None = None,
                            figsize=(8.0, 4.6)):
    """What samplers draw for Gaussian data N(mean, cov) with a perfect model, against the sampling steps:
    ``moments`` maps a variance name to the (mean, covariance) of :func:`~ddpm_lite.course.analytic.
    gaussian_sampler_moments` at each of ``steps``. Left: the samples' total variance (the sum of the pixels'
    variances) against the data's; right: the Frechet distance to the data. ``labels``: the legend's name of each
    variance (default: ``analytic.SAMPLER_VARIANCES``). Returns the figure."""
    from ..metrics import frechet_distance
    from .analytic import SAMPLER_VARIANCES

    labels = SAMPLER_VARIANCES if labels is None else labels
    with plt.rc_context(style.RC):
        fig, (ax, ax2) = plt.subplots(1, 2, figsize=figsize, layout="constrained")
        for name, pairs in moments.items():
            if len(pairs) != len(steps):
                raise ValueError(f"{name}: {len(pairs)} (mean, covariance) pairs for {len(steps)} step counts")
            spread = [np.trace(c) for _, c in pairs]
            distance = [frechet_distance(m, c, mean, cov) or np.nan for m, c in pairs]  # 0 has no place on a log axis
            ax.plot(steps, spread, "o-", ms=4, label=labels.get(name, name))
            ax2.plot(steps, distance, "o-", ms=4)
        ax.axhline(np.trace(cov), color="k", ls="--", lw=1, label="the data")
        ax.set(xscale="log", xlabel="sampling steps", ylabel="total variance of the samples",
               title="spread of the samples")
        ax2.set(xscale="log", yscale="log", xlabel="sampling steps", ylabel="Fréchet distance to the data",
                title="distance to the data")
        for a in (ax, ax2):
            plain_ticks(a.xaxis, steps)
            a.grid(alpha=0.3, which="both")
        plain_ticks(ax2.yaxis)
        legend_below(fig, ax, ncols=3)
    return fig


# ======================================================================================================================
# 05 cosine schedule: alpha-bar and the latents under each schedule (Improved DDPM Figures 3 and 5)
# ======================================================================================================================
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
    ax.legend()
    ax.grid(alpha=0.3)


def alpha_bar_curves(schedules=("linear", "cosine"), t: int | None = None, num_timesteps: int = 1000,
                     figsize=(5, 3.2)):
    """alpha_bar_t throughout the diffusion for each schedule, like Improved DDPM Figure 5."""
    fig, ax = plt.subplots(figsize=figsize, layout="constrained")
    draw_alpha_bar(ax, diffusions(schedules, num_timesteps), t)
    ax.set_title("ᾱ" + SUBSCRIPT_T + " throughout diffusion")
    return fig


def latent_grid(x0: torch.Tensor, schedules=("linear", "cosine"), n_cols: int = 10, num_timesteps: int = 1000,
                seed: int = 0):
    """Improved DDPM Figure 3: x_t at evenly spaced t from 0 to T-1, one row per schedule, the same noise."""
    ds = diffusions(schedules, num_timesteps)
    width = min(style.WIDTH_IN, 0.95 * n_cols + 0.4)
    fig, axes = plt.subplots(len(ds), n_cols, squeeze=False, figsize=(width, (width - 0.4) / n_cols * len(ds) + 0.4),
                             layout="constrained")
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(seed))
    for r, (name, d) in enumerate(ds.items()):
        _draw_noised_row(axes[r], d, x0, evenly_spaced(d.num_timesteps, n_cols), noise, titles=r == 0, label=name)
    return fig


def schedule_comparison_figure(x0: torch.Tensor, t: int, schedules=("linear", "cosine"), n_cols: int = 8,
                               num_timesteps: int = 1000, seed: int = 0):
    """Top: alpha_bar curves with t marked, and x_t at t under each schedule. Below: the latent grid (Figure 3)."""
    ds = diffusions(schedules, num_timesteps)
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(seed))
    k = len(ds)
    width = min(style.WIDTH_IN, 0.95 * n_cols + 0.4)
    row = (width - 0.4) / n_cols + 0.1
    fig = plt.figure(figsize=(width, 2.7 + row * k + 0.3), layout="constrained")
    top, bottom = fig.subfigures(2, 1, height_ratios=[2.7, row * k + 0.3])
    axes_top = top.subplots(1, 1 + k, width_ratios=[2.4] + [1] * k)
    draw_alpha_bar(axes_top[0], ds, t)
    axes_top[0].set_title(f"ᾱ{SUBSCRIPT_T}, t = {t}")
    grid = bottom.subplots(k, n_cols, squeeze=False)
    for i, (name, d) in enumerate(ds.items()):
        _imshow(axes_top[1 + i], _noised(d, x0, [t], noise)[0], f"{name}\nᾱ = {d.alphas_cumprod[t]:.3f}")
        _draw_noised_row(grid[i], d, x0, evenly_spaced(d.num_timesteps, n_cols), noise, titles=i == 0, label=name)
    return fig


# ======================================================================================================================
# 06 importance sampling: loss curves, where L_vlb lives
# ======================================================================================================================
def moving_average(values, window: int) -> np.ndarray:
    """The mean of each value and the ``window - 1`` before it (fewer at the start)."""
    x = np.asarray(values, dtype=np.float64)
    if window <= 1 or len(x) == 0:
        return x
    c = np.cumsum(np.insert(x, 0, 0.0))
    n = np.minimum(np.arange(1, len(x) + 1), window)
    return (c[1:] - c[np.arange(1, len(x) + 1) - n]) / n


def loss_curves_figure(curves, smoothing: int = 1, yscale: str = "log", markers=None, title: str = "",
                       ylabel: str = "training loss", figsize=(8, 3.4)):
    """Several loss curves on one axes: ``curves`` = {label: per-step losses}, each raw (faint) and as a moving
    average over ``smoothing`` steps; ``markers`` = {label: step} draws labelled vertical lines.

    Curves that coincide stay visible: each run has its own line style (solid, dashed, dotted) over a wider line
    for the first, and a curve equal to an earlier one from its first step says so in the legend ("same as ...
    up to step N"), e.g. two runs from the same start before their samplers differ."""
    fig, ax = plt.subplots(figsize=figsize, layout="constrained")
    seen: dict[str, np.ndarray] = {}
    for i, (label, values) in enumerate(curves.items()):
        values = np.asarray(values, dtype=np.float64)
        if not len(values):
            continue
        color = f"C{i}"
        steps = np.arange(1, len(values) + 1)
        same = _same_start(values, seen)
        seen[label] = values
        ax.plot(steps, values, color=color, alpha=0.25, lw=0.7)
        ax.plot(steps, moving_average(values, smoothing), color=color, lw=3 if i == 0 else 2,
                ls=LINE_STYLES[i % len(LINE_STYLES)], zorder=3 + i,
                label=f"{label}: {moving_average(values, smoothing)[-1]:.3g} at step {len(values)}"
                      + (f" (same as {same[0]} up to step {same[1]})" if same else ""))
    for label, step in (markers or {}).items():
        ax.axvline(step, color="k", ls=":", lw=1)
        ax.annotate(label, (step, 1.0), xycoords=("data", "axes fraction"), xytext=(4, -4), textcoords="offset points",
                    va="top", ha="left", bbox=dict(fc="white", ec="none", alpha=0.8, pad=1))
    ax.set_yscale(yscale)
    plain_ticks(ax.yaxis)
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3, which="both")
    if any(len(v) for v in curves.values()):
        fig.legend(*ax.get_legend_handles_labels(), loc="outside lower center")
    ax.set_title(title or (f"moving average over {smoothing} steps" if smoothing > 1 else "raw losses"))
    return fig


def _same_start(values: np.ndarray, earlier: Mapping[str, np.ndarray]) -> tuple[str, int] | None:
    """(label, n) of the earlier curve that ``values`` equals on its first n >= 2 steps (the longest such run)."""
    best = None
    for label, other in earlier.items():
        n = min(len(values), len(other))
        if n < 2:
            continue
        differs = ~np.isclose(values[:n], other[:n], rtol=1e-6, atol=0)
        m = int(np.argmax(differs)) if differs.any() else n
        if m >= 2 and (best is None or m > best[1]):
            best = (label, m)
    return best


def timestep_importance_figure(vb, probs=None, figsize=(8.0, 3.8)):
    """Where L_vlb lives (Improved DDPM Figure 2 and section 3.3). ``vb``: (B, T) terms per image (column t =
    L_t, as ``calc_bpd_loop`` returns) or their (T,) mean. Left: the mean term and its root mean square
    sqrt(E[L_t^2]) against t (log-log). Right: the sampling distribution p_t proportional to that root mean square
    (eq. 18) against the uniform 1/T, and ``probs`` (T,) if given (e.g. a trained sampler's)."""
    vb = np.asarray(vb.detach().cpu() if isinstance(vb, torch.Tensor) else vb, dtype=np.float64)
    vb2 = vb if vb.ndim == 2 else vb[None]
    T = vb2.shape[1]
    mean, rms = vb2.mean(0), np.sqrt((vb2 ** 2).mean(0))
    ts = np.arange(T)
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=figsize, layout="constrained")
    ax.plot(ts + 1, mean, color="tab:blue", lw=2.5, label="E[Lₜ]")
    ax.plot(ts + 1, rms, color="tab:orange", lw=1.5, ls="--", label="√E[Lₜ²]")
    ax.set(xscale="log", yscale="log", xlabel="t + 1 (log scale; t = 0 is L₀)", ylabel="bits/dim")
    plain_ticks(ax.xaxis)
    ax.set_title(f"terms of L_vlb: the first 1%\nof steps hold {mean[: max(1, T // 100)].sum() / mean.sum():.0%}")
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    p = rms / rms.sum()
    ax2.plot(ts + 1, p, color="tab:orange", lw=1.5, label="pₜ ∝ √E[Lₜ²] (eq. 18)")
    ax2.axhline(1.0 / T, color="k", ls="--", lw=1, label="uniform 1/T")
    if probs is not None:
        ax2.plot(ts + 1, np.asarray(probs, dtype=np.float64), color="tab:green", lw=1, alpha=0.8,
                 label="pₜ of a trained sampler")
    ax2.set(xscale="log", yscale="log", xlabel="t + 1 (log scale)", ylabel="pₜ")
    plain_ticks(ax2.xaxis)
    ax2.set_title("how often to sample each t")
    ax2.grid(alpha=0.3, which="both")
    ax2.legend()
    return fig


# ======================================================================================================================
# 07 U-Net: the timestep embedding, the architecture, training progress
# ======================================================================================================================
def timestep_embedding_figure(embedding, timesteps=None, figsize=(8.0, 3.6)):
    """Left: the sinusoidal embedding of every t (rows) as an image, the cosines then the sines (columns).
    Right: the cosine similarity between the embeddings of every pair of timesteps: nearby t look alike."""
    e = torch.as_tensor(embedding).detach().double().cpu()
    ts = np.arange(len(e)) if timesteps is None else np.asarray(timesteps)
    unit = e / e.norm(dim=1, keepdim=True).clamp_min(1e-12)
    sim = (unit @ unit.T).numpy()
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=figsize, layout="constrained", width_ratios=[1.4, 1])
    extent = (-0.5, e.shape[1] - 0.5, ts[-1], ts[0])
    im = ax.imshow(e.numpy(), aspect="auto", cmap="RdBu_r", vmin=-1, vmax=1, extent=extent, interpolation="nearest")
    half = e.shape[1] // 2
    ax.axvline(half - 0.5, color="k", lw=0.8)
    ax.set(xlabel=f"embedding dimension\n(0..{half - 1}: cos, {half}..{2 * half - 1}: sin)", ylabel="t",
           title=f"timestep_embedding(t, {e.shape[1]})")
    fig.colorbar(im, ax=ax, shrink=0.8)
    im2 = ax2.imshow(sim, cmap="viridis", extent=(ts[0], ts[-1], ts[-1], ts[0]), interpolation="nearest")
    ax2.set(xlabel="t", ylabel="t'", title="cosine similarity")
    fig.colorbar(im2, ax=ax2, shrink=0.8)
    return fig


UNET_STAGE_COLORS = {"embed": "#eeeeee", "in": "#dddddd", "down": "#c6dbef", "middle": "#dadaeb",
                     "up": "#c7e9c0", "out": "#dddddd"}


def unet_diagram(rows, total: int | None = None, title: str | None = None, figsize=(8.0, 5.0),
                 parameters: bool = True):
    """The U-Net as traced by :func:`ddpm_lite.models.summary.unet_summary`.

    Top: one box per block, left to right in execution order, at the height of the feature-map size it works at
    (a downsampling block at its output size, an upsampling one at its input size: the "U"), labelled with its
    output channels, with an arrow where the size changes; red edges mark self-attention, grey brackets the skip
    connections. Bottom (unless ``parameters=False``): the parameters of each block (log scale).
    """
    blocks = [r for r in rows if r.stage != "embed"]

    def size(r):
        return r.in_shape[-1] if r.stage == "up" else r.resolution

    sizes = sorted({size(r) for r in blocks}, reverse=True)
    level = {s: i for i, s in enumerate(sizes)}
    max_c = max(r.channels for r in blocks)
    many = len(blocks) > 20  # then the channel counts stand upright in their boxes
    if parameters:
        fig, (ax, axp) = plt.subplots(2, 1, figsize=figsize, layout="constrained", height_ratios=[2.3, 1],
                                      sharex=True)
    else:
        fig, ax = plt.subplots(figsize=figsize, layout="constrained")
        ax.set_xticks([])
    xs = np.arange(len(blocks))
    pos = {}
    for x, r in zip(xs, blocks):
        y = -level[size(r)]
        w = 0.25 + 0.5 * r.channels / max_c
        attn = "attn" in r.kind
        ax.add_patch(plt.Rectangle((x - w / 2, y - 0.3), w, 0.6, facecolor=UNET_STAGE_COLORS[r.stage],
                                   edgecolor="crimson" if attn else "#555555", lw=2 if attn else 0.8, zorder=3))
        if not many:
            ax.text(x, y, str(r.channels), ha="center", va="center", zorder=4)
        elif not pos or r.channels != blocks[len(pos) - 1].channels:  # too narrow: the count where it changes, above
            ax.text(x, y + 0.32, str(r.channels), ha="center", va="bottom", zorder=4)
        if r.resolution != r.in_shape[-1] and r.stage != "embed":
            ax.text(x, y - 0.34, "↓" if r.resolution < r.in_shape[-1] else "↑", ha="center", va="top")
        pos[id(r)] = (x, y)
    for a, b in zip(blocks, blocks[1:]):
        (x0, y0), (x1, y1) = pos[id(a)], pos[id(b)]
        ax.plot([x0, x1], [y0, y1], color="#888888", lw=0.8, zorder=1)
    width = max(len(blocks) - 1, 1)
    for r in blocks:
        if r.skip is not None:
            (x0, y0), (x1, y1) = pos[id(rows[r.skip])], pos[id(r)]
            top = max(y0, y1) + 0.34 + 0.3 * (x1 - x0) / width
            ax.plot([x0, x0, x1, x1], [y0 + 0.3, top, top, y1 + 0.3], color="#999999", lw=0.7, alpha=0.8, zorder=2)
    ax.set_yticks([-level[s] for s in sizes], [f"{s}×{s}" for s in sizes])
    ax.set_ylim(-len(sizes) + 0.45, 0.72)
    ax.set_xlim(-0.8, len(blocks) - 0.2)
    ax.tick_params(axis="x", bottom=False)
    for side in ("top", "right", "bottom"):
        ax.spines[side].set_visible(False)
    ax.set_ylabel("feature-map size")
    handles = [plt.Rectangle((0, 0), 1, 1, facecolor=UNET_STAGE_COLORS[k], edgecolor="#555555")
               for k in ("down", "middle", "up")]
    handles.append(plt.Rectangle((0, 0), 1, 1, facecolor="white", edgecolor="crimson", lw=2))
    fig.legend(handles, ["down path", "middle", "up path (+ skip)", "self-attention"], ncols=4,
               loc="outside lower center", frameon=False)
    total = total if total is not None else sum(r.params for r in rows)
    ax.set_title(title or f"{total / 1e6:.2f} M parameters", wrap=True)
    if not parameters:
        return fig
    params = np.array([r.params for r in blocks], dtype=float)
    axp.bar(xs, np.maximum(params, 1), color=[UNET_STAGE_COLORS[r.stage] for r in blocks], edgecolor="#555555",
            lw=0.5)
    axp.set_yscale("log")
    axp.set_ylabel("parameters")
    names = [r.name.replace("input_blocks.", "in").replace("output_blocks.", "out").replace("middle_block", "mid")
             for r in blocks]
    every = max(1, math.ceil(len(blocks) / 24))  # at most 24 names: one every `every` blocks
    axp.set_xticks(xs[::every], names[::every], rotation=90)
    axp.grid(alpha=0.3, axis="y")
    emb = next((r for r in rows if r.stage == "embed"), None)
    if emb is not None:
        axp.set_title(f"parameters per block; {emb.params:,} in the embedding")
    return fig


def training_progress_figure(losses, samples=None, step: int | None = None, smooth: float = 0.95,
                             title: str | None = None, figsize=(8.0, 3.4)):
    """Left: the training loss per step (faint) and its exponential moving average. Right: a grid of samples."""
    losses = np.asarray(losses, dtype=np.float64)
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=figsize, layout="constrained", width_ratios=[1.6, 1])
    if len(losses):
        ema = np.empty_like(losses)
        acc = losses[0]
        for i, v in enumerate(losses):
            acc = smooth * acc + (1 - smooth) * v if i else v
            ema[i] = acc
        steps = np.arange(1, len(losses) + 1)
        ax.plot(steps, losses, color="tab:blue", alpha=0.25, lw=0.8, label="loss")
        ax.plot(steps, ema, color="tab:blue", lw=2, label="moving average")
        ax.set_yscale("log")
        plain_ticks(ax.yaxis)
        ax.legend()
        ax.set_title(f"step {step if step is not None else len(losses)}: loss {ema[-1]:.4f}")
    else:
        ax.set_title("waiting for the first steps")
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    ax.grid(alpha=0.3, which="both")
    if samples is not None:
        draw_grid(ax2, samples, title="samples (EMA weights,\nthe same noise each time)")
    else:
        ax2.axis("off")
        ax2.set_title("samples appear here")
    if title:
        fig.suptitle(title)
    return fig


# ======================================================================================================================
# 08 guidance: label accuracy, precision and recall against the guidance scale
# ======================================================================================================================
METRIC_COLORS = {"accuracy": "tab:green", "precision": "tab:blue", "recall": "tab:orange"}


def draw_guidance_metrics(ax, metrics, current: float | None = None, scale_name: str = "guidance scale"):
    """Label accuracy, precision and recall against the guidance scale; a marker line at ``current``.

    ``metrics``: {scale: {"accuracy": ..., "precision": ..., "recall": ...}} (e.g. from
    :func:`ddpm_lite.course.evaluate.sample_quality`).
    """
    scales = sorted(metrics)
    for (name, color), marker in zip(METRIC_COLORS.items(), "os^"):  # curves may meet: a marker of their own
        ax.plot(scales, [metrics[s][name] for s in scales], marker + "-", color=color, label=name, ms=5)
    if current is not None:
        ax.axvline(current, color="crimson", lw=1)
        for name, color in METRIC_COLORS.items():
            if current in metrics:
                ax.plot([current], [metrics[current][name]], "o", color=color, ms=9, mec="crimson", mew=1.5)
    ax.set(xlabel=scale_name, ylim=(-0.03, 1.03))
    ax.legend(loc="best")
    ax.grid(alpha=0.3)


def guidance_explorer_figure(samples, label: int, scale: float, metrics, method: str = "classifier guidance",
                             scale_name: str = "guidance scale s", figsize=(8.0, 3.8)):
    """Left: samples guided towards ``label`` at ``scale``. Right: the trade-off curves with ``scale`` marked."""
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=figsize, layout="constrained", width_ratios=[1, 1.4])
    m = metrics[scale]
    draw_grid(ax, samples, title=f"{method}\nclass {label}, {scale_name.split()[-1]} = {scale:g}")
    draw_guidance_metrics(ax2, metrics, scale, scale_name)
    ax2.set_title(f"accuracy {m['accuracy']:.2f}, precision {m['precision']:.2f},\n"
                  f"recall {m['recall']:.2f}, FID {m['fid']:.2f}")
    return fig


def guidance_tradeoff_figure(curves, figsize=(8.0, 4.0)):
    """Several guidance methods side by side, independent of how each counts its scale.

    ``curves``: {method: {scale: {"accuracy", "precision", "recall", ...}}}. Left: precision against recall
    (ADM Figure 4); right: label accuracy against recall. Points are labelled with their scale (the first method
    above its points, the next below), except a point too close to one already labelled.
    """
    fig, axes = plt.subplots(1, 2, figsize=figsize, layout="constrained")
    points = {ax: [] for ax in axes}
    for i, ((method, metrics), marker) in enumerate(zip(curves.items(), "os^Dv")):
        scales = sorted(metrics)
        rec = [metrics[s]["recall"] for s in scales]
        for ax, key in zip(axes, ("precision", "accuracy")):
            ys = [metrics[s][key] for s in scales]
            ax.plot(rec, ys, marker + LINE_STYLES[i % len(LINE_STYLES)], label=method, ms=5)
            points[ax] += [(i, s, x, y) for s, x, y in zip(scales, rec, ys)]
    for ax, pts in points.items():
        xy = np.array([(x, y) for _, _, x, y in pts], dtype=float)
        span = np.maximum(xy.max(0) - xy.min(0), 1e-9)
        labelled = []
        for i, s, x, y in pts:
            here, side = np.array([x, y]) / span, i % 2
            if any(np.hypot(*(here - p)) < 0.1 for p in labelled):
                continue
            labelled.append(here)
            ax.annotate(f"{s:g}", (x, y), textcoords="offset points", xytext=(4, 4 if side == 0 else -4),
                        va="bottom" if side == 0 else "top")
    for ax, key in zip(axes, ("precision (fidelity)", "label accuracy")):
        ax.set(xlabel="recall (diversity)", ylabel=key)
        ax.margins(0.15)
        ax.grid(alpha=0.3)
    fig.legend(*axes[0].get_legend_handles_labels(), loc="outside lower center", ncols=min(len(curves), 3))
    fig.suptitle("guidance trades diversity for fidelity (numbers: the scale)")
    return fig


# ======================================================================================================================
# 09 FID: spoiled real images, the features' Gaussians
# ======================================================================================================================
def fid_explorer_figure(images, bars, current: str, title: str | None = None, figsize=(8.0, 3.8)):
    """Left: a grid of (degraded) images. Right: horizontal bars of FID, ``current`` highlighted.

    ``bars``: {label: FID}, drawn top to bottom in order.
    """
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=figsize, layout="constrained", width_ratios=[1, 1.4])
    draw_grid(ax, images, title=f"{len(images)} of the images")
    labels = list(bars)
    values = [bars[k] for k in labels]
    colors = ["crimson" if k == current else "tab:gray" if "floor" in k else "tab:blue" for k in labels]
    ax2.barh(np.arange(len(labels)), values, color=colors)
    ax2.set_yticks(np.arange(len(labels)), labels)
    ax2.invert_yaxis()
    for i, v in enumerate(values):
        ax2.text(v, i, f" {v:.2f}", va="center")
    ax2.set_xscale("symlog", linthresh=1.0)
    ax2.set_xlim(0, max(max(values) * 3, 10))
    ax2.set_xlabel("FID (digits features; lower is better)")
    plain_ticks(ax2.xaxis)
    ax2.grid(alpha=0.3, axis="x")
    fig.suptitle(title or f"{current}: FID {bars[current]:.2f}", wrap=True)
    return fig


def feature_gaussians_figure(sets, basis=None, figsize=(5.2, 4.2), n_points: int = 400):
    """FID's view of image sets: their features projected on the two main axes of ``basis`` (default: the first
    set), each set drawn as points and its fitted Gaussian as 1- and 2-sigma ellipses.

    ``sets``: {label: features (N, D)}.
    """
    arrays = {k: np.asarray(v.detach().cpu() if isinstance(v, torch.Tensor) else v, dtype=np.float64)
              for k, v in sets.items()}
    base = arrays[next(iter(arrays))] if basis is None else np.asarray(basis, dtype=np.float64)
    centre = base.mean(0)
    _, _, vt = np.linalg.svd(base - centre, full_matrices=False)
    proj = vt[:2].T
    fig, ax = plt.subplots(figsize=figsize, layout="constrained")
    theta = np.linspace(0, 2 * np.pi, 100)
    for (label, f), color in zip(arrays.items(), ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple"]):
        p = (f - centre) @ proj
        ax.scatter(p[:n_points, 0], p[:n_points, 1], s=4, alpha=0.35, color=color)
        mu, cov = p.mean(0), np.cov(p, rowvar=False)
        vals, vecs = np.linalg.eigh(cov)
        circle = np.stack([np.cos(theta), np.sin(theta)])
        for k, ls in ((1, "-"), (2, "--")):
            e = mu[:, None] + vecs @ (k * np.sqrt(np.maximum(vals, 0))[:, None] * circle)
            ax.plot(e[0], e[1], ls, color=color, lw=1.5, label=label if k == 1 else None)
        ax.plot(*mu, "x", color=color, ms=8, mew=2)
    ax.set(xlabel="feature PC 1", ylabel="feature PC 2", title="features and their fitted Gaussians (1σ, 2σ)")
    ax.legend()
    ax.grid(alpha=0.3)
    return fig


def fid_floor_figure(sizes, fids, label: str = "real images", reference: str = "the reference",
                     figsize=(6.4, 3.8)):
    """FID of real images against a reference set, by the number n of images: the floor of every FID of n samples.

    ``sizes`` (K,) the counts n; ``fids`` K sequences, the FIDs of random draws of n images (one draw is drawn
    without an error bar). Log-log, mean ± std over the draws, and the line ∝ 1/n through the smallest n.
    """
    sizes = np.asarray(sizes, dtype=float)
    mean = np.array([np.mean(f) for f in fids])
    std = np.array([np.std(f, ddof=1) if len(f) > 1 else 0.0 for f in fids])
    fig, ax = plt.subplots(figsize=figsize, layout="constrained")
    ax.errorbar(sizes, mean, yerr=std, fmt="o-", capsize=4, label=f"{label} (mean ± std of draws)")
    ax.plot(sizes, mean[0] * sizes[0] / sizes, ":", color="gray", label="∝ 1 / n")
    for n, m in zip(sizes, mean):
        ax.annotate(f"{m:.2f}", (n, m), textcoords="offset points", xytext=(6, 4))
    ax.set_xscale("log"), ax.set_yscale("log")
    ax.set_xlim(sizes.min() / 1.3, sizes.max() * 1.6)  # room for the last value's label
    ax.set_xticks(sizes, [f"{n:g}" for n in sizes])
    ax.xaxis.set_minor_locator(ticker.NullLocator())
    ax.yaxis.set_major_formatter(ticker.FormatStrFormatter("%g"))
    ax.yaxis.set_minor_formatter(ticker.NullFormatter())
    ax.set_xlabel("n, the number of images")
    ax.set_ylabel(f"FID against {reference}")
    ax.set_title("the floor: FID of real images")
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    return fig


def fid_is_figure(sets, n_show: int = 24, ncol: int = 6, figsize=(8.0, 5.2)):
    """What FID sees and the Inception Score does not: a grid of each image set, then bars of both numbers.

    ``sets``: {label: (images (N, C, H, W) in [-1, 1], FID, IS)} or {label: (images, FID, IS, spread)}, the
    spread within a class as a third panel; the first ``n_show`` images of each are drawn, ``ncol`` to a row; the
    first set (real images) is drawn in grey.
    """
    labels = list(sets)
    panels = [(1, "FID against the test digits\n(lower is better)"),
              (2, "digits Inception Score\n(higher counts as better)")]
    if all(len(v) > 3 for v in sets.values()):
        panels.append((3, "spread within a class\n(digits features)"))
    fig = plt.figure(figsize=figsize, layout="constrained")
    top, bottom = fig.subfigures(2, 1, height_ratios=[1.0, 1.2])
    grids = top.subplots(1, len(labels), squeeze=False)[0]
    for ax, label in zip(grids, labels):
        draw_grid(ax, sets[label][0][:n_show], ncol=ncol, title=label)
    axes = bottom.subplots(1, len(panels), sharey=True)
    ax_fid = axes[0]
    y = np.arange(len(labels))
    for ax, (k, xlabel) in zip(axes, panels):
        values = [sets[label][k] for label in labels]
        ax.barh(y, values, color=["tab:gray"] + ["tab:blue"] * (len(labels) - 1))
        for i, v in enumerate(values):
            ax.annotate(f"{v:.2f}", (v, i), textcoords="offset points", xytext=(4, 0), va="center")
        ax.set_xlim(0, max(values) * 1.35)
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3, axis="x")
    ax_fid.set_yticks(y, labels)
    ax_fid.invert_yaxis()
    return fig


# ======================================================================================================================
# 10 fast sampling and likelihood: FID and speed against the number of steps
# ======================================================================================================================
SAMPLER_COLORS = {"ancestral": "tab:blue", "DDIM η=0": "tab:orange", "DDIM η=1": "tab:green",
                  "DPM-Solver++(2M)": "tab:red"}


def _sweep_points(sweep, sampler: str):
    points = sorted((p for p in sweep.points if p.sampler == sampler), key=lambda p: p.steps)
    return np.array([p.steps for p in points]), points


def draw_fid_vs_steps(ax, sweep, highlight: tuple[str, int] | None = None, legend: bool = True):
    """FID of each sampler of a :class:`~ddpm_lite.course.fast_sampling.Sweep` against its step count (log x,
    labelled with the step counts run), the FID of as many real images dashed (the floor at that sample size) in a
    grey band of its spread over random draws, and a ring at ``highlight`` (sampler, steps)."""
    for i, sampler in enumerate(sweep.samplers):  # curves may meet: a marker and a line style of their own
        steps, points = _sweep_points(sweep, sampler)
        ax.plot(steps, [p.fid for p in points], "os^Dv"[i % 5] + LINE_STYLES[i % len(LINE_STYLES)], ms=5,
                label=sampler, color=SAMPLER_COLORS.get(sampler))
    if not np.isnan(sweep.real_fid):
        ax.axhline(sweep.real_fid, color="k", ls="--", lw=1, label="real images")
        if not np.isnan(sweep.real_fid_std):
            ax.axhspan(sweep.real_fid - sweep.real_fid_std, sweep.real_fid + sweep.real_fid_std, color="0.85",
                       zorder=0, label="± 1 std over draws")
    if highlight is not None and sweep.has(*highlight):
        p = sweep.get(*highlight)
        ax.plot([p.steps], [p.fid], "o", ms=11, mfc="none", mec="red", mew=2)
    ax.set_xscale("log")
    plain_ticks(ax.xaxis, sweep.steps)
    ax.set_xlabel("sampling steps")
    ax.set_ylabel(f"FID ({sweep.points[0].num_samples} samples)")
    ax.grid(alpha=0.3, which="both")
    if legend:
        ax.legend()


def draw_speed_vs_steps(ax, sweep, highlight: tuple[str, int] | None = None, legend: bool = True):
    """Measured samples per second against the step count (log-log, labelled with the step counts run), with the
    1/steps line through the fastest point: the cost of sampling is one network call per step."""
    for i, sampler in enumerate(sweep.samplers):
        steps, points = _sweep_points(sweep, sampler)
        ax.plot(steps, [p.samples_per_second for p in points], "os^Dv"[i % 5] + LINE_STYLES[i % len(LINE_STYLES)],
                ms=5, label=sampler, color=SAMPLER_COLORS.get(sampler))
    best = max(sweep.points, key=lambda p: p.samples_per_second)
    ks = np.array(sweep.steps, dtype=float)
    ax.plot(ks, best.samples_per_second * best.steps / ks, color="gray", ls=":", lw=1, label="∝ 1 / steps")
    if highlight is not None and sweep.has(*highlight):
        p = sweep.get(*highlight)
        ax.plot([p.steps], [p.samples_per_second], "o", ms=11, mfc="none", mec="red", mew=2)
    ax.set_xscale("log"), ax.set_yscale("log")
    plain_ticks(ax.xaxis, sweep.steps)
    plain_ticks(ax.yaxis)
    ax.set_xlabel("sampling steps")
    ax.set_ylabel("samples / s (measured)")
    ax.grid(alpha=0.3, which="both")
    if legend:
        ax.legend()


def sampling_sweep_figure(sweep, sampler: str, steps: int, n_show: int = 36, figsize=(8.0, 4.3)):
    """The slide "quality against steps": samples of ``sampler`` at ``steps`` steps, then FID and measured speed
    against the step count for every sampler, the chosen point ringed; one legend below."""
    fig, (a0, a1, a2) = plt.subplots(1, 3, figsize=figsize, layout="constrained", width_ratios=[1, 1.2, 1.2])
    if sweep.has(sampler, steps):
        p = sweep.get(sampler, steps)
        draw_grid(a0, p.samples[:n_show], title=f"{sampler}, {steps} steps")
        fig.suptitle(f"{sampler}, {steps} steps: FID {p.fid:.1f}, {p.seconds:.2f} s for {p.num_samples} samples "
                     f"({p.samples_per_second:.1f} samples/s on this machine)", wrap=True)
    else:
        a0.text(0.5, 0.5, f"{sampler}\nwas not run\nat {steps} steps", ha="center", va="center")
        a0.set_title(f"{sampler}, {steps} steps")
        fig.suptitle(f"{sampler}, {steps} steps: not run")
    a0.set_xticks([]), a0.set_yticks([])
    draw_fid_vs_steps(a1, sweep, (sampler, steps), legend=False)
    a1.set_title("quality: FID")
    draw_speed_vs_steps(a2, sweep, (sampler, steps), legend=False)
    a2.set_title("cost: speed")
    legend_below(fig, a1, a2)
    return fig


def variance_gap_figure(diffusion: GaussianDiffusion, chains: Mapping[str, GaussianDiffusion],
                        v_curves: Mapping[str, tuple] | None = None, figsize=(8.0, 3.6)):
    """Where a learned variance matters: log(beta_t / beta-tilde_t), the factor in the gradient of L_t with respect
    to v (Improved DDPM eq. 15), along the full chain and at the kept steps of respaced ``chains`` ({label:
    SpacedDiffusion}); right, when ``v_curves`` = {label: (timesteps, v)} is given, those curves of v against t."""
    fig, axes = plt.subplots(1, 2 if v_curves else 1, figsize=figsize, layout="constrained", squeeze=False)
    ax = axes[0, 0]
    t = np.arange(1, diffusion.num_timesteps)
    ax.plot(t, np.log(diffusion.betas[1:] / diffusion.posterior_variance[1:]), color="k",
            label=f"{diffusion.num_timesteps} steps")
    for (label, chain), marker in zip(chains.items(), "osD^v"):
        kept = chain.timestep_map.numpy()[1:]
        ax.plot(kept, np.log(chain.betas[1:] / chain.posterior_variance[1:]), marker, ms=5, ls="none", label=label)
    ax.set_yscale("log")
    ax.set_xlabel("t (original step)")
    ax.set_ylabel("log(β / β̃)")
    ax.set_title("the gap v interpolates across")
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    if v_curves:
        ax2 = axes[0, 1]
        for (label, (ts, v)), marker in zip(v_curves.items(), "os^D"):
            ax2.plot(ts, v, marker + "-", ms=5, label=label)
        ax2.set_ylim(0, max(1.05, 1.05 * max(float(np.max(v)) for _, v in v_curves.values())))
        ax2.set_xlabel("t (original step)")
        ax2.set_ylabel("v (0: β̃, 1: β)")
        ax2.set_title("v used against v needed")
        ax2.grid(alpha=0.3)
        ax2.legend()
    return fig


def same_noise_figure(sweep, samplers: Sequence[str] = ("ancestral", "DDIM η=0"), n_show: int = 8,
                      agreement: Mapping[str, Sequence[float]] | None = None, figsize=None):
    """The same starting noise x_T through each sampler at every step count of a
    :class:`~ddpm_lite.course.fast_sampling.Sweep`: one panel per sampler, one row of ``n_show`` samples per step
    count. A deterministic sampler keeps its columns; ``agreement`` ({sampler: one number per row}, e.g. the share
    of samples whose class matches the last row's) is written at the right end of each row."""
    from ..images import make_grid

    rows_max = max(len(sweep.steps_of(s)) for s in samplers)
    fig, axes = plt.subplots(1, len(samplers), figsize=figsize or (8.0, 0.9 + 0.34 * rows_max),
                             layout="constrained", squeeze=False)
    for ax, sampler in zip(axes[0], samplers):
        steps = sweep.steps_of(sampler)
        rows = torch.cat([sweep.get(sampler, k).samples[:n_show] for k in steps])
        ax.imshow(make_grid(rows, ncol=n_show), cmap="gray", vmin=0, vmax=255, interpolation="nearest")
        h = rows.shape[-2]
        centres = [1 + r * (h + 1) + (h - 1) / 2 for r in range(len(steps))]
        ax.set_yticks(centres, [f"{k}" for k in steps])
        ax.set_xticks([])
        ax.set_ylabel("sampling steps")
        ax.set_title(sampler)
        if agreement is not None and sampler in agreement:
            right = ax.secondary_yaxis("right")
            right.set_yticks(centres, [f"{a:.0%}" for a in agreement[sampler]])
            right.set_ylabel(f"same class as at {steps[-1]}")
    return fig


def _image_rows(ax, rows: Mapping[str, torch.Tensor], col_labels: Sequence[str] | None = None) -> int:
    """Rows of images ({label: (N, C, H, W)}, the same N) on one axes, each row labelled at the left; returns the
    image height (for placing marks)."""
    from ..images import make_grid

    rows = {k: torch.as_tensor(v).detach().float().cpu() for k, v in rows.items()}
    n = len(next(iter(rows.values())))
    ax.imshow(make_grid(torch.cat(list(rows.values())), ncol=n), cmap="gray", vmin=0, vmax=255,
              interpolation="nearest")
    h, w = next(iter(rows.values())).shape[-2:]
    ax.set_yticks([1 + r * (h + 1) + (h - 1) / 2 for r in range(len(rows))], list(rows))
    if col_labels is not None:
        ax.set_xticks([1 + c * (w + 1) + (w - 1) / 2 for c in range(n)], list(col_labels))
    else:
        ax.set_xticks([])
    ax.tick_params(length=0)
    return h


def inversion_figure(rms: Mapping[int, float], originals, reconstructions: Mapping[int, torch.Tensor],
                     figsize=(8.0, 3.4)):
    """DDIM inversion (x_0 -> x_T -> x_0): left, the RMS error of the round trip against the number of steps each
    way (log-log; one 8-bit grey level, 2/255, dashed); right, ``originals`` above their reconstructions at each
    step count of ``reconstructions`` ({steps: images})."""
    fig, (a0, a1) = plt.subplots(1, 2, figsize=figsize, layout="constrained", width_ratios=[1, 1.25])
    ks = sorted(rms)
    a0.plot(ks, [rms[k] for k in ks], "o-", ms=5, color="tab:orange")
    a0.axhline(2 / 255, color="k", ls="--", lw=1)
    a0.annotate("one grey level (2/255)", (0.03, 2 / 255), xycoords=("axes fraction", "data"), xytext=(0, 4),
                textcoords="offset points", va="bottom")
    a0.set_xscale("log"), a0.set_yscale("log")
    plain_ticks(a0.xaxis, ks)
    plain_ticks(a0.yaxis)
    a0.set_xlabel("DDIM steps each way")
    a0.set_ylabel("RMS error (data in [-1, 1])")
    a0.set_title(r"$x_0 \to x_T \to x_0$")
    a0.grid(alpha=0.3, which="both")
    rows = {"original": originals, **{f"{k} steps": reconstructions[k] for k in sorted(reconstructions)}}
    _image_rows(a1, rows)
    a1.set_title(r"decoded from their own $x_T$")
    return fig


def latent_interpolation_figure(paths: Mapping[str, torch.Tensor], weights: Sequence[float], current: float,
                                norms: Mapping[str, tuple] | None = None, reference_norm: float | None = None,
                                title: str | None = None, figsize=(8.0, 3.6)):
    """Two digits mixed through their DDIM latents: ``paths`` ({"slerp": images, "lerp": images}, one image per
    weight of ``weights``) as rows, the column of the ``current`` weight framed in red; right, when ``norms`` =
    {label: (weights, |x_T| of the mix)} is given, the norm of the mixed latent against the weight, with
    ``reference_norm`` (sqrt(d), a Gaussian's) dashed and the current weight marked."""
    fig, axes = plt.subplots(1, 2 if norms else 1, figsize=figsize, layout="constrained", squeeze=False,
                             width_ratios=[2.1, 1] if norms else None)
    a0 = axes[0, 0]
    h = _image_rows(a0, paths, [f"{w:g}" for w in weights])
    a0.set_xlabel("mixing weight w (0: first digit, 1: second)")
    col = int(np.argmin(np.abs(np.asarray(weights, dtype=float) - current)))
    a0.add_patch(plt.Rectangle((col * (h + 1), 0), h + 1, len(paths) * (h + 1), fill=False, ec="red", lw=2.5))
    if title is not None:
        fig.suptitle(title, wrap=True)
    if norms:
        a1 = axes[0, 1]
        for (label, (ws, ns)), style_ in zip(norms.items(), ["-", "--"]):
            a1.plot(ws, ns, style_, lw=2, label=label, color={"slerp": "tab:orange", "lerp": "tab:blue"}.get(label))
        if reference_norm is not None:
            a1.axhline(reference_norm, color="k", ls=":", lw=1, label=f"√d = {reference_norm:g}")
        a1.axvline(current, color="red", lw=1.5)
        top = max([float(np.max(ns)) for _, ns in norms.values()] + [reference_norm or 0.0])
        a1.set_ylim(0, 1.15 * top)
        a1.set_xlabel("w")
        a1.set_ylabel("|x_T| of the mix")
        a1.set_title("the latent's norm")
        a1.grid(alpha=0.3)
        a1.legend(loc="best")
    return fig


# ======================================================================================================================
# 11 beyond images: waveforms, spectrograms, the forward process on a sound
# ======================================================================================================================
def _as_signals(x) -> np.ndarray:
    x = x.detach().cpu().double().numpy() if isinstance(x, torch.Tensor) else np.asarray(x, dtype=np.float64)
    if x.ndim == 1:
        x = x[None]
    return x.reshape(x.shape[0], -1)  # (N, 1, L) -> (N, L)


def draw_waveform(ax, signal, sample_rate: int, title: str | None = None, ms: float | None = 40.0, color="tab:blue"):
    """One signal (L,) or (1, L) against time in milliseconds; only the first ``ms`` milliseconds (None: all)."""
    x = _as_signals(signal)[0]
    n = len(x) if ms is None else min(len(x), int(round(ms * sample_rate / 1000)))
    ax.plot(np.arange(n) * 1000 / sample_rate, x[:n], lw=1.0, color=color)
    ax.set_ylim(-1.6, 1.6)
    ax.set_xlabel("time (ms)")
    if title is not None:
        ax.set_title(title)


def draw_spectrogram(ax, signal, sample_rate: int, title: str | None = None, n_fft: int = 256, hop: int = 32,
                     colorbar: bool = False):
    """The log-magnitude spectrogram (dB, 0 at the loudest bin) of one signal, frequency up to Nyquist; returns
    the image (for a colour bar: ``colorbar=True`` adds one, in dB, to the right of the axes)."""
    from .waveforms import spectrogram

    x = torch.as_tensor(_as_signals(signal)[0])
    spec = spectrogram(x, n_fft=n_fft, hop=hop).numpy()
    duration = len(x) / sample_rate * 1000
    im = ax.imshow(spec, origin="lower", aspect="auto", cmap="magma", vmin=-80, vmax=0,
                   extent=(0, duration, 0, sample_rate / 2))
    ax.set_xlabel("time (ms)")
    ax.set_ylabel("Hz")
    if title is not None:
        ax.set_title(title)
    if colorbar:
        _db_colorbar(ax, im)
    return im


def _db_colorbar(ax, image) -> None:
    """A colour bar in dB for a spectrogram, just right of ``ax`` (an inset: ``fig.axes`` keeps its panels)."""
    cax = ax.inset_axes([1.04, 0.0, 0.06, 1.0])
    ax.figure.colorbar(image, cax=cax, label="dB", ticks=[-80, -40, 0])


def waveform_figure(signals, sample_rate: int, titles: Sequence[str] | None = None, ms: float | None = 40.0,
                    n_fft: int = 256):
    """One column per signal (N, 1, L): the waveform (first ``ms`` milliseconds) above its spectrogram."""
    x = _as_signals(signals)
    n = len(x)
    fig, axes = plt.subplots(2, n, figsize=(min(style.WIDTH_IN, 2.0 * n + 0.6), 4.6), squeeze=False,
                             layout="constrained", sharex="row", sharey="row")
    for i in range(n):
        title = titles[i] if titles is not None else f"signal {i}"
        draw_waveform(axes[0, i], x[i], sample_rate, title, ms)
        im = draw_spectrogram(axes[1, i], x[i], sample_rate, n_fft=n_fft)
        if i:
            axes[1, i].set_ylabel("")
    _db_colorbar(axes[1, -1], im)
    return fig


def waveform_noising_figure(diffusion: GaussianDiffusion, x0, timesteps: Sequence[int], sample_rate: int,
                            seed: int = 0, ms: float | None = 40.0, n_fft: int = 256, max_cols: int = 3):
    """The forward process on one waveform (1, L): x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps at each
    of ``timesteps`` (one noise, drawn from ``seed``), waveforms above spectrograms, with the SNR in dB; at most
    ``max_cols`` timesteps a row (``fig.axes``: the waveforms of a row, then its spectrograms, row after row)."""
    from .waveforms import snr_db

    x0 = torch.as_tensor(x0).float().reshape(1, -1)
    noisy = _noised(diffusion, x0, timesteps, seed=seed)
    ncols = min(len(timesteps), max_cols)
    blocks = math.ceil(len(timesteps) / ncols)
    fig, axes = plt.subplots(2 * blocks, ncols, figsize=(min(style.WIDTH_IN, 2.5 * ncols + 0.6), 3.7 * blocks),
                             squeeze=False, layout="constrained", sharex="row", sharey="row")
    for c in range(len(timesteps) - (blocks - 1) * ncols, ncols):  # the empty places of the last row
        axes[-2, c].axis("off"), axes[-1, c].axis("off")
    for i, (t, x) in enumerate(zip(timesteps, noisy)):
        r, c = 2 * (i // ncols), i % ncols
        snr = float(snr_db(x0, float(diffusion.alphas_cumprod[t]))[0])
        draw_waveform(axes[r, c], x, sample_rate, f"t = {t}, SNR {round(snr):d} dB", ms)
        im = draw_spectrogram(axes[r + 1, c], x, sample_rate, n_fft=n_fft)
        if c:
            axes[r + 1, c].set_ylabel("")
        if c == ncols - 1 or i == len(timesteps) - 1:
            _db_colorbar(axes[r + 1, c], im)
    return fig


def waveform_explorer_figure(diffusion: GaussianDiffusion, x0, t: int, sample_rate: int, noise=None, seed: int = 0,
                             ms: float = 20.0, n_fft: int = 256):
    """The forward process on one waveform at step t: x_0 and x_t (the first ``ms`` milliseconds) across the top,
    below them the spectrogram of x_t (in dB) and the SNR in dB against t with t marked (0 dB: signal and noise
    equally loud)."""
    from .waveforms import snr_db

    x0 = torch.as_tensor(x0).float().reshape(1, -1)
    if noise is None:
        noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(seed))
    x_t = diffusion.q_sample(x0, torch.tensor([t]), noise.reshape(x0.shape).float())
    ab = float(diffusion.alphas_cumprod[t])
    curve = snr_db(x0.expand(diffusion.num_timesteps, -1), torch.from_numpy(diffusion.alphas_cumprod)).numpy()
    fig = plt.figure(figsize=(style.WIDTH_IN, 5.2), layout="constrained")
    panels = fig.subplot_mosaic([["wave", "wave"], ["spec", "snr"]], height_ratios=[1, 1.3])
    a0, a1, a2 = panels["wave"], panels["spec"], panels["snr"]
    draw_waveform(a0, x_t, sample_rate, f"x{SUBSCRIPT_T}, t = {t}", ms)
    draw_waveform(a0, x0, sample_rate, None, ms, color="0.6")
    a0.lines[-1].set_label("x₀"), a0.lines[0].set_label(f"x{SUBSCRIPT_T}")
    a0.set_ylim(-3.5, 3.5)
    a0.legend(loc="upper right", ncols=2)
    draw_spectrogram(a1, x_t, sample_rate, f"spectrogram of x{SUBSCRIPT_T}", n_fft=n_fft, colorbar=True)
    a2.plot(np.arange(diffusion.num_timesteps), curve, color="tab:purple")
    a2.axhline(0.0, color="k", lw=0.8, ls="--")
    a2.plot([t], [curve[t]], "o", color="tab:red")
    a2.set_xlabel("t"), a2.set_ylabel("SNR (dB)")
    a2.set_title(f"SNR({t}) = {curve[t]:.1f} dB")
    a2.grid(alpha=0.3)
    fig.suptitle(f"t = {t}: x{SUBSCRIPT_T} = {math.sqrt(ab):.3f}·x₀ + {math.sqrt(1 - ab):.3f}·ε")
    return fig
