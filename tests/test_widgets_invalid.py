"""Every widget refuses a value it cannot show with one ValueError that says what it accepts: given to the
constructor, or set on a control from code (where ipywidgets alone would clamp a slider silently, or raise a
TraitError that does not list the options)."""
import re

import matplotlib

matplotlib.use("Agg")
import pytest  # noqa: E402
import torch  # noqa: E402
from traitlets import TraitError  # noqa: E402

from ddpm_lite import GaussianDiffusion, get_betas  # noqa: E402
from ddpm_lite.course import widgets  # noqa: E402
from ddpm_lite.course.fast_sampling import Sweep, SweepPoint  # noqa: E402
from ddpm_lite.course.widgets import InvalidValue  # noqa: E402

pytestmark = pytest.mark.usefixtures("small_pngs")  # tests/conftest.py


def refused(message: str):
    """pytest.raises for InvalidValue with exactly this (escaped) text in the message."""
    return pytest.raises(InvalidValue, match=re.escape(message))


@pytest.fixture
def small():
    """Inputs small enough to build the forward-noising explorer in a blink."""
    return {"digit": torch.zeros(1, 8, 8), "photo": torch.zeros(1, 8, 8), "points": torch.zeros(10, 2)}


@pytest.fixture
def trajectories():
    g = torch.Generator().manual_seed(0)
    return {"long": torch.randn(21, 10, 2, generator=g), "short": torch.randn(11, 10, 2, generator=g)}


@pytest.fixture
def sweep():
    g = torch.Generator().manual_seed(0)
    points = [SweepPoint(sampler, k, torch.rand(4, 1, 8, 8, generator=g) * 2 - 1, seconds=k / 40, fid=50 / k)
              for sampler, counts in [("ancestral", [10, 25, 100, 1000]), ("DDIM η=0", [10, 25, 100])]
              for k in counts]
    return Sweep(points, 1000)


@pytest.fixture
def guided():
    g = torch.Generator().manual_seed(0)
    samples = {0.0: torch.rand(20, 1, 8, 8, generator=g), 2.0: torch.rand(20, 1, 8, 8, generator=g)}
    metrics = {s: {"accuracy": 0.5, "precision": 0.5, "recall": 0.5, "fid": 1.0} for s in samples}
    return samples, torch.arange(20) % 4, metrics


def test_invalid_value_is_a_value_error_and_a_trait_error():
    assert issubclass(InvalidValue, ValueError) and issubclass(InvalidValue, TraitError)


# ---------------------------------------------------------------------- given to the constructor
def test_constructor_arguments_out_of_their_options(small, trajectories, sweep, guided):
    with refused("ForwardNoisingExplorer: schedule = 'quadratic' is not accepted; schedule takes one of "
                 "'linear', 'cosine'"):
        widgets.ForwardNoisingExplorer(num_timesteps=100, schedule="quadratic", **small)
    with refused("ScheduleExplorer: image = 'photo 48x48' is not accepted; image takes one of 'photo 64x64', "
                 "'photo 32x32', 'photo 16x16', 'digit 8x8'"):
        widgets.ScheduleExplorer(num_timesteps=100, t=50, image="photo 48x48")
    with refused("SamplingTrajectoryExplorer: name = 'moons' is not accepted; name takes one of 'long', 'short'"):
        widgets.SamplingTrajectoryExplorer(trajectories, name="moons")
    with refused("LiveLossPlot: yscale = 'symlog' is not accepted; yscale takes one of 'log', 'linear'"):
        widgets.LiveLossPlot(["a"], yscale="symlog")
    with refused("UNetExplorer: preset = 'digits8_classifier' is not accepted; preset takes one of 'digits8', "
                 "'digits16', 'mnist28', 'cifar10', 'imagenet64'"):
        widgets.UNetExplorer("digits8_classifier")
    samples, labels, metrics = guided
    with refused("GuidanceExplorer: label = 7 is not accepted; label takes one of 0, 1, 2, 3"):
        widgets.GuidanceExplorer(samples, labels, metrics=metrics, label=7)
    with refused("GuidanceExplorer: scale = 3.0 is not accepted; scale takes one of 0.0, 2.0"):
        widgets.GuidanceExplorer(samples, labels, metrics=metrics, scale=3)
    with refused("GuidanceExplorer: metrics has nothing for the scales [2.0]"):
        widgets.GuidanceExplorer(samples, labels, metrics={0.0: metrics[0.0]})
    with refused("FastSamplingExplorer: sampler = 'PLMS' is not accepted; sampler takes one of 'ancestral', "
                 "'DDIM η=0'"):
        widgets.FastSamplingExplorer(sweep, sampler="PLMS")
    with refused("FastSamplingExplorer: steps = 1000 is not accepted; steps takes one of 10, 25, 100"):
        widgets.FastSamplingExplorer(sweep, sampler="DDIM η=0", steps=1000)
    images = torch.zeros(3, 1, 8, 8)
    diffusion = GaussianDiffusion(get_betas("cosine", 10))
    with refused("LatentInterpolationExplorer: weight = 0.3 is not accepted; weight takes one of 0.0, 0.125, 0.25, "
                 "0.375, 0.5, 0.625, 0.75, 0.875, 1.0"):
        widgets.LatentInterpolationExplorer(None, diffusion, images, weight=0.3)  # refused before any network call
    with refused("LatentInterpolationExplorer: second = 3 is not accepted; second takes one of 0, 1, 2"):
        widgets.LatentInterpolationExplorer(None, diffusion, images, second=3)
    with pytest.raises(ValueError, match="at least 2 images"):
        widgets.LatentInterpolationExplorer(None, diffusion, images[:1])


