# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown] slideshow={"slide_type": "slide"}
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/ddpm-lite/ddpm_lite/blob/main/notebooks/01_forward_noising.ipynb)
#
# # 01 · The forward process: from data to noise in one step
#
# A diffusion model learns to *undo* a fixed process that slowly turns data into noise. This notebook is about that
# fixed process, $q$. Its one idea: **you can jump straight from $x_0$ to any $x_t$**, with no need to run $t$ small
# steps (DDPM, Ho et al. 2020, eq. 4).
#
# *About 15 minutes.* Exercise cells hold `YOUR CODE HERE`; the cell checks your answer when you run it. If the
# answer is not right yet, the notebook goes on with the package's version, so "Run all" always works.

# %% slideshow={"slide_type": "skip"} tags=["colab-setup"]
# In Colab: install ddpm_lite from GitHub (Colab's own torch, numpy and ipywidgets are kept). Elsewhere: nothing.
import sys

if "google.colab" in sys.modules:
    from IPython import get_ipython

    get_ipython().run_line_magic("pip", "install -q git+https://github.com/ddpm-lite/ddpm_lite")

# %% slideshow={"slide_type": "skip"}
import time

import matplotlib.pyplot as plt
import numpy as np
import torch

from ddpm_lite import GaussianDiffusion, get_betas, respace
from ddpm_lite.course import plotting
from ddpm_lite.course.exercises import check_q_sample, hint  # noqa: F401 - hint() on request
from ddpm_lite.course.widgets import ForwardNoisingExplorer
from ddpm_lite.data import load_dataset, toy_2d
from ddpm_lite.pretrained import load_pretrained
from ddpm_lite.runtime import default_device, fast_mode, pick

device = default_device()  # everything here is small: it runs on the CPU whatever the device
FAST = fast_mode()  # True in CI (DDPM_LITE_FAST=1): smaller sizes. Learners get the full run.
print(f"device: {device}, fast mode: {FAST}")
_ = torch.manual_seed(0)

# %% [markdown] slideshow={"slide_type": "slide"}
# ## What you will build
#
# The package ships a small diffusion model of 8×8 digits (`load_pretrained("digits")`: a U-Net of 1.4 M
# parameters, trained for 2,000 steps on a CPU). It makes a digit out of pure noise by removing a little noise at a
# time. Here it takes 50 steps (it was trained with 1,000; notebook 10 shows how to skip steps), for eight draws of
# noise at once. Each row is one digit, from noise (left) to the finished sample (right):

# %% slideshow={"slide_type": "slide"}
start = time.perf_counter()
threads = torch.get_num_threads()
torch.set_num_threads(1)  # 8 tiny images: one CPU thread is enough, and does not stall on a busy machine
digits_model, digits_diffusion, _ = load_pretrained("digits", device="cpu")  # small enough for any CPU
fast = respace(digits_diffusion, 50)  # 50 of the 1,000 steps
generator = torch.Generator().manual_seed(2)  # seed 2: eight clear digits (picked after looking at seeds 0-3)
noise = torch.randn(8, 1, 8, 8, generator=generator)
frames = [noise]
for out in fast.p_sample_loop_progressive(digits_model, noise.shape, noise=noise, generator=generator):
    frames.append(out["sample"])
torch.set_num_threads(threads)
print(f"8 digits in {time.perf_counter() - start:.1f} s (50 network calls, on the CPU)")

shown = [0, 10, 20, 30, 40, 45, 48, 50]  # after this many of the 50 steps
fig, axes = plt.subplots(8, len(shown), figsize=(7.2, 7.6), layout="constrained")
for col, k in enumerate(shown):
    for row in range(8):
        axes[row, col].imshow(plotting.to_display(frames[k][row]), cmap="gray", vmin=0, vmax=1)
        axes[row, col].set_xticks([]), axes[row, col].set_yticks([])
    axes[0, col].set_title("noise" if k == 0 else f"step {k}")
plt.show()

# %% [markdown] slideshow={"slide_type": "slide"}
# The next notebooks take it apart: the noise (this notebook), the steps back (02), the loss that trains the
# network (03), its variance (04), its schedule (05) and the network itself (07).

# %% [markdown] slideshow={"slide_type": "slide"}
# ## Where diffusion models sit
#
# Every generative model turns simple random numbers $z$ into data $x$. The families differ in what they learn
# and how sampling runs. A GAN and a VAE learn a network that maps $z$ to $x$ in one pass (the VAE with an
# encoder to train it, the GAN with a critic); a flow learns one invertible network, which gives the exact
# likelihood. A diffusion model's "encoder" is fixed: the forward process $q$ of this notebook adds noise and has
# no parameters. All the learning is in the way back, one denoising network used again at every step.

# %%
fig = plotting.generative_landscape_figure()
plt.show()

