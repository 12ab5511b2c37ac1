"""Generate every figure of the slide deck into assets/, from the package's own code.

    python tools/make_figures.py                 # all figures -> assets/*.png + assets/figures.json
    python tools/make_figures.py --only unet     # some of them (the manifest keeps the other entries)
    python tools/make_figures.py --list          # names, files, what each draws from and its live counterpart

This is what `make figures` runs. Each figure is one function ``fig_<name>() -> Figure`` registered with
``@figure``. Nothing here is made-up data: the panels come from the package's schedules, forward process,
samplers and models, and from the shipped digits checkpoints (``ddpm_lite/checkpoints``).

**The slide style.** Every figure is drawn in ``style.slide()``: the notebooks' sizes in points
(``ddpm_lite.course.style``: no font under 12 pt) at ``style.SLIDE_DPI`` = 115 dpi, at most
``style.SLIDE_WIDTH_IN`` = 10 in (1150 px) wide, so that shown at its natural size on a 1280x720 slide (which
reveal.js scales by 0.96 in a 1280x720 window) 12 pt is 12 * 115 / 72 * 0.96 = 18.4 px. A figure is the notebook's
own figure at a higher resolution; its height is chosen so that it fits its slide with the slide's text.
``style.check`` must find nothing wrong (text under 18 px on the slide, text cut off at the edge, texts drawn over
each other), else the figure is not written.
The manifest records each PNG's dpi, size and smallest font; tests/test_slides.py measures the width the browser
shows it at and checks the text size on every slide.

**Live counterparts.** Where a slide has a widget in a notebook, its figure is that widget's own rendering at the
settings the notebook gives it (``LIVE``: ``ScheduleExplorer(num_timesteps=1000, t=600, image="photo 32x32")`` as
in notebook 05, section 5), so an instructor can switch from the slide to the widget and see the same picture;
tests/test_slides.py reads those settings out of the notebooks' scripts and compares.

**Determinism.** Fixed seeds, one torch thread, PNG written by ``style.render_png`` (no timestamp). On one machine
with the same library versions the bytes are the same every time. Across machines they need not be: figures that
evaluate a network (the loss terms, the samples) go through oneDNN/MKL kernels chosen for the processor (AVX2 or
AVX-512), whose sums round differently in the last bits, and an anti-aliased line or an 8-bit grey level moved by
1e-6 can change a byte. Rounding the data first would not cure that (a value next to a rounding boundary still
flips). So the manifest records, besides the sha256 of the file written, what is stable: the image size and every
text drawn (titles, tick labels, the numbers in them: ``texts_sha256``). tests/test_figures.py regenerates the
figures and requires the same size, the same texts and pixels equal up to such noise (at most 0.5% of the
pixels differ by more than 16 grey levels, mean difference under 1 level); a real change (other data, another
seed, a moved panel) changes texts or many pixels.
"""
from __future__ import annotations

import argparse
import functools
import hashlib
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from matplotlib.patches import FancyArrowPatch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(ROOT))

from ddpm_lite import GaussianDiffusion, get_betas, respace  # noqa: E402
from ddpm_lite.course import plotting, style, widgets  # noqa: E402
from ddpm_lite.course.learned_variance import MeanOnly, interpolation_weights, with_variance  # noqa: E402
from ddpm_lite.course.waveforms import NOTES, SAMPLE_RATE, sine_tones, snr_db  # noqa: E402
from ddpm_lite.data import load_dataset  # noqa: E402
from ddpm_lite.guidance import LabelBlind, classifier_cond_fn  # noqa: E402
from ddpm_lite.metrics import extract_features, label_accuracy, load_digits_feature_net  # noqa: E402
from ddpm_lite.metrics.fid import fid_from_features  # noqa: E402
from ddpm_lite.pretrained import load_pretrained  # noqa: E402
from ddpm_lite.sampling import generate  # noqa: E402

ASSETS = ROOT / "assets"
MANIFEST = "figures.json"
DPI = style.SLIDE_DPI
SEED = 0
MIN_PX = style.SLIDE_MIN_TEXT_PX / style.SLIDE_SCALE  # in the PNG, so that it shows at 18 px on the slide
BLUE, ORANGE, GREEN, RED, GREY = "tab:blue", "tab:orange", "tab:green", "tab:red", "0.45"


@dataclass
class FigureSpec:
    name: str
    func: Callable[[], plt.Figure]
    uses: list[str]
    live: str = ""  # the notebook section (and widget) the figure shows, as the deck's "▶" line names it
    seconds: float = 0.0  # measured CPU time to draw it (one torch thread, x86-64; a busy machine takes longer)

    @property
    def file(self) -> str:
        return f"{self.name}.png"


