"""Every figure of course/plotting.py against the course's rule, without a browser (course/style.py).

Each figure function is drawn once with realistic arguments (long labels, many steps, the notebooks' sizes), then
:func:`ddpm_lite.course.style.check` lists what breaks the rule at the width it will be shown in the narrowest
output area (JupyterLab 4 at 1024x768 with its file browser open, ``style.NARROWEST_PX``): text under 12 CSS px,
text cut off at the figure's edge, lines of text drawn over each other, a figure wider than ``style.WIDTH_IN``.
A figure function that is not in ``EXAMPLES`` fails `test_every_figure_function_has_an_example`: add one.

The notebooks' own figures (``plt.subplots`` in notebooks/scripts) follow the rcParams the style sets;
`test_notebook_scripts_keep_figures_readable` checks that they set no smaller font and no wider figure.

``FIGURE_DIR=path pytest tests/test_figure_style.py`` also writes each figure there as PNG, to look at.
"""
from __future__ import annotations

import ast
import inspect
import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from ddpm_lite import GaussianDiffusion, get_betas, respace  # noqa: E402
from ddpm_lite.course import plotting, style  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
G = torch.Generator().manual_seed(0)


def _digits(n):
    from ddpm_lite.data import load_dataset

    return load_dataset("digits").images[:n]


def _gaussian_sampler():
    from ddpm_lite.course.analytic import SAMPLER_VARIANCES, gaussian_sampler_moments

    mean, cov, steps = np.zeros(4), np.diag([0.5, 0.2, 0.1, 0.01]), (10, 25, 50, 100, 250, 1000)
    moments = {n: [gaussian_sampler_moments(respace(_cosine(), k) if k < 1000 else _cosine(), mean, cov, n)
                   for k in steps] for n in SAMPLER_VARIANCES}
    return plotting.gaussian_sampler_figure(moments, mean, cov, steps)


def _cosine(T=1000):
    return GaussianDiffusion(get_betas("cosine", T))


def _sweep():
    from ddpm_lite.course.fast_sampling import Sweep, SweepPoint

    points = []
    for sampler, steps in [("ancestral", [5, 10, 25, 50, 100, 1000]), ("DDIM η=0", [5, 10, 25, 50, 100]),
                           ("DDIM η=1", [5, 10, 25, 50, 100])]:
        for k in steps:
            points.append(SweepPoint(sampler, k, _digits(36), seconds=k / 41.3, fid=100 / k + len(sampler) / 3))
    return Sweep(points, 1000, real_fids=[1.21, 1.43, 1.37, 1.29, 1.33])


def _trajectory():
    from ddpm_lite.data import toy_2d

    data = toy_2d("moons", 1000)
    noise = torch.randn(1000, 2, generator=G)
    w = torch.linspace(0, 1, 101)[:, None, None]
    return (1 - w) * noise + w * data, data


def _grid(n=15, lim=3.0):
    g = torch.linspace(-lim, lim, n)
    return torch.stack(torch.meshgrid(g, g, indexing="xy"), -1).reshape(-1, 2)


def _vb(T=1000):
    t = np.arange(T)
    vb = 0.5 / (1 + t) ** 1.2 + 1e-4
    vb[0] = 2.1
    return torch.as_tensor(np.stack([vb * (1 + 0.1 * i) for i in range(4)]))


def _rows(preset="digits8"):
    from ddpm_lite.models import UNetConfig
    from ddpm_lite.models.summary import unet_summary

    return unet_summary(UNetConfig.preset(preset))


def _metrics():
    return {s: {"accuracy": min(1.0, 0.1 + s / 5), "precision": 0.62 + s / 30, "recall": 0.83 - s / 12,
                "fid": 1.5 + s / 2} for s in (0.0, 0.5, 1.0, 2.0, 4.0, 8.0)}


def _waves(n):
    from ddpm_lite.course.waveforms import sine_tones

    return sine_tones(n, length=2048, max_tones=2, seed=1)


