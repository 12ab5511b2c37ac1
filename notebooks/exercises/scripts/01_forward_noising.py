# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/ddpm-lite/ddpm_lite/blob/main/notebooks/exercises/01_forward_noising.ipynb)
#
# > **Exercise version.** Fill in the cells marked `YOUR CODE HERE`; the solutions are in `notebooks/01_forward_noising.ipynb`.
#
# # 01 · The forward process: from data to noise in one step
#
# A diffusion model learns to *undo* a fixed process that slowly turns data into noise. This notebook is about that
# fixed process, $q$. Its one idea: **you can jump straight from $x_0$ to any $x_t$**, with no need to run $t$ small
# steps (DDPM, Ho et al. 2020, eq. 4).
#
# *About 15 minutes.* Exercise cells hold `YOUR CODE HERE`; the cell checks your answer when you run it. If the
# answer is not right yet, the notebook goes on with the package's version, so "Run all" always works.

# %% tags=["colab-setup"]
# In Colab: install ddpm_lite from GitHub (Colab's own torch, numpy and ipywidgets are kept). Elsewhere: nothing.
import sys

if "google.colab" in sys.modules:
    from IPython import get_ipython

    get_ipython().run_line_magic("pip", "install -q git+https://github.com/ddpm-lite/ddpm_lite")

# %%
import matplotlib.pyplot as plt
import numpy as np
import torch

from ddpm_lite import GaussianDiffusion, get_betas
from ddpm_lite.course import plotting
from ddpm_lite.course.exercises import check_q_sample
from ddpm_lite.course.widgets import ForwardNoisingExplorer
from ddpm_lite.data import load_dataset, toy_2d
from ddpm_lite.runtime import default_device, fast_mode, pick

device = default_device()  # everything here is small: it runs on the CPU whatever the device
FAST = fast_mode()  # True in CI (DDPM_LITE_FAST=1): smaller sizes. Learners get the full run.
print(f"device: {device}, fast mode: {FAST}")
_ = torch.manual_seed(0)

# %% [markdown]
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

# %% [markdown]
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
# `alpha_bar[t]` must include `alphas[t]`: `alpha_bar = torch.cumprod(1 - betas, dim=0)`.
#
# ### Exercise: implement `q_sample`
#
# `x0` is a batch `(B, ...)` (images `(B, C, H, W)` or points `(B, 2)`), `t` holds one integer timestep per example
# `(B,)`, and `noise` has the shape of `x0`. Mind the shapes: `alpha_bar[t]` is `(B,)` and must be reshaped to
# `(B, 1, 1, 1)` (for images) to multiply `x0` example by example.

# %% tags=["exercise"]
def q_sample(x0, t, noise, betas):
    """x_t = sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) noise (DDPM eq. 4)."""
    # YOUR CODE HERE
    raise NotImplementedError("hint: torch.cumprod gives alpha_bar; reshape alpha_bar[t] so it broadcasts against x0")


q_sample = check_q_sample(q_sample)

# %% [markdown]
# ## 3. Does one jump really equal many steps?
#
# Take 2-D points, run the chain of eq. 2 step by step up to some $t$, and compare with one call of `q_sample`.
# The two clouds are different samples, so compare their statistics: the same mean and spread, up to sampling noise.

# %%
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

fig, axes = plt.subplots(1, 3, figsize=(10, 3.3), layout="constrained", sharex=True, sharey=True)
for ax, pts, title in zip(axes, [x0, x, jump], ["x_0", f"{t_check + 1} steps of eq. 2", "one jump, eq. 4"]):
    ax.scatter(pts[:2000, 0], pts[:2000, 1], s=2)
    ax.set_title(title)
    ax.set_aspect("equal")
plt.show()

# %% [markdown]
# Now images. Each row below is one image; every column uses **your** `q_sample` with the same noise, at growing $t$.

# %%
digits = load_dataset("digits").images[:4]  # (4, 1, 8, 8) in [-1, 1]
photo = plotting.sample_photo(64)  # (1, 64, 64): a photo that ships with matplotlib, in [-1, 1]
steps = [0, 50, 100, 200, 300, 500, 700, 999]

fig, axes = plt.subplots(2, len(steps), figsize=(1.4 * len(steps), 3.2), layout="constrained")
for row, image in enumerate([digits[0], photo]):
    noise = torch.randn_like(image)
    for col, s in enumerate(steps):
        x_t = q_sample(image[None], torch.tensor([s]), noise[None], betas)[0]
        axes[row, col].imshow(plotting.to_display(x_t), cmap="gray", vmin=0, vmax=1)
        axes[row, col].set_title(f"t = {s}", fontsize=9)
        axes[row, col].axis("off")
plt.show()

# %% [markdown]
# ## 4. Signal-to-noise ratio
#
# $x_t$ is a mix of $\sqrt{\bar\alpha_t}$ signal and $\sqrt{1-\bar\alpha_t}$ noise. Their power ratio,
#
# $$\mathrm{SNR}(t) = \frac{\bar\alpha_t}{1-\bar\alpha_t},$$
#
# falls from about $10^4$ to nearly $0$, over many orders of magnitude, so it is best seen on a log scale. At
# $\mathrm{SNR} = 1$ signal and noise are equally strong. By $t = T$ almost nothing of $x_0$ is left:
# $q(x_T \mid x_0) \approx \mathcal{N}(0, \mathbf{I})$, the distribution sampling will start from.

# %%
alpha_bar = torch.cumprod(1 - betas, dim=0)
snr = alpha_bar / (1 - alpha_bar)
print(f"SNR at t=0: {snr[0]:.0f}, SNR = 1 at t = {int((snr < 1).nonzero()[0])}, alpha_bar_T = {alpha_bar[-1]:.1e}")
assert np.allclose(alpha_bar.numpy(), GaussianDiffusion(betas.numpy()).alphas_cumprod)  # the package agrees

fig = plotting.snr_curve(("linear", "cosine"), t=250)
plt.show()

# %% [markdown]
# ## 5. Explore
#
# Move `t` and watch a digit, a photo and a cloud of 2-D points dissolve, with the SNR at that step on the right.
# The noise $\epsilon$ stays fixed as you move `t` (one sample path); **new noise** draws another. Switch the
# schedule to `cosine` (notebook 05 is about it): at the same `t`, which keeps more of the image?

# %%
explorer = ForwardNoisingExplorer(num_timesteps=T, t=250)
explorer

# %% [markdown]
# The widget can also be driven from code: every control is a normal ipywidget.

# %%
before = explorer.image.value
explorer.t.value = 600
assert explorer.image.value != before and "t = 600" in explorer.titles[0]
print(explorer.titles[0])

# %% [markdown]
# ## What to remember
#
# - $q$ has no parameters: a fixed schedule $\beta_t$ turns data into noise.
# - Eq. 4 jumps to any step at once: $x_t = \sqrt{\bar\alpha_t}\,x_0 + \sqrt{1-\bar\alpha_t}\,\epsilon$.
#   Training picks a random $t$ per example and never runs the chain.
# - The SNR $\bar\alpha_t / (1-\bar\alpha_t)$ tells how much of $x_0$ is left at step $t$.
#
# Next: the reverse process, which a network learns to run one step at a time.
