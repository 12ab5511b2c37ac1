"""Generate every figure of the slide deck into assets/, from the package's own code.

    python tools/make_figures.py                 # all figures -> assets/*.png + assets/figures.json
    python tools/make_figures.py --only unet     # some of them (the manifest keeps the other entries)
    python tools/make_figures.py --list          # names, files and what each figure still waits for

This is what `make figures` runs. Each figure is one function ``fig_<name>() -> Figure`` registered with
``@figure``; the registry records the package pieces it uses and, where a piece is not written yet (a trained
checkpoint, the Inception-based FID), what the figure will gain from it. Nothing here is made-up data: the
panels come from the package's schedules, forward process, samplers and models, and from the shipped digits
checkpoints (``ddpm_lite/checkpoints``: the denoiser, the noisy classifier, the FID feature network).

Determinism: fixed seeds, one torch thread, PNG metadata stripped (``metadata={"Software": None}``), so running
it twice gives byte-identical files on the same machine and library versions. The manifest
``assets/figures.json`` maps each file to its sha256 and the function that made it; tests/test_figures.py
checks it against the files and the deck.
"""
from __future__ import annotations

import argparse
import functools
import hashlib
import json
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(ROOT))

from ddpm_lite import GaussianDiffusion, LossSecondMomentResampler, get_betas  # noqa: E402
from ddpm_lite.course import plotting  # noqa: E402
from ddpm_lite.course.learned_variance import MeanOnly, with_variance  # noqa: E402
from ddpm_lite.data import load_dataset, toy_2d  # noqa: E402
from ddpm_lite.guidance import LabelBlind, classifier_cond_fn  # noqa: E402
from ddpm_lite.metrics import extract_features, label_accuracy, load_digits_feature_net  # noqa: E402
from ddpm_lite.metrics.fid import fid_from_features  # noqa: E402
from ddpm_lite.models import UNetConfig, UNetModel  # noqa: E402
from ddpm_lite.models.summary import unet_summary  # noqa: E402
from ddpm_lite.pretrained import load_pretrained  # noqa: E402
from ddpm_lite.sampling import generate  # noqa: E402

ASSETS = ROOT / "assets"
MANIFEST = "figures.json"
DPI = 110
SEED = 0

STYLE = {
    "font.size": 12, "axes.titlesize": 13, "axes.labelsize": 12, "legend.fontsize": 11,
    "mathtext.fontset": "cm", "axes.spines.top": False, "axes.spines.right": False,
    "svg.hashsalt": "ddpm-lite", "figure.dpi": DPI, "savefig.dpi": DPI,
}
BLUE, ORANGE, GREEN, RED, GREY = "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#7f7f7f"


@dataclass
class FigureSpec:
    name: str
    func: Callable[[], plt.Figure]
    uses: list[str]
    waits_for: list[str] = field(default_factory=list)

    @property
    def file(self) -> str:
        return f"{self.name}.png"


FIGURES: dict[str, FigureSpec] = {}


def figure(name: str, uses: list[str], waits_for: list[str] | None = None):
    """Register ``fig_<name>``: ``uses`` names the package code it draws from; ``waits_for`` the package pieces
    (not written yet) that would replace or extend a panel, reported by ``--list`` and kept in the manifest."""
    def register(func):
        FIGURES[name] = FigureSpec(name, func, uses, waits_for or [])
        return func
    return register


