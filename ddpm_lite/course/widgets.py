"""Interactive figures for the notebooks: core ipywidgets driving a matplotlib figure.

Each widget is a small class:

- ``.controls``: the input widgets (IntSlider, Dropdown, Button), each wired to :meth:`render`;
- :meth:`render`: draw the figure with :mod:`ddpm_lite.course.plotting`, save it as PNG into ``.image`` (an
  ``ipywidgets.Image``), close it (``plt.close``) and keep it as ``.fig`` for inspection;
- ``.widget``: the box to display; the object itself displays as that box (``_ipython_display_``).

Only core widgets (no Tab, Accordion or ipympl) and no ``Output`` capture: the picture is the value of an
``Image`` widget, which works the same in Colab (ipywidgets 7) and JupyterLab (ipywidgets 8), and which the tests
can read without a browser.

A value a widget cannot show (a schedule or an option it does not have, a slider value out of its range), given
to the constructor or set on a control from code, raises :class:`InvalidValue`, a ValueError that says what is
accepted, where ipywidgets would clamp the slider silently or raise an error deep inside traitlets.

The module reads in the order of the notebooks, after the machinery every widget shares:

==  ==================================  ================================================================================
    ``FigureWidget``, ``InvalidValue``  the base class: controls -> figure -> PNG; the checked controls
01  ``ForwardNoisingExplorer``          q(x_t | x_0) on a digit, a photo and 2-D points, beside the SNR curve
02  ``SamplingTrajectoryExplorer``      ancestral sampling in 2-D, step by step
02  ``ScoreFieldExplorer``              the score a 2-D eps-model stands for, as arrows, against the exact one
04  ``VarianceExplorer``                Sigma_t between beta-tilde_t and beta_t (Improved DDPM eq. 15)
05  ``ScheduleExplorer``                linear against cosine: alpha-bar_t and the images along the chain
06  ``LiveLossPlot``                    loss curves that redraw while training runs
07  ``UNetExplorer``                    the shapes and parameters of the ADM U-Net of a configuration
07  ``TrainingMonitor``                 the loss and samples of a training run, live
08  ``GuidanceExplorer``                guided samples and the trade-off curves against the guidance scale
09  ``FIDExplorer``                     FID of real images spoiled on purpose
10  ``FastSamplingExplorer``            samples, FID and speed against the number of sampling steps
10  ``LatentInterpolationExplorer``     two digits mixed through their DDIM latents: slerp against lerp
11  ``WaveformNoisingExplorer``         the forward process on a waveform, with sound
==  ==================================  ================================================================================
"""
from __future__ import annotations

import math
import numbers

import ipywidgets as W
import matplotlib.pyplot as plt
import torch
from traitlets import TraitError

from ..data import load_dataset, toy_2d
from ..gaussian_diffusion import GaussianDiffusion
from . import plotting, sound, style

__all__ = ["FigureWidget", "InvalidValue", "ForwardNoisingExplorer", "SamplingTrajectoryExplorer", "ScoreFieldExplorer",
           "VarianceExplorer",
           "ScheduleExplorer", "LiveLossPlot", "UNetExplorer", "TrainingMonitor", "GuidanceExplorer", "FIDExplorer",
           "FastSamplingExplorer", "LatentInterpolationExplorer", "WaveformNoisingExplorer"]

SCHEDULES = ("linear", "cosine")
CLEAR_DIGIT = 3  # the training digit the explorers show: a clear 3 (picked after looking at the first 40)
FULL_DESCRIPTION = {"description_width": "initial"}  # a control's description in full, never cut ("drop class…")


# ======================================================================================================================
# the machinery: the base class, and controls that refuse a value they cannot show
# ======================================================================================================================
class InvalidValue(ValueError, TraitError):
    """A value a widget cannot show; the message says which values it accepts.

    A ValueError, and also a traitlets ``TraitError``, so that a control refusing it is rolled back as for
    ipywidgets' own errors.
    """


def _clear_digit() -> torch.Tensor:
    """The training digit the explorers show by default (``CLEAR_DIGIT``; the first, if there are fewer)."""
    images = load_dataset("digits").images
    return images[min(CLEAR_DIGIT, len(images) - 1)]


def _options(options) -> list:
    """The values of a selection's options: plain values, or (label, value) pairs."""
    return [o[1] if isinstance(o, tuple) and len(o) == 2 else o for o in options]


def _check_choice(owner: str, name: str, value, options) -> None:
    values = _options(options)
    if value not in values:
        raise InvalidValue(f"{owner}: {name} = {value!r} is not accepted; {name} takes one of "
                           f"{', '.join(repr(v) for v in values)}")


def _check_range(owner: str, name: str, value, lo, hi, kind: str) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not lo <= value <= hi:
        raise InvalidValue(f"{owner}: {name} = {value!r} is not accepted; {name} takes {kind} from {lo} to {hi}")