def test_constructor_arguments_out_of_their_range(small, trajectories):
    with refused("ForwardNoisingExplorer: t = 100 is not accepted; t takes an integer from 0 to 99"):
        widgets.ForwardNoisingExplorer(num_timesteps=100, t=100, **small)
    with refused("ScheduleExplorer: t = -1 is not accepted; t takes an integer from 0 to 99"):
        widgets.ScheduleExplorer(num_timesteps=100, t=-1)
    with refused("SamplingTrajectoryExplorer: step = -3 is not accepted; step takes an integer from 0 to 20"):
        widgets.SamplingTrajectoryExplorer(trajectories, step=-3)
    with refused("VarianceExplorer: v = 1.5 is not accepted; v takes a number from 0.0 to 1.0"):
        widgets.VarianceExplorer(v=1.5)
    with refused("VarianceExplorer: t = 0 is not accepted; t takes an integer from 1 to 999"):
        widgets.VarianceExplorer(t=0)
    with refused("LiveLossPlot: smoothing = 0 is not accepted; smoothing takes an integer from 1 to 200"):
        widgets.LiveLossPlot(["a"], smoothing=0)
    with refused("UNetExplorer: model_channels = 512 is not accepted; model_channels takes an integer from 16 to "
                 "256"):
        widgets.UNetExplorer("digits8", model_channels=512)
    with refused("UNetExplorer: num_res_blocks = 5 is not accepted; num_res_blocks takes an integer from 1 to 4"):
        widgets.UNetExplorer("digits8", num_res_blocks=5)
    # checked before the clean images' FID is computed: no feature network needed to be told
    with refused("FIDExplorer: noise = 2.0 is not accepted; noise takes a number from 0.0 to 1.0"):
        widgets.FIDExplorer(torch.zeros(4, 1, 8, 8), torch.zeros(4), None, None, noise=2.0)
    with refused("FIDExplorer: drop = 10 is not accepted; drop takes an integer from 0 to 9"):
        widgets.FIDExplorer(torch.zeros(4, 1, 8, 8), torch.zeros(4), None, None, drop=10)
    with refused("WaveformNoisingExplorer: t = 50 is not accepted; t takes an integer from 0 to 49"):
        widgets.WaveformNoisingExplorer(GaussianDiffusion(get_betas("cosine", 50)), torch.zeros(64), 8000, t=50)


def test_an_unknown_number_of_steps_says_so(small):
    with pytest.raises(ValueError, match="num_timesteps must be a positive integer"):
        widgets.ForwardNoisingExplorer(num_timesteps=0, **small)


# ---------------------------------------------------------------------- set on a control from code
def test_a_slider_set_out_of_range_is_refused_not_clamped(small):
    explorer = widgets.ForwardNoisingExplorer(num_timesteps=100, t=10, **small)
    with refused("ForwardNoisingExplorer: t = 5000 is not accepted; t takes an integer from 0 to 99"):
        explorer.t.value = 5000
    with refused("t takes an integer from 0 to 99"):
        explorer.t.value = -1
    assert explorer.t.value == 10 and explorer.renders == 1  # unchanged, not redrawn
    explorer.t.value = 99
    assert explorer.renders == 2 and explorer.titles[0].startswith("linear: t = 99,")