# ---------------------------------------------------------------------------------------------- shared data
def _generator(offset: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(SEED + offset)


def _digit(label: int = 2, size: str = "digits16") -> torch.Tensor:
    """The first training image of ``label`` from the embedded digits, (1, 1, H, W) in [-1, 1]."""
    ds = load_dataset(size, "train")
    return ds.images[int((ds.labels == label).nonzero()[0])][None]


@functools.cache
def _shipped(name: str):
    """(model, diffusion) of a shipped digits checkpoint (ddpm_lite/checkpoints, `make checkpoints`), on the CPU."""
    model, diffusion, _ = load_pretrained(name, device="cpu")
    return model, diffusion


@functools.cache
def _digits_vb_terms(n: int = 64) -> tuple[np.ndarray, float]:
    """Terms L_t (bits/dim), (n, T) with column t = L_t, and the mean prior term L_T, of the shipped digits model
    on the first ``n`` test digits: every one of the 1000 terms of the bound."""
    model, diffusion = _shipped("digits")
    x0 = load_dataset("digits", "test").images[:n]
    out = diffusion.calc_bpd_loop(model, x0, generator=_generator(3))
    return out["vb"].double().numpy(), out["prior_bpd"].double().mean().item()


def _show(ax, img: torch.Tensor, title: str | None = None):
    ax.imshow(img.squeeze().clamp(-1, 1).numpy(), cmap="gray", vmin=-1, vmax=1, interpolation="nearest")
    ax.set_xticks([]), ax.set_yticks([])
    for s in ax.spines.values():
        s.set_visible(False)
    if title:
        ax.set_title(title, fontsize=12)


def _scatter(ax, pts: torch.Tensor, color=BLUE, lim: float = 3.0, s: float = 2.0):
    ax.scatter(pts[:, 0].numpy(), pts[:, 1].numpy(), s=s, color=color, alpha=0.5, linewidths=0, rasterized=True)
    ax.set_xlim(-lim, lim), ax.set_ylim(-lim, lim), ax.set_aspect("equal")
    ax.set_xticks([]), ax.set_yticks([])
    for s_ in ax.spines.values():
        s_.set_visible(True), s_.set_color("#cccccc")


def _box(ax, xy, w, h, text, color="#e8f0fb", edge=BLUE, fontsize=12, **kw):
    ax.add_patch(FancyBboxPatch((xy[0] - w / 2, xy[1] - h / 2), w, h, boxstyle="round,pad=0.02,rounding_size=0.05",
                                facecolor=color, edgecolor=edge, linewidth=1.5))
    ax.text(xy[0], xy[1], text, ha="center", va="center", fontsize=fontsize, **kw)


def _arrow(ax, a, b, color="#333333", text=None, dy=0.12, rad=0.0, fontsize=11, style="-|>", lw=1.6):
    ax.add_patch(FancyArrowPatch(a, b, arrowstyle=style, mutation_scale=14, color=color, linewidth=lw,
                                 connectionstyle=f"arc3,rad={rad}", shrinkA=2, shrinkB=2))
    if text:
        ax.text((a[0] + b[0]) / 2, (a[1] + b[1]) / 2 + dy, text, ha="center", va="center", fontsize=fontsize,
                color=color)


def _blank(ax, xlim=(0, 10), ylim=(0, 4)):
    ax.set_xlim(*xlim), ax.set_ylim(*ylim), ax.axis("off")


# ---------------------------------------------------------------------------------------------- the figures
@figure("forward_chain", uses=["GaussianDiffusion.q_sample", "get_betas('linear')", "data.load_dataset('digits16')",
                               "data.toy_2d('swiss_roll')"])
def fig_forward_chain():
    """A digit and a 2-D point cloud pushed through q(x_t | x_0) at a few t: structure fades into N(0, I)."""
    diffusion = GaussianDiffusion(get_betas("linear", 1000))
    ts = [0, 50, 100, 200, 350, 600, 999]
    digit = _digit(2)
    cloud = toy_2d("swiss_roll", 1500, seed=SEED)
    fig, axes = plt.subplots(2, len(ts), figsize=(11, 3.6), gridspec_kw={"hspace": 0.08, "wspace": 0.08})
    for j, t in enumerate(ts):
        g = _generator(1)
        img = diffusion.q_sample(digit, torch.tensor([t]), noise=torch.randn(digit.shape, generator=g))
        pts = diffusion.q_sample(cloud, torch.full((len(cloud),), t), noise=torch.randn(cloud.shape, generator=g))
        _show(axes[0, j], img, f"$t = {t + 1}$")
        _scatter(axes[1, j], pts)
        axes[1, j].set_xlabel(rf"$\bar\alpha_t = {diffusion.alphas_cumprod[t]:.3f}$", fontsize=11)
    fig.suptitle(r"Forward process $q(x_t \mid x_0)$, linear schedule, $T = 1000$", y=0.99)
    return fig


@figure("generative_families", uses=["matplotlib drawing only"])
def fig_generative_families():
    """GAN, VAE, normalising flow and diffusion drawn as pipelines from data x to a latent z and back."""
    fig, ax = plt.subplots(figsize=(11, 6.2))
    _blank(ax, (0, 11), (0, 8.2))
    rows = [7.2, 5.2, 3.2, 1.2]
    names = ["GAN", "VAE", "Flow", "Diffusion"]
    for y, n in zip(rows, names):
        ax.text(0.1, y, n, fontsize=15, fontweight="bold", va="center")
    # GAN: z -> G -> x' -> D <- x
    y = rows[0]
    _box(ax, (2.0, y), 0.7, 0.6, "$z$", "#f2f2f2", GREY, 15)
    _box(ax, (3.8, y), 1.6, 0.8, "generator\n$G(z)$", "#fde9d9", ORANGE)
    _box(ax, (5.8, y), 0.7, 0.6, r"$x'$", "#f2f2f2", GREY, 15)
    _box(ax, (7.8, y), 1.8, 0.8, "discriminator\n$D(x)$", "#fde9d9", ORANGE)
    _box(ax, (7.8, y + 0.85), 0.7, 0.5, "$x$", "#f2f2f2", GREY, 14)
    ax.text(9.9, y, "real / fake?", fontsize=12, va="center", ha="center")
    for a, b in [((2.35, y), (3.0, y)), ((4.6, y), (5.45, y)), ((6.15, y), (6.9, y)), ((8.7, y), (9.3, y))]:
        _arrow(ax, a, b)
    _arrow(ax, (7.8, y + 0.6), (7.8, y + 0.4))
    ax.text(3.8, y - 0.7, "adversarial game, one network pass per sample", fontsize=10, color=GREY, ha="center")
    # VAE: x -> encoder -> z -> decoder -> x'
    y = rows[1]
    _box(ax, (2.0, y), 0.7, 0.6, "$x$", "#f2f2f2", GREY, 15)
    _box(ax, (3.9, y), 1.8, 0.8, "encoder\n$q_\\phi(z \\mid x)$", "#e2f0d9", GREEN)
    _box(ax, (5.8, y), 0.7, 0.6, "$z$", "#f2f2f2", GREY, 15)
    _box(ax, (7.7, y), 1.8, 0.8, "decoder\n$p_\\theta(x \\mid z)$", "#e2f0d9", GREEN)
    _box(ax, (9.6, y), 0.7, 0.6, r"$x'$", "#f2f2f2", GREY, 15)
    for a, b in [((2.35, y), (3.0, y)), ((4.8, y), (5.45, y)), ((6.15, y), (6.8, y)), ((8.6, y), (9.25, y))]:
        _arrow(ax, a, b)
    ax.text(5.8, y - 0.7, "maximise the evidence lower bound (ELBO)", fontsize=10, color=GREY, ha="center")
    # Flow: x <-> f <-> z, invertible
    y = rows[2]
    _box(ax, (2.0, y), 0.7, 0.6, "$x$", "#f2f2f2", GREY, 15)
    _box(ax, (4.8, y), 2.6, 0.8, "invertible flow $f$", "#e8e0f5", "#9467bd")
    _box(ax, (7.6, y), 0.7, 0.6, "$z$", "#f2f2f2", GREY, 15)
    _arrow(ax, (2.35, y + 0.12), (3.5, y + 0.12), text="$f(x)$", dy=0.25)
    _arrow(ax, (3.5, y - 0.12), (2.35, y - 0.12), text="$f^{-1}(z)$", dy=-0.28)
    _arrow(ax, (6.1, y + 0.12), (7.25, y + 0.12))
    _arrow(ax, (7.25, y - 0.12), (6.1, y - 0.12))
    ax.text(9.3, y, "exact likelihood by\nchange of variables", fontsize=10, color=GREY, ha="center", va="center")
    # Diffusion: x0 -> x1 -> ... -> xT (fixed), and back (learned)
    y = rows[3]
    xs = [2.0, 3.9, 5.8, 7.7, 9.6]
    labels = ["$x_0$", "$x_1$", "$x_2$", r"$\cdots$", "$x_T$"]
    for x_, lab in zip(xs, labels):
        if lab == r"$\cdots$":
            ax.text(x_, y, lab, fontsize=16, ha="center", va="center")
        else:
            _box(ax, (x_, y), 0.7, 0.6, lab, "#f2f2f2", GREY, 15)
    for a, b in zip(xs[:-1], xs[1:]):
        _arrow(ax, (a + 0.4, y + 0.12), (b - 0.4, y + 0.12), color=GREY, text="$q$", dy=0.22)
        _arrow(ax, (b - 0.4, y - 0.12), (a + 0.4, y - 0.12), color=BLUE, text=r"$p_\theta$", dy=-0.27)
    ax.text(5.8, y - 0.85, r"fixed noising $q$ (grey), learned denoising $p_\theta$ (blue); "
                           r"$x_T \approx \mathcal{N}(0, I)$",
            fontsize=10, color=GREY, ha="center")
    return fig


def _chain_axes(fig, reverse: bool):
    """The DDPM graphical model: x_T ... x_t, x_{t-1} ... x_0 with digit thumbnails and the q / p_theta arrows."""
    diffusion = GaussianDiffusion(get_betas("linear", 1000))
    digit = _digit(2)
    noise = torch.randn(digit.shape, generator=_generator(2))
    steps = [(0, "$x_0$"), (180, "$x_{t-1}$"), (200, "$x_t$"), (999, "$x_T$")]
    xs = [0.05, 0.29, 0.60, 0.85]
    for (t, label), x in zip(steps, xs):
        ax = fig.add_axes([x, 0.42, 0.11, 0.42])
        _show(ax, diffusion.q_sample(digit, torch.tensor([t]), noise=noise))
        ax.set_title(label, fontsize=16)
    arrows = fig.add_axes([0, 0.38, 1, 0.5])
    _blank(arrows, (0, 1), (0, 1))
    for a, b in [(0.16, 0.29), (0.71, 0.85)]:
        arrows.text((a + b) / 2, 0.5, r"$\cdots$", fontsize=18, ha="center", va="center")
    a, b = 0.415, 0.585
    if reverse:
        _arrow(arrows, (b, 0.5), (a, 0.5), color=BLUE, lw=2.2)
        arrows.text(0.5, 0.62, r"$p_\theta(x_{t-1} \mid x_t)$", ha="center", fontsize=15, color=BLUE)
    else:
        _arrow(arrows, (a, 0.5), (b, 0.5), color=GREY, lw=2.2)
        arrows.text(0.5, 0.62, r"$q(x_t \mid x_{t-1})$", ha="center", fontsize=15, color=GREY)


@figure("forward_definition", uses=["GaussianDiffusion.q_sample", "matplotlib mathtext"])
def fig_forward_definition():
    """The forward chain with DDPM eq. 2 (one step) and eq. 4 (any t in one jump)."""
    fig = plt.figure(figsize=(11, 4.4))
    _chain_axes(fig, reverse=False)
    fig.text(0.5, 0.24, r"$q(x_{1:T} \mid x_0) = \prod_{t=1}^{T} q(x_t \mid x_{t-1}), \qquad "
                        r"q(x_t \mid x_{t-1}) = \mathcal{N}(x_t;\ \sqrt{1 - \beta_t}\, x_{t-1},\ \beta_t I)$",
             ha="center", fontsize=17)
    fig.text(0.5, 0.08, r"$q(x_t \mid x_0) = \mathcal{N}(x_t;\ \sqrt{\bar\alpha_t}\, x_0,\ "
                        r"(1 - \bar\alpha_t) I), \qquad "
                        r"\bar\alpha_t = \prod_{s=1}^{t} (1 - \beta_s)$", ha="center", fontsize=17)
    fig.text(0.5, 0.95, "forward (fixed): add a little Gaussian noise at every step", ha="center", fontsize=14,
             color=GREY)
    return fig


@figure("reverse_definition", uses=["GaussianDiffusion.q_sample", "matplotlib mathtext"])
def fig_reverse_definition():
    """The reverse chain with DDPM eq. 1: a Markov chain of learned Gaussians, started from N(0, I)."""
    fig = plt.figure(figsize=(11, 4.4))
    _chain_axes(fig, reverse=True)
    fig.text(0.5, 0.24, r"$p_\theta(x_{0:T}) = p(x_T) \prod_{t=1}^{T} p_\theta(x_{t-1} \mid x_t), \qquad "
                        r"p(x_T) = \mathcal{N}(x_T;\ 0,\ I)$", ha="center", fontsize=17)
    fig.text(0.5, 0.08, r"$p_\theta(x_{t-1} \mid x_t) = "
                        r"\mathcal{N}(x_{t-1};\ \mu_\theta(x_t, t),\ \Sigma_\theta(x_t, t))$",
             ha="center", fontsize=17)
    fig.text(0.5, 0.95, "reverse (learned): a network predicts the mean (and variance) of each step back",
             ha="center", fontsize=14, color=GREY)
    return fig


@figure("loss_terms", uses=["pretrained.load_pretrained('digits')", "GaussianDiffusion.calc_bpd_loop",
                            "plotting.vlb_weight"])
def fig_loss_terms():
    """Left: the terms L_t of L_vlb per timestep for the shipped digits U-Net on 64 test digits (its bits/dim in
    the title). Right: the weight L_vlb gives ||eps - eps_theta||^2 at each t (DDPM eq. 12), which L_simple
    replaces by 1."""
    vb, prior = _digits_vb_terms()
    mean = vb.mean(0)
    T = len(mean)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2), gridspec_kw={"wspace": 0.3})
    ax1.loglog(np.arange(1, T) + 1, mean[1:], color=ORANGE, label=r"$L_{t-1}$, $t \geq 1$")
    ax1.loglog([1], [mean[0]], "s", color=GREEN, ms=8, label=r"$L_0$ (pixel decoder)")
    ax1.loglog([T + 1], [max(prior, 1e-6)], "^", color=RED, ms=8, label=r"$L_T$ (prior)")
    ax1.set(xlabel="timestep $t$", ylabel="term of $L_{vlb}$ (bits/dim)",
            title=f"trained U-Net on 8x8 digits: {mean.sum() + prior:.2f} bits/dim")
    ax1.legend(frameon=False, fontsize=10)
    for schedule, color in [("linear", BLUE), ("cosine", ORANGE)]:
        ax2.loglog(np.arange(2, 1001), plotting.vlb_weight(GaussianDiffusion(get_betas(schedule, 1000)))[1:],
                   color=color, label=schedule)
    ax2.axhline(1, color=GREY, ls="--", lw=1.2)
    ax2.text(2, 1.25, r"$L_{simple}$: weight 1", color=GREY, fontsize=11)
    ax2.set(xlabel="timestep $t$", ylabel=r"$\beta_t^2 / (2\sigma_t^2\alpha_t(1-\bar\alpha_t))$",
            title=r"weight of $\Vert\epsilon - \epsilon_\theta\Vert^2$ in $L_{vlb}$")
    ax2.legend(frameon=False)
    return fig


