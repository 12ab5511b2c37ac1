# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown] slideshow={"slide_type": "slide"}
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
# *About 25 minutes.* Two exercises; each checks itself when you run it, and "Run all" works before you solve them.

# %% slideshow={"slide_type": "skip"} tags=["colab-setup"]
# In Colab: install ddpm_lite from GitHub (Colab's own torch, numpy and ipywidgets are kept). Elsewhere: nothing.
import sys

if "google.colab" in sys.modules:
    from IPython import get_ipython

    get_ipython().run_line_magic("pip", "install -q git+https://github.com/ddpm-lite/ddpm_lite")

# %% slideshow={"slide_type": "skip"}
import dataclasses
import math
import time

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
from IPython.display import display
from torch.utils.flop_counter import FlopCounterMode

from ddpm_lite import respace
from ddpm_lite.configs import choose_preset
from ddpm_lite.course import plotting
from ddpm_lite.course.exercises import check_res_block_forward, check_timestep_embedding, hint  # noqa: F401
from ddpm_lite.course.widgets import TrainingMonitor, UNetExplorer
from ddpm_lite.data import load_dataset
from ddpm_lite.images import make_grid
from ddpm_lite.models import ResBlock, UNetModel, count_parameters
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

# %% [markdown] slideshow={"slide_type": "slide"}
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
# Component $i$ turns once every $2\pi / \omega_i$ steps: the fastest ($\omega_0 = 1$) every $2\pi \approx 6.3$
# steps, the slowest every $2\pi \cdot \text{max\_period}^{(h-1)/h}$ steps, a little less than
# $2\pi \cdot$ `max_period` (the cell after the exercise prints it for the sizes used here). That is far longer than
# the chain, so every $t$ gets its own pattern, and nearby $t$ similar ones. A small MLP (`Linear`, SiLU,
# `Linear`) then maps it to a vector of $4 \times$ `model_channels` that every residual block receives.
#
# ### Exercise 1: `timestep_embedding`
#
# `t` has shape `(B,)` (integers; the formula works for fractions too); return `(B, dim)`: all the cosines, then all
# the sines, in float32. When `dim` is odd, add one column of zeros at the end.

# %% slideshow={"slide_type": "slide"} tags=["exercise"]
def timestep_embedding(t, dim, max_period=10000):
    """Sinusoidal embedding of timesteps t (B,) -> (B, dim): cosines, then sines, of t * max_period^(-i/half)."""
    ### BEGIN SOLUTION
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32) / half)
    args = t[:, None].float() * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = F.pad(emb, (0, 1))
    return emb
    ### END SOLUTION


timestep_embedding = check_timestep_embedding(timestep_embedding)

# %% [markdown] slideshow={"slide_type": "slide"}
# Every $t$ of the chain, embedded in 64 dimensions. Left, the fast frequencies (first columns of each half)
# flicker from step to step, the slow ones barely move: together they pin $t$ down. Right, the similarity of two
# embeddings falls off as their steps move apart.

# %%
ts = torch.arange(1000)
emb = timestep_embedding(ts, 64)
assert torch.allclose(emb, package_timestep_embedding(ts, 64), atol=1e-4)  # yours is the package's
for dim in (32, 64):  # 32: the digits U-Net (model_channels); 64: the figure
    h = dim // 2
    print(f"dim {dim}: periods from 2π = {2 * math.pi:.2f} steps to 2π · 10000^({h - 1}/{h}) = "
          f"{2 * math.pi * 10000 ** ((h - 1) / h):,.0f} steps")
fig = plotting.timestep_embedding_figure(emb)
plt.show()

# %% [markdown] slideshow={"slide_type": "slide"}
# Which $t$ does the network see on a shorter chain? `respace` (notebook 10) keeps a subset of the steps and calls
# the model at the **original** integer timesteps, `timestep_map[i]` (a `torch.long` tensor), so this package never
# feeds it fractions. Fractions do occur in the reference code: improved-diffusion's `rescale_timesteps=True` scales
# every timestep to $t \cdot 1000 / T$, which for $T = 4000$ gives steps like 0.25; the sinusoids take them as they
# are.

# %%
_, digits_diffusion, _ = load_pretrained("digits")
chain = respace(digits_diffusion, 10)
print(f"the 10-step chain calls the model at t = {chain.timestep_map.tolist()} ({chain.timestep_map.dtype})")
assert chain.timestep_map.dtype == torch.long

