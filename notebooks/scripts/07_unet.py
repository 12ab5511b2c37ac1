# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/ddpm-lite/ddpm_lite/blob/main/notebooks/07_unet.ipynb)
#
# # 07 · The U-Net: the network that predicts the noise
#
# Everything so far needed a model $\epsilon_\theta(x_t, t)$: give it a noisy image and the step, get back the noise.
# Its job fixes its shape: **image in, image of the same size out, told which $t$ it is at**, seeing fine detail
# (the noise of one pixel) and global structure (which digit this is) at once. DDPM used a U-Net (Ho et al. 2020,
# section 4 and appendix B); "Diffusion Models Beat GANs" (Dhariwal & Nichol 2021, section 3) ablated its parts and
# arrived at the **ADM** U-Net that this package implements. This notebook takes it apart, piece by piece, and
# trains one.
#
# *About 20 minutes.* One exercise; it checks itself when you run it, and "Run all" works before you solve it.

# %% tags=["colab-setup"]
# In Colab: install ddpm_lite from GitHub (Colab's own torch, numpy and ipywidgets are kept). Elsewhere: nothing.
import sys

if "google.colab" in sys.modules:
    from IPython import get_ipython

    get_ipython().run_line_magic("pip", "install -q git+https://github.com/ddpm-lite/ddpm_lite")

# %%
import math

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
from IPython.display import display

from ddpm_lite.configs import ExperimentConfig
from ddpm_lite.course import plotting
from ddpm_lite.course.exercises import check_timestep_embedding
from ddpm_lite.course.widgets import TrainingMonitor, UNetExplorer
from ddpm_lite.data import DatasetNotFoundError, load_dataset
from ddpm_lite.images import make_grid
from ddpm_lite.models import ResBlock, count_parameters
from ddpm_lite.models import timestep_embedding as package_timestep_embedding
from ddpm_lite.models.summary import unet_summary
from ddpm_lite.models.unet import merge_heads, split_heads
from ddpm_lite.pretrained import load_pretrained
from ddpm_lite.runtime import default_device, fast_mode, pick
from ddpm_lite.sampling import generate
from ddpm_lite.train import Trainer

device = default_device()  # the training at the end uses a GPU when there is one
FAST = fast_mode()  # True in CI (DDPM_LITE_FAST=1): a few training steps. Learners get the full run.
print(f"device: {device}, fast mode: {FAST}")
_ = torch.manual_seed(0)

# %% [markdown]
# ## 1. Telling the network the time: the sinusoidal embedding
#
# One network serves all $T = 1000$ steps, so it must know $t$: at $t = 10$ it should remove a whisper of noise, at
# $t = 900$ invent a whole digit. A bare number $t$ is a poor input for a network; DDPM encodes it the way the
# Transformer encodes positions (Vaswani et al. 2017), as sines and cosines of $t$ at geometrically spaced
# frequencies. With $h = d/2$ frequencies,
#
# $$\omega_i = \text{max\_period}^{-i/h} = \exp\!\Big(-\ln(\text{max\_period})\,\frac{i}{h}\Big),\quad i = 0..h-1,
# \qquad \mathrm{emb}(t) = \big[\cos(t\,\omega_0), \dots, \cos(t\,\omega_{h-1}),\ \sin(t\,\omega_0), \dots,
# \sin(t\,\omega_{h-1})\big].$$
#
# The fastest component turns once every $2\pi$ steps, the slowest once every `max_period` (10000) steps, so every
# $t$ gets its own pattern, and nearby $t$ similar ones. A small MLP (`Linear`, SiLU, `Linear`) then maps it to a
# vector of $4 \times$ `model_channels` that every residual block receives.
#
# ### Exercise: `timestep_embedding`
#
# `t` has shape `(B,)` (integers, or fractions: respaced samplers pass non-integer steps); return `(B, dim)`: all
# the cosines, then all the sines, in float32. When `dim` is odd, add one column of zeros at the end.