@figure("learned_variance", uses=["GaussianDiffusion.posterior_variance", "GaussianDiffusion.betas",
                                  "GaussianDiffusion._model_variance (learned_range, eq. 15)"])
def fig_learned_variance():
    """Improved DDPM's motivation for eq. 15: beta-tilde_t / beta_t is ~1 except in the first steps, so the
    network only has to choose inside a narrow (log-space) range; right: the range itself."""
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2), gridspec_kw={"wspace": 0.3})
    for T, color in [(100, GREEN), (1000, BLUE), (4000, ORANGE)]:
        d = GaussianDiffusion(get_betas("linear", T))
        ax1.plot(np.arange(1, T) / T, d.posterior_variance[1:] / d.betas[1:], color=color, label=f"$T = {T}$")
    ax1.set(xscale="log", xlabel="diffusion step $t / T$", ylabel=r"$\tilde\beta_t / \beta_t$",
            title=r"the two fixed choices of $\sigma_t^2$ agree ...")
    ax1.legend(frameon=False)
    d = GaussianDiffusion(get_betas("cosine", 1000))
    t = np.arange(1, 1000)
    ax2.fill_between(t, d.posterior_variance[1:], d.betas[1:], color=GREY, alpha=0.25, lw=0)
    ax2.loglog(t, d.betas[1:], color=RED, label=r"$\beta_t$ ($v = 1$)")
    ax2.loglog(t, d.posterior_variance[1:], color=BLUE, label=r"$\tilde\beta_t$ ($v = 0$)")
    v = 0.5
    ax2.loglog(t, np.exp(v * np.log(d.betas[1:]) + (1 - v) * np.log(d.posterior_variance[1:])), color=GREY,
               ls="--", label=r"$v = 0.5$")
    ax2.set(xlabel="timestep $t$ (cosine, $T = 1000$)", ylabel=r"$\Sigma_\theta$",
            title=r"... so learn $v$: $\Sigma_\theta = e^{v \log\beta_t + (1-v)\log\tilde\beta_t}$")
    ax2.legend(frameon=False)
    return fig