def _refuse(control, check) -> None:
    """Have ``control.value = v`` (code setting a control) run ``check(v)`` before ipywidgets' own validation,
    which clamps a slider silently and refuses an option with a TraitError that does not list the options."""
    own = control._trait_validators.get("value")

    def validate(obj, proposal):
        check(proposal.value)
        return own(obj, proposal) if own is not None else proposal.value

    control._register_validator(validate, ["value"])


class FigureWidget:
    """Base class: subclasses build ``self.controls`` (with :meth:`_choice` and :meth:`_slider`, which refuse a
    value they cannot show) and implement :meth:`figure`.

    The figure is drawn at ``dpi`` (the course style's, :mod:`ddpm_lite.course.style`) and shown at its natural
    width (its PNG's width in CSS px) with ``max-width: 100%``: never upscaled, shrunk only in an output area
    narrower than it. ``png_info`` holds what the last PNG records: its dpi, size and smallest font.
    """

    dpi = style.DPI

    def __init__(self, controls):
        self.controls = list(controls)
        self.image = W.Image(format="png", layout=W.Layout(max_width="100%", height="auto"))
        self.png_info: dict = {}
        self.fig = None
        self.renders = 0
        for control in self.controls:
            if isinstance(control, W.Button):
                control.on_click(self._on_click)
            else:
                control.observe(self._on_change, names="value")
        self.widget = W.VBox([self._controls_box(), self.image])
        self.render()

    def _choice(self, name: str, options, value, cls=W.Dropdown, **kwargs):
        """A ``cls`` (Dropdown or SelectionSlider) over ``options`` (values or (label, value) pairs) that refuses,
        now and whenever code sets it, a value not among its current options."""
        owner = type(self).__name__
        _check_choice(owner, name, value, options)
        kwargs.setdefault("style", FULL_DESCRIPTION)
        control = cls(options=options, value=value, **kwargs)
        _refuse(control, lambda v: _check_choice(owner, name, v, control.options))
        return control

    def _slider(self, name: str, value, min, max, cls=W.IntSlider, **kwargs):
        """A ``cls`` (IntSlider or FloatSlider) from ``min`` to ``max`` that refuses, now and whenever code sets it,
        a value outside its current range (ipywidgets would clamp it)."""
        owner = type(self).__name__
        kind = "an integer" if issubclass(cls, W.IntSlider) else "a number"
        _check_range(owner, name, value, min, max, kind)
        kwargs.setdefault("style", FULL_DESCRIPTION)
        control = cls(value=value, min=min, max=max, **kwargs)
        _refuse(control, lambda v: _check_range(owner, name, v, control.min, control.max, kind))
        return control

    def _controls_box(self):
        """The controls in a row that wraps onto a second line in a narrow output area."""
        return W.HBox(self.controls, layout=W.Layout(flex_flow="row wrap"))

    def _on_change(self, change):
        self.render()

    def _on_click(self, button):
        self.render()

    def figure(self):
        raise NotImplementedError

    def render(self) -> bytes:
        """Redraw: figure -> PNG bytes in ``self.image.value``; the figure is closed and kept as ``.fig``."""
        fig = self.figure()
        png, self.png_info = style.render_png(fig, self.dpi)
        plt.close(fig)
        self.image.width = str(self.png_info["width_px"])  # natural size: one PNG pixel per CSS px
        self.fig = fig
        self.image.value = png
        self.renders += 1
        return png

    @property
    def titles(self) -> list[str]:
        """The titles of the last figure's axes (and its suptitle first, when there is one)."""
        fig = self.fig
        sup = [fig._suptitle.get_text()] if getattr(fig, "_suptitle", None) is not None else []
        return sup + [ax.get_title() for ax in fig.axes]

    def _ipython_display_(self):
        from IPython.display import display

        display(self.widget)


# ======================================================================================================================
# 01 forward noising
# ======================================================================================================================
class ForwardNoisingExplorer(FigureWidget):
    """q(x_t | x_0) (DDPM eq. 4) on a digit, a photo and 2-D points, beside the SNR curve.

    Controls: ``t`` (IntSlider), ``schedule`` (Dropdown: linear / cosine), ``new noise`` (Button: a new epsilon).
    The noise stays fixed while t moves, so the slider follows one sample path of the forward process.
    """

    def __init__(self, num_timesteps: int = 1000, t: int = 0, schedule: str = "linear", seed: int = 0,
                 digit: torch.Tensor | None = None, photo: torch.Tensor | None = None,
                 points: torch.Tensor | None = None, photo_size: int = 64):
        self.diffusions = plotting.diffusions(SCHEDULES, num_timesteps)
        self.t = self._slider("t", t, 0, num_timesteps - 1, step=1, description="t", continuous_update=False,
                              layout=W.Layout(width="420px"))
        self.schedule = self._choice("schedule", list(SCHEDULES), schedule, description="schedule")
        self.images = {
            "digit": digit if digit is not None else _clear_digit(),
            "photo": photo if photo is not None else plotting.sample_photo(photo_size),
        }
        self.points = points if points is not None else toy_2d("moons", 1000)
        self.seed = seed
        self.new_noise = W.Button(description="new noise", tooltip="draw a new epsilon")
        super().__init__([self.t, self.schedule, self.new_noise])

    def _on_click(self, button):
        self.seed += 1
        self.render()

    def figure(self):
        name = self.schedule.value
        return plotting.forward_noising_figure(self.diffusions[name], self.t.value, self.images, self.points,
                                               seed=self.seed, schedule_name=name, compare=self.diffusions)


