# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown] slideshow={"slide_type": "slide"}
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/ddpm-lite/ddpm_lite/blob/main/notebooks/05_cosine_schedule.ipynb)
#
# # 05 · The cosine schedule: stop wasting the last steps
#
# DDPM's linear schedule destroys small images too early: by the last fifth of the chain, $x_t$ is already
# almost pure noise, so those steps teach the model little. Improved DDPM (Nichol & Dhariwal 2021, section 3.2)
# replaces it with a schedule whose $\bar\alpha_t$ falls like a cosine: slowly at both ends, linearly in the middle.
#
# *About 15 minutes.* One exercise; it checks itself when you run it.

# %% slideshow={"slide_type": "skip"} tags=["colab-setup"]
# In Colab: install ddpm_lite from GitHub (Colab's own torch, numpy and ipywidgets are kept). Elsewhere: nothing.
import sys

if "google.colab" in sys.modules:
    from IPython import get_ipython

    get_ipython().run_line_magic("pip", "install -q git+https://github.com/ddpm-lite/ddpm_lite")

# %% slideshow={"slide_type": "skip"}
import math

import matplotlib.pyplot as plt
import numpy as np
import torch

from ddpm_lite import GaussianDiffusion, get_betas
from ddpm_lite.course import plotting
from ddpm_lite.course.analytic import GaussianMixture
from ddpm_lite.course.exercises import check_cosine_betas, hint  # noqa: F401 - hint() on request
from ddpm_lite.course.widgets import ScheduleExplorer
from ddpm_lite.runtime import default_device, fast_mode, pick

device = default_device()  # nothing here needs a GPU
FAST = fast_mode()  # True in CI (DDPM_LITE_FAST=1): smaller pictures. Learners get the full run.
print(f"device: {device}, fast mode: {FAST}")
T = 1000

# %% [markdown] slideshow={"slide_type": "slide"}
# ## 1. What is wrong with the linear schedule?
#
# In DDPM, $\beta_t$ grows linearly from $10^{-4}$ to $0.02$. Nichol & Dhariwal found this worked well for
# high-resolution images but was sub-optimal at $64\times64$ and $32\times32$: *"the end of the forward noising
# process is too noisy, and so doesn't contribute very much to sample quality."* Their Figure 3 shows it, and their
# Figure 4 confirms it: a model trained with the linear schedule loses little when the first 20% of the *reverse*
# steps are skipped.
#
# Count how many steps have almost no signal left, say $\sqrt{\bar\alpha_t} < 0.05$ (5% of the image against a
# noise of standard deviation ~1):

# %%
linear = GaussianDiffusion(get_betas("linear", T))
signal = np.sqrt(linear.alphas_cumprod)
print(f"linear: {np.mean(signal < 0.05):.0%} of the steps keep less than 5% of the signal")

# %% [markdown] slideshow={"slide_type": "slide"}
# ## 2. The cosine schedule (Improved DDPM eq. 17)
#
# Define $\bar\alpha_t$ directly, then recover the betas:
#
# $$\bar\alpha_t = \frac{f(t)}{f(0)},\qquad f(t) = \cos\Big(\frac{t/T + s}{1 + s}\cdot\frac{\pi}{2}\Big)^2,
#  \qquad \beta_t = 1 - \frac{\bar\alpha_t}{\bar\alpha_{t-1}}.$$
#
# Two details from section 3.2:
#
# - $\beta_t$ is **clipped at 0.999**: at $t = T$, $f(T) = 0$ would give $\beta_T = 1$, a singularity at the end
#   of the chain.
# - The small offset $s = 0.008$ keeps $\beta_t$ from being too small near $t = 0$: they chose it so that
#   $\sqrt{\beta_1}$ is slightly smaller than the pixel bin size $1/127.5$.
#
# ### Exercise: `cosine_betas`
#
# Return the $T$ betas $\beta_1..\beta_T$ as a float64 numpy array. With code index `i = 0..T-1` standing for the
# paper's $t = i + 1$: `beta[i] = 1 - alpha_bar((i + 1) / T) / alpha_bar(i / T)`, where `alpha_bar(tau)` can
# use the unnormalised $f$ (the $f(0)$ cancels in the ratio).

