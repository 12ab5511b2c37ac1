"""Diffusion on 1-D signals (notebook 11): the DiffWave-style denoiser, the sine-tone generator, their figures."""
import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

from ddpm_lite import GaussianDiffusion, get_betas  # noqa: E402
from ddpm_lite.course import plotting  # noqa: E402
from ddpm_lite.course.waveforms import dominant_frequency, sine_tones, spectrogram  # noqa: E402
from ddpm_lite.models.wave import WaveDenoiser, receptive_field  # noqa: E402
from ddpm_lite.train import Trainer  # noqa: E402


def randomize_output(model: WaveDenoiser, seed: int = 0) -> WaveDenoiser:
    """The last layer starts at zero (every output 0); give it weights so that outputs depend on the input."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        model.out.weight.copy_(0.3 * torch.randn(model.out.weight.shape, generator=g))
        model.out.bias.copy_(0.1 * torch.randn(model.out.bias.shape, generator=g))
    return model


# ---------------------------------------------------------------------- the denoiser
@pytest.mark.parametrize("learn_sigma, channels", [(False, 1), (True, 1), (True, 2)])
@pytest.mark.parametrize("length", [1, 100, 257, 512])
def test_output_shape_any_length(learn_sigma, channels, length):
    model = WaveDenoiser(in_channels=channels, channels=8, num_layers=4, dilation_cycle=3, learn_sigma=learn_sigma)
    x = torch.randn(3, channels, length)
    out = model(x, torch.tensor([0, 5, 99]))
    assert out.shape == (3, channels * (2 if learn_sigma else 1), length) == (3, model.out_channels, length)


def test_starts_at_zero_output():
    """The zero-initialised last layer: every prediction is 0 at first (eps = 0, v = 0: the middle variance)."""
    model = WaveDenoiser(channels=8, num_layers=3, learn_sigma=True)
    assert torch.equal(model(torch.randn(2, 1, 64), torch.tensor([1, 2])), torch.zeros(2, 2, 64))


def test_gradients_reach_every_parameter():
    model = randomize_output(WaveDenoiser(channels=8, num_layers=4, dilation_cycle=2, learn_sigma=True))
    x, t = torch.randn(4, 1, 128), torch.tensor([0, 10, 100, 500])
    model(x, t).pow(2).mean().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_the_zero_output_layer_still_learns():
    """At initialisation only the last layer gets a gradient (the others see a zero W_out); one step fixes that."""
    model = WaveDenoiser(channels=8, num_layers=3, learn_sigma=False)
    d = GaussianDiffusion(get_betas("cosine", 50))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x = torch.randn(4, 1, 64)
    for _ in range(2):
        opt.zero_grad()
        d.training_losses(model, x, torch.tensor([1, 10, 20, 40]))["loss"].mean().backward()
        opt.step()
    assert model.out.weight.abs().sum() > 0 and model.layers[0].conv.weight.grad.abs().sum() > 0


def test_timestep_conditioning():
    model = randomize_output(WaveDenoiser(channels=8, num_layers=3))
    x = torch.randn(1, 1, 64).expand(2, 1, 64)
    out = model(x, torch.tensor([3, 700]))
    assert not torch.allclose(out[0], out[1])


def test_receptive_field_is_what_the_layers_see():
    model = randomize_output(WaveDenoiser(channels=4, num_layers=5, dilation_cycle=3))
    rf = model.receptive_field
    assert rf == receptive_field(5, 3) == 1 + 2 * (1 + 2 + 4 + 1 + 2)
    length, centre = 101, 50
    # ReLUs can zero the gradient of one input at a position: take the positions any of 16 inputs reach
    x = torch.randn(16, 1, length, generator=torch.Generator().manual_seed(0), requires_grad=True)
    model(x, torch.full((16,), 10))[:, 0, centre].sum().backward()
    seen = (x.grad[:, 0] != 0).any(dim=0).nonzero().flatten()
    assert seen.min() == centre - (rf - 1) // 2 and seen.max() == centre + (rf - 1) // 2


def test_rejects_bad_inputs():
    model = WaveDenoiser(channels=4, num_layers=2)
    with pytest.raises(ValueError, match=r"\(B, 1, L\)"):
        model(torch.randn(2, 64), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match=r"\(B, 1, L\)"):
        model(torch.randn(2, 2, 64), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="one timestep per sample"):
        model(torch.randn(2, 1, 64), torch.tensor([0]))
    with pytest.raises(ValueError):
        WaveDenoiser(channels=0)


def test_works_with_the_diffusion_losses_and_samplers():
    d = GaussianDiffusion(get_betas("cosine", 20), "eps", "learned_range", "rescaled_mse")
    model = randomize_output(WaveDenoiser(channels=8, num_layers=3, learn_sigma=True))
    x = sine_tones(4, length=128, seed=1)
    terms = d.training_losses(model, x, torch.tensor([0, 5, 10, 19]))
    assert set(terms) == {"loss", "mse", "vb"} and torch.isfinite(terms["loss"]).all()
    out = d.p_sample_loop(model, (2, 1, 128), generator=torch.Generator().manual_seed(0))
    assert out.shape == (2, 1, 128) and torch.isfinite(out).all()
    out = d.ddim_sample_loop(model, (2, 1, 96), generator=torch.Generator().manual_seed(0))
    assert out.shape == (2, 1, 96)


def test_the_trainer_takes_a_tensor_of_waveforms():
    """Trainer(model, diffusion, tensor (N, 1, L)): no change needed for 1-D data and models."""
    d = GaussianDiffusion(get_betas("cosine", 20), "eps", "learned_range", "rescaled_mse")
    data = sine_tones(16, length=64, seed=0)
    torch.manual_seed(0)
    trainer = Trainer(WaveDenoiser(channels=8, num_layers=2, learn_sigma=True), d, data, batch_size=8, lr=1e-3,
                      progress=False, device="cpu")
    history = trainer.train(3)
    assert len(history["loss"]) == 3 and all(math.isfinite(v) for v in history["loss"])
    assert trainer.source.sample_shape == (1, 64)
    samples = trainer.sample(2, steps=5)
    assert samples.shape == (2, 1, 64) and torch.isfinite(samples).all()
    assert trainer.sample(2, steps=5).equal(samples)  # the fixed default seed


# ---------------------------------------------------------------------- the signals
def test_sine_tones_shape_range_and_params():
    x, p = sine_tones(50, length=300, sample_rate=8000, seed=3, return_params=True)
    assert x.shape == (50, 1, 300) and x.dtype == torch.float32
    np.testing.assert_allclose(x.abs().amax(dim=(1, 2)).numpy(), p.peaks, rtol=1e-6)
    assert (p.peaks >= 0.5).all() and (p.peaks <= 0.95).all()
    counts = [len(f) for f in p.frequencies]
    assert set(counts) <= {1, 2, 3} and len(set(counts)) > 1
    freqs = np.concatenate(p.frequencies)
    assert freqs.min() >= 150 and freqs.max() <= 1200
    # rebuild one signal from its parameters
    k = np.arange(300) / 8000
    y = sum(a * np.sin(2 * np.pi * f * k + ph) for f, a, ph in zip(p.frequencies[7], p.amplitudes[7], p.phases[7]))
    np.testing.assert_allclose(x[7, 0].numpy(), y / np.abs(y).max() * p.peaks[7], atol=1e-6)


def test_sine_tones_seeded():
    assert torch.equal(sine_tones(4, length=64, seed=5), sine_tones(4, length=64, seed=5))
    assert not torch.equal(sine_tones(4, length=64, seed=5), sine_tones(4, length=64, seed=6))


def test_sine_tones_from_a_list_of_frequencies():
    notes = [262.0, 330.0, 392.0]
    _, p = sine_tones(30, length=64, max_tones=2, frequencies=notes, seed=0, return_params=True)
    for f in p.frequencies:
        assert set(f) <= set(notes) and len(set(f)) == len(f)
    with pytest.raises(ValueError, match="at least max_tones"):
        sine_tones(2, max_tones=3, frequencies=[100.0, 200.0])


@pytest.mark.parametrize("kwargs", [dict(n=0), dict(length=1), dict(min_tones=0), dict(min_tones=3, max_tones=2),
                                    dict(freq_range=(100, 5000)), dict(peak_range=(0.5, 1.5))])
def test_sine_tones_rejects_bad_arguments(kwargs):
    args = dict(n=2, length=64)
    args.update(kwargs)
    with pytest.raises(ValueError):
        sine_tones(**args)


def test_dominant_frequency_finds_the_loudest_tone():
    x, p = sine_tones(20, length=2048, max_tones=1, seed=2, return_params=True)
    found = dominant_frequency(x[:, 0], sample_rate=8000)
    np.testing.assert_allclose(found, [f[0] for f in p.frequencies], atol=8000 / 2048)


def test_spectrogram():
    x, p = sine_tones(2, length=1024, max_tones=1, seed=4, return_params=True)
    spec = spectrogram(x, n_fft=256, hop=64)
    assert spec.shape == (2, 1, 129, 1024 // 64 + 1)
    assert spec.max() == pytest.approx(0.0, abs=1e-4) and spec.min() >= -80
    peak_bin = spec[0, 0, :, 8].argmax().item()
    assert abs(peak_bin * 8000 / 256 - p.frequencies[0][0]) <= 8000 / 256
    magnitude = spectrogram(x[0, 0], db=False)
    assert magnitude.ndim == 2 and (magnitude >= 0).all()
    with pytest.raises(ValueError, match="shorter than n_fft"):
        spectrogram(torch.zeros(100), n_fft=256)


# ---------------------------------------------------------------------- figures
def test_waveform_figure_draws_the_signals():
    x = sine_tones(3, length=800, seed=0)
    fig = plotting.waveform_figure(x, 8000, titles=["a", "b", "c"], ms=50)
    assert len(fig.axes) == 6 and [ax.get_title() for ax in fig.axes[:3]] == ["a", "b", "c"]
    line = fig.axes[1].get_lines()[0]
    np.testing.assert_allclose(line.get_ydata(), x[1, 0, :400].numpy())  # 50 ms at 8 kHz
    np.testing.assert_allclose(fig.axes[3].images[0].get_array(), spectrogram(x[0, 0], hop=32).numpy(), atol=1e-5)
    plt.close(fig)


def test_waveform_noising_figure_uses_q_sample():
    d = GaussianDiffusion(get_betas("cosine", 100))
    x0 = sine_tones(1, length=512, seed=0)[0]
    fig = plotting.waveform_noising_figure(d, x0, [0, 50, 99], 8000, seed=3, ms=None)
    noise = torch.randn(x0.reshape(1, -1).shape, generator=torch.Generator().manual_seed(3))
    expected = d.q_sample(x0.reshape(1, -1), torch.tensor([50]), noise)[0]
    np.testing.assert_allclose(fig.axes[1].get_lines()[0].get_ydata(), expected.numpy(), atol=1e-6)
    ab = d.alphas_cumprod[50]
    snr_db = 10 * math.log10(ab / (1 - ab) * float(x0.pow(2).mean()))
    assert fig.axes[1].get_title() == f"t = 50, SNR {round(snr_db):d} dB"
    plt.close(fig)


def test_denoiser_is_a_module():
    assert isinstance(WaveDenoiser(), nn.Module)


# ---------------------------------------------------------------------- SNR, purity, audio
def test_snr_db():
    from ddpm_lite.course.waveforms import snr_db

    x0 = torch.ones(2, 1, 10) * torch.tensor([1.0, 0.5]).reshape(2, 1, 1)
    np.testing.assert_allclose(snr_db(x0, 0.5).numpy(), [0.0, 10 * math.log10(0.25)])
    np.testing.assert_allclose(snr_db(x0, torch.tensor([0.9, 0.5])).numpy(),
                               [10 * math.log10(9), 10 * math.log10(0.25)], rtol=1e-6)


def test_tone_purity():
    from ddpm_lite.course.waveforms import NOTES, tone_purity

    notes = list(NOTES.values())
    x = sine_tones(8, length=2048, max_tones=2, frequencies=notes, seed=0)
    assert (tone_purity(x[:, 0], notes) > 0.99).all() and tone_purity(x, notes).shape == (8, 1)
    noise = torch.randn(8, 2048, generator=torch.Generator().manual_seed(0))
    assert (tone_purity(noise, notes) < 0.1).all()
    assert tone_purity(x[:, 0], [3000.0]).max() < 0.01


def test_wav_bytes_round_trip():
    import io
    import wave

    from ddpm_lite.course.waveforms import wav_bytes

    x = torch.tensor([0.0, 0.25, -0.5, 0.1])
    with wave.open(io.BytesIO(wav_bytes(x, 8000)), "rb") as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate(), w.getnframes()) == (1, 2, 8000, 4)
        pcm = np.frombuffer(w.readframes(4), dtype="<i2")
    np.testing.assert_array_equal(pcm, np.round(np.array([0.0, 0.5, -1.0, 0.2]) * 32767))  # normalised to the peak
    with wave.open(io.BytesIO(wav_bytes(torch.tensor([0.0, 2.0, 0.5]), 4000, normalize=False)), "rb") as w:
        np.testing.assert_array_equal(np.frombuffer(w.readframes(3), dtype="<i2"), [0, 32767, 16384])


def test_waveform_explorer_figure():
    from ddpm_lite.course.waveforms import snr_db

    d = GaussianDiffusion(get_betas("cosine", 100))
    x0 = sine_tones(1, length=400, seed=0)[0]
    noise = torch.randn(1, 400, generator=torch.Generator().manual_seed(2))
    fig = plotting.waveform_explorer_figure(d, x0, 30, 8000, noise=noise, ms=None)
    expected = d.q_sample(x0.reshape(1, -1), torch.tensor([30]), noise)[0]
    np.testing.assert_allclose(fig.axes[0].get_lines()[0].get_ydata(), expected.numpy(), atol=1e-6)
    np.testing.assert_allclose(fig.axes[0].get_lines()[1].get_ydata(), x0[0].numpy())
    curve = fig.axes[2].get_lines()[0].get_ydata()
    np.testing.assert_allclose(curve, snr_db(x0.reshape(1, -1).expand(100, -1), torch.from_numpy(d.alphas_cumprod)))
    assert fig.axes[2].get_title() == f"SNR(30) = {curve[30]:.1f} dB"
    plt.close(fig)
