"""The widgets of notebooks 02, 04 and 06, headless: setting a control's value is a user's drag or click."""
import ipywidgets as W
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from ddpm_lite import GaussianDiffusion, get_betas  # noqa: E402
from ddpm_lite.course.widgets import LiveLossPlot, SamplingTrajectoryExplorer, VarianceExplorer  # noqa: E402

PNG = b"\x89PNG\r\n\x1a\n"


pytestmark = pytest.mark.usefixtures("small_pngs")  # tests/conftest.py


@pytest.fixture
def trajectories():
    g = torch.Generator().manual_seed(0)
    long = torch.cumsum(0.1 * torch.randn(21, 40, 2, generator=g), 0)  # 20 steps
    short = torch.cumsum(0.1 * torch.randn(11, 40, 2, generator=g), 0)  # 10 steps
    data = torch.randn(100, 2, generator=g)
    return SamplingTrajectoryExplorer({"long": long, "short": short}, data={"long": data}, step=0, n_paths=3)


def test_trajectory_explorer_initial_render(trajectories):
    assert trajectories.renders == 1 and trajectories.image.value[:8] == PNG
    assert [type(c) for c in trajectories.controls] == [W.IntSlider, W.Dropdown]
    assert trajectories.titles[:2] == ["long", "after 0 of 20 reverse steps: x_20"]
    assert trajectories.step.max == 20 and set(trajectories.distances) == {"long"}


def test_trajectory_explorer_step_slider(trajectories):
    before = trajectories.image.value
    trajectories.step.value = 15
    assert trajectories.renders == 2 and trajectories.image.value != before
    assert trajectories.titles[1] == "after 15 of 20 reverse steps: x_5"
    cloud = trajectories.fig.axes[0].collections[1].get_offsets()  # data first, then the cloud
    np.testing.assert_allclose(cloud, trajectories.trajectories["long"][15].numpy())
    steps, values = trajectories.distances["long"]
    assert trajectories.titles[2] == f"distance to the data: {np.interp(15, steps, values):.3f}"


def test_trajectory_explorer_dropdown_keeps_the_fraction(trajectories):
    trajectories.step.value = 10
    before = trajectories.image.value
    trajectories.dataset.value = "short"
    assert trajectories.image.value != before and trajectories.renders == 3  # one render for the switch
    assert trajectories.step.max == 10 and trajectories.step.value == 5
    assert trajectories.titles[:2] == ["short", "after 5 of 10 reverse steps: x_5"]
    assert len(trajectories.fig.axes) == 1  # no data given for "short": no distance curve
    trajectories.dataset.value = "long"
    assert trajectories.step.max == 20 and trajectories.step.value == 10


def test_trajectory_explorer_needs_trajectories():
    with pytest.raises(ValueError, match="no trajectories"):
        SamplingTrajectoryExplorer({})


@pytest.fixture
def variance():
    d = GaussianDiffusion(get_betas("cosine", 100))
    return VarianceExplorer(d, learned=([0, 10, 99], [0.8, 0.7, 0.6]), v=0.5, t=3)


def test_variance_explorer_controls(variance):
    assert [type(c) for c in variance.controls] == [W.FloatSlider, W.IntSlider]
    assert variance.titles[0].startswith("t = 3:") and "Σ(v = 0.50)" in variance.titles[0]
    before = variance.image.value
    variance.v.value = 1.0
    d = variance.diffusion
    assert variance.image.value != before and f"Σ(v = 1.00) = {d.betas[3]:.3g}" in variance.titles[0]
    before = variance.image.value
    variance.t.value = 40
    assert variance.image.value != before and variance.titles[0].startswith(f"t = 40: β = {d.betas[40]:.3g}")
    assert variance.renders == 3


def test_variance_explorer_default_diffusion_and_no_learned_curve():
    explorer = VarianceExplorer(t=5000)
    assert explorer.diffusion.num_timesteps == 1000 and explorer.t.value == 999
    assert not any(line.get_label().startswith("learned") for line in explorer.fig.axes[1].get_lines())


class FakeTrainer:
    def __init__(self, losses):
        self.history = {"loss": list(losses)}


def test_live_loss_plot_update_and_controls():
    live = LiveLossPlot(["a", "b"], smoothing=2)
    assert live.renders == 1 and [type(c) for c in live.controls] == [W.IntSlider, W.Dropdown]
    before = live.image.value
    live.update({"a": [3.0, 2.0, 1.0]}, b=[1.0, 1.0])
    assert live.renders == 2 and live.image.value != before and live.curves == {"a": [3.0, 2.0, 1.0], "b": [1.0, 1.0]}
    labels = [line.get_label() for line in live.fig.axes[0].get_lines()]
    assert "a: 1.5 at step 3" in labels
    before = live.image.value
    live.smoothing.value = 1
    assert live.image.value != before and live.titles[0] == "raw losses"
    before = live.image.value
    live.yscale.value = "linear"
    assert live.image.value != before and live.fig.axes[0].get_yscale() == "linear"


def test_live_loss_plot_says_when_curves_coincide():
    """Two runs from the same start draw the same losses until their samplers differ: both stay visible (their own
    line styles) and the legend says where they coincide."""
    live = LiveLossPlot(["uniform", "importance"], smoothing=1)
    live.update(uniform=[3.0, 2.0, 1.5, 1.0], importance=[3.0, 2.0, 1.5, 0.5])
    lines = [line for line in live.fig.axes[0].get_lines() if not line.get_label().startswith("_")]
    assert [line.get_label() for line in lines] == ["uniform: 1 at step 4",
                                                    "importance: 0.5 at step 4 (same as uniform up to step 3)"]
    assert lines[0].get_linestyle() != lines[1].get_linestyle()


def test_live_loss_plot_callback_and_markers():
    live = LiveLossPlot(["x"])
    trainers = {"x": FakeTrainer([1.0, 0.5])}
    callback = live.callback(trainers, interval=2)
    callback(None, 1, {})
    assert live.renders == 1  # not a multiple of 2
    live.mark("warm", 1)
    callback(None, 2, {})
    assert live.renders == 2 and live.curves["x"] == [1.0, 0.5]
    assert any(text.get_text() == "warm" for text in live.fig.axes[0].texts)


def test_figures_are_closed(trajectories, variance):
    open_before = set(plt.get_fignums())
    trajectories.step.value = 3
    variance.v.value = 0.2
    LiveLossPlot(["a"]).update(a=[1.0])
    assert set(plt.get_fignums()) == open_before