# %% tags=["exercise"]
def timestep_embedding(t, dim, max_period=10000):
    """Sinusoidal embedding of timesteps t (B,) -> (B, dim): cosines, then sines, of t * max_period^(-i/half)."""
    ### BEGIN SOLUTION hint: half = dim // 2 frequencies torch.exp(-math.log(max_period) * torch.arange(half) / half)
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32) / half)
    args = t[:, None].float() * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = F.pad(emb, (0, 1))
    return emb
    ### END SOLUTION


timestep_embedding = check_timestep_embedding(timestep_embedding)

# %% [markdown]
# Every $t$ of the chain, embedded in 64 dimensions. Left, the fast frequencies (first columns of each half)
# flicker from step to step, the slow ones barely move: together they pin $t$ down. Right, the similarity of two
# embeddings falls off as their steps move apart.

# %%
ts = torch.arange(1000)
emb = timestep_embedding(ts, 64)
assert torch.allclose(emb, package_timestep_embedding(ts, 64), atol=1e-4)  # yours is the package's
fig = plotting.timestep_embedding_figure(emb)
plt.show()

# %% [markdown]
# ## 2. The residual block, and adaptive group normalization
#
# The U-Net is built from residual blocks (He et al. 2016), each
#
# $$h = \mathrm{Conv}\big(\mathrm{SiLU}(\mathrm{GroupNorm}(x))\big),\qquad
#   h \leftarrow \mathrm{Conv}\big(\mathrm{Dropout}(\mathrm{SiLU}(\mathrm{AdaGN}(h, e)))\big),\qquad
#   \text{out} = \mathrm{skip}(x) + h.$$
#
# The time (and, for a class-conditional model, the label) enters through **adaptive group normalization**
# (ADM section 3): a linear layer projects the embedding $e$ to a scale $y_s$ and a shift $y_b$ per channel, and
#
# $$\mathrm{AdaGN}(h, e) = (1 + y_s)\,\mathrm{GroupNorm}(h) + y_b,\qquad [y_s, y_b] = \mathrm{Linear}(e).$$
#
# ADM found it better than adding the embedding to $h$ (DDPM's way; `use_scale_shift_norm=False`). The last conv of
# every block starts at zero, so an untrained block is the identity and a deep stack starts as a shallow one:

# %%
block = ResBlock(channels=32, emb_channels=128, out_channels=32)
x, e = torch.randn(2, 32, 8, 8), torch.randn(2, 128)
out = block(x, e)
print(f"x {tuple(x.shape)}, embedding {tuple(e.shape)} -> {tuple(out.shape)}; "
      f"scale and shift from Linear(128, {block.emb_proj.out_features}) = 2 x 32 channels")
assert torch.equal(out, x)  # at initialisation the block is the identity

# %% [markdown]
# In a trained model the same weights act differently at every step: here, the scale $1 + y_s$ and shift $y_b$
# that the time embedding gives the first residual block of the shipped digits model, for 6 of its 32 channels.
# Some channels are switched off (scale near 0) at high noise and on at low noise, or the other way round.

# %%
model, diffusion, config = load_pretrained("digits", device=device)
first = model.input_blocks[1][0]  # the first residual block (8x8, 32 channels)
with torch.no_grad():
    e = F.silu(model.embed_time(ts.to(device)))  # the embedding every block receives
    scale, shift = first.emb_proj(e).chunk(2, dim=1)
fig, (ax, ax2) = plt.subplots(1, 2, figsize=(10, 3), layout="constrained")
for c in range(6):
    ax.plot(ts, 1 + scale[:, c].cpu(), label=f"channel {c}")
    ax2.plot(ts, shift[:, c].cpu())
ax.set(xlabel="t", title="scale 1 + y_s"), ax2.set(xlabel="t", title="shift y_b")
ax.legend(fontsize=7, ncol=2)
plt.show()