# %% slideshow={"slide_type": "fragment"} tags=["exercise"]
def cosine_betas(num_timesteps, s=0.008, max_beta=0.999):
    """beta_1..beta_T of the cosine schedule (Improved DDPM eq. 17), clipped at max_beta."""
    ### BEGIN SOLUTION
    tau = np.arange(num_timesteps + 1, dtype=np.float64) / num_timesteps
    f = np.cos((tau + s) / (1 + s) * math.pi / 2) ** 2
    return np.minimum(1 - f[1:] / f[:-1], max_beta)
    ### END SOLUTION


cosine_betas = check_cosine_betas(cosine_betas)

# %% slideshow={"slide_type": "slide"}
betas = cosine_betas(T)
cosine = GaussianDiffusion(betas)
print(f"sqrt(beta_1) = {math.sqrt(betas[0]):.4f} < 1/127.5 = {1 / 127.5:.4f}; "
      f"clipped betas: {int(np.sum(betas >= 0.999))} (the last)")
print(f"cosine: {np.mean(np.sqrt(cosine.alphas_cumprod) < 0.05):.0%} of the steps keep less than 5% of the signal")
assert np.allclose(betas, get_betas("cosine", T))  # the package's schedule

# %% [markdown] slideshow={"slide_type": "slide"}
# ## 3. $\bar\alpha_t$ through the diffusion (Improved DDPM Figure 5)
#
# The linear schedule's $\bar\alpha_t$ (blue) is near 0 for the whole last third. The cosine one falls linearly in
# the middle and changes slowly near both ends. On the right, the signal-to-noise ratio
# $\bar\alpha_t / (1-\bar\alpha_t)$ on a log scale: the linear schedule's is lower at every step but the last five
# (where the cosine's falls to 0), drops below 1 at $t \approx 260$ (cosine: $\approx 500$) and stays under $10^{-2}$
# from $t \approx 675$ on, where the image is gone.

# %%
schedules = {"linear": linear, "cosine": cosine}
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(8, 3.4), layout="constrained")
plotting.draw_alpha_bar(ax1, schedules)
plotting.draw_snr(ax2, schedules)
plt.show()

# %% [markdown] slideshow={"slide_type": "slide"}
# ## 4. What it looks like (Improved DDPM Figure 3)
#
# The same image and the same noise at evenly spaced $t$ from $0$ to $T-1$, linear on top, cosine below (the
# titles give the code's $t$: the first column is already one step of noise). Look at how many columns of the top
# row are indistinguishable from noise.

# %%
photo = plotting.sample_photo(pick(64, 32))
fig = plotting.latent_grid(photo, schedules, n_cols=pick(10, 6))
plt.show()

# %% [markdown] slideshow={"slide_type": "slide"}
# ## 5. Explore
#
# Move `t` to see $x_t$ under both schedules and where $t$ sits on the $\bar\alpha_t$ curves; change the image to
# see that the smaller it is, the sooner noise wins at the same $\bar\alpha_t$: a $64\times64$ photo keeps its face
# longer than a $16\times16$ one, because each feature spans more pixels and the eye averages the noise away. That
# is why the linear schedule, which works well for large images, is too aggressive for small ones.

# %% slideshow={"slide_type": "slide"}
explorer = ScheduleExplorer(num_timesteps=T, t=600, image="photo 32x32")
explorer

# %% slideshow={"slide_type": "skip"}
before = explorer.image.value
explorer.image_choice.value = "photo 16x16"
explorer.t.value = 750
assert explorer.image.value != before and explorer.titles[0] == "ᾱₜ, t = 750"
explorer.image_choice.value, explorer.t.value = "photo 32x32", 600  # back to the view shown above