# %% [markdown] slideshow={"slide_type": "slide"}
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
# ADM found it better than adding the embedding to $h$ (DDPM's way; `use_scale_shift_norm=False`; ADM Table 3).
# The last conv of every block starts at zero, so an untrained block is the identity and a deep stack starts as a
# shallow one:

# %%
block = ResBlock(channels=32, emb_channels=128, out_channels=32)
x, e = torch.randn(2, 32, 8, 8), torch.randn(2, 128)
out = block(x, e)
print(f"x {tuple(x.shape)}, embedding {tuple(e.shape)} -> {tuple(out.shape)}; "
      f"scale and shift from Linear(128, {block.emb_proj.out_features}) = 2 x 32 channels")
assert torch.equal(out, x)  # at initialisation the block is the identity

# %% [markdown] slideshow={"slide_type": "slide"}
# In a trained model the same weights act differently at every step: here, the scale $1 + y_s$ and shift $y_b$
# that the time embedding gives the first residual block of the shipped digits model, for 6 of its 32 channels.
# Some channels are switched off (scale near 0) at high noise and on at low noise, or the other way round.

# %%
model, diffusion, config = load_pretrained("digits", device=device)
first = model.input_blocks[1][0]  # the first residual block (8x8, 32 channels)
with torch.no_grad():
    e = F.silu(model.embed_time(ts.to(device)))  # the embedding every block receives
    scale, shift = first.emb_proj(e).chunk(2, dim=1)
fig, (ax, ax2) = plt.subplots(1, 2, figsize=(8, 3.4), layout="constrained")
for c in range(6):
    ax.plot(ts, 1 + scale[:, c].cpu(), label=f"channel {c}")
    ax2.plot(ts, shift[:, c].cpu())
ax.set(xlabel="t", title="scale 1 + y_s"), ax2.set(xlabel="t", title="shift y_b")
fig.legend(*ax.get_legend_handles_labels(), loc="outside lower center", ncols=3)
plt.show()

# %% [markdown] slideshow={"slide_type": "slide"}
# ### Exercise 2: the residual block, `res_block_forward`
#
# Write the block's forward pass with the block's own layers: `block.in_norm`, `block.in_conv`, `block.emb_proj`
# (the `Linear` that gives $[y_s, y_b]$, the scale first), `block.out_norm`, `block.dropout`, `block.out_conv`,
# `block.skip` (the identity, or a 1×1 conv when the block changes the width) and `block.resample` (the identity,
# or the 2× up- or downsampling of the BigGAN-style blocks: applied to $h$ just before the first conv, and to $x$
# on the skip path). `x` is `(B, C, H, W)`; `emb` is the embedding `(B, E)` every block receives, already through a
# SiLU. The check runs your function on blocks with random weights, their last conv included (it is zero in a
# fresh block, which would hide most mistakes); then the shipped model runs with your block in every place.

# %% slideshow={"slide_type": "fragment"} tags=["exercise"]
def res_block_forward(block, x, emb):
    """ResBlock.forward with AdaGN, (1 + y_s) GroupNorm(h) + y_b with [y_s, y_b] = emb_proj(emb) (ADM section 3)."""
    ### BEGIN SOLUTION
    h = block.in_conv(block.resample(F.silu(block.in_norm(x))))
    scale, shift = block.emb_proj(emb)[:, :, None, None].chunk(2, dim=1)
    h = block.out_norm(h) * (1 + scale) + shift
    h = block.out_conv(block.dropout(F.silu(h)))
    return block.skip(block.resample(x)) + h
    ### END SOLUTION


res_block_forward = check_res_block_forward(res_block_forward)

# %% [markdown] slideshow={"slide_type": "slide"}
# The shipped model with **your** block in place of each of its residual blocks (their `forward` replaced for the
# length of this cell), against the model as it ships, on noisy test digits:

# %%
blocks = [m for m in model.modules() if isinstance(m, ResBlock)]
noisy_digits = load_dataset("digits", "test").images[:8].to(device)
t_blocks = torch.tensor([0, 10, 50, 100, 300, 500, 800, 999], device=device)
noisy_digits = diffusion.q_sample(noisy_digits, t_blocks, torch.randn_like(noisy_digits))
with torch.no_grad():
    shipped = model(noisy_digits, t_blocks)
    for b in blocks:
        b.forward = lambda x, emb, b=b: res_block_forward(b, x, emb)
    try:
        yours = model(noisy_digits, t_blocks)
    finally:
        for b in blocks:
            del b.forward