# ======================================================================================================================
# 02 reverse process
# ======================================================================================================================
class SamplingTrajectoryExplorer(FigureWidget):
    """Ancestral sampling (DDPM Algorithm 2) step by step: the 2-D cloud after k reverse steps, a few particles'
    paths, and the cloud's distance to the data along the way.

    ``trajectories``: {name: (K + 1, N, 2)} from :func:`ddpm_lite.course.reverse_process.sample_trajectory` (entry
    k: after k steps); ``data``: {name: points (M, 2)} to draw in grey and measure distances to (optional, same
    names). Controls: ``step`` (IntSlider, 0 = pure noise x_T, K = the samples x_0; a ``step`` beyond K starts at
    K) and ``dataset`` (Dropdown over the names, ``name`` at the start), which keeps the step's fraction of the way
    when the trajectories differ in length.
    """

    def __init__(self, trajectories, data=None, step: int = 0, name: str | None = None, n_paths: int = 5,
                 lim: float = 3.0):
        from .reverse_process import trajectory_distances

        if not trajectories:
            raise ValueError("no trajectories to show")
        name = name if name is not None else next(iter(trajectories))
        self.dataset = self._choice("name", list(trajectories), name, description="model")
        K = len(trajectories[name]) - 1
        self.step = self._slider("step", min(step, K), 0, K, step=1, description="reverse step",
                                 continuous_update=False, layout=W.Layout(width="460px"),
                                 style={"description_width": "initial"})
        self.trajectories = {k: torch.as_tensor(v).detach().float().cpu() for k, v in trajectories.items()}
        self.data = dict(data or {})
        self.n_paths, self.lim = n_paths, lim
        self.distances = {k: trajectory_distances(v, self.data[k]) for k, v in self.trajectories.items()
                          if k in self.data}
        self._syncing = False
        super().__init__([self.step, self.dataset])

    def _on_change(self, change):
        if self._syncing:
            return
        if change.get("owner") is self.dataset:
            old = len(self.trajectories[change["old"]]) - 1
            new = len(self.trajectories[change["new"]]) - 1
            if new != old:
                self._syncing = True
                try:
                    fraction = self.step.value / max(old, 1)
                    self.step.max = max(new, self.step.max)
                    self.step.value = round(fraction * new)
                    self.step.max = new
                finally:
                    self._syncing = False
        self.render()

    def figure(self):
        name = self.dataset.value
        return plotting.trajectory_figure(self.trajectories[name], self.step.value, self.data.get(name),
                                          n_paths=self.n_paths, distances=self.distances.get(name), title=name,
                                          lim=self.lim)


class ScoreFieldExplorer(FigureWidget):
    """The score view of a 2-D model (DDPM section 3.2): the arrows of grad log p_t(x) = -eps_theta(x, t) /
    sqrt(1 - alpha_bar_t) on a grid, over the data and the samples at that step, beside the exact score when it is
    known (e.g. :meth:`ddpm_lite.course.analytic.GaussianMixture.eps_model`).

    ``models``: {name: eps-model(x, t)} on ``diffusion``'s timesteps; ``exact``: {name: eps-model} (optional, same
    names); ``trajectories``: {name: (T + 1, N, 2)} from
    :func:`~ddpm_lite.course.reverse_process.sample_trajectory` (optional: the cloud drawn at code step t is the
    one the model sees there, entry T - 1 - t); ``data``: {name: points} drawn in grey. Controls: ``t`` (IntSlider
    over the code's timesteps 0..T-1, the paper's t + 1) and ``model`` (Dropdown over the names). ``agreement``
    holds the mean cosine between the model's and the exact arrows on the grid (None without an exact score).
    """

    def __init__(self, diffusion: GaussianDiffusion, models, exact=None, trajectories=None, data=None, t: int = 100,
                 name: str | None = None, lim: float = 3.0, n_grid: int = 15):
        from .reverse_process import score_grid

        if not models:
            raise ValueError("no models to show")
        self.diffusion = diffusion
        self.models = dict(models)
        self.exact = dict(exact or {})
        self.trajectories = {k: torch.as_tensor(v).detach().float().cpu() for k, v in (trajectories or {}).items()}
        self.data = dict(data or {})
        self.lim = lim
        self.grid = score_grid(lim, n_grid)
        self.agreement = None
        T = diffusion.num_timesteps
        self.t = self._slider("t", t, 0, T - 1, step=1, description="code t", continuous_update=False,
                              layout=W.Layout(width="420px"))
        self.model = self._choice("model", list(self.models), name if name is not None else next(iter(self.models)),
                                  description="model")
        super().__init__([self.t, self.model])

    def cloud(self):
        """The samples on show: the trajectory's state that the model sees at code step t (None without one)."""
        traj = self.trajectories.get(self.model.value)
        if traj is None:
            return None
        return traj[max(len(traj) - 2 - self.t.value, 0)]

    def figure(self):
        from .reverse_process import score_agreement, score_field

        name, t = self.model.value, self.t.value
        learned = score_field(self.models[name], self.diffusion, t, self.grid)
        exact = score_field(self.exact[name], self.diffusion, t, self.grid) if name in self.exact else None
        self.agreement = score_agreement(learned, exact) if exact is not None else None
        sigma = math.sqrt(1 - float(self.diffusion.alphas_cumprod[t]))
        title = f"{name}: t = {t + 1} (code t = {t}), noise σ = {sigma:.3f}"
        return plotting.score_field_figure(self.grid, learned, exact, self.cloud(), self.data.get(name), title=title,
                                           lim=self.lim, agreement=self.agreement)


