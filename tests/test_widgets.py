"""The widgets, headless: setting a control's value is the code path of a user's drag or click.

Written against the API common to ipywidgets 7.7 (Colab) and 8 (JupyterLab): ``observe(names="value")``,
``Button.click()``, ``Image.value`` bytes.
"""
import inspect

import ipywidgets as W
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from ddpm_lite.course import plotting, style, widgets  # noqa: E402
from ddpm_lite.course.widgets import ForwardNoisingExplorer, ScheduleExplorer  # noqa: E402

PNG = b"\x89PNG\r\n\x1a\n"


pytestmark = pytest.mark.usefixtures("small_pngs")  # tests/conftest.py


@pytest.fixture
def forward():
    digit = torch.linspace(-1, 1, 64).reshape(1, 8, 8)
    return ForwardNoisingExplorer(num_timesteps=100, t=0, digit=digit, photo=plotting.sample_photo(16),
                                  points=torch.randn(100, 2, generator=torch.Generator().manual_seed(0)))


@pytest.fixture
def schedules(monkeypatch):
    monkeypatch.setattr(ScheduleExplorer, "IMAGES", ("photo 16x16", "photo 8x8", "digit 8x8"))
    monkeypatch.setattr(widgets, "load_dataset", lambda name: type("D", (), {"images": -torch.ones(1, 1, 8, 8)}))
    return ScheduleExplorer(num_timesteps=100, t=50, image="photo 16x16", n_cols=4)


def test_forward_explorer_initial_render(forward):
    assert forward.renders == 1 and forward.image.value[:8] == PNG
    assert forward.titles[1:4] == ["digit", "photo", "2-D points"]
    assert forward.titles[0].startswith("linear: t = 0,")
    assert [type(c) for c in forward.controls] == [W.IntSlider, W.Dropdown, W.Button]


def test_forward_explorer_t_slider(forward):
    before = forward.image.value
    forward.t.value = 60
    assert forward.renders == 2 and forward.image.value != before and forward.image.value[:8] == PNG
    assert forward.titles[0].startswith("linear: t = 60,") and "SNR(60)" in forward.titles[-1]
    # the photo panel shows q_sample of the photo at t = 60 with the widget's fixed noise
    d = forward.diffusions["linear"]
    g = torch.Generator().manual_seed(forward.seed)
    noise = {k: torch.randn(x.shape, generator=g) for k, x in forward.images.items()}
    expected = d.q_sample(forward.images["photo"][None], torch.tensor([60]), noise["photo"][None])[0]
    np.testing.assert_allclose(forward.fig.axes[1].images[0].get_array(), plotting.to_display(expected), atol=1e-6)


def test_forward_explorer_schedule_dropdown(forward):
    forward.t.value = 50
    before = forward.image.value
    forward.schedule.value = "cosine"
    assert forward.image.value != before and forward.titles[0].startswith("cosine: t = 50")
    ab = forward.diffusions["cosine"].alphas_cumprod[50]
    assert forward.titles[-1] == f"SNR(50) = {ab / (1 - ab):.3g}"


def test_forward_explorer_new_noise_button(forward):
    forward.t.value = 30
    before, titles, seed = forward.image.value, forward.titles, forward.seed
    forward.new_noise.click()
    assert forward.seed == seed + 1 and forward.image.value != before and forward.titles == titles


def test_same_value_does_not_rerender(forward):
    forward.t.value = 0
    forward.schedule.value = "linear"
    assert forward.renders == 1


def test_schedule_explorer_controls(schedules):
    assert schedules.titles[0] == "ᾱₜ, t = 50"
    before = schedules.image.value
    schedules.t.value = 80
    assert schedules.image.value != before and schedules.titles[0] == "ᾱₜ, t = 80"
    ab = schedules.diffusions["cosine"].alphas_cumprod[80]
    assert f"cosine\nᾱ = {ab:.3f}" in schedules.titles
    before = schedules.image.value
    schedules.image_choice.value = "photo 8x8"
    assert schedules.image.value != before
    assert schedules.fig.axes[1].images[0].get_array().shape == (8, 8)
    schedules.image_choice.value = "digit 8x8"
    # t = 0 column of the grid: the digit itself (all black), nearly
    assert schedules.fig.axes[3].images[0].get_array().max() < 0.1
    assert schedules.renders == 4


def test_widget_box_and_display(forward, monkeypatch):
    box = forward.widget
    assert isinstance(box, W.VBox) and isinstance(box.children[1], W.Image)
    assert list(box.children[0].children) == forward.controls
    shown = []
    monkeypatch.setattr("IPython.display.display", lambda obj: shown.append(obj))
    forward._ipython_display_()
    assert shown == [box]


def test_figures_are_closed(forward, schedules):
    open_before = set(plt.get_fignums())
    forward.t.value = 10
    schedules.t.value = 10
    assert set(plt.get_fignums()) == open_before


def test_core_widgets_only():
    """Colab's ipywidgets 7 renders core widgets natively; Tab, Accordion, Output capture and ipympl are fragile."""
    code = [line for line in inspect.getsource(widgets).splitlines() if not line.lstrip().startswith(("#", "``"))]
    code = "\n".join(code).split('"""', 2)[-1]  # past the module docstring
    for banned in ("W.Tab", "W.Accordion", "W.Output", "ipympl", "enable_custom_widget_manager", "interact("):
        assert banned not in code


def test_the_figure_shows_at_its_natural_width_never_upscaled(forward):
    """The image is as wide as its PNG (one PNG pixel per CSS px) and shrinks, never grows, to the output area; the
    PNG records its dpi and smallest font (course/style.py), which tests/test_lab_figures.py reads in the browser."""
    png = bytes(forward.image.value)
    info = style.png_info(png)
    assert info == forward.png_info and info["dpi"] == widgets.FigureWidget.dpi
    assert forward.image.width == str(info["width_px"]) == str(int.from_bytes(png[16:20], "big"))  # IHDR width
    assert forward.image.layout.max_width == "100%" and forward.image.layout.height == "auto"
    assert info["min_font_pt"] >= style.MIN_FONT_PT


def test_controls_show_their_descriptions_in_full_and_wrap(forward, schedules):
    for explorer in (forward, schedules):
        for control in explorer.controls:
            if not isinstance(control, W.Button):
                assert control.style.description_width == "initial"
        assert explorer.widget.children[0].layout.flex_flow == "row wrap"