@figure("schedules", uses=["plotting.schedule_comparison_figure", "get_betas('linear')", "get_betas('cosine')",
                           "GaussianDiffusion.q_sample", "data.load_dataset('digits16')"])
def fig_schedules():
    """Improved DDPM figs. 3 and 5 (the package's own figure): alpha-bar_t of the linear and cosine schedules,
    x_t at t = 300 under each, and the latents at evenly spaced t with the same noise."""
    fig = plotting.schedule_comparison_figure(_digit(2)[0], 300, n_cols=8, seed=SEED)
    fig.set_size_inches(fig.get_figwidth() * 0.8, fig.get_figheight() * 0.8)  # same text, larger on the slide
    return fig


@figure("importance_sampling", uses=["LossSecondMomentResampler", "pretrained.load_pretrained('digits')",
                                     "GaussianDiffusion.calc_bpd_loop"])
def fig_importance_sampling():
    """Improved DDPM eq. 18 with the shipped digits model's terms L_t (64 test digits, every t). Left: the
    resampler's p_t after its warm-up (10 values of each L_t). Right: the loss curve training would log for this
    model: batch-128 estimates of L_vlb, t uniform (T * L_t) against importance-sampled (L_t / p_t)."""
    vb, prior = _digits_vb_terms()
    n, T = vb.shape
    sampler = LossSecondMomentResampler(T, history_per_term=10)
    for b in range(10):
        sampler.update_with_all_losses(list(range(T)), vb[b].tolist())
    p = sampler.weights()
    rng = np.random.default_rng(SEED)
    steps, batch = 400, 128
    rows = rng.integers(0, n, (steps, batch))
    t_u = rng.integers(0, T, (steps, batch))
    t_i = rng.choice(T, size=(steps, batch), p=p)
    uniform = (T * vb[rows, t_u]).mean(1)
    importance = (vb[rows, t_i] / p[t_i]).mean(1)
    exact = vb.sum(1).mean()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2), gridspec_kw={"wspace": 0.3})
    ax1.loglog(np.arange(1, T + 1), p, color=ORANGE, label=r"$p_t \propto \sqrt{E[L_t^2]}$")
    ax1.loglog(np.arange(1, T + 1), np.full(T, 1 / T), color=BLUE, label="uniform $1/T$")
    ax1.set(xlabel="timestep $t + 1$", ylabel="probability of drawing $t$", title="which timesteps to train on")
    ax1.legend(frameon=False)
    ax2.plot(np.arange(1, steps + 1), uniform, color=BLUE, lw=0.9,
             label=f"uniform $t$: std {uniform.std():.2f}")
    ax2.plot(np.arange(1, steps + 1), importance, color=ORANGE, lw=0.9,
             label=f"importance-sampled $t$: std {importance.std():.2f}")
    ax2.axhline(exact, color="k", lw=1.2, ls="--", label=f"exact $L_{{vlb}} - L_T$ = {exact:.2f}")
    ax2.set(yscale="log", xlabel="training step (batch of 128)", ylabel="estimate of $L_{vlb}$ (bits/dim)",
            title="the same model, two loss curves")
    ax2.legend(frameon=False, fontsize=10, loc="upper right")
    ax2.set_ylim(top=ax2.get_ylim()[1] * 3)
    return fig