# ======================================================================================================================
# 04 learned variance
# ======================================================================================================================
class VarianceExplorer(FigureWidget):
    """Improved DDPM eq. 15: the variance Sigma_t between beta-tilde_t (v = 0) and beta_t (v = 1).

    ``learned`` = (timesteps, v) draws a model's learned v(t) (e.g. from
    :func:`ddpm_lite.course.learned_variance.interpolation_weights`) and the Sigma_t it gives. Controls: ``v``
    (FloatSlider, a constant interpolation weight) and ``t`` (IntSlider, the step whose numbers the title gives; a
    ``t`` beyond the chain starts at its last step).
    """

    def __init__(self, diffusion: GaussianDiffusion | None = None, learned=None, v: float = 0.5, t: int = 10):
        self.diffusion = diffusion if diffusion is not None else plotting.diffusions("cosine", 1000)["cosine"]
        self.learned = learned
        T = self.diffusion.num_timesteps
        self.v = self._slider("v", v, 0.0, 1.0, W.FloatSlider, step=0.05, description="v", continuous_update=False,
                              readout_format=".2f", layout=W.Layout(width="320px"))
        self.t = self._slider("t", min(t, T - 1), 1, T - 1, step=1, description="t", continuous_update=False,
                              layout=W.Layout(width="420px"))
        super().__init__([self.v, self.t])

    def figure(self):
        return plotting.variance_interpolation_figure(self.diffusion, self.v.value, self.t.value, self.learned)


# ======================================================================================================================
# 05 cosine schedule
# ======================================================================================================================
class ScheduleExplorer(FigureWidget):
    """Linear against cosine (Improved DDPM section 3.2, Figures 3 and 5): alpha_bar_t, x_t at the chosen t, and
    images at evenly spaced t under both schedules.

    Controls: ``t`` (IntSlider), ``image`` (Dropdown: the photo at 64, 32 or 16 pixels, or a digit at 8).
    """

    IMAGES = ("photo 64x64", "photo 32x32", "photo 16x16", "digit 8x8")

    def __init__(self, num_timesteps: int = 1000, t: int = 500, image: str = "photo 32x32", n_cols: int = 8,
                 seed: int = 0):
        self.diffusions = plotting.diffusions(SCHEDULES, num_timesteps)
        self.t = self._slider("t", t, 0, num_timesteps - 1, step=1, description="t", continuous_update=False,
                              layout=W.Layout(width="420px"))
        self.image_choice = self._choice("image", list(self.IMAGES), image, description="image")
        self.n_cols = n_cols
        self.seed = seed
        self._digit = None
        super().__init__([self.t, self.image_choice])

    def x0(self) -> torch.Tensor:
        name = self.image_choice.value
        if name.startswith("digit"):
            if self._digit is None:
                self._digit = _clear_digit()
            return self._digit
        return plotting.sample_photo(int(name.split()[-1].split("x")[0]))

    def figure(self):
        return plotting.schedule_comparison_figure(self.x0(), self.t.value, self.diffusions, n_cols=self.n_cols,
                                                   seed=self.seed)


# ======================================================================================================================
# 06 importance sampling
# ======================================================================================================================
class LiveLossPlot(FigureWidget):
    """Loss curves that redraw while training runs: call :meth:`update` (e.g. from a Trainer callback,
    :meth:`callback`) with the latest per-step losses of each run.

    Controls: ``smoothing`` (IntSlider, the moving-average window in steps) and ``yscale`` (Dropdown: log or
    linear). ``markers`` = {label: step} adds labelled vertical lines (:meth:`mark`).
    """

    def __init__(self, names=(), smoothing: int = 20, yscale: str = "log", title: str = "",
                 ylabel: str = "training loss"):
        self.smoothing = self._slider("smoothing", smoothing, 1, 200, step=1, description="smoothing",
                                      continuous_update=False, layout=W.Layout(width="360px"))
        self.yscale = self._choice("yscale", ["log", "linear"], yscale, description="y scale")
        self.curves = {name: [] for name in names}
        self.markers: dict[str, int] = {}
        self.title, self.ylabel = title, ylabel
        super().__init__([self.smoothing, self.yscale])

    def update(self, curves=None, **named) -> None:
        """Replace the curves given ({name: losses} or name=losses) and redraw."""
        for name, values in {**(curves or {}), **named}.items():
            self.curves[name] = list(values)
        self.render()

    def mark(self, label: str, step: int) -> None:
        """A labelled vertical line at ``step`` (drawn at the next redraw)."""
        self.markers[label] = int(step)

    def callback(self, trainers, interval: int = 25):
        """A Trainer callback: every ``interval`` steps, redraw with ``{name: trainer.history["loss"]}`` of the
        mapping ``trainers``."""
        from ..train import every

        return every(interval, lambda *args: self.update({k: tr.history["loss"] for k, tr in trainers.items()}))

    def figure(self):
        return plotting.loss_curves_figure(self.curves, self.smoothing.value, self.yscale.value, self.markers,
                                           title=self.title, ylabel=self.ylabel)


