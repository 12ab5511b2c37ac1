"""Interactive figures for the notebooks: core ipywidgets driving a matplotlib figure.

Each widget is a small class:

- ``.controls``: the input widgets (IntSlider, Dropdown, Button), each wired to :meth:`render`;
- :meth:`render`: draw the figure with :mod:`ddpm_lite.plotting`, save it as PNG into ``.image`` (an
  ``ipywidgets.Image``), close it (``plt.close``) and keep it as ``.fig`` for inspection;
- ``.widget``: the box to display; the object itself displays as that box (``_ipython_display_``).

Only core widgets (no Tab, Accordion or ipympl) and no ``Output`` capture: the picture is the value of an
``Image`` widget, which works the same in Colab (ipywidgets 7) and JupyterLab (ipywidgets 8), and which the tests
can read without a browser.
"""
from __future__ import annotations

import ipywidgets as W
import torch

from . import plotting
from .data import load_dataset, toy_2d
from .gaussian_diffusion import GaussianDiffusion
from .schedules import get_betas

__all__ = ["FigureWidget", "ForwardNoisingExplorer", "ScheduleExplorer"]


class FigureWidget:
    """Base class: subclasses build ``self.controls`` and implement :meth:`figure`."""

    dpi = 80

    def __init__(self, controls):
        self.controls = list(controls)
        self.image = W.Image(format="png")
        self.fig = None
        self.renders = 0
        for control in self.controls:
            if isinstance(control, W.Button):
                control.on_click(self._on_click)
            else:
                control.observe(self._on_change, names="value")
        self.widget = W.VBox([W.HBox(self.controls), self.image])
        self.render()

    def _on_change(self, change):
        self.render()

    def _on_click(self, button):
        self.render()

    def figure(self):
        raise NotImplementedError

    def render(self) -> bytes:
        """Redraw: figure -> PNG bytes in ``self.image.value``; the figure is closed and kept as ``.fig``."""
        fig = self.figure()
        png = plotting.figure_to_png(fig, dpi=self.dpi, close=True)
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


def _schedule(name: str, num_timesteps: int) -> GaussianDiffusion:
    return GaussianDiffusion(get_betas(name, num_timesteps))


class ForwardNoisingExplorer(FigureWidget):
    """q(x_t | x_0) (DDPM eq. 4) on a digit, a photo and 2-D points, beside the SNR curve.

    Controls: ``t`` (IntSlider), ``schedule`` (Dropdown: linear / cosine), ``new noise`` (Button: a new epsilon).
    The noise stays fixed while t moves, so the slider follows one sample path of the forward process.
    """

    def __init__(self, num_timesteps: int = 1000, t: int = 0, schedule: str = "linear", seed: int = 0,
                 digit: torch.Tensor | None = None, photo: torch.Tensor | None = None,
                 points: torch.Tensor | None = None, photo_size: int = 64):
        self.diffusions = {name: _schedule(name, num_timesteps) for name in ("linear", "cosine")}
        self.images = {
            "digit": digit if digit is not None else load_dataset("digits").images[0],
            "photo": photo if photo is not None else plotting.sample_photo(photo_size),
        }
        self.points = points if points is not None else toy_2d("moons", 1000)
        self.seed = seed
        self.t = W.IntSlider(value=t, min=0, max=num_timesteps - 1, step=1, description="t",
                             continuous_update=False, layout=W.Layout(width="420px"))
        self.schedule = W.Dropdown(options=["linear", "cosine"], value=schedule, description="schedule")
        self.new_noise = W.Button(description="new noise", tooltip="draw a new epsilon")
        super().__init__([self.t, self.schedule, self.new_noise])

    def _on_click(self, button):
        self.seed += 1
        self.render()

    def figure(self):
        name = self.schedule.value
        return plotting.forward_noising_figure(self.diffusions[name], self.t.value, self.images, self.points,
                                               seed=self.seed, schedule_name=name, compare=self.diffusions)


class ScheduleExplorer(FigureWidget):
    """Linear against cosine (Improved DDPM section 3.2, Figures 3 and 5): alpha_bar_t, x_t at the chosen t, and
    images at evenly spaced t under both schedules.

    Controls: ``t`` (IntSlider), ``image`` (Dropdown: the photo at 64, 32 or 16 pixels, or a digit at 8).
    """

    IMAGES = ("photo 64x64", "photo 32x32", "photo 16x16", "digit 8x8")

    def __init__(self, num_timesteps: int = 1000, t: int = 500, image: str = "photo 32x32", n_cols: int = 8,
                 seed: int = 0):
        self.diffusions = {name: _schedule(name, num_timesteps) for name in ("linear", "cosine")}
        self.n_cols = n_cols
        self.seed = seed
        self._digit = None
        self.t = W.IntSlider(value=t, min=0, max=num_timesteps - 1, step=1, description="t",
                             continuous_update=False, layout=W.Layout(width="420px"))
        self.image_choice = W.Dropdown(options=list(self.IMAGES), value=image, description="image")
        super().__init__([self.t, self.image_choice])

    def x0(self) -> torch.Tensor:
        name = self.image_choice.value
        if name.startswith("digit"):
            if self._digit is None:
                self._digit = load_dataset("digits").images[0]
            return self._digit
        return plotting.sample_photo(int(name.split()[-1].split("x")[0]))

    def figure(self):
        return plotting.schedule_comparison_figure(self.x0(), self.t.value, self.diffusions, n_cols=self.n_cols,
                                                   seed=self.seed)