print(f"your block in all {len(blocks)} residual blocks: largest difference from the shipped model's output "
      f"{(yours - shipped).abs().max():.1e}")
assert torch.allclose(yours, shipped, atol=1e-4)

# %% [markdown] slideshow={"slide_type": "slide"}
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

# %% slideshow={"slide_type": "slide"}
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

fig, axes = plt.subplots(1, 1 + attn.num_heads, figsize=(min(8, 2.2 * (1 + attn.num_heads)), 2.8),
                         layout="constrained")
axes[0].imshow(plotting.to_display(digit[0].cpu()), cmap="gray")
axes[0].set_title("the clean digit")
for head, ax in enumerate(axes[1:]):
    ax.imshow(weights[0, head, 5].reshape(4, 4).cpu(), cmap="magma")
    ax.plot(1, 1, "c+", ms=14, mew=2)  # query pixel 5 = row 1, column 1
    ax.set_title(f"head {head}: weights\nof pixel (1, 1)")
for ax in axes:
    ax.set_xticks([]), ax.set_yticks([])
plt.show()

# %% [markdown] slideshow={"slide_type": "slide"}
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

# %% slideshow={"slide_type": "slide"}
explorer = UNetExplorer("digits8")
explorer

# %% slideshow={"slide_type": "skip"}
before = explorer.image.value
explorer.preset.value = "imagenet64"
print(explorer.titles[0])
assert explorer.image.value != before and explorer.total > 2e8  # ADM ImageNet 64x64: ~300M parameters
assert explorer.rows[-1].out_shape == (1, 6, 64, 64)  # RGB noise + RGB variance
explorer.preset.value = "digits8"

# %% [markdown] slideshow={"slide_type": "slide"}
# ### ADM's choices, and what depth costs
#
# Section 3 of "Diffusion Models Beat GANs" ablates this U-Net on ImageNet (Table 1: FID after 700K and 1200K
# training iterations; Table 2: attention heads; Table 3: AdaGN) and keeps:
#
# - **width over depth**: more residual blocks per resolution improved FID but made training slower, so the
#   authors did *not* adopt it; the architecture they carry forward has **2 residual blocks per resolution** and a
#   **variable width** (`model_channels × channel_mult[level]`). (The later, per-dataset models differ: the
#   explorer's ImageNet 64×64 preset has 3 blocks per level.)
# - **attention at 32, 16 and 8 pixels** with a fixed **64 channels per head** (Table 2), rather than a fixed
#   number of heads;
# - **BigGAN residual blocks** for down- and upsampling (`resblock_updown=True`);
# - **AdaGN** (section 2 above; Table 3).
#
# What one more residual block per level costs, measured on the digits U-Net: parameters, arithmetic per image
# (counted by PyTorch's `FlopCounterMode`: 2 FLOPs per multiply-add of the convolutions, linear layers and attention
# products) and the time of one call on 64 digits on this device; beside it, the same network made wider instead.

# %% slideshow={"slide_type": "slide"}
variants = {"shipped: 1 block per level, 32 ch": config.model,
            "deeper: 2 blocks per level, 32 ch": dataclasses.replace(config.model, num_res_blocks=2),
            "wider: 1 block per level, 48 ch": dataclasses.replace(config.model, model_channels=48)}
x, t = torch.randn(64, 1, 8, 8, device=device), torch.randint(0, 1000, (64,), device=device)
costs = {}
print(f"{'':36s}{'res blocks':>11s}{'parameters':>12s}{'MFLOP/image':>13s}{'ms per call':>13s}")
for name, cfg in variants.items():
    net = UNetModel(cfg).to(device).eval()
    with torch.no_grad():
        with FlopCounterMode(display=False) as counter:
            net(x, t)
        times = []
        for _ in range(pick(5, 2)):
            start = time.perf_counter()
            net(x, t)
            if device.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
    blocks = sum(isinstance(m, ResBlock) for m in net.modules())
    costs[name] = (count_parameters(net), counter.get_total_flops() / 64)
    print(f"{name:36s}{blocks:>11d}{costs[name][0]:>12,d}{costs[name][1] / 1e6:>13.1f}"
          f"{1000 * float(np.median(times)):>13.1f}")