# ======================================================================================================================
# 07 U-Net
# ======================================================================================================================
class UNetExplorer(FigureWidget):
    """The shapes flowing through the ADM U-Net (Dhariwal & Nichol 2021, section 3) of a configuration, and its
    parameters, traced on PyTorch's meta device (:func:`ddpm_lite.models.summary.unet_summary`: instant, even for
    ImageNet 64x64).

    Controls: ``preset`` (Dropdown: digits8, digits16, mnist28, cifar10, imagenet64; choosing one resets the
    sliders to its values), ``model_channels`` and ``num_res_blocks`` (IntSliders). ``rows`` and ``total`` hold the
    last trace; a configuration that cannot be built shows why (``error``).
    """

    PRESETS = ("digits8", "digits16", "mnist28", "cifar10", "imagenet64")

    def __init__(self, preset: str = "digits8", model_channels: int | None = None, num_res_blocks: int | None = None):
        from ..models import UNetConfig

        self.preset = self._choice("preset", list(self.PRESETS), preset, description="preset")
        base = UNetConfig.preset(preset)
        self.rows, self.total, self.error = [], 0, None
        self._syncing = False
        self.model_channels = self._slider("model_channels", model_channels or base.model_channels, 16, 256,
                                           step=16, description="channels", continuous_update=False)
        self.num_res_blocks = self._slider("num_res_blocks", num_res_blocks or base.num_res_blocks, 1, 4,
                                           description="res blocks", continuous_update=False)
        super().__init__([self.preset, self.model_channels, self.num_res_blocks])

    def _on_change(self, change):
        if self._syncing:
            return
        if change["owner"] is self.preset:  # a new preset: its own width and depth, then one render
            from ..models import UNetConfig

            base = UNetConfig.preset(change["new"])
            self._syncing = True
            try:
                self.model_channels.value = base.model_channels
                self.num_res_blocks.value = base.num_res_blocks
            finally:
                self._syncing = False
        self.render()

    def config(self):
        """The UNetConfig of the controls (ValueError when it cannot be built)."""
        from ..models import UNetConfig

        return UNetConfig.preset(self.preset.value, model_channels=self.model_channels.value,
                                 num_res_blocks=self.num_res_blocks.value)

    def figure(self):
        import matplotlib.pyplot as plt

        from ..models.summary import unet_summary

        try:
            config = self.config()
            self.rows, self.total = unet_summary(config)
            self.error = None
        except ValueError as err:
            self.rows, self.total, self.error = [], 0, str(err)
            fig, ax = plt.subplots(figsize=(10, 2))
            ax.axis("off")
            ax.set_title(f"{self.preset.value} with {self.model_channels.value} channels cannot be built",
                         fontsize=10)
            ax.text(0.5, 0.5, self.error, ha="center", va="center", wrap=True, fontsize=9)
            return fig
        cond = "unconditional" if config.num_classes is None else f"{config.num_classes} classes"
        title = (f"{self.preset.value}: {self.total / 1e6:.2f} M parameters, {cond}, "
                 f"{config.in_channels}×{config.image_size}×{config.image_size} in, "
                 f"{config.model_out_channels}×{config.image_size}×{config.image_size} out; channels "
                 f"{config.model_channels} × {list(config.channel_mult)}, "
                 f"{config.num_res_blocks} res blocks per level")
        return plotting.unet_diagram(self.rows, self.total, title=title)


class TrainingMonitor(FigureWidget):
    """A live view of training: the loss curve and a grid of samples from the EMA weights.

    ``trainer.callbacks.append(monitor.callback())`` (or ``callbacks=[monitor.callback()]``) redraws it every
    ``interval`` steps, sampling ``n_samples`` images with ``sample_steps`` respaced steps (always from the same
    noise, so the grid shows the model change). No controls: the picture updates while the training cell runs.
    """

    def __init__(self, interval: int = 50, n_samples: int = 16, sample_steps: int = 25, title: str = ""):
        self.interval, self.n_samples, self.sample_steps, self.title = interval, n_samples, sample_steps, title
        self.losses: list[float] = []
        self.samples = None
        self.step = 0
        super().__init__([])

    def callback(self):
        """``every(interval, self.update)``: the callback to give the Trainer."""
        from ..train import every

        return every(self.interval, self.update)

    def update(self, trainer, step: int, logs=None) -> None:
        """Take the trainer's loss history and fresh samples, and redraw."""
        self.losses = list(trainer.history["loss"])
        self.step = step
        if self.n_samples:
            self.samples = trainer.sample(self.n_samples, steps=self.sample_steps)
        self.render()

    def figure(self):
        return plotting.training_progress_figure(self.losses, self.samples, self.step, title=self.title or None)