# %% [markdown]
# ## 3. Attention: every pixel looks at every other
#
# Convolutions see a small neighbourhood; to coordinate distant parts of an image (the two ends of a stroke) the
# U-Net adds self-attention blocks at the low resolutions. Each pixel becomes a token of $C$ channels; after a
# GroupNorm, a linear layer gives queries, keys and values, split into heads, and each head computes
#
# $$\mathrm{Attention}(Q, K, V) = \mathrm{softmax}\Big(\frac{QK^\top}{\sqrt{d}}\Big)V,$$
#
# added back to the input (a residual, zero at initialisation). ADM uses attention at 32, 16 and 8 pixels with heads
# of 64 channels; our digits model at 4×4 (heads of 32 channels) and in the middle block.
#
# Here is one attention block of the shipped model, recomputed by hand on a noisy digit:

# %%
attn = model.input_blocks[3][1]  # the attention after the residual block at 4x4
digit = load_dataset("digits", "test").images[:1].to(device)
t = torch.tensor([300], device=device)
seen = {}
hook = attn.register_forward_hook(lambda module, inputs, output: seen.update(x=inputs[0], out=output))
with torch.no_grad():
    model(diffusion.q_sample(digit, t), t)
    hook.remove()
    x = seen["x"]  # (1, 64, 4, 4): 16 tokens of 64 channels
    tokens = attn.norm(x).flatten(2).transpose(1, 2)  # (1, 16, 64)
    q, k, v = split_heads(attn.qkv(tokens), attn.num_heads)  # each (1, heads, 16, 32)
    weights = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]), dim=-1)  # (1, heads, 16, 16)
    h = attn.proj_out(merge_heads(weights @ v))
assert torch.allclose(x + h.transpose(1, 2).reshape(x.shape), seen["out"], atol=1e-4)
print(f"{attn.num_heads} heads of {q.shape[-1]} channels; each of the 16 pixels attends to all 16")

fig, axes = plt.subplots(1, 1 + attn.num_heads, figsize=(2.6 * (1 + attn.num_heads), 2.6), layout="constrained")
axes[0].imshow(plotting.to_display(digit[0].cpu()), cmap="gray")
axes[0].set_title("the clean digit")
for head, ax in enumerate(axes[1:]):
    ax.imshow(weights[0, head, 5].reshape(4, 4).cpu(), cmap="magma")
    ax.plot(1, 1, "c+", ms=14, mew=2)  # query pixel 5 = row 1, column 1
    ax.set_title(f"head {head}: weights of pixel (1, 1)", fontsize=9)
for ax in axes:
    ax.set_xticks([]), ax.set_yticks([])
plt.show()

# %% [markdown]
# ## 4. Down, across and up: the whole U
#
# The blocks are stacked in a U:
#
# - **down**: at each level, `num_res_blocks` residual blocks (+ attention at the attention resolutions), then a
#   downsampling block that halves the size (ADM: a residual block with average pooling inside, as in BigGAN);
#   the width grows as `model_channels × channel_mult[level]`;
# - **middle**: residual block, attention, residual block, at the smallest size;
# - **up**: the mirror image, each block first **concatenating** the output of its partner on the way down (the
#   skip connections: fine detail does not have to squeeze through the bottleneck), then upsampling;
# - **out**: GroupNorm, SiLU and a zero-initialised conv to the output channels: the noise, and with a learned
#   variance (Improved DDPM) a second set of channels for $v$.
#
# `unet_summary` traces one forward pass with hooks, on PyTorch's `meta` device: only shapes, no arithmetic.

# %%
rows, total = unet_summary(config.model)  # the shipped model's architecture
for r in rows:
    print(f"{r.name:17s} {r.kind:13s} {str(r.in_shape):17s} -> {str(r.out_shape):17s} {r.params:>9,d} parameters")
assert total == count_parameters(model)
print(f"total: {total:,} parameters; the output has 2 channels: eps and the variance interpolation v")