@figure("unet", uses=["models.UNetConfig.preset('digits16')", "models.summary.unet_summary (forward hooks)",
                      "plotting.unet_diagram"])
def fig_unet(preset: str = "digits16"):
    """The ADM U-Net as built from ``UNetConfig.preset(preset)``, traced by the package's ``unet_summary`` and
    drawn by the notebook's ``plotting.unet_diagram`` without its parameter panel: one box per block (height: the
    feature-map size, width: the channels), grey brackets are the skip connections."""
    config = UNetConfig.preset(preset)
    rows, total = unet_summary(config)
    cond = "unconditional" if config.num_classes is None else f"{config.num_classes} classes"
    title = (f'UNetConfig.preset("{preset}"): {total / 1e6:.2f} M parameters, {cond}\n'
             f"channels {config.model_channels} x {list(config.channel_mult)}, "
             f"{config.num_res_blocks} residual blocks per level; numbers: output channels")
    return plotting.unet_diagram(rows, total, title=title, figsize=(9.5, 4.4), parameters=False)


@figure("guidance", uses=["pretrained.load_pretrained('digits')", "pretrained.load_pretrained('digits_classifier')",
                          "guidance.classifier_cond_fn", "guidance.LabelBlind",
                          "sampling.generate (respaced, Algorithm 1)",
                          "metrics.label_accuracy (shipped digits feature net)"])