# ======================================================================================================================
# 08 guidance
# ======================================================================================================================
class GuidanceExplorer(FigureWidget):
    """Guided samples of one class at one guidance scale, beside the trade-off curves (Dhariwal & Nichol 2021,
    section 4 and Figure 4): label accuracy, precision and recall against the scale.

    ``samples``: {scale: images (N, C, H, W)} drawn for ``labels`` (N,) (the same labels at every scale);
    the metrics of each scale (:func:`ddpm_lite.course.evaluate.sample_quality` against ``real_features``) are
    computed once, here, unless given as ``metrics`` (then for every scale of ``samples``). Controls: ``label``
    (Dropdown of the classes) and ``scale`` (SelectionSlider over the precomputed scales).
    """

    def __init__(self, samples, labels, real_features=None, feature_net=None, label: int = 0, scale=None,
                 metrics=None, method: str = "classifier guidance", scale_name: str = "guidance scale s",
                 n_show: int = 16):
        from .evaluate import sample_quality

        self.samples = {float(s): torch.as_tensor(x).detach().float().cpu() for s, x in samples.items()}
        self.labels = torch.as_tensor(labels).cpu()
        self.method, self.scale_name, self.n_show = method, scale_name, n_show
        scales = sorted(self.samples)
        classes = sorted(int(c) for c in self.labels.unique())
        self.label = self._choice("label", classes, label, description="class")
        self.scale = self._choice("scale", [(f"{s:g}", s) for s in scales],
                                  float(scale) if scale is not None else scales[0], W.SelectionSlider,
                                  description=scale_name.split()[-1], continuous_update=False)
        if metrics is None:
            if real_features is None or feature_net is None:
                raise ValueError("give real_features and feature_net, or precomputed metrics")
            metrics = {s: sample_quality(x, self.labels, real_features, feature_net) for s, x in self.samples.items()}
        self.metrics = {float(s): m for s, m in metrics.items()}
        missing = [s for s in scales if s not in self.metrics]
        if missing:
            raise InvalidValue(f"GuidanceExplorer: metrics has nothing for the scales {missing}; metrics takes "
                               f"{{scale: sample_quality(...)}} for every scale of samples: {scales}")
        super().__init__([self.label, self.scale])

    def shown(self) -> torch.Tensor:
        """The samples on display: those of the chosen class at the chosen scale."""
        x = self.samples[self.scale.value]
        return x[self.labels == self.label.value][: self.n_show]

    def figure(self):
        return plotting.guidance_explorer_figure(self.shown(), self.label.value, self.scale.value, self.metrics,
                                                 self.method, self.scale_name)


# ======================================================================================================================
# 09 FID
# ======================================================================================================================
class FIDExplorer(FigureWidget):
    """FID of real images spoiled on purpose (:func:`ddpm_lite.course.evaluate.degrade`) against the reference
    features.

    Controls: ``noise`` (FloatSlider: std of added Gaussian noise), ``blur`` (FloatSlider: Gaussian blur, in
    pixels), ``drop`` (IntSlider: how many classes to remove, mode dropping). The bars compare the current FID with
    the floor (the clean images) and any ``benchmarks`` ({label: FID}, e.g. our models). ``fid``, ``precision``,
    ``recall`` hold the current numbers.
    """

    CURRENT = "degraded real images"
    FLOOR = "clean real images (floor)"

    def __init__(self, images, labels, reference_features, feature_net, benchmarks=None, noise: float = 0.0,
                 blur: float = 0.0, drop: int = 0, seed: int = 0, n_show: int = 36):
        from .evaluate import sample_quality

        self.noise = self._slider("noise", noise, 0.0, 1.0, W.FloatSlider, step=0.05, description="noise σ",
                                  continuous_update=False)
        self.blur = self._slider("blur", blur, 0.0, 2.0, W.FloatSlider, step=0.25, description="blur σ",
                                 continuous_update=False)
        self.drop = self._slider("drop", drop, 0, 9, description="drop classes", continuous_update=False)
        self.images = torch.as_tensor(images).detach().float().cpu()
        self.labels = torch.as_tensor(labels).cpu()
        self.reference = reference_features
        self.net, self.seed, self.n_show = feature_net, seed, n_show
        self.benchmarks = dict(benchmarks or {})
        self.floor = sample_quality(self.images, self.labels, reference_features, feature_net)["fid"]
        super().__init__([self.noise, self.blur, self.drop])

    def figure(self):
        from .evaluate import degrade, sample_quality

        x, y = degrade(self.images, self.labels, self.noise.value, self.blur.value, self.drop.value, self.seed)
        q = sample_quality(x, y, self.reference, self.net)
        self.fid, self.precision, self.recall = q["fid"], q["precision"], q["recall"]
        bars = {self.FLOOR: self.floor, **self.benchmarks, self.CURRENT: self.fid}
        kept = f"digits 0-{9 - self.drop.value}" if self.drop.value else "all digits"
        title = (f"noise {self.noise.value:g}, blur {self.blur.value:g}, {kept} ({len(x)} images): "
                 f"FID {self.fid:.2f}, precision {self.precision:.2f}, recall {self.recall:.2f}")
        return plotting.fid_explorer_figure(x[: self.n_show], bars, self.CURRENT, title=title)