FIGURES: dict[str, FigureSpec] = {}


def figure(name: str, uses: list[str], live: str = "", seconds: float = 0.0):
    """Register ``fig_<name>``: ``uses`` names the package code it draws from, ``live`` its notebook counterpart,
    ``seconds`` how long it took to draw (tests/test_figures.py regenerates the quick ones)."""
    def register(func):
        FIGURES[name] = FigureSpec(name, func, uses, live, seconds)
        return func
    return register


# ---------------------------------------------------------------------------------------------- live settings
# The settings the notebooks give the widgets (and the first figure of notebook 01) that the deck's figures show.
# tests/test_slides.py resolves the same arguments in notebooks/scripts/*.py and compares them with these.
@dataclass(frozen=True)
class Live:
    notebook: str  # script name, e.g. "05_cosine_schedule"
    call: str  # the widget class the notebook constructs (or a variable for a plain figure)
    settings: dict  # argument -> value, as the notebook passes it (full mode)


LIVE = {
    "samples": Live("01_forward_noising", "frames", {"steps": 50, "seed": 2, "shown": [0, 10, 20, 30, 40, 45, 48, 50]}),
    "forward_chain": Live("01_forward_noising", "ForwardNoisingExplorer", {"num_timesteps": 1000, "t": 250,
                                                                           "digit": 3}),
    "learned_variance": Live("04_learned_variance", "VarianceExplorer", {"v": 0.5, "t": 5, "timesteps": 40,
                                                                          "images": 64, "seed": 0}),
    "schedules": Live("05_cosine_schedule", "ScheduleExplorer", {"num_timesteps": 1000, "t": 600,
                                                                 "image": "photo 32x32"}),
    "importance_sampling": Live("06_importance_sampling", "timestep_importance_figure", {"images": 10, "seed": 0}),
    "unet": Live("07_unet", "UNetExplorer", {"preset": "digits8"}),
    "guidance": Live("08_classifier_guidance", "GuidanceExplorer", {"label": 3, "scale": 8.0,
                                                                    "scales": [0.0, 1.0, 2.0, 4.0, 8.0, 16.0],
                                                                    "samples": 300, "steps": 25}),
    "audio_forward": Live("11_beyond_images", "WaveformNoisingExplorer", {"T": 200, "length": 2048, "seed": 1}),
}