def fig_guidance():
    """Algorithm 1 on digits: the shipped unconditional U-Net steered by the shipped noisy classifier towards the
    label of each column (0 to 9), 50 respaced steps, the same noise at every scale. Under each grid: the label
    accuracy of 200 such samples under the digits feature network."""
    model, diffusion = _shipped("digits")
    classifier, _ = _shipped("digits_classifier")
    scales = [0.0, 1.0, 4.0, 10.0]
    labels = torch.arange(200) % 10
    fig, axes = plt.subplots(1, len(scales), figsize=(12, 3.9), gridspec_kw={"wspace": 0.06})
    for ax, s in zip(axes, scales):
        x = generate(LabelBlind(model), diffusion, (len(labels), 1, 8, 8), steps=50, y=labels,
                     generator=_generator(5), device="cpu", cond_fn=classifier_cond_fn(classifier, s) if s else None)
        accuracy = label_accuracy(x, labels)
        plotting.draw_grid(ax, x[:40], ncol=10)
        ax.set_title(f"scale $s = {s:g}$" + (" (unguided)" if s == 0 else ""), fontsize=12)
        ax.set_xlabel(f"columns: labels 0-9\nlabel accuracy {accuracy:.2f}", fontsize=11)
    return fig


@figure("fid_steps", uses=["pretrained.load_pretrained('digits')", "sampling.generate (respace, DDIM)",
                           "variance.with_variance", "variance.MeanOnly", "metrics.load_digits_feature_net",
                           "metrics.fid_from_features"])
