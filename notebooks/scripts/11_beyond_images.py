# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown] slideshow={"slide_type": "slide"}
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/ddpm-lite/ddpm_lite/blob/main/notebooks/11_beyond_images.ipynb)
#
# # 11 · Beyond images: diffusion on waveforms
#
# The last slide of the talk: nothing in a diffusion model is specific to images. The forward process adds Gaussian
# noise to *any* tensor of numbers, the losses and samplers are elementwise, and only the network that predicts
# $\epsilon$ knows what the data looks like. This notebook takes the same `GaussianDiffusion` and `Trainer` to
# **sound**: 1-D waveforms, with a small network in the style of **DiffWave** (Kong, Ping, Huang, Zhao &
# Catanzaro 2021, *"DiffWave: A Versatile Diffusion Model for Audio Synthesis"*, arXiv 2009.09761).
#
# *About 20 minutes.* One exercise; it checks itself when you run it. Turn the sound on.

# %% slideshow={"slide_type": "skip"} tags=["colab-setup"]
# In Colab: install ddpm_lite from GitHub (Colab's own torch, numpy and ipywidgets are kept). Elsewhere: nothing.
import sys

if "google.colab" in sys.modules:
    from IPython import get_ipython

    get_ipython().run_line_magic("pip", "install -q git+https://github.com/ddpm-lite/ddpm_lite")

# %% slideshow={"slide_type": "skip"}
import matplotlib.pyplot as plt
import numpy as np
import torch
from IPython.display import Audio, display

from ddpm_lite import GaussianDiffusion, get_betas
from ddpm_lite.course import plotting, sound
from ddpm_lite.course.exercises import check_snr_db, hint  # noqa: F401 - hint() on request
from ddpm_lite.course.waveforms import NOTES, SAMPLE_RATE, dominant_frequency, sine_tones, tone_purity
from ddpm_lite.course.widgets import WaveformNoisingExplorer
from ddpm_lite.models.wave import WaveDenoiser
from ddpm_lite.runtime import default_device, fast_mode, pick
from ddpm_lite.sampling import generate
from ddpm_lite.train import Trainer

device = default_device()  # the training below takes minutes on a CPU, seconds on a GPU
FAST = fast_mode()  # True in CI (DDPM_LITE_FAST=1): a few training steps only. Learners get the full run.
print(f"device: {device}, fast mode: {FAST}")
_ = torch.manual_seed(0)

# %% [markdown] slideshow={"slide_type": "slide"}
# ## 1. Waveforms as data
#
# A mono sound is a sequence of air-pressure samples: here $L$ numbers at 8000 samples per second (telephone
# quality: frequencies up to 4 kHz), scaled into $[-1, 1]$ like the pixels of our images. A batch has shape
# $(N, 1, L)$: images $(N, C, H, W)$ with one spatial axis instead of two.
#
# Real speech or music would need hours of training. Our data is the simplest sound with structure: **chords** of
# one or two notes from a C major chord over two octaves, each note a sine tone with a random phase and amplitude,
# the sum scaled to a random peak level:
#
# $$x[k] = c \sum_{j} a_j \sin(2\pi f_j k / 8000 + \varphi_j), \qquad f_j \in \{262, 330, 392, 523, 659\}\ \text{Hz}.$$

# %% slideshow={"slide_type": "slide"}
notes = list(NOTES.values())
examples = sine_tones(4, length=2048, max_tones=2, frequencies=notes, seed=1)  # (4, 1, 2048): 0.256 s each
print(f"{tuple(examples.shape)}, in [{examples.min():.2f}, {examples.max():.2f}]; "
      f"loudest frequencies: {dominant_frequency(examples[:, 0]).round()} Hz")
fig = plotting.waveform_figure(examples, SAMPLE_RATE, titles=[f"example {i}" for i in range(4)], ms=20)
plt.show()
display(Audio(sound.sequence(examples, SAMPLE_RATE), rate=SAMPLE_RATE))  # the four, each repeated to 1 s

# %% [markdown] slideshow={"slide_type": "slide"}
# Each column shows the first 20 ms of a waveform and, below, its **spectrogram**: the loudness of each frequency
# (vertical) over time (horizontal), from short-time Fourier transforms. A tone is a horizontal line; a chord, two.
#
# ## 2. The forward process on a waveform
#
# Exactly as for images (DDPM eq. 4): $x_t = \sqrt{\bar\alpha_t}\,x_0 + \sqrt{1-\bar\alpha_t}\,\epsilon$, with
# $\epsilon$ white noise, equally loud at every frequency: **hiss**. Audio engineers measure how loud a signal is
# against the noise as a **signal-to-noise ratio in decibels**, $10\log_{10}$ of the ratio of the two *powers*
# (mean squares). The signal $\sqrt{\bar\alpha_t}\,x_0$ has power $\bar\alpha_t\,\overline{x_0^2}$ and the noise
# $(1-\bar\alpha_t)$, so
#
# $$\mathrm{SNR}_{\mathrm{dB}}(t) = 10\log_{10}\frac{\bar\alpha_t\;\overline{x_0^2}}{1-\bar\alpha_t}.$$
#
# (Notebook 01's SNR, $\bar\alpha_t/(1-\bar\alpha_t)$, is the same for data of unit power; a sound with a peak of
# 0.7 has much less.)
#
# ### Exercise: `snr_db`
#
# `x0` has shape $(B, C, L)$; `alpha_bar` is a number or a tensor $(B,)$. Return one SNR in dB per signal, $(B,)$:
# the mean of $x_0^2$ runs over every dimension but the batch.