def _feature_sets():
    rng = np.random.default_rng(0)
    return {"train": rng.normal(size=(500, 16)), "test": rng.normal(size=(300, 16)) + 0.1,
            "test + noise σ=0.5": rng.normal(size=(300, 16)) * 1.5 + 1}


def _embedding():
    from ddpm_lite.models import timestep_embedding

    return timestep_embedding(torch.arange(1000), 128)


# name -> a call like the notebooks' (and the widgets') own; one entry per figure function of plotting.__all__
def _variance_fits():
    """Two logged fits of a learned v(t) against v*(t), as notebook 04 shows them (synthetic numbers)."""
    from ddpm_lite.metrics.variance import VarianceFit, default_timesteps

    t = default_timesteps(1000)
    v_star, z = 0.2 + 0.5 * np.exp(-t / 50), np.zeros(len(t))
    fits = []
    for step, v in ((2000, np.full(len(t), 0.77)), (6000, v_star + 0.02)):
        fit = VarianceFit(t=t, v=v, v_star=v_star, v_star_raw=v_star, sigma_star=z + 1, xstart_mse=z, beta=z + 2,
                          beta_tilde=z + 1, kl_model=z, kl_star=z, kl_small=z, kl_large=z, num_timesteps=1000,
                          num_images=64)
        fit.step = step
        fits.append(fit)
    return fits