def fig_fid_steps():
    """Improved DDPM fig. 8 on digits: FID (shipped digits feature network, 360 samples against the training
    digits; mean and spread over 3 draws of the noise) of the shipped model against the number of respaced
    sampling steps, with its learned variance, with the two fixed variances of DDPM in its place, and with DDIM;
    the floor is the 360 real test digits."""
    model, diffusion = _shipped("digits")
    net = load_digits_feature_net(device="cpu")
    reference = extract_features(load_dataset("digits", "train").images, net)
    n, seeds = 360, (9, 10, 11)
    floor = fid_from_features(extract_features(load_dataset("digits", "test").images[:n], net), reference)
    steps = [10, 25, 50, 100]
    curves = {r"ancestral, learned $\Sigma_\theta$": (model, diffusion, False),
              r"ancestral, $\sigma_t^2 = \tilde\beta_t$": (MeanOnly(model), with_variance(diffusion, "fixed_small"),
                                                             False),
              r"ancestral, $\sigma_t^2 = \beta_t$": (MeanOnly(model), with_variance(diffusion, "fixed_large"), False),
              r"DDIM ($\eta = 0$)": (model, diffusion, True)}
    fig, ax = plt.subplots(figsize=(8.5, 4.4))
    for (label, (denoiser, d, ddim)), color in zip(curves.items(), [ORANGE, BLUE, RED, GREEN]):
        fids = np.array([[fid_from_features(extract_features(
            generate(denoiser, d, (n, 1, 8, 8), steps=k, ddim=ddim, generator=_generator(seed), device="cpu"), net),
            reference) for k in steps] for seed in seeds])
        ax.errorbar(steps, fids.mean(0), yerr=fids.std(0, ddof=1), fmt="o-", color=color, capsize=3, label=label)
    ax.axhline(floor, color=GREY, ls="--", lw=1)
    ax.text(steps[0], floor * 1.08, f"{n} real test digits: {floor:.2f}", color=GREY, fontsize=10, va="bottom")
    ax.set(xscale="log", yscale="log", xlabel="sampling steps (respaced from $T = 1000$)", ylabel="digits-FID",
           title="sample quality against sampling steps: the shipped digits model")
    ax.set_xticks(steps, [str(k) for k in steps])
    ax.legend(frameon=False, fontsize=10)
    return fig


@figure("samples", uses=["pretrained.load_pretrained('digits')", "pretrained.load_pretrained('digits_cond')",
                         "sampling.generate (100 respaced ancestral steps)", "metrics.label_accuracy"])
def fig_samples():
    """What the shipped checkpoints draw (2,000 training steps on a CPU, `make checkpoints`): the unconditional
    digits model, and the class-conditional one with the label of each column, 100 respaced steps."""
    model, diffusion = _shipped("digits")
    cond, cond_diffusion = _shipped("digits_cond")
    unconditional = generate(model, diffusion, (60, 1, 8, 8), steps=100, generator=_generator(11), device="cpu")
    labels = torch.arange(60) % 10
    conditional = generate(cond, cond_diffusion, (60, 1, 8, 8), steps=100, y=labels, generator=_generator(12),
                           device="cpu")
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.0), gridspec_kw={"wspace": 0.08})
    panels = [(unconditional, "unconditional (`digits`)", "learned variance, hybrid loss, cosine schedule"),
              (conditional, "class-conditional (`digits_cond`)",
               f"columns: labels 0-9, label accuracy {label_accuracy(conditional, labels):.2f}")]
    for ax, (x, title, note) in zip(axes, panels):
        plotting.draw_grid(ax, x, ncol=10)
        ax.set_title(title.replace("`", ""), fontsize=13)
        ax.set_xlabel(note, fontsize=11)
    return fig


@figure("sampling_cost", uses=["models.UNetConfig.preset('digits16')", "models.UNetModel",
                               "torch.utils.flop_counter.FlopCounterMode"])