# %% [markdown] slideshow={"slide_type": "slide"}
# ## 1. Many small steps of noise
#
# The forward process adds a little Gaussian noise at each of $T$ steps, shrinking the signal a little each time
# so that the variance stays bounded (DDPM eq. 2):
#
# $$q(x_t \mid x_{t-1}) = \mathcal{N}\big(x_t;\ \sqrt{1-\beta_t}\,x_{t-1},\ \beta_t \mathbf{I}\big),
#   \qquad t = 1, \dots, T.$$
#
# The **schedule** $\beta_1, \dots, \beta_T$ is fixed, not learned. DDPM uses $T = 1000$ and lets $\beta_t$ grow
# linearly from $10^{-4}$ to $0.02$.

# %%
T = 1000
betas = torch.from_numpy(get_betas("linear", T))  # float64, beta_1 .. beta_T
print(f"{len(betas)} steps, beta from {betas[0]:.1e} to {betas[-1]:.3f}")

# %% [markdown] slideshow={"slide_type": "slide"}
# ## 2. The closed form: one jump from $x_0$ to $x_t$
#
# With $\alpha_t = 1 - \beta_t$ and $\bar\alpha_t = \prod_{s=1}^{t} \alpha_s$, a sum of independent Gaussians is
# again Gaussian, and the $t$ steps collapse into one (DDPM eq. 4):
#
# $$q(x_t \mid x_0) = \mathcal{N}\big(x_t;\ \sqrt{\bar\alpha_t}\,x_0,\ (1-\bar\alpha_t)\,\mathbf{I}\big)
# \quad\Longleftrightarrow\quad
# x_t = \sqrt{\bar\alpha_t}\,x_0 + \sqrt{1-\bar\alpha_t}\,\epsilon,\quad \epsilon \sim \mathcal{N}(0, \mathbf{I}).$$
#
# This is what makes training cheap: any $x_t$ is one multiply-add away from the data.
#
# **Indexing.** The paper counts $t = 1..T$; the code counts `t = 0..T-1`. Code `t` is the paper's $t+1$, so
# `alpha_bar[t]` must include `alphas[t]`: `alpha_bar = torch.cumprod(1 - betas, dim=0)`. The data itself is
# $x_0$, before any step: code `t = 0` is already one step of noise. Sliders and axes that show the code's `t`
# say so.
#
# ### Exercise: implement `q_sample`
#
# `x0` is a batch `(B, ...)` (images `(B, C, H, W)` or points `(B, 2)`), `t` holds one integer timestep per example
# `(B,)`, and `noise` has the shape of `x0`. Mind the shapes: `alpha_bar[t]` is `(B,)` and must be reshaped to
# `(B, 1, 1, 1)` (for images) to multiply `x0` example by example.
#
# If the check says ❌, it tells you *what* is wrong (which part, where, how), not the answer. `hint("q_sample")`
# tells you where to look; `hint("q_sample", 2)` gives the formula.

# %% slideshow={"slide_type": "slide"} tags=["exercise"]
def q_sample(x0, t, noise, betas):
    """x_t = sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) noise (DDPM eq. 4)."""
    ### BEGIN SOLUTION
    alpha_bar = torch.cumprod(1 - betas, dim=0)[t]
    alpha_bar = alpha_bar.reshape(-1, *[1] * (x0.ndim - 1))
    return alpha_bar.sqrt() * x0 + (1 - alpha_bar).sqrt() * noise
    ### END SOLUTION


q_sample = check_q_sample(q_sample)

# %% [markdown] slideshow={"slide_type": "slide"}
# ## 3. Does one jump really equal many steps?
#
# Take 2-D points, run the chain of eq. 2 step by step up to some $t$, and compare with one call of `q_sample`.
# The two clouds are different samples, so compare their statistics: the same mean and spread, up to sampling noise.

# %% slideshow={"slide_type": "slide"}
n_points = pick(20_000, 4_000)
x0 = toy_2d("moons", n_points)
t_check = 300

x = x0.double()
for s in range(t_check + 1):  # code steps 0..t_check = the paper's 1..t_check+1
    x = (1 - betas[s]).sqrt() * x + betas[s].sqrt() * torch.randn_like(x)

t = torch.full((n_points,), t_check)
jump = q_sample(x0.double(), t, torch.randn_like(x), betas)
print("step by step: mean", x.mean(0).numpy().round(3), " std", x.std(0).numpy().round(3))
print("one jump:     mean", jump.mean(0).numpy().round(3), " std", jump.std(0).numpy().round(3))
assert torch.allclose(x.mean(0), jump.mean(0), atol=0.05) and torch.allclose(x.std(0), jump.std(0), atol=0.05)

fig, axes = plt.subplots(1, 3, figsize=(8, 3.0), layout="constrained", sharex=True, sharey=True)
for ax, pts, title in zip(axes, [x0, x, jump], ["x_0", f"{t_check + 1} steps of eq. 2", "one jump, eq. 4"]):
    ax.scatter(pts[:2000, 0], pts[:2000, 1], s=2)
    ax.set_title(title)
    ax.set_aspect("equal")