(p1, f1), (p2, f2) = costs["shipped: 1 block per level, 32 ch"], costs["deeper: 2 blocks per level, 32 ch"]
print(f"one more block per level: {p2 / p1 - 1:+.0%} parameters, {f2 / f1 - 1:+.0%} FLOPs per image")
assert p2 > p1 and f2 > f1

# %% [markdown]
# On the digits U-Net a second block per level adds about 40% to both the parameters and the FLOPs, and widening
# from 32 to 48 channels more than doubles both. Both cost compute; ADM's question was which buys more FID per
# hour of training on ImageNet, and its answer (width, 2 blocks per level) is a measurement at that scale, not
# one we repeat here. The digits presets keep one block per level, which keeps CPU training short.

# %% [markdown] slideshow={"slide_type": "slide"}
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
# Now train one yourself, with a live view of the loss and of samples from the EMA weights, redrawn every few
# steps by a callback, `every(k, fn)`. On a GPU this trains the `mnist` preset (MNIST at 28×28, the `mnist28` U-Net,
# 3200 steps of 256 images, in mixed precision; set `DATASET` to `"fashion_mnist"` or `"cifar10"` for the others)
# once the data is downloaded; on a CPU, or offline, the 8×8 digits with the `digits_fast` preset: the same model
# and diffusion as the shipped one, with a recipe tuned for minutes of CPU (no dropout, a learning rate of 1e-3
# warmed up over 100 steps, the noise error weighted by Min-SNR; measured in the repository's docs/benchmarks.md,
# "Time to quality"). The first line it prints says which path it took, the last how long it trained. **This is the cell that takes time**: a few minutes on a laptop CPU; on a Colab
# T4 the GPU path takes an estimated 3 to 8 minutes for MNIST and up to 9 for CIFAR-10 (the estimate and how it was
# made are in the repository's docs/gpu.md). Interrupt it whenever you like: the trainer stops cleanly.

# %% slideshow={"slide_type": "slide"}
DATASET = "mnist"  # the GPU path's data: "mnist", "fashion_mnist" or "cifar10"
choice = choose_preset(DATASET, "digits_fast", device=device)  # on a GPU: downloads the data if needed
print(choice)  # which path this run took, and why
steps = pick(choice.config.steps if choice.on_gpu else 300, 12)
interval = pick(max(steps // 20, 25), 6)  # redraw every `interval` steps
monitor = TrainingMonitor(interval, n_samples=16, sample_steps=pick(25, 10),
                          title=f"{choice.config.data}: {steps} steps")
display(monitor)
trainer = Trainer.from_config(choice.config, choice.data, device=choice.device, callbacks=[monitor.callback()],
                              progress=False)
history = trainer.train(steps)
print(trainer.clock(), "(the live view's redraws included)")

# %% [markdown] slideshow={"slide_type": "slide"}
# The noise-prediction error went down (weighted by Min-SNR on the CPU path; the total loss also holds the
# variance term $L_{vlb}$, which is noisier):

# %%
mse = np.array(history["mse"])
third = max(len(mse) // 3, 1)
print(f"{trainer}\nmse: first third {np.median(mse[:third]):.3f} -> last third {np.median(mse[-third:]):.3f}")
assert np.median(mse[-third:]) < np.median(mse[:third])
assert monitor.renders > 1 and monitor.samples is not None  # the live view was redrawn during training

# %% [markdown] slideshow={"slide_type": "slide"}
# ## What to remember
#
# - $t$ enters as sinusoids at geometric frequencies, through an MLP, into **every** residual block.
# - Adaptive GroupNorm, $(1 + y_s)\,\mathrm{GN}(h) + y_b$, lets the embedding (time, class) rescale and shift every
#   channel: one network, a different behaviour at every noise level.
# - Attention at low resolutions connects distant pixels; the U's skip connections carry fine detail across.
# - ADM's choices (Dhariwal & Nichol 2021, section 3, Tables 1-3): depth helped but trained slower, so not
#   adopted: 2 residual blocks per resolution with variable width; 64 channels per attention head; attention at
#   32, 16 and 8 pixels; BigGAN up/downsampling blocks; AdaGN.
#
# Next: steering this model towards a chosen class with a classifier (notebook 08).
