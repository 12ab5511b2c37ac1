"""The widgets of notebooks 10 and 11, headless: setting a control's value is what a user's drag or click does."""
import ipywidgets as W
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from ddpm_lite.course import sound, widgets  # noqa: E402
from ddpm_lite.course.fast_sampling import Sweep, SweepPoint  # noqa: E402
from ddpm_lite.course.widgets import FastSamplingExplorer  # noqa: E402

PNG = b"\x89PNG\r\n\x1a\n"


pytestmark = pytest.mark.usefixtures("small_pngs")  # tests/conftest.py


@pytest.fixture
def sweep():
    g = torch.Generator().manual_seed(0)
    points = []
    for sampler, steps in [("ancestral", [10, 25, 100, 1000]), ("DDIM η=0", [10, 25, 100]),
                           ("DDIM η=1", [10, 25, 100])]:
        for k in steps:
            points.append(SweepPoint(sampler, k, torch.rand(16, 1, 8, 8, generator=g) * 2 - 1, seconds=k / 40,
                                     fid=50 / k + len(sampler)))
    return Sweep(points, 1000, real_fids=[2.0])


@pytest.fixture
def explorer(sweep):
    return FastSamplingExplorer(sweep, sampler="DDIM η=0", steps=25, n_show=4)


def test_initial_render(explorer, sweep):
    assert explorer.renders == 1 and explorer.image.value[:8] == PNG
    assert [type(c) for c in explorer.controls] == [W.SelectionSlider, W.Dropdown]
    assert list(explorer.steps.options) == [10, 25, 100] and explorer.steps.value == 25
    assert list(explorer.sampler.options) == ["ancestral", "DDIM η=0", "DDIM η=1"]
    assert explorer.point is sweep.get("DDIM η=0", 25)
    assert explorer.titles[0].startswith("DDIM η=0, 25 steps: FID")


def test_defaults(sweep):
    e = FastSamplingExplorer(sweep)
    assert e.sampler.value == "ancestral" and e.steps.value == 100  # the middle of that sampler's step counts


def test_steps_slider(explorer, sweep):
    before = explorer.image.value
    explorer.steps.value = 100
    p = sweep.get("DDIM η=0", 100)
    assert explorer.renders == 2 and explorer.image.value != before
    assert explorer.titles[0] == (f"DDIM η=0, 100 steps: FID {p.fid:.1f}, {p.seconds:.2f} s for 16 samples "
                                  f"({p.samples_per_second:.1f} samples/s on this machine)")
    shown = explorer.fig.axes[0].images[0].get_array()
    assert shown.shape == (19, 19)  # the first 4 samples in a 2x2 grid


def test_sampler_dropdown_switches_the_step_options(explorer, sweep):
    explorer.steps.value = 100
    before, renders = explorer.image.value, explorer.renders
    explorer.sampler.value = "ancestral"
    assert explorer.renders == renders + 1  # one redraw, although the slider's options changed too
    assert list(explorer.steps.options) == [10, 25, 100, 1000] and explorer.steps.value == 100
    assert explorer.image.value != before and explorer.point is sweep.get("ancestral", 100)
    explorer.steps.value = 1000
    explorer.sampler.value = "DDIM η=1"  # 1000 was not run for DDIM: the closest step count is kept
    assert list(explorer.steps.options) == [10, 25, 100] and explorer.steps.value == 100
    assert explorer.titles[0].startswith("DDIM η=1, 100 steps")


def test_same_value_does_not_rerender(explorer):
    explorer.steps.value = 25
    explorer.sampler.value = "DDIM η=0"
    assert explorer.renders == 1


def test_figures_are_closed(explorer):
    open_before = set(plt.get_fignums())
    explorer.steps.value = 10
    explorer.sampler.value = "DDIM η=1"
    assert set(plt.get_fignums()) == open_before


def test_display(explorer, monkeypatch):
    shown = []
    monkeypatch.setattr("IPython.display.display", lambda obj: shown.append(obj))
    explorer._ipython_display_()
    assert shown == [explorer.widget] and list(explorer.widget.children[0].children) == explorer.controls


# ---------------------------------------------------------------------- 10: mixing two digits through their latents
class TinyEps(torch.nn.Module):
    """A cheap eps-model: a fixed function of x and t."""

    def forward(self, x, t):
        return torch.tanh(0.3 * x + t.float().reshape(-1, 1, 1, 1) / 100)


@pytest.fixture
def interp():
    from ddpm_lite import GaussianDiffusion, get_betas

    images = torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1
    return widgets.LatentInterpolationExplorer(TinyEps(), GaussianDiffusion(get_betas("cosine", 40)), images,
                                               labels=[3, 8, 1, 7], steps=8)


def test_interpolation_defaults(interp):
    from ddpm_lite.course.fast_sampling import ddim_decode, ddim_encode, slerp

    assert interp.renders == 1 and interp.image.value[:8] == PNG and interp.decodes == 1
    assert [type(c) for c in interp.controls] == [W.Dropdown, W.Dropdown, W.SelectionSlider]
    assert (interp.first.value, interp.second.value, interp.weight.value) == (0, 1, 0.5)
    assert interp.first.label == "#0: a 3" and list(interp.weight.options) == [
        ("0", 0.0), ("0.125", 0.125), ("0.25", 0.25), ("0.375", 0.375), ("0.5", 0.5), ("0.625", 0.625),
        ("0.75", 0.75), ("0.875", 0.875), ("1", 1.0)]
    assert interp.titles[0].startswith("#0: a 3 → #1: a 8, w = 0.5: |x_T| = ")
    torch.testing.assert_close(interp.latents, ddim_encode(interp.model, interp.diffusion, interp.images, 8))
    mixes = interp.mixes()
    torch.testing.assert_close(mixes["slerp"][4], slerp(interp.latents[:1], interp.latents[1:2], 0.5)[0])
    torch.testing.assert_close(mixes["lerp"][4], (interp.latents[0] + interp.latents[1]) / 2)
    decoded = interp.decoded()
    torch.testing.assert_close(decoded["lerp"], ddim_decode(interp.model, interp.diffusion, mixes["lerp"], 8),
                               atol=1e-5, rtol=1e-5)
    assert interp.png_info["width_px"] <= 768 and interp.image.layout.max_width == "100%"
    assert interp.image.width == str(interp.png_info["width_px"])  # natural width
    from ddpm_lite.course import style

    assert not style.check(interp.fig)