EXAMPLES = {
    "snr_curve": lambda: plotting.snr_curve(("linear", "cosine"), t=250),
    "forward_chain_grid": lambda: plotting.forward_chain_grid(_digits(3), "linear", row_labels=["a", "b", "c"]),
    "forward_noising_figure": lambda: plotting.forward_noising_figure(
        GaussianDiffusion(get_betas("linear", 1000)), 600, {"digit": _digits(1)[0], "photo": plotting.sample_photo(64)},
        torch.randn(1000, 2, generator=G), schedule_name="linear",
        compare=plotting.diffusions(("linear", "cosine"))),
    "generative_landscape_figure": lambda: plotting.generative_landscape_figure(),
    "score_shift_figure": lambda: plotting.score_shift_figure([-1.0, 0.2, 1.5], 0.1, x_t=0.3, t=100,
                                                              diffusion=_cosine()),
    "score_field_figure": lambda: plotting.score_field_figure(
        _grid(), -_grid(), -1.1 * _grid() + 0.1, _trajectory()[0][60], _trajectory()[1], title="moons, t = 40",
        agreement=0.93),
    "reverse_step_figure": lambda: plotting.reverse_step_figure(
        [-1.0, 0.2, 1.5], 0.1, x_t=0.0, t=100, jumps=[1, 10, 30, 100], diffusion=_cosine()),
    "trajectory_figure": lambda: plotting.trajectory_figure(
        _trajectory()[0], 60, _trajectory()[1], distances=(np.arange(101), np.geomspace(2, 0.02, 101)),
        title="moons, 100 steps"),
    "vb_terms_figure": lambda: plotting.vb_terms_figure(_vb(), torch.tensor([1e-5, 2e-5])),
    "vlb_weights": lambda: plotting.vlb_weights(GaussianDiffusion(get_betas("linear", 1000))),
    "variance_ratio_figure": lambda: plotting.variance_ratio_figure(num_timesteps=(100, 1000, 4000)),
    "variance_interpolation_figure": lambda: plotting.variance_interpolation_figure(
        _cosine(), 0.55, 40, learned=(np.arange(1, 1000, 50), np.full(20, 0.77))),
    "sample_grids_figure": lambda: plotting.sample_grids_figure(
        {"fixed β̃ (fixed_small)": _digits(36), "fixed β (fixed_large)": _digits(36), "learned Σ": _digits(36)},
        titles={"learned Σ": "learned Σ: FID 3.21"}, suptitle="25 respaced steps, 1000 samples per variance"),
    "alpha_bar_curves": lambda: plotting.alpha_bar_curves(t=400),
    "latent_grid": lambda: plotting.latent_grid(plotting.sample_photo(64), n_cols=10),
    "schedule_comparison_figure": lambda: plotting.schedule_comparison_figure(plotting.sample_photo(32), 600),
    "loss_curves_figure": lambda: plotting.loss_curves_figure(  # two runs, the same until the sampler is warm
        {"uniform t": np.geomspace(2, 0.5, 1500) * (1 + np.abs(np.sin(np.arange(1500)))),
         "importance-sampled t": np.r_[np.geomspace(2, 0.5, 1500)[:100] * (1 + np.abs(np.sin(np.arange(100)))),
                                       np.geomspace(1.9, 0.4, 1400)]},
        smoothing=25, markers={"importance sampler warm": 100}, title="L_vlb estimates during training",
        ylabel="loss = T·wₜ·Lₜ (bits/dim)"),
    "timestep_importance_figure": lambda: plotting.timestep_importance_figure(_vb(), probs=np.full(1000, 1e-3)),
    "timestep_embedding_figure": lambda: plotting.timestep_embedding_figure(_embedding()),
    "unet_diagram": lambda: plotting.unet_diagram(*_rows("digits8")),
    "unet_diagram (imagenet64)": lambda: plotting.unet_diagram(*_rows("imagenet64")),
    "training_progress_figure": lambda: plotting.training_progress_figure(
        np.geomspace(1, 0.05, 300) * (1 + np.abs(np.sin(np.arange(300)))), _digits(16), step=300),
    "guidance_explorer_figure": lambda: plotting.guidance_explorer_figure(_digits(16), 3, 2.0, _metrics()),
    "guidance_tradeoff_figure": lambda: plotting.guidance_tradeoff_figure(
        {"classifier guidance (s)": _metrics(), "classifier-free (1 + w)": {
            s: {k: v * 0.97 for k, v in m.items()} for s, m in _metrics().items()}}),
    "fid_explorer_figure": lambda: plotting.fid_explorer_figure(
        _digits(36), {"clean real images (floor)": 1.23, "digits model, 10 steps": 12.34,
                      "digits model, 100 steps": 3.45, "degraded real images": 45.67}, "degraded real images",
        title="noise 0.3, blur 1, digits 0-4 (180 images): FID 45.67, precision 0.95, recall 0.50"),
    "feature_gaussians_figure": lambda: plotting.feature_gaussians_figure(_feature_sets()),
    "fid_floor_figure": lambda: plotting.fid_floor_figure(
        [50, 100, 200, 360, 720, 1437], [[8.7, 6.1, 11.3], [4.1, 3.2], [2.0, 1.7], [1.3, 1.0], [0.88, 0.74], [0.57]],
        label="n real training digits", reference="the 360 test digits"),
    "fid_is_figure": lambda: plotting.fid_is_figure(
        {"real": (_digits(36), 1.38, 7.39), "5 classes dropped": (_digits(36), 39.8, 4.22),
         "one digit per class": (_digits(36), 14.64, 7.60), "noise σ=0.5": (_digits(36), 12.43, 3.37)}),
    "fid_is_figure (spread within a class)": lambda: plotting.fid_is_figure(
        {"test digits": (_digits(36), 0.0, 7.14, 10.88), "w = 0": (_digits(36), 1.15, 6.84, 11.03),
         "w = 1": (_digits(36), 1.47, 7.50, 7.58), "w = 3": (_digits(36), 1.62, 7.45, 7.79)}, n_show=20, ncol=5),
    "variance_fit_figure": lambda: plotting.variance_fit_figure(_variance_fits()),
    "gaussian_sampler_figure": lambda: _gaussian_sampler(),
    "variance_gap_figure": lambda: plotting.variance_gap_figure(
        _cosine(), {f"{k} steps": respace(_cosine(), k) for k in (10, 25, 50, 100)},
        {"the model's v": (np.arange(111, 1000, 111), np.full(9, 0.77)),
         "v needed, 10-step chain": (np.arange(111, 1000, 111), np.linspace(0.8, 0.3, 9))}),
    "same_noise_figure": lambda: plotting.same_noise_figure(
        _sweep(), agreement={"ancestral": [0.12, 0.15, 0.22, 0.43, 0.6, 1.0],
                             "DDIM η=0": [0.84, 0.9, 0.94, 0.98, 1.0]}),
    "sampling_sweep_figure": lambda: plotting.sampling_sweep_figure(_sweep(), "DDIM η=0", 25),
    "inversion_figure": lambda: plotting.inversion_figure(
        {10: 0.28, 50: 0.066, 100: 0.054, 1000: 0.0021}, _digits(8), {k: _digits(8) for k in (10, 50, 100, 1000)}),
    "latent_interpolation_figure": lambda: plotting.latent_interpolation_figure(
        {"slerp": _digits(9), "lerp": _digits(9)}, [i / 8 for i in range(9)], 0.5,
        {"slerp": (np.linspace(0, 1, 101), np.full(101, 6.5)),
         "lerp": (np.linspace(0, 1, 101), 6.5 * np.sqrt(1 - 2 * np.linspace(0, 1, 101) * np.linspace(1, 0, 101)))},
        8.0, title="#3: a 3 → #8: a 8, w = 0.5: |x_T| = 6.68 with slerp, 4.48 with lerp (√d = 8); 50 DDIM steps each "
                   "way"),
    "waveform_figure": lambda: plotting.waveform_figure(_waves(4), 8000, titles=[f"example {i}" for i in range(4)],
                                                        ms=20),
    "waveform_noising_figure": lambda: plotting.waveform_noising_figure(
        GaussianDiffusion(get_betas("cosine", 200)), _waves(1)[0], [0, 20, 57, 100, 150, 199], 8000, ms=20),
    "waveform_explorer_figure": lambda: plotting.waveform_explorer_figure(
        GaussianDiffusion(get_betas("cosine", 200)), _waves(1)[0], 57, 8000),
}