# ---------------------------------------------------------------------------------------------- shared data
def _generator(offset: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(SEED + offset)


def clear_digit() -> torch.Tensor:
    """The digit the notebooks and the explorers show: training digit ``widgets.CLEAR_DIGIT`` (a clear 3), (1, 8, 8)."""
    return load_dataset("digits").images[widgets.CLEAR_DIGIT]


@functools.cache
def _shipped(name: str):
    """(model, diffusion) of a shipped digits checkpoint (ddpm_lite/checkpoints, `make checkpoints`), on the CPU."""
    model, diffusion, _ = load_pretrained(name, device="cpu")
    return model, diffusion


@functools.cache
def digits_vb_terms() -> tuple[np.ndarray, float]:
    """Terms L_t (bits/dim), (n, T) with column t = L_t, and the mean prior term L_T, of the shipped digits model:
    notebook 06, section 1 (the first 10 test digits, noise from seed 0, every one of the 1000 terms)."""
    n = LIVE["importance_sampling"].settings["images"]
    model, diffusion = _shipped("digits")
    x0 = load_dataset("digits", "test").images[:n]
    out = diffusion.calc_bpd_loop(model, x0, generator=torch.Generator().manual_seed(LIVE["importance_sampling"]
                                                                                   .settings["seed"]))
    return out["vb"].double().numpy(), out["prior_bpd"].double().mean().item()


def _arrow(ax, a, b, color="0.2", lw=2.0):
    ax.add_patch(FancyArrowPatch(a, b, arrowstyle="-|>", mutation_scale=16, color=color, linewidth=lw,
                                 shrinkA=2, shrinkB=2))


# ---------------------------------------------------------------------------------------------- widgets as notebooks
def opener_frames() -> list[torch.Tensor]:
    """Notebook 01's first figure ("What you will build"): the shipped digits model, respaced to 50 steps, eight
    draws of noise from seed 2, every intermediate x_t (entry k: after k steps)."""
    s = LIVE["samples"].settings
    model, diffusion = _shipped("digits")
    fast = respace(diffusion, s["steps"])
    generator = torch.Generator().manual_seed(s["seed"])
    noise = torch.randn(8, 1, 8, 8, generator=generator)
    frames = [noise]
    for out in fast.p_sample_loop_progressive(model, noise.shape, noise=noise, generator=generator):
        frames.append(out["sample"])
    return frames


def forward_explorer() -> widgets.ForwardNoisingExplorer:
    """Notebook 01, section 5: ``ForwardNoisingExplorer(num_timesteps=T, t=250, digit=digit)``."""
    s = LIVE["forward_chain"].settings
    return widgets.ForwardNoisingExplorer(num_timesteps=s["num_timesteps"], t=s["t"],
                                          digit=load_dataset("digits").images[s["digit"]])


def forward_noise(explorer: widgets.ForwardNoisingExplorer) -> dict[str, torch.Tensor]:
    """The epsilon the explorer draws (``plotting.forward_noising_figure``: one generator from its seed, in the
    order of its images, then the points)."""
    g = torch.Generator().manual_seed(explorer.seed)
    items = [*explorer.images.items(), ("points", explorer.points)]
    return {key: torch.randn(x.shape, generator=g) for key, x in items}


def variance_explorer() -> widgets.VarianceExplorer:
    """Notebook 04, section 4: the shipped model's learned v(t) (``interpolation_weights`` on the first 64 test
    digits at 40 log-spaced t and t = 0, noise from seed 0) in ``VarianceExplorer(..., v=0.5, t=5)``."""
    s = LIVE["learned_variance"].settings
    model, diffusion = _shipped("digits")
    T = diffusion.num_timesteps
    timesteps = np.unique(np.concatenate([[0], np.geomspace(1, T - 1, s["timesteps"]).astype(int)]))
    test = load_dataset("digits", "test").images
    v_learned = interpolation_weights(model, diffusion, test[: s["images"]], timesteps,
                                      generator=torch.Generator().manual_seed(s["seed"]))
    return widgets.VarianceExplorer(diffusion, learned=(timesteps, v_learned), v=s["v"], t=s["t"])


def schedule_explorer() -> widgets.ScheduleExplorer:
    """Notebook 05, section 5: ``ScheduleExplorer(num_timesteps=T, t=600, image="photo 32x32")``."""
    s = LIVE["schedules"].settings
    return widgets.ScheduleExplorer(num_timesteps=s["num_timesteps"], t=s["t"], image=s["image"])


def unet_explorer() -> widgets.UNetExplorer:
    """Notebook 07, section 4: ``UNetExplorer("digits8")``."""
    return widgets.UNetExplorer(LIVE["unet"].settings["preset"])


def guidance_explorer() -> widgets.GuidanceExplorer:
    """Notebook 08, section 5: the shipped digits model guided by the shipped noisy classifier (Algorithm 1), 25
    respaced steps, 300 samples per scale (labels 0..9 in turn), the same noise (seed 0) at every scale; metrics
    against the test digits in the digits feature network's space; ``GuidanceExplorer(..., label=3, scale=8)``."""
    s = LIVE["guidance"].settings
    model, diffusion = _shipped("digits")
    classifier, _ = _shipped("digits_classifier")
    sampler = respace(diffusion, s["steps"])
    labels = torch.arange(s["samples"]) % 10
    guided = {}
    for scale in s["scales"]:
        noise = torch.randn(len(labels), 1, 8, 8, generator=torch.Generator().manual_seed(0))
        cond_fn = classifier_cond_fn(classifier, scale) if scale else None
        guided[scale] = sampler.p_sample_loop(LabelBlind(model), noise.shape, noise=noise, cond_fn=cond_fn,
                                              model_kwargs={"y": labels})
    feature_net = load_digits_feature_net(device="cpu")
    real_features = extract_features(load_dataset("digits", "test").images, feature_net)
    return widgets.GuidanceExplorer(guided, labels, real_features, feature_net, label=s["label"], scale=s["scale"])


def waveform_explorer() -> widgets.WaveformNoisingExplorer:
    """Notebook 11, section 3: the first of ``sine_tones(4, length=2048, max_tones=2, frequencies=notes, seed=1)``
    under the cosine schedule with T = 200, at t_zero, the first t where its SNR is below 0 dB."""
    s = LIVE["audio_forward"].settings
    T = s["T"]
    diffusion = GaussianDiffusion(get_betas("cosine", T), mean_type="eps", var_type="learned_range",
                                  loss_type="rescaled_mse")
    x0 = sine_tones(4, length=s["length"], max_tones=2, frequencies=list(NOTES.values()), seed=s["seed"])[0]
    curve = snr_db(x0[None].expand(T, -1, -1), torch.from_numpy(diffusion.alphas_cumprod))
    t_zero = int((curve < 0).nonzero()[0])
    return widgets.WaveformNoisingExplorer(diffusion, x0, SAMPLE_RATE, t=t_zero)


# ---------------------------------------------------------------------------------------------- the figures
@figure("samples", uses=["pretrained.load_pretrained('digits')", "respace (50 steps)",
                         "GaussianDiffusion.p_sample_loop_progressive", "pretrained.load_pretrained('digits_cond')",
                         "sampling.generate (100 respaced steps)", "metrics.label_accuracy"],
        live="01 · What you will build", seconds=7.5)
def fig_samples():
    """What we will build: notebook 01's first figure (eight draws of noise turned into digits by the shipped
    model in 50 respaced steps, one digit per row) beside the class-conditional model's samples, one class per
    column."""
    frames = opener_frames()
    shown = LIVE["samples"].settings["shown"]
    cond, cond_diffusion = _shipped("digits_cond")
    labels = torch.arange(60) % 10
    conditional = generate(cond, cond_diffusion, (60, 1, 8, 8), steps=100, y=labels, generator=_generator(12),
                           device="cpu")
    fig = plt.figure(figsize=(9.6, 4.3), layout="constrained")
    left, right = fig.subfigures(1, 2, width_ratios=[4.4, 5.2], wspace=0.04)
    axes = left.subplots(8, len(shown), gridspec_kw={"wspace": 0.05, "hspace": 0.05})
    for col, k in enumerate(shown):
        for row in range(8):
            plotting._imshow(axes[row, col], frames[k][row])
        axes[0, col].set_title("noise" if k == 0 else str(k), fontsize=style.FONT_PT)
    left.suptitle("the shipped model: noise → digit\n(after k of 50 steps; one digit per row)",
                  fontsize=style.TITLE_PT)
    ax = right.subplots()
    plotting.draw_grid(ax, conditional, ncol=10)
    ax.set_title("the class-conditional model:\none class per column, 0 to 9")
    ax.set_xlabel(f"100 steps; label accuracy {label_accuracy(conditional, labels):.2f}")
    return fig


@figure("generative_landscape", uses=["plotting.generative_landscape_figure"],
        live="01 · Where diffusion models sit", seconds=0.3)
def fig_generative_landscape():
    """Notebook 01's map of generative models (GAN, VAE, flow, diffusion), 4.8 in high to fit a slide."""
    return plotting.generative_landscape_figure(figsize=(8.0, 4.8))


@figure("forward_chain", uses=["widgets.ForwardNoisingExplorer (its digit, photo, points and noise)",
                               "GaussianDiffusion.q_sample"],
        live="01 §5 · ForwardNoisingExplorer", seconds=2.0)
def fig_forward_chain():
    """The forward process on ForwardNoisingExplorer's digit, photo and 2-D points with its own noise, at a few
    code t: the column t = 250 is what the explorer shows when notebook 01 opens it (and any column, what it shows
    at that t)."""
    explorer = forward_explorer()
    noise = forward_noise(explorer)
    d = explorer.diffusions["linear"]
    ts = [0, 50, 150, 250, 400, 600, 999]
    rows = [*explorer.images, "points"]
    fig, axes = plt.subplots(len(rows), len(ts), figsize=(8.6, 4.2), layout="constrained",
                             gridspec_kw={"wspace": 0.02, "hspace": 0.02})
    for j, t in enumerate(ts):
        tt = torch.tensor([t])
        for i, name in enumerate(rows):
            ax = axes[i, j]
            if name == "points":
                pts = explorer.points.float()
                x_t = d.q_sample(pts, tt.expand(len(pts)), noise["points"].float())
                ax.scatter(pts[:, 0], pts[:, 1], s=1, color="lightgray")
                ax.scatter(x_t[:, 0], x_t[:, 1], s=1, color=BLUE)
                ax.set_xlim(-4, 4), ax.set_ylim(-4, 4), ax.set_aspect("equal")
                ax.set_xticks([]), ax.set_yticks([])
            else:
                x0 = explorer.images[name]
                plotting._imshow(ax, d.q_sample(x0[None].float(), tt, noise[name][None].float())[0])
        axes[0, j].set_title(f"t = {t}" + (" ◀" if t == explorer.t.value else ""))
        axes[-1, j].set_xlabel(f"ᾱ = {d.alphas_cumprod[t]:.2f}")
    for i, name in enumerate(rows):
        axes[i, 0].set_ylabel("2-D points" if name == "points" else name)
    fig.suptitle("q(xₜ | x₀), linear schedule, T = 1000; t counted as in the code (the paper's t − 1);\n"
                 "◀ the explorer's starting view in notebook 01")
    return fig


def _chain_figure(reverse: bool):
    """The DDPM graphical model x_T ... x_t, x_{t-1} ... x_0 with thumbnails of the notebooks' digit, and the
    q or p_theta arrow between x_t and x_{t-1}."""
    diffusion = GaussianDiffusion(get_betas("linear", 1000))
    digit = clear_digit()
    noise = torch.randn(digit.shape, generator=_generator(2))
    fig = plt.figure(figsize=(9.6, 4.2))
    steps = [(0, "$x_0$"), (180, "$x_{t-1}$"), (200, "$x_t$"), (999, "$x_T$")]
    xs = [0.06, 0.30, 0.59, 0.83]
    for (t, label), x in zip(steps, xs):
        ax = fig.add_axes((x, 0.42, 0.11, 0.11 * 9.6 / 4.2))
        plotting._imshow(ax, diffusion.q_sample(digit[None], torch.tensor([t]), noise[None])[0])
        ax.set_title(label, fontsize=18)
    arrows = fig.add_axes((0, 0.38, 1, 0.5))
    arrows.set_xlim(0, 1), arrows.set_ylim(0, 1), arrows.axis("off")
    for a, b in [(0.17, 0.30), (0.70, 0.83)]:
        arrows.text((a + b) / 2, 0.5, r"$\cdots$", fontsize=20, ha="center", va="center")
    a, b = 0.42, 0.58
    if reverse:
        _arrow(arrows, (b, 0.5), (a, 0.5), color=BLUE, lw=2.5)
        arrows.text(0.5, 0.62, r"$p_\theta(x_{t-1} \mid x_t)$", ha="center", fontsize=17, color=BLUE)
    else:
        _arrow(arrows, (a, 0.5), (b, 0.5), color=GREY, lw=2.5)
        arrows.text(0.5, 0.62, r"$q(x_t \mid x_{t-1})$", ha="center", fontsize=17, color=GREY)
    return fig


@figure("forward_definition", uses=["GaussianDiffusion.q_sample", "matplotlib mathtext"],
        live="01 §1–2", seconds=0.2)
def fig_forward_definition():
    """The forward chain with DDPM eq. 2 (one step) and eq. 4 (any t in one jump)."""
    fig = _chain_figure(reverse=False)
    fig.text(0.5, 0.24, r"$q(x_t \mid x_{t-1}) = \mathcal{N}(x_t;\ \sqrt{1 - \beta_t}\, x_{t-1},\ \beta_t I)$"
                        "  (eq. 2)", ha="center", fontsize=18)
    fig.text(0.5, 0.07, r"$q(x_t \mid x_0) = \mathcal{N}(x_t;\ \sqrt{\bar\alpha_t}\, x_0,\ (1 - \bar\alpha_t) I),"
                        r"\quad \bar\alpha_t = \prod_{s=1}^{t} (1 - \beta_s)$  (eq. 4)", ha="center", fontsize=18)
    fig.text(0.5, 0.93, "forward, fixed: add a little Gaussian noise at every step", ha="center", fontsize=16,
             color=GREY)
    return fig


@figure("reverse_definition", uses=["GaussianDiffusion.q_sample", "matplotlib mathtext"],
        live="02 §4–6", seconds=0.2)
def fig_reverse_definition():
    """The reverse chain with DDPM eq. 1: a Markov chain of learned Gaussians, started from N(0, I)."""
    fig = _chain_figure(reverse=True)
    fig.text(0.5, 0.24, r"$p_\theta(x_{0:T}) = p(x_T) \prod_{t=1}^{T} p_\theta(x_{t-1} \mid x_t), \quad "
                        r"p(x_T) = \mathcal{N}(x_T;\ 0,\ I)$  (eq. 1)", ha="center", fontsize=18)
    fig.text(0.5, 0.07, r"$p_\theta(x_{t-1} \mid x_t) = "
                        r"\mathcal{N}(x_{t-1};\ \mu_\theta(x_t, t),\ \Sigma_\theta(x_t, t))$", ha="center",
             fontsize=18)
    fig.text(0.5, 0.93, "reverse, learned: start from pure noise and denoise step by step", ha="center",
             fontsize=16, color=BLUE)
    return fig


@figure("loss_terms", uses=["pretrained.load_pretrained('digits')", "GaussianDiffusion.calc_bpd_loop",
                            "plotting.vlb_weight"],
        live="03 §3–4, 06 §1", seconds=11.0)
def fig_loss_terms():
    """Where the bound puts its weight: the terms L_t of the shipped digits model (notebook 06, section 1: 10
    test digits, all 1000 terms) and the weight DDPM eq. 12 gives the noise error (notebook 03, section 4), which
    L_simple replaces by 1."""
    vb, prior = digits_vb_terms()
    mean = vb.mean(0)
    T = len(mean)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9.2, 4.0), layout="constrained")
    ax1.loglog(np.arange(1, T), mean[1:], color=ORANGE, label="L₁ … L₉₉₉")
    ax1.loglog([0.6], [mean[0]], "s", color=GREEN, ms=9, label="L₀ (decoder), at t = 0")
    ax1.set(xlabel="t (log scale)", ylabel="term of the bound (bits/dim)",
            title=f"the shipped digits U-Net:\n{mean.sum() + prior:.2f} bits/dim, L₀ {mean[0] / mean.sum():.0%}")
    ax1.set_xlim(0.4, 2 * T)
    plotting.plain_ticks(ax1.xaxis)
    plotting.plain_ticks(ax1.yaxis)
    ax1.legend(loc="lower left")
    ax1.grid(alpha=0.3, which="major")
    for schedule, color in [("linear", BLUE), ("cosine", ORANGE)]:
        ax2.loglog(np.arange(1, 1000), plotting.vlb_weight(GaussianDiffusion(get_betas(schedule, 1000)))[1:],
                   color=color, label=f"eq. 12, {schedule}")
    ax2.axhline(1, color="k", ls="--", lw=1.2, label="L_simple (eq. 14): 1")
    ax2.set(xlabel="t (log scale)", ylabel="weight", title="weight of ‖ε − εθ‖² in each term")
    plotting.plain_ticks(ax2.xaxis)
    plotting.plain_ticks(ax2.yaxis)
    ax2.legend(loc="upper right")
    ax2.grid(alpha=0.3, which="major")
    return fig