# %% slideshow={"slide_type": "fragment"} tags=["exercise"]
def snr_db(x0, alpha_bar):
    """10 log10(alpha_bar * mean(x0^2) / (1 - alpha_bar)), one value per signal."""
    ### BEGIN SOLUTION
    power = x0.double().pow(2).flatten(1).mean(1)
    alpha_bar = torch.as_tensor(alpha_bar, dtype=torch.float64)
    return 10 * torch.log10(alpha_bar * power / (1 - alpha_bar))
    ### END SOLUTION


snr_db = check_snr_db(snr_db)

# %% [markdown] slideshow={"slide_type": "slide"}
# We use $T = 200$ steps with the cosine schedule (DiffWave uses 50 steps as a vocoder and 200 for unconditional
# generation). Where does the chord sink below the hiss?

# %%
T = 200
diffusion = GaussianDiffusion(get_betas("cosine", T), mean_type="eps", var_type="learned_range",
                              loss_type="rescaled_mse")
x0 = examples[0]
curve = snr_db(x0[None].expand(T, -1, -1), torch.from_numpy(diffusion.alphas_cumprod))
t_zero = int((curve < 0).nonzero()[0])
print(f"SNR at t = 0: {curve[0]:.1f} dB; it crosses 0 dB at t = {t_zero}; at t = {T - 1}: {curve[-1]:.1f} dB")

fig = plotting.waveform_noising_figure(diffusion, x0, [0, 20, t_zero, 100, 150, T - 1], SAMPLE_RATE, ms=20)
plt.show()

# %% [markdown] slideshow={"slide_type": "slide"}
# Listen to the same chord at growing $t$ (each clip normalised to the same peak, so you hear the *proportion* of
# hiss): the tone remains audible well below 0 dB. The spectrogram shows why: the noise spreads its power over all
# frequencies up to 4 kHz, while the tone's power sits in a single line. Your ear, like the spectrogram, hears each
# frequency band on its own.

# %%
g = torch.Generator().manual_seed(0)
noise = torch.randn(x0.shape, generator=g)
clips = []
for t in [0, 40, t_zero, 100, 150]:
    x_t = diffusion.q_sample(x0[None], torch.tensor([t]), noise[None])[0, 0]
    clips.append(x_t / x_t.abs().max())
display(Audio(sound.sequence(clips, SAMPLE_RATE), rate=SAMPLE_RATE, normalize=False))  # each clip for 1 s

# %% [markdown] slideshow={"slide_type": "slide"}
# ## 3. Explore
#
# Move `t`: the waveform with $x_0$ in grey, the spectrogram of $x_t$, the SNR curve, and a player with $x_t$.
# Find the $t$ where you stop hearing the chord, and compare it with where the spectrogram loses its lines.

# %% slideshow={"slide_type": "slide"}
explorer = WaveformNoisingExplorer(diffusion, x0, SAMPLE_RATE, t=t_zero)
explorer

# %% slideshow={"slide_type": "skip"}
before = explorer.image.value
explorer.t.value = 150
assert explorer.image.value != before and explorer.titles[-1].startswith("SNR(150)")
print(explorer.titles[0])
explorer.t.value = t_zero  # back to the view shown above

# %% [markdown] slideshow={"slide_type": "slide"}
# ## 4. A network for 1-D signals: DiffWave's dilated convolutions
#
# The U-Net halves the resolution to see far; DiffWave never does. It stacks residual layers of 1-D convolutions
# with kernel 3 whose **dilation** doubles from layer to layer (1, 2, 4, ..., in cycles), as in WaveNet: after $n$
# layers one output sample sees $1 + 2(1 + 2 + \dots + 2^{n-1})$ input samples. Each layer (DiffWave Figure 2)
# adds a projection of the timestep embedding, applies the dilated convolution and a gated activation
# $\tanh(a) \odot \sigma(b)$, and splits a 1×1 convolution into a residual and a **skip** output; the sum of the
# skips becomes the prediction. The timestep embedding is the sinusoidal one of the U-Net
# (`ddpm_lite.models.timestep_embedding`). With `learn_sigma=True` the network outputs two channels, $\epsilon$ and
# the variance interpolation $v$ of Improved DDPM eq. 15, exactly as the digits U-Net does.
#
# The network is fully convolutional: it takes signals of any length. We train on short windows of 256 samples
# (32 ms) and sample longer sounds.