def _drawer(draw):
    """A figure from a ``draw_*(ax, ...)`` function: one axes, the width of a panel of two."""
    def make():
        fig, ax = plt.subplots(figsize=(style.WIDTH_IN / 2, 3.4), layout="constrained")
        draw(ax)
        return fig
    return make


EXAMPLES.update({
    "draw_snr": _drawer(lambda ax: plotting.draw_snr(ax, plotting.diffusions(("linear", "cosine")), t=250)),
    "draw_alpha_bar": _drawer(lambda ax: plotting.draw_alpha_bar(ax, plotting.diffusions(("linear", "cosine")))),
    "draw_guidance_metrics": _drawer(lambda ax: plotting.draw_guidance_metrics(ax, _metrics(), 2.0)),
    "draw_fid_vs_steps": _drawer(lambda ax: plotting.draw_fid_vs_steps(ax, _sweep(), ("DDIM η=0", 25))),
    "draw_speed_vs_steps": _drawer(lambda ax: plotting.draw_speed_vs_steps(ax, _sweep(), ("DDIM η=0", 25))),
    "draw_waveform": _drawer(lambda ax: plotting.draw_waveform(ax, _waves(1)[0], 8000, "a chord", ms=20)),
    "draw_spectrogram": _drawer(lambda ax: plotting.draw_spectrogram(ax, _waves(1)[0], 8000, "its spectrogram")),
    "draw_grid": _drawer(lambda ax: plotting.draw_grid(ax, _digits(36), title="36 digits")),
})

# functions of plotting.__all__ that draw no figure
NOT_FIGURES = {"diffusions", "to_display", "sample_photo", "figure_to_png", "evenly_spaced", "snr", "vlb_weight",
               "moving_average", "plain_ticks", "legend_below"}


def test_every_figure_function_has_an_example():
    functions = {name for name in plotting.__all__ if inspect.isfunction(getattr(plotting, name))} - NOT_FIGURES
    missing = functions - {name.split(" ")[0] for name in EXAMPLES}
    assert not missing, f"add an example call to EXAMPLES in {Path(__file__).name} for: {sorted(missing)}"