def fig_sampling_cost(preset: str = "digits16"):
    """The elephant in the room: one network evaluation per step. Work per sample (counted FLOPs of the real
    U-Net) and throughput (samples/s) relative to 1000-step DDPM, against the number of sampling steps."""
    from torch.utils.flop_counter import FlopCounterMode

    config = UNetConfig.preset(preset)
    torch.manual_seed(SEED)
    model = UNetModel(config).eval()
    x = torch.zeros(1, config.in_channels, config.image_size, config.image_size)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x, torch.zeros(1, dtype=torch.long))
    gflops = counter.get_total_flops() / 1e9
    steps = [1, 25, 50, 100, 250, 1000, 4000]
    names = ["1\n(one pass,\nGAN-like)", "25", "50", "100", "250", "1000\n(DDPM)", "4000\n(Improved\n DDPM)"]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.3), gridspec_kw={"wspace": 0.3})
    ax1.loglog(steps, np.array(steps) * gflops, "o-", color=RED)
    ax1.set(xlabel="sampling steps = network evaluations", ylabel="GFLOPs per sample",
            title=f'U-Net "{preset}": {gflops:.3f} GFLOPs per evaluation')
    speed = [1000 / k for k in steps]
    bars = ax2.bar(range(len(steps)), speed, color=[GREY if k in (1000, 4000) else ORANGE for k in steps])
    ax2.set_yscale("log")
    for bar, v in zip(bars, speed):
        ax2.text(bar.get_x() + bar.get_width() / 2, v * 1.15, f"{v:g}x", ha="center", fontsize=10)
    ax2.set_xticks(range(len(steps)), names, fontsize=8.5)
    ax2.set(ylabel="samples/s relative to 1000 steps", title="same network, fewer steps: faster", ylim=(0.1, 5000))
    return fig


@figure("audio_forward", uses=["GaussianDiffusion.q_sample", "get_betas('linear')"])
def fig_audio_forward():
    """Beyond images: the same q(x_t | x_0) applied to a 1-D waveform (as in DiffWave, arXiv 2009.09761)."""
    sr, dur = 16000, 0.015
    tt = torch.arange(int(sr * dur), dtype=torch.float64) / sr
    wave = sum(a * torch.sin(2 * math.pi * f * tt) for a, f in [(0.7, 440), (0.25, 880), (0.12, 1760)])
    wave = (wave / wave.abs().max()).float()[None]
    diffusion = GaussianDiffusion(get_betas("linear", 1000))
    noise = torch.randn(wave.shape, generator=_generator(10))
    ts = [0, 60, 200, 999]
    fig, axes = plt.subplots(len(ts), 1, figsize=(11, 4.6), sharex=True, gridspec_kw={"hspace": 0.12})
    for ax, t in zip(axes, ts):
        x = diffusion.q_sample(wave, torch.tensor([t]), noise=noise)[0]
        ax.plot(tt.numpy() * 1000, x.numpy(), lw=1.0, color=BLUE if t == 0 else GREY)
        ax.set_ylim(-3.2, 3.2), ax.set_yticks([])
        ax.text(1.01, 0.5, f"$t = {t + 1}$", transform=ax.transAxes, va="center", fontsize=12)
    axes[-1].set_xlabel("time (ms), 16 kHz samples")
    fig.suptitle("a waveform is just another $x_0$: the forward process is unchanged", y=0.96, fontsize=13)
    return fig


# ---------------------------------------------------------------------------------------------- driver
def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def render(name: str, out_dir: Path) -> Path:
    """Draw one registered figure and save it as ``out_dir/<name>.png`` (deterministic bytes)."""
    spec = FIGURES[name]
    torch.manual_seed(SEED)
    np.random.seed(SEED)
    with plt.rc_context(STYLE):
        fig = spec.func()
        path = out_dir / spec.file
        fig.savefig(path, format="png", dpi=DPI, facecolor="white", bbox_inches="tight", pad_inches=0.12,
                    metadata={"Software": None})
        plt.close(fig)
    return path


def versions() -> dict[str, str]:
    import scipy

    return {"matplotlib": matplotlib.__version__, "numpy": np.__version__, "torch": torch.__version__.split("+")[0],
            "scipy": scipy.__version__}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", nargs="+", choices=sorted(FIGURES), help="render only these figures")
    ap.add_argument("--out", type=Path, default=ASSETS, help="output folder (default: assets/)")
    ap.add_argument("--list", action="store_true", help="list the figures and what they still wait for")
    args = ap.parse_args(argv)
    if args.list:
        for spec in FIGURES.values():
            print(f"{spec.file:28s} fig_{spec.name}" + "".join(f"\n{'':28s} waits for: {w}" for w in spec.waits_for))
        return 0
    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    manifest_path = args.out / MANIFEST
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    entries = manifest.get("figures", {})
    import time

    for name in args.only or FIGURES:
        t0 = time.perf_counter()
        path = render(name, args.out)
        spec = FIGURES[name]
        entries[spec.file] = {"sha256": sha256(path), "function": f"fig_{name}", "uses": spec.uses,
                              "waits_for": spec.waits_for}
        print(f"{path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}  {time.perf_counter() - t0:5.1f} s")
    entries = {k: entries[k] for k in sorted(entries) if k[:-4] in FIGURES}  # drop figures no longer registered
    manifest = {"generator": "tools/make_figures.py", "seed": SEED, "versions": versions(), "figures": entries}
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