def test_a_dropdown_set_to_an_unknown_option_is_refused(small):
    explorer = widgets.ForwardNoisingExplorer(num_timesteps=100, **small)
    with refused("ForwardNoisingExplorer: schedule = 'sigmoid' is not accepted; schedule takes one of 'linear', "
                 "'cosine'"):
        explorer.schedule.value = "sigmoid"
    assert explorer.schedule.value == "linear" and explorer.schedule.index == 0 and explorer.renders == 1


def test_a_float_slider_set_out_of_range_is_refused():
    explorer = widgets.VarianceExplorer(GaussianDiffusion(get_betas("cosine", 100)), v=0.5, t=3)
    with refused("VarianceExplorer: v = -0.1 is not accepted; v takes a number from 0.0 to 1.0"):
        explorer.v.value = -0.1
    assert explorer.v.value == 0.5 and explorer.renders == 1


def test_the_range_is_the_current_one(trajectories):
    """A slider whose range follows another control checks against the range it has now."""
    explorer = widgets.SamplingTrajectoryExplorer(trajectories, step=20)
    explorer.dataset.value = "short"
    assert explorer.step.value == 10
    with refused("SamplingTrajectoryExplorer: step = 15 is not accepted; step takes an integer from 0 to 10"):
        explorer.step.value = 15


def test_the_options_are_the_current_ones(sweep):
    """The steps slider of FastSamplingExplorer takes the step counts of the sampler on show."""
    explorer = widgets.FastSamplingExplorer(sweep, sampler="DDIM η=0", steps=25)
    with refused("FastSamplingExplorer: steps = 1000 is not accepted; steps takes one of 10, 25, 100"):
        explorer.steps.value = 1000
    explorer.sampler.value = "ancestral"
    explorer.steps.value = 1000
    assert explorer.point is sweep.get("ancestral", 1000)
    with refused("sampler takes one of 'ancestral', 'DDIM η=0'"):
        explorer.sampler.value = "DDIM η=1"


def test_a_selection_slider_set_to_an_unknown_value_is_refused(guided):
    samples, labels, metrics = guided
    explorer = widgets.GuidanceExplorer(samples, labels, metrics=metrics, label=1, scale=2.0)
    with refused("GuidanceExplorer: scale = 7.0 is not accepted; scale takes one of 0.0, 2.0"):
        explorer.scale.value = 7.0
    with refused("GuidanceExplorer: label = 9 is not accepted; label takes one of 0, 1, 2, 3"):
        explorer.label.value = 9
    assert (explorer.scale.value, explorer.label.value, explorer.renders) == (2.0, 1, 1)


def test_the_interpolation_refuses_a_weight_or_digit_it_has_not():
    class Zero(torch.nn.Module):
        def forward(self, x, t):
            return torch.zeros_like(x)

    explorer = widgets.LatentInterpolationExplorer(Zero(), GaussianDiffusion(get_betas("cosine", 10)),
                                                   torch.rand(3, 1, 8, 8) * 2 - 1, steps=2)
    with refused("LatentInterpolationExplorer: weight = 0.6 is not accepted; weight takes one of 0.0, 0.125"):
        explorer.weight.value = 0.6
    with refused("LatentInterpolationExplorer: first = -1 is not accepted; first takes one of 0, 1, 2"):
        explorer.first.value = -1
    assert (explorer.weight.value, explorer.first.value, explorer.renders) == (0.5, 0, 1)


def test_a_preset_set_to_an_unknown_name_is_refused():
    explorer = widgets.UNetExplorer("digits8")
    with refused("UNetExplorer: preset = 'cifar100' is not accepted; preset takes one of 'digits8', 'digits16', "
                 "'mnist28', 'cifar10', 'imagenet64'"):
        explorer.preset.value = "cifar100"
    with refused("UNetExplorer: model_channels = 300 is not accepted; model_channels takes an integer from 16 to 256"):
        explorer.model_channels.value = 300
    assert explorer.renders == 1 and explorer.error is None