# %% [markdown]
# Explore: pick a preset (the digits models, MNIST, the Improved DDPM CIFAR-10 model, ADM's ImageNet 64×64), widen or
# deepen it. Where are most of the parameters? (Hint: a 3×3 conv has $9C^2$ weights.) Some widths cannot be built:
# attention heads have a fixed number of channels, which must divide the width of every attention level.

# %%
explorer = UNetExplorer("digits8")
explorer

# %%
before = explorer.image.value
explorer.preset.value = "imagenet64"
print(explorer.titles[0])
assert explorer.image.value != before and explorer.total > 2e8  # ADM ImageNet 64x64: ~300M parameters
assert explorer.rows[-1].out_shape == (1, 6, 64, 64)  # RGB noise + RGB variance
explorer.preset.value = "digits8"

# %% [markdown]
# ## 5. Train one
#
# First, what a fully trained one gives: the shipped digits model (2000 steps of the `digits` preset: cosine
# schedule, learned variance, hybrid loss), sampled with 50 respaced steps.

# %%
samples = generate(model, diffusion, (64, 1, 8, 8), steps=50, generator=torch.Generator().manual_seed(0))
plt.figure(figsize=(4, 4))
plt.imshow(make_grid(samples.cpu(), ncol=8, scale=4), cmap="gray")
plt.axis("off"), plt.title("the shipped digits model, 50 steps")
plt.show()

# %% [markdown]
# Now train one yourself: the same preset, with a live view of the loss and of samples from the EMA weights,
# redrawn every few steps by a callback, `every(k, fn)`. On a GPU this trains on MNIST (28×28, the `mnist28` U-Net)
# when it can be downloaded; on a CPU, on the 8×8 digits. **This is the cell that takes time** (a few minutes on a
# laptop CPU; interrupt it whenever you like, the trainer stops cleanly).

# %%
data = "digits"
if device.type == "cuda":
    try:
        load_dataset("mnist", download=True)
        data = "mnist"
    except DatasetNotFoundError as err:
        print(f"MNIST is not available ({str(err).splitlines()[0]}); training on the digits")
train_config = ExperimentConfig.preset("digits").with_data(data)
steps = pick(3000 if data == "mnist" else 300, 12)
interval = pick(100 if data == "mnist" else 25, 6)  # redraw every `interval` steps
monitor = TrainingMonitor(interval, n_samples=16, sample_steps=pick(25, 10), title=f"{data}: {steps} steps")
display(monitor)
trainer = Trainer.from_config(train_config, device=device, callbacks=[monitor.callback()], progress=False)
history = trainer.train(steps)

# %% [markdown]
# The noise-prediction error went down (the total loss also holds the variance term $L_{vlb}$, which is noisier):

# %%
mse = np.array(history["mse"])
third = max(len(mse) // 3, 1)
print(f"{trainer}\nmse: first third {np.median(mse[:third]):.3f} -> last third {np.median(mse[-third:]):.3f}")
assert np.median(mse[-third:]) < np.median(mse[:third])
assert monitor.renders > 1 and monitor.samples is not None  # the live view was redrawn during training

# %% [markdown]
# ## What to remember
#
# - $t$ enters as sinusoids at geometric frequencies, through an MLP, into **every** residual block.
# - Adaptive GroupNorm, $(1 + y_s)\,\mathrm{GN}(h) + y_b$, lets the embedding (time, class) rescale and shift every
#   channel: one network, a different behaviour at every noise level.
# - Attention at low resolutions connects distant pixels; the U's skip connections carry fine detail across.
# - ADM's choices (Dhariwal & Nichol 2021, section 3): depth over width, more heads (64 channels each), attention
#   at 32, 16 and 8 pixels, BigGAN up/downsampling blocks, AdaGN.
#
# Next: steering this model towards a chosen class with a classifier (notebook 08).