@figure("learned_variance", uses=["widgets.VarianceExplorer", "learned_variance.interpolation_weights",
                                  "pretrained.load_pretrained('digits')"],
        live="04 §4 · VarianceExplorer", seconds=2.0)
def fig_learned_variance():
    """VarianceExplorer as notebook 04, section 4 opens it: Sigma_t / beta_t for beta-tilde (v = 0), beta (v = 1),
    the shipped model's learned v(t) and a constant v = 0.5, with the numbers at t = 5."""
    return variance_explorer().figure()


@figure("schedules", uses=["widgets.ScheduleExplorer", "plotting.schedule_comparison_figure"],
        live="05 §5 · ScheduleExplorer", seconds=1.3)
def fig_schedules():
    """ScheduleExplorer as notebook 05, section 5 opens it (Improved DDPM Figures 3 and 5): alpha-bar_t of the
    linear and cosine schedules, the photo at 32x32 at t = 600 under each, and the latents at evenly spaced t."""
    return schedule_explorer().figure()


@figure("importance_sampling", uses=["plotting.timestep_importance_figure", "pretrained.load_pretrained('digits')",
                                     "GaussianDiffusion.calc_bpd_loop"],
        live="06 §1", seconds=11.0)
def fig_importance_sampling():
    """Notebook 06's first figure (Improved DDPM Figure 2, eq. 18) on the same data: the mean term and its root
    mean square per t for the shipped digits model, and the p_t of eq. 18 against uniform."""
    vb, _ = digits_vb_terms()
    return plotting.timestep_importance_figure(vb)