plt.show()

# %% [markdown] slideshow={"slide_type": "slide"}
# Now images. Each row below is one image: first the data $x_0$ itself, then $x_t$ from **your** `q_sample` with
# the same noise at growing $t$ (the paper's $t$; the code's index is $t - 1$).

# %% slideshow={"slide_type": "slide"}
digit = load_dataset("digits").images[3]  # (1, 8, 8) in [-1, 1]: a clear 3 (picked after looking at the first 40)
photo = plotting.sample_photo(64)  # (1, 64, 64): a photo that ships with matplotlib, in [-1, 1]
steps = [1, 50, 100, 200, 300, 500, 700, 1000]  # the paper's t

fig, axes = plt.subplots(2, len(steps) + 1, figsize=(8, 2.4), layout="constrained")
for row, image in enumerate([digit, photo]):
    noise = torch.randn_like(image)
    axes[row, 0].imshow(plotting.to_display(image), cmap="gray", vmin=0, vmax=1)
    axes[row, 0].set_title("x₀ (data)", fontsize=12)
    for col, t_paper in enumerate(steps, start=1):
        x_t = q_sample(image[None], torch.tensor([t_paper - 1]), noise[None], betas)[0]  # code index t - 1
        axes[row, col].imshow(plotting.to_display(x_t), cmap="gray", vmin=0, vmax=1)
        axes[row, col].set_title(f"t = {t_paper}", fontsize=12)
for ax in axes.flat:
    ax.axis("off")
plt.show()

# %% [markdown] slideshow={"slide_type": "slide"}
# ## 4. Signal-to-noise ratio
#
# $x_t$ is a mix of $\sqrt{\bar\alpha_t}$ signal and $\sqrt{1-\bar\alpha_t}$ noise. Their power ratio,
#
# $$\mathrm{SNR}(t) = \frac{\bar\alpha_t}{1-\bar\alpha_t},$$
#
# falls from about $10^4$ to nearly $0$, over many orders of magnitude, so it is best seen on a log scale. At
# $\mathrm{SNR} = 1$ signal and noise are equally strong. By $t = T$ almost nothing of $x_0$ is left:
# $q(x_T \mid x_0) \approx \mathcal{N}(0, \mathbf{I})$, the distribution sampling will start from. (The plot's axis is
# the code's `t`, one less than the paper's.)

# %% slideshow={"slide_type": "slide"}
alpha_bar = torch.cumprod(1 - betas, dim=0)
snr = alpha_bar / (1 - alpha_bar)
below = int((snr < 1).nonzero()[0])  # the first code index with SNR < 1
print(f"SNR after one step (t = 1, code index 0): {snr[0]:.0f}; below 1 from t = {below + 1} (code index {below}); "
      f"alpha_bar_T = {alpha_bar[-1]:.1e}")
assert np.allclose(alpha_bar.numpy(), GaussianDiffusion(betas.numpy()).alphas_cumprod)  # the package agrees

fig = plotting.snr_curve(("linear", "cosine"), t=250)
plt.show()

# %% [markdown] slideshow={"slide_type": "slide"}
# ## 5. Explore
#
# Move `t` and watch a digit, a photo and a cloud of 2-D points dissolve, with the SNR at that step on the right.
# The noise $\epsilon$ stays fixed as you move `t` (one sample path); **new noise** draws another. Switch the
# schedule to `cosine` (notebook 05 is about it): at the same `t`, which keeps more of the image? The slider, the
# titles and the SNR axis show the code's `t` (0 to 999): the paper's step is `t + 1`.

# %% slideshow={"slide_type": "slide"}
explorer = ForwardNoisingExplorer(num_timesteps=T, t=250, digit=digit)
explorer

# %% [markdown] slideshow={"slide_type": "skip"}
# The widget can also be driven from code: every control is a normal ipywidget.

# %% slideshow={"slide_type": "skip"}
before = explorer.image.value
explorer.t.value = 600
assert explorer.image.value != before and "t = 600" in explorer.titles[0]
print(explorer.titles[0])
explorer.t.value = 250  # back to the view shown above (and on the slide)

# %% [markdown] slideshow={"slide_type": "slide"}
# ## What to remember
#
# - $q$ has no parameters: a fixed schedule $\beta_t$ turns data into noise.
# - Eq. 4 jumps to any step at once: $x_t = \sqrt{\bar\alpha_t}\,x_0 + \sqrt{1-\bar\alpha_t}\,\epsilon$.
#   Training picks a random $t$ per example and never runs the chain.
# - The SNR $\bar\alpha_t / (1-\bar\alpha_t)$ tells how much of $x_0$ is left at step $t$.
#
# Next: the reverse process, which a network learns to run one step at a time.