# %%
model = WaveDenoiser(in_channels=1, channels=32, num_layers=8, dilation_cycle=8, learn_sigma=True)
print(f"{sum(p.numel() for p in model.parameters()):,} parameters, receptive field {model.receptive_field} samples "
      f"({1000 * model.receptive_field / SAMPLE_RATE:.0f} ms)")
out = model(torch.randn(3, 1, 256), torch.tensor([0, 50, 199]))
assert out.shape == (3, 2, 256)  # eps and v, one of each per input sample
print("output:", tuple(out.shape))

# %% [markdown] slideshow={"slide_type": "slide"}
# ## 5. Training: the same `Trainer`
#
# `Trainer` takes the tensor of training signals as it is; the loss is the hybrid loss of Improved DDPM (eq. 16)
# on $(N, 1, L)$ instead of $(N, 1, H, W)$. **This cell trains the model for real**: a few minutes on a CPU
# (seconds on a GPU); in fast mode only a few steps, so the samples below are then still noise.

# %% slideshow={"slide_type": "slide"}
data = sine_tones(4000, length=256, max_tones=2, frequencies=notes, seed=0)
trainer = Trainer(model, diffusion, data, batch_size=32, lr=2e-3, ema_decay=0.995, device=device,
                  progress=not FAST)
history = trainer.train(pick(1000, 30))

loss = np.array(history["loss"])
k = max(1, len(loss) // 10)
print(f"loss: {loss[:k].mean():.3f} (first {k} steps) -> {loss[-k:].mean():.3f} (last {k})")
assert loss[-k:].mean() < loss[:k].mean()
fig, ax = plt.subplots(figsize=(6, 2.8), layout="constrained")
ax.semilogy(loss, lw=0.7)
ax.set_xlabel("step"), ax.set_ylabel("hybrid loss")
plt.show()

# %% [markdown] slideshow={"slide_type": "slide"}
# ## 6. Sampling sounds
#
# The reverse process, unchanged: start from white noise of the length we want, here 0.256 s (2048 samples, eight
# times the training windows), and run the $T$ steps of ancestral sampling with the learned variances.

# %% slideshow={"slide_type": "slide"}
length = pick(2048, 512)
samples = generate(trainer.ema, diffusion, (4, 1, length), steps=pick(None, 10),
                   generator=torch.Generator().manual_seed(0), device=device).cpu()
purity = tone_purity(samples[:, 0], notes)
print("share of each sample's power within 20 Hz of a note:", purity.round(2))
print("(training chords of this length:", tone_purity(examples[:, 0, :length], notes).round(2), "; white noise: about",
      tone_purity(torch.randn(4, length), notes).mean().round(2), ")")
print("loudest frequencies:", dominant_frequency(samples[:, 0]).round(), "Hz; the notes:", np.round(notes))
if not FAST:
    assert purity.mean() > 0.5  # the samples are chords of the training notes, not noise

fig = plotting.waveform_figure(samples, SAMPLE_RATE, titles=[f"sample {i}" for i in range(4)], ms=20)
plt.show()
display(Audio(sound.sequence(samples.clamp(-1, 1), SAMPLE_RATE), rate=SAMPLE_RATE))  # each repeated to 1 s

# %% [markdown] slideshow={"slide_type": "slide"}
# The samples are chords of the training notes: horizontal lines in the spectrograms at the notes' frequencies,
# with a little leftover hiss. Over the 256 ms, longer than anything seen in training, a note can fade or give way
# to another: the network only sees 64 ms at a time, so nothing forces the same note everywhere.
#
# **Try it.** Train on continuous frequencies instead (drop `frequencies=notes` from the data): with the same
# budget the model learns the *band* of the tones (in our runs the spectrogram filled between 150 and 1200 Hz)
# before it learns that each sound is a few pure lines, a harder distribution. Or respace the sampler (`steps=20`, notebook 10).

# %% [markdown] slideshow={"slide_type": "slide"}
# ## 7. Real audio
#
# DiffWave's networks are the same design, larger: 30 residual layers of 64 channels, dilations cycling up to 512,
# trained for about a million steps. As a **vocoder** it is conditioned on a mel spectrogram (upsampled and added in
# every layer, like our timestep), and turns the spectrograms of a text-to-speech model into speech; unconditional,
# it generates spoken digits from noise. WaveGrad (Chen et al. 2021) is a vocoder of the same kind with another
# network. The diffusion, the loss and the samplers are the ones of this course.

# %% [markdown] slideshow={"slide_type": "slide"}
# ## What to remember
#
# - A diffusion model is defined on tensors, not images: `q_sample`, the losses and the samplers work on
#   $(N, 1, L)$ waveforms as they are. Only the network changes.
# - For sound, DiffWave uses dilated 1-D convolutions: an exponentially growing receptive field at full resolution.
# - Noise is white: the SNR in dB counts total power, but a tone stays visible (and audible) in its own frequency
#   band long after the SNR falls below 0 dB.