@figure("unet", uses=["widgets.UNetExplorer", "models.summary.unet_summary (forward hooks)", "plotting.unet_diagram"],
        live="07 §4 · UNetExplorer", seconds=0.8)
def fig_unet():
    """UNetExplorer as notebook 07, section 4 opens it: the shipped digits U-Net (preset digits8), traced."""
    return unet_explorer().figure()


@figure("guidance", uses=["widgets.GuidanceExplorer", "guidance.classifier_cond_fn", "guidance.LabelBlind",
                          "pretrained.load_pretrained('digits')", "pretrained.load_pretrained('digits_classifier')",
                          "course.evaluate.sample_quality"],
        live="08 §5 · GuidanceExplorer", seconds=26.0)
def fig_guidance():
    """GuidanceExplorer as notebook 08, section 5 opens it: class 3 at scale s = 8, beside label accuracy,
    precision and recall against the scale."""
    return guidance_explorer().figure()


@figure("fid_steps", uses=["pretrained.load_pretrained('digits')", "sampling.generate (respace, DDIM)",
                           "learned_variance.with_variance", "learned_variance.MeanOnly",
                           "metrics.load_digits_feature_net", "metrics.fid_from_features"],
        live="10 §2, §4", seconds=376.0)
def fig_fid_steps():
    """Improved DDPM Figure 8 on digits (docs/claims.md, claim 2): FID (shipped digits feature network, 360 samples
    against the training digits; mean and standard deviation over 3 draws of the noise) of the shipped model
    against the number of respaced sampling steps, with its learned variance, with the two fixed variances of DDPM
    in its place, and with DDIM; the floor is the 360 real test digits."""
    model, diffusion = _shipped("digits")
    net = load_digits_feature_net(device="cpu")
    reference = extract_features(load_dataset("digits", "train").images, net)
    n, seeds = 360, (9, 10, 11)
    floor = fid_from_features(extract_features(load_dataset("digits", "test").images[:n], net), reference)
    steps = [10, 25, 50, 100]
    curves = {"ancestral, learned Σθ": (model, diffusion, False),
              "ancestral, σ² = β̃ₜ": (MeanOnly(model), with_variance(diffusion, "fixed_small"), False),
              "ancestral, σ² = βₜ": (MeanOnly(model), with_variance(diffusion, "fixed_large"), False),
              "DDIM (η = 0)": (model, diffusion, True)}
    fig, ax = plt.subplots(figsize=(8.4, 4.0), layout="constrained")
    for (label, (denoiser, d, ddim)), color, marker in zip(curves.items(), [ORANGE, BLUE, RED, GREEN], "os^D"):
        fids = np.array([[fid_from_features(extract_features(
            generate(denoiser, d, (n, 1, 8, 8), steps=k, ddim=ddim, generator=_generator(seed), device="cpu"), net),
            reference) for k in steps] for seed in seeds])
        ax.errorbar(steps, fids.mean(0), yerr=fids.std(0, ddof=1), fmt=marker + "-", color=color, capsize=3,
                    label=label)
    ax.axhline(floor, color=GREY, ls="--", lw=1, label=f"{n} real test digits: {floor:.2f}")
    ax.set(xscale="log", yscale="log", xlabel="sampling steps (respaced from T = 1000)",
           ylabel=f"FID ({n} samples)", title="the shipped digits model: quality against sampling steps")
    plotting.plain_ticks(ax.xaxis, steps)
    plotting.plain_ticks(ax.yaxis)
    ax.grid(alpha=0.3, which="both")
    plotting.legend_below(fig, ax, ncols=3)
    return fig