# %% [markdown] slideshow={"slide_type": "slide"}
# ## 6. How many steps: $T = 1000$ or $4000$?
#
# Improved DDPM (section 3) also lengthened the chain, from $T = 1000$ to $4000$ steps, and found a better
# log-likelihood. The effect of $T$ alone can be measured without training anything: take data whose best denoiser
# is known exactly (a Gaussian mixture, as in notebook 02: eight bumps on a ring, rounded to 256 levels like
# pixels), the same cosine schedule with several $T$, and the whole bound of each (`calc_bpd_loop`, notebook 03),
# with either fixed variance. The bound can never go below the data's true $-\log p$, which we also know here.

# %% slideshow={"slide_type": "slide"}
angles = np.arange(8) * np.pi / 4
ring = GaussianMixture(0.6 * np.stack([np.cos(angles), np.sin(angles)], 1), std=0.15)
x, _ = ring.sample(pick(1024, 256), generator=torch.Generator().manual_seed(0))
x = ((x.clamp(-1, 1) + 1) * 127.5).round() / 127.5 - 1  # 256 levels in [-1, 1], like 8-bit pixels
true_bpd = -(ring.log_density(x) + 2 * math.log(2 / 255)).mean().item() / (2 * math.log(2))  # density x bin area
print(f"the data's own -log2 p: {true_bpd:.3f} bits/dim")

lengths = pick([250, 1000, 2000, 4000], [1000, 4000])
bounds = {"Σ = β̃ (fixed_small)": [], "Σ = β (fixed_large)": []}
for num_steps in lengths:
    for name, var_type in zip(bounds, ["fixed_small", "fixed_large"]):
        d = GaussianDiffusion(get_betas("cosine", num_steps), var_type=var_type)
        out = d.calc_bpd_loop(ring.eps_model(d), x, clip_denoised=False, generator=torch.Generator().manual_seed(1))
        bounds[name].append(out["total_bpd"].mean().item())
        print(f"T = {num_steps:4d}, {name}: bound {bounds[name][-1]:.3f} bits/dim (L_0 {out['vb'][:, 0].mean():.3f})")

fig, ax = plt.subplots(figsize=(6, 3.2), layout="constrained")
for name, values in bounds.items():
    ax.plot(lengths, values, "o-", label=name)
ax.axhline(true_bpd, color="k", ls="--", label="the data's −log₂ p")
ax.set(xscale="log", xlabel="T (cosine schedule)", ylabel="bits/dim", title="the bound of the exact denoiser")
ax.set_xticks(lengths, [str(k) for k in lengths])
ax.minorticks_off()
ax.legend()
plt.show()
i, j = lengths.index(1000), lengths.index(4000)
print("from T = 1000 to 4000: " + "; ".join(f"{name} {v[i]:.3f} -> {v[j]:.3f}" for name, v in bounds.items()))
print(f"at T = 4000 the better bound is {min(b[j] for b in bounds.values()) - true_bpd:.3f} bits/dim above -log2 p")

# %% [markdown] slideshow={"slide_type": "slide"}
# The denoiser is perfect at every $T$, and yet the bound improves with more steps. With the best possible mean,
# what the bound still loses is the mismatch between each true reverse step and a Gaussian of fixed variance, and
# shorter steps are closer to Gaussian (notebook 02, section 1). The variance matters too: here $\beta$ beats
# $\tilde\beta$ at every $T$: the choice that notebook 04 learns instead. A trained network adds its own
# errors on top, which this experiment leaves out.
#
# ## What to remember
#
# - The linear schedule reaches near-pure noise early: about a quarter of its steps keep less than 5% of the
#   signal, too little to matter for 32×32 or 64×64 images.
# - The cosine schedule defines $\bar\alpha_t$ directly (eq. 17), with $\beta_t$ clipped at 0.999 and an offset
#   $s = 0.008$ for the first steps.
# - Improved DDPM's ablations (Table 1, ImageNet 64×64; Table 2, CIFAR-10) show better log-likelihoods with it. Our
#   digits models agree: 4.28 against 4.34 bits/dim, and a better FID at every number of sampling steps
#   (docs/claims.md, claim 1).
# - More steps tighten the bound even for a perfect denoiser (section 6; Improved DDPM section 3 goes from
#   $T = 1000$ to $4000$).