def test_interpolation_weight_redraws_without_decoding(interp):
    before = interp.image.value
    interp.weight.value = 0.125
    assert interp.renders == 2 and interp.decodes == 1 and interp.image.value != before
    norms = interp.norms()
    assert interp.titles[0] == (f"#0: a 3 → #1: a 8, w = 0.125: |x_T| = {norms['slerp'][1][12]:.2f} with slerp, "
                                f"{norms['lerp'][1][12]:.2f} with lerp (√d = 8); 8 DDIM steps each way")
    assert norms["lerp"][1][50] < norms["slerp"][1][50]  # the linear midpoint is shorter


def test_interpolation_pair_decoded_once(interp):
    interp.second.value = 3
    assert interp.decodes == 2 and interp.titles[0].startswith("#0: a 3 → #3: a 7")
    interp.second.value = 1
    assert interp.decodes == 2  # kept from the first view
    interp.first.value = interp.second.value = 2  # the same digit twice: every mix is its own latent
    torch.testing.assert_close(interp.mixes()["slerp"], interp.latents[2].expand(9, 1, 8, 8))


def test_interpolation_figures_are_closed(interp):
    open_before = set(plt.get_fignums())
    interp.weight.value = 1.0
    assert set(plt.get_fignums()) == open_before


# ---------------------------------------------------------------------- 11: the forward process on a waveform
@pytest.fixture
def wave_explorer():
    from ddpm_lite import GaussianDiffusion, get_betas
    from ddpm_lite.course.waveforms import sine_tones

    return widgets.WaveformNoisingExplorer(GaussianDiffusion(get_betas("cosine", 50)), sine_tones(1, length=512)[0],
                                           8000, t=0)


def test_wave_explorer_initial_render(wave_explorer):
    assert wave_explorer.renders == 1 and wave_explorer.image.value[:8] == PNG
    assert [type(c) for c in wave_explorer.controls] == [W.IntSlider, W.Button]
    assert wave_explorer.titles[0].startswith("t = 0: xₜ = ")
    assert wave_explorer.audio.value[:4] == b"RIFF" and isinstance(wave_explorer.widget.children[2], W.Audio)


def test_wave_explorer_t_slider(wave_explorer):
    from ddpm_lite.course.waveforms import wav_bytes

    before, sound = wave_explorer.image.value, wave_explorer.audio.value
    wave_explorer.t.value = 40
    assert wave_explorer.renders == 2 and wave_explorer.image.value != before and wave_explorer.audio.value != sound
    assert any(title.startswith("SNR(40) = ") for title in wave_explorer.titles)
    d, x0 = wave_explorer.diffusion, wave_explorer.x0
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(wave_explorer.seed))
    x_t = d.q_sample(x0, torch.tensor([40]), noise)
    assert torch.equal(wave_explorer.x_t(), x_t)
    assert wave_explorer.audio.value == wav_bytes(widgets.sound.repeat(x_t, 8000, 2.0), 8000)


def test_wave_explorer_plays_at_least_two_seconds(wave_explorer):
    """The clip (512 samples here, 2048 in notebook 11: 0.256 s) is repeated back and forth to 2 s or more."""
    import io
    import wave

    with wave.open(io.BytesIO(wave_explorer.audio.value)) as w:
        assert w.getframerate() == 8000 and w.getnframes() / 8000 >= 2.0
        frames = np.frombuffer(w.readframes(w.getnframes()), "<i2")
    n = wave_explorer.x0.shape[-1]
    np.testing.assert_array_equal(frames[n:2 * n], frames[:n][::-1])  # backwards: the join does not click


def test_sound_repeat_and_sequence():
    x = np.arange(1.0, 2049.0)
    y = sound.repeat(x, 8000)
    assert len(y) == 8 * 2048 and len(y) / 8000 >= sound.MIN_SECONDS
    np.testing.assert_array_equal(y[:2048], x)
    np.testing.assert_array_equal(y[2048:4096], x[::-1])
    assert len(sound.repeat(torch.ones(1, 1, 17000), 8000)) == 17000  # long enough: played once
    s = sound.sequence(torch.ones(4, 1, 2048), 8000, seconds_each=1.0, gap=0.25)
    assert len(s) == 4 * 4 * 2048 + 3 * 2000 and len(s) / 8000 >= 2.0
    assert (s[4 * 2048: 4 * 2048 + 2000] == 0).all()
    with pytest.raises(ValueError, match="no clips"):
        sound.sequence([], 8000)


def test_wave_explorer_new_noise(wave_explorer):
    wave_explorer.t.value = 20
    before, seed = wave_explorer.image.value, wave_explorer.seed
    wave_explorer.new_noise.click()
    assert wave_explorer.seed == seed + 1 and wave_explorer.image.value != before


def test_wave_explorer_figures_closed(wave_explorer):
    open_before = set(plt.get_fignums())
    wave_explorer.t.value = 5
    assert set(plt.get_fignums()) == open_before