@figure("sampling_cost", uses=["pretrained.load_pretrained('digits')", "torch.utils.flop_counter.FlopCounterMode"],
        live="10 §1", seconds=0.5)
def fig_sampling_cost():
    """The elephant in the room: one network evaluation per step. The FLOPs of one evaluation of the shipped
    digits U-Net (counted by PyTorch's FlopCounterMode, one 8x8 digit), so work per sample against the number of
    sampling steps, and the samples per second that leaves relative to 1000-step DDPM."""
    from torch.utils.flop_counter import FlopCounterMode

    model, _ = _shipped("digits")
    x = torch.zeros(1, 1, 8, 8)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x, torch.zeros(1, dtype=torch.long))
    gflops = counter.get_total_flops() / 1e9
    steps = [1, 10, 25, 50, 100, 250, 1000, 4000]
    names = {1: "1 (one pass, like a GAN)", 1000: "1000 (DDPM)", 4000: "4000 (Improved DDPM's T)"}
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9.6, 4.0), layout="constrained", width_ratios=[1, 1.25])
    ax1.loglog(steps, np.array(steps) * gflops, "o-", color=RED)
    ax1.set(xlabel="sampling steps = network calls", ylabel="GFLOPs per sample",
            title=f"{gflops:.3f} GFLOPs per call\n(the shipped digits U-Net)")
    plotting.plain_ticks(ax1.xaxis, [1, 10, 100, 1000, 4000])
    plotting.plain_ticks(ax1.yaxis)
    ax1.grid(alpha=0.3, which="major")
    speed = np.array([1000 / k for k in steps])
    y = np.arange(len(steps))[::-1]
    ax2.barh(y, speed, color=[GREY if k in (1000, 4000) else ORANGE for k in steps])
    ax2.set_xscale("log")
    ax2.set_yticks(y, [names.get(k, str(k)) for k in steps])
    for yy, v in zip(y, speed):
        ax2.text(v * 1.2, yy, f"{v:g}×", va="center")
    ax2.set(xlim=(0.1, 1e5), xlabel="samples per second, relative to 1000 steps",
            title="same network, fewer steps:\nproportionally faster")
    plotting.plain_ticks(ax2.xaxis)
    ax2.set_ylabel("sampling steps")
    return fig