# ======================================================================================================================
# 10 fast sampling and likelihood
# ======================================================================================================================
class FastSamplingExplorer(FigureWidget):
    """Quality against steps (Improved DDPM section 4, DDIM): samples of the chosen sampler at the chosen step
    count, with its FID and measured speed, beside the FID and samples/s curves of every sampler.

    Everything shown was precomputed by :func:`ddpm_lite.course.fast_sampling.sampling_sweep` (``sweep``): moving
    the controls only redraws. Controls: ``steps`` (SelectionSlider over the step counts run for that sampler; by
    default the middle one) and ``sampler`` (Dropdown: ancestral, DDIM η=0, DDIM η=1, ...).
    """

    def __init__(self, sweep, sampler: str | None = None, steps: int | None = None, n_show: int = 36):
        self.sweep, self.n_show = sweep, n_show
        sampler = sampler if sampler is not None else sweep.samplers[0]
        self.sampler = self._choice("sampler", sweep.samplers, sampler, description="sampler")
        options = sweep.steps_of(sampler)
        steps = steps if steps is not None else options[len(options) // 2]
        self.steps = self._choice("steps", options, steps, W.SelectionSlider, description="steps",
                                  continuous_update=False, layout=W.Layout(width="360px"))
        self._syncing = False
        super().__init__([self.steps, self.sampler])

    def _on_change(self, change):
        if self._syncing:
            return
        if change.get("owner") is self.sampler:  # that sampler's step counts; keep the closest to the current one
            options, current = self.sweep.steps_of(self.sampler.value), self.steps.value
            self._syncing = True
            try:
                self.steps.options = options
                self.steps.value = min(options, key=lambda k: abs(math.log(k / current)))
            finally:
                self._syncing = False
        self.render()

    @property
    def point(self):
        """The :class:`~ddpm_lite.course.fast_sampling.SweepPoint` on show."""
        return self.sweep.get(self.sampler.value, self.steps.value)

    def figure(self):
        return plotting.sampling_sweep_figure(self.sweep, self.sampler.value, self.steps.value, n_show=self.n_show)


class LatentInterpolationExplorer(FigureWidget):
    """Two digits mixed through their DDIM latents (DDIM inversion, :func:`~ddpm_lite.course.fast_sampling.
    ddim_encode`): x_T of each, mixed with weight w by :func:`~ddpm_lite.course.fast_sampling.slerp` (top row) and by
    the linear mix (bottom row), decoded by DDIM (``eta`` = 0) on the same ``steps`` respaced steps; right, the
    norm of the mixed latent against w, with sqrt(d) (a Gaussian x_T's norm) dotted.

    ``images`` (N, C, H, W) in [-1, 1] are encoded once, here (``steps`` network calls); each pair of digits is
    decoded once at the ``weights`` (2 x 9 images, ``steps`` calls) and kept. Controls: ``first`` and ``second``
    (Dropdowns over the images, by index, labelled with ``labels`` when given) and ``weight`` (SelectionSlider
    over ``weights``, 0 to 1 in eighths).
    """

    WEIGHTS = tuple(i / 8 for i in range(9))

    def __init__(self, model, diffusion, images, labels=None, steps: int = 50, first: int = 0, second: int = 1,
                 weight: float = 0.5, device=None):
        from .fast_sampling import ddim_encode

        self.images = torch.as_tensor(images).detach().float().cpu()
        if self.images.ndim != 4 or len(self.images) < 2:
            raise ValueError(f"images must be a batch (N, C, H, W) of at least 2 images, got shape "
                             f"{tuple(self.images.shape)}")
        labels = None if labels is None else [int(v) for v in torch.as_tensor(labels).reshape(-1)]
        names = [f"#{i}" + (f": a {labels[i]}" if labels is not None else "") for i in range(len(self.images))]
        options = list(zip(names, range(len(self.images))))
        self.first = self._choice("first", options, first, description="from", layout=W.Layout(width="160px"))
        self.second = self._choice("second", options, second, description="to", layout=W.Layout(width="160px"))
        self.weight = self._choice("weight", [(f"{w:g}", w) for w in self.WEIGHTS], weight, W.SelectionSlider,
                                   description="w", continuous_update=False, layout=W.Layout(width="260px"))
        self.model, self.diffusion, self.steps, self.device = model, diffusion, int(steps), device
        self.latents = ddim_encode(model, diffusion, self.images, self.steps, device)
        self.dim = self.latents[0].numel()
        self._decoded: dict[tuple[int, int], dict[str, torch.Tensor]] = {}
        self.decodes = 0  # how many pairs were decoded (each: steps network calls)
        super().__init__([self.first, self.second, self.weight])

    def mixes(self, first: int | None = None, second: int | None = None, weights=None) -> dict[str, torch.Tensor]:
        """{"slerp": latents, "lerp": latents}: the mixes of the two digits' x_T at ``weights`` (default the
        slider's)."""
        from .fast_sampling import lerp, slerp

        a = self.latents[self.first.value if first is None else first]
        b = self.latents[self.second.value if second is None else second]
        w = torch.as_tensor(self.WEIGHTS if weights is None else weights, dtype=a.dtype).reshape(-1)
        a, b = a.expand(len(w), *a.shape), b.expand(len(w), *b.shape)
        return {"slerp": slerp(a, b, w), "lerp": lerp(a, b, w)}

    def decoded(self) -> dict[str, torch.Tensor]:
        """{"slerp": images, "lerp": images} at the slider's weights for the current pair (decoded once per pair)."""
        from .fast_sampling import ddim_decode

        key = (self.first.value, self.second.value)
        if key not in self._decoded:
            mixes = self.mixes()
            both = ddim_decode(self.model, self.diffusion, torch.cat([mixes["slerp"], mixes["lerp"]]), self.steps,
                               self.device)
            self._decoded[key] = {"slerp": both[: len(self.WEIGHTS)], "lerp": both[len(self.WEIGHTS):]}
            self.decodes += 1
        return self._decoded[key]

    def norms(self, first: int | None = None, second: int | None = None, points: int = 101) -> dict[str, tuple]:
        """{"slerp": (w, |x_T|), "lerp": (w, |x_T|)} on ``points`` weights from 0 to 1."""
        w = torch.linspace(0, 1, points)
        return {k: (w.numpy(), v.flatten(1).norm(dim=1).numpy()) for k, v in self.mixes(first, second, w).items()}

    def figure(self):
        w = self.weight.value
        norms = self.norms()
        i = int(round(w * (len(norms["slerp"][0]) - 1)))
        title = (f"{self.first.label} → {self.second.label}, w = {w:g}: |x_T| = {norms['slerp'][1][i]:.2f} with "
                 f"slerp, {norms['lerp'][1][i]:.2f} with lerp (√d = {math.sqrt(self.dim):g}); {self.steps} DDIM "
                 f"steps each way")
        return plotting.latent_interpolation_figure(self.decoded(), self.WEIGHTS, w, norms, math.sqrt(self.dim),
                                                    title=title)


# ======================================================================================================================
# 11 beyond images
# ======================================================================================================================
class WaveformNoisingExplorer(FigureWidget):
    """The forward process q(x_t | x_0) (DDPM eq. 4) on a waveform: x_t beside x_0, its spectrogram, the SNR in dB
    against t, and an ``ipywidgets.Audio`` player with x_t (normalised to its peak, so loud noise stays bearable).

    Controls: ``t`` (IntSlider) and ``new noise`` (Button). The noise stays fixed while t moves.
    """

    def __init__(self, diffusion: GaussianDiffusion, x0, sample_rate: int, t: int = 0, seed: int = 0,
                 ms: float = 20.0):
        from .waveforms import wav_bytes

        self.t = self._slider("t", t, 0, diffusion.num_timesteps - 1, step=1, description="t",
                              continuous_update=False, layout=W.Layout(width="420px"))
        self._wav = wav_bytes
        self.diffusion, self.sample_rate, self.seed, self.ms = diffusion, sample_rate, seed, ms
        self.x0 = torch.as_tensor(x0).float().reshape(1, -1)
        self.new_noise = W.Button(description="new noise", tooltip="draw a new epsilon")
        self.audio = W.Audio(format="wav", autoplay=False, loop=False)
        super().__init__([self.t, self.new_noise])
        self.widget = W.VBox([self._controls_box(), self.image, self.audio])

    def _on_click(self, button):
        self.seed += 1
        self.render()

    def noise(self) -> torch.Tensor:
        return torch.randn(self.x0.shape, generator=torch.Generator().manual_seed(self.seed))

    def x_t(self) -> torch.Tensor:
        """x_t (1, L) at the slider's t with the widget's noise: what is drawn and played."""
        return self.diffusion.q_sample(self.x0, torch.tensor([self.t.value]), self.noise())

    def figure(self):
        self.audio.value = self._wav(sound.repeat(self.x_t(), self.sample_rate, sound.MIN_SECONDS), self.sample_rate)
        return plotting.waveform_explorer_figure(self.diffusion, self.x0, self.t.value, self.sample_rate,
                                                 noise=self.noise(), ms=self.ms)