@pytest.mark.parametrize("name", list(EXAMPLES))
def test_figure_is_readable_at_the_width_it_is_shown(name):
    fig = EXAMPLES[name]()
    try:
        if os.environ.get("FIGURE_DIR"):
            out = Path(os.environ["FIGURE_DIR"])
            out.mkdir(parents=True, exist_ok=True)
            (out / f"{name.replace(' ', '_').replace('(', '').replace(')', '')}.png").write_bytes(
                style.render_png(fig, enforce=False)[0])
        assert fig.dpi == style.DPI, f"{name}: drawn at {fig.dpi} dpi, not the style's {style.DPI}"
        problems = style.check(fig)
        assert not problems, f"{name}:\n" + "\n".join(problems)
    finally:
        plt.close(fig)


def test_check_finds_small_cut_off_and_overlapping_text():
    fig, ax = plt.subplots(figsize=(9, 3))
    ax.set_title("small", fontsize=8)
    ax.text(0.5, 0.5, "one"), ax.text(0.5, 0.5, "two")
    ax.text(1.3, 0.5, "outside", transform=ax.transAxes)
    problems = "\n".join(style.check(fig))
    for expected in ("'small': 8 pt shows at", "'one' and 'two' are drawn over each other",
                     "'outside' is cut off", "more than 8.0 in"):
        assert expected in problems
    plt.close(fig)


def test_the_numbers_keep_12_px_in_the_narrowest_output_area():
    """12 pt at DPI on a figure WIDTH_IN wide, shrunk to NARROWEST_PX, is still at least 12 CSS px."""
    natural = style.WIDTH_IN * style.DPI
    assert style.MIN_FONT_PT * style.DPI / 72 * min(1, style.NARROWEST_PX / natural) >= style.MIN_TEXT_PX
    assert min(style.FONT_PT, style.TITLE_PT, style.SUPTITLE_PT) >= style.MIN_FONT_PT
    assert all(v >= style.MIN_FONT_PT for k, v in style.RC.items() if k.endswith("size") and k != "font.size") \
        and style.RC["font.size"] >= style.MIN_FONT_PT


def test_render_png_records_dpi_and_smallest_font_and_raises_small_fonts():
    fig, ax = plt.subplots(figsize=(4, 2), dpi=50)
    ax.set_title("tiny", fontsize=6)
    png, info = style.render_png(fig, dpi=96)
    assert style.png_info(png) == info
    assert info["dpi"] == 96 and info["width_px"] == 384 and info["height_px"] == 192
    assert info["min_font_pt"] == style.MIN_FONT_PT and ax.title.get_fontsize() == style.MIN_FONT_PT
    assert fig.dpi == 50  # the figure's own dpi is left as it was
    plt.close(fig)


# ---------------------------------------------------------------------------------------- the notebooks' figures
def _calls(path: Path):
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Call):
            yield node


def test_notebook_scripts_keep_figures_readable():
    """The notebooks' own figures: no ``fontsize=`` below the style's smallest and no ``figsize=`` wider than
    ``style.WIDTH_IN`` (literal numbers; sizes computed in code are left to the browser test)."""
    problems = []
    for path in sorted((ROOT / "notebooks" / "scripts").glob("*.py")):
        for call in _calls(path):
            for kw in call.keywords:
                where = f"{path.name}:{call.lineno}"
                if kw.arg == "fontsize" and isinstance(kw.value, ast.Constant) and \
                        isinstance(kw.value.value, (int, float)) and kw.value.value < style.MIN_FONT_PT:
                    problems.append(f"{where}: fontsize={kw.value.value}")
                if kw.arg == "figsize" and isinstance(kw.value, ast.Tuple) and \
                        isinstance(kw.value.elts[0], ast.Constant) and kw.value.elts[0].value > style.WIDTH_IN:
                    problems.append(f"{where}: figsize width {kw.value.elts[0].value} in")
    assert not problems, "notebook figures break the style (course/style.py):\n" + "\n".join(problems)