@figure("audio_forward", uses=["widgets.WaveformNoisingExplorer", "course.waveforms.sine_tones",
                               "GaussianDiffusion.q_sample"],
        live="11 §3 · WaveformNoisingExplorer", seconds=0.7)
def fig_audio_forward():
    """WaveformNoisingExplorer as notebook 11, section 3 opens it: a two-note chord under the cosine schedule
    (T = 200) at the first t where its SNR is below 0 dB: waveform, spectrogram and SNR curve."""
    return waveform_explorer().figure()


# ---------------------------------------------------------------------------------------------- driver
class FigureProblem(RuntimeError):
    """A figure that breaks the slide style (text too small, cut off, overlapping, too wide)."""


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def texts_sha256(texts) -> str:
    """A hash of every text a figure draws, in order, with its size: what floating-point noise cannot move."""
    return hashlib.sha256(json.dumps([[d.text, round(d.size_pt, 2)] for d in texts]).encode()).hexdigest()


def draw(name: str) -> plt.Figure:
    """The figure ``name`` in the slide style, with fixed seeds and one torch thread (not yet checked)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(SEED)
    np.random.seed(SEED)
    try:
        with style.slide():
            return FIGURES[name].func()
    finally:
        torch.set_num_threads(threads)


def problems(fig: plt.Figure) -> list[str]:
    """What breaks the slide style in ``fig`` (``style.check`` at SLIDE_DPI, natural size, 18 px on the slide)."""
    return style.check(fig, available_px=1e9, dpi=DPI, min_px=MIN_PX, max_width_in=style.SLIDE_WIDTH_IN)


def render(name: str, out_dir: Path) -> tuple[Path, dict]:
    """Draw one registered figure, check it and save it as ``out_dir/<name>.png``; returns the path and what the
    manifest records about it."""
    spec = FIGURES[name]
    t0, c0 = time.perf_counter(), time.process_time()
    fig = draw(name)
    try:
        found = problems(fig)
        if found:
            raise FigureProblem(f"{spec.file}: " + "; ".join(found))
        with style.slide():
            png, info = style.render_png(fig, DPI, enforce=False)
            texts = style.drawn_texts(fig, DPI)
    finally:
        plt.close(fig)
    path = out_dir / spec.file
    path.write_bytes(png)
    entry = {"sha256": sha256(path), "texts_sha256": texts_sha256(texts), "function": f"fig_{name}",
             "uses": spec.uses, "live": spec.live, "dpi": info["dpi"], "width_px": info["width_px"],
             "height_px": info["height_px"], "min_font_pt": info["min_font_pt"], "min_text": info["min_text"],
             "min_slide_px": round(style.slide_text_px(info["min_font_pt"], info["dpi"]), 2)}
    entry["_seconds"] = (time.perf_counter() - t0, time.process_time() - c0)
    return path, entry


def versions() -> dict[str, str]:
    import PIL
    import scipy

    return {"matplotlib": matplotlib.__version__, "numpy": np.__version__, "torch": torch.__version__.split("+")[0],
            "scipy": scipy.__version__, "pillow": PIL.__version__}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", nargs="+", choices=sorted(FIGURES), help="render only these figures")
    ap.add_argument("--out", type=Path, default=ASSETS, help="output folder (default: assets/)")
    ap.add_argument("--list", action="store_true", help="list the figures, what they draw from, their live twins")
    args = ap.parse_args(argv)
    if args.list:
        for spec in FIGURES.values():
            print(f"{spec.file:26s} fig_{spec.name:20s} ~{spec.seconds:5.1f} s  ▶ {spec.live or '-'}")
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    manifest_path = args.out / MANIFEST
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    entries = manifest.get("figures", {})
    for name in args.only or FIGURES:
        path, entry = render(name, args.out)
        wall, cpu = entry.pop("_seconds")
        entries[FIGURES[name].file] = entry
        shown = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
        print(f"{shown}  {wall:5.1f} s ({cpu:5.1f} s CPU)  {entry['width_px']}x{entry['height_px']} px, smallest text "
              f"{entry['min_font_pt']:g} pt = {entry['min_slide_px']:.1f} px on the slide")
    entries = {k: entries[k] for k in sorted(entries) if k[:-4] in FIGURES}  # drop figures no longer registered
    manifest = {"generator": "tools/make_figures.py", "seed": SEED, "slide_dpi": DPI, "versions": versions(),
                "figures": entries}
    manifest_path.write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
