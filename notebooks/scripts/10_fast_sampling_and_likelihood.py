# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown] slideshow={"slide_type": "slide"}
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/ddpm-lite/ddpm_lite/blob/main/notebooks/10_fast_sampling_and_likelihood.ipynb)
#
# # 10 · Fewer steps: respacing, DDIM, and what sampling costs
#
# A diffusion model samples by calling its network once per step, and DDPM takes $T = 1000$ steps: a thousand
# forward passes for one image, where a GAN makes one. This is the elephant in the room of the talk: diffusion
# models are **computationally expensive** to sample from. This notebook measures that cost on this machine and
# shows the two standard ways to pay less, both of which reuse a model trained on the full chain:
#
# - **respacing** (Improved DDPM, Nichol & Dhariwal 2021, section 4): sample on a subsequence of the steps;
# - **DDIM** (Song, Meng & Ermon 2021): a deterministic sampler with the same training objective.
#
# DDIM's determinism also runs backwards: a real digit can be encoded into its noise $x_T$ and mixed with another
# there. And what came after the papers: **DPM-Solver++**, a few-step solver of the same ODE. Then the notebook
# asks what a likelihood in **bits/dim** means, the other number diffusion papers report.
#
# *About 35 minutes.* Two exercises; each checks itself when you run it, and "Run all" works before you solve them.

# %% slideshow={"slide_type": "skip"} tags=["colab-setup"]
# In Colab: install ddpm_lite from GitHub (Colab's own torch, numpy and ipywidgets are kept). Elsewhere: nothing.
import sys

if "google.colab" in sys.modules:
    from IPython import get_ipython

    get_ipython().run_line_magic("pip", "install -q git+https://github.com/ddpm-lite/ddpm_lite")

# %% slideshow={"slide_type": "skip"}
import lzma
import math
import time

import matplotlib.pyplot as plt
import numpy as np
import torch

from ddpm_lite import respace, space_timesteps
from ddpm_lite.configs import ExperimentConfig
from ddpm_lite.course import plotting
from ddpm_lite.course.exercises import check_ddim_step, check_respaced_betas, hint  # noqa: F401 - hint() on request
from ddpm_lite.course.fast_sampling import ddim_decode, ddim_encode, lerp, sampling_sweep, slerp, time_sampler
from ddpm_lite.course.learned_variance import interpolation_weights, kl_optimal_variance, xstart_errors
from ddpm_lite.course.widgets import FastSamplingExplorer, LatentInterpolationExplorer
from ddpm_lite.data import load_dataset
from ddpm_lite.images import make_grid
from ddpm_lite.metrics import bits_per_dim, load_digits_feature_net, reference_statistics
from ddpm_lite.pretrained import load_pretrained
from ddpm_lite.runtime import default_device, fast_mode, pick
from ddpm_lite.train import Trainer

device = default_device()  # timings below are of this device: a GPU is much faster, the shape of the curves is not
FAST = fast_mode()  # True in CI (DDPM_LITE_FAST=1): fewer samples and steps. Learners get the full run.
print(f"device: {device}, fast mode: {FAST}")
_ = torch.manual_seed(0)

# %% [markdown] slideshow={"slide_type": "slide"}
# ## 1. The model, and the cost of one step
#
# We use the shipped `digits` model: the ADM U-Net trained on 8×8 digits with Improved DDPM's recipe (cosine
# schedule, $T = 1000$, learned variances $\Sigma_\theta$ with the hybrid loss). Sampling it the DDPM way
# (Algorithm 2) calls it 1000 times.

# %%
model, diffusion, config = load_pretrained("digits", device=device)
T = diffusion.num_timesteps
print(f"{diffusion}\n{sum(p.numel() for p in model.parameters()):,} parameters")

# %% [markdown]
# **Train it yourself (optional).** The shipped model was trained by `Trainer` from the `digits` preset. Set
# `TRAIN = True` to train one here instead (2000 steps: many minutes on a CPU, about one on a GPU); the rest of the
# notebook then uses yours.

# %%
TRAIN = False
if TRAIN:  # on a GPU in mixed precision: about a minute on a Colab T4 by the estimate in docs/gpu.md
    print(f"{'GPU' if device.type == 'cuda' else 'CPU'} path: 2000 steps of the digits preset on {device}")
    trainer = Trainer.from_config(ExperimentConfig.preset("digits"), device=device)
    trainer.train(pick(2000, 10))
    model = trainer.ema.eval()

# %% [markdown]
# One network call on a batch of 64 digits, timed (the median of a few runs), and what the full chain costs:

# %%
x = torch.randn(64, 1, 8, 8, device=device)
t = torch.full((64,), T - 1, device=device)
times = []
with torch.no_grad():
    for _ in range(pick(7, 3)):
        start = time.perf_counter()
        model(x, t)
        if device.type == "cuda":
            torch.cuda.synchronize()  # GPU calls return before the work is done
        times.append(time.perf_counter() - start)
call = float(np.median(times))
print(f"one call on 64 digits: {1000 * call:.1f} ms -> {T} steps: about {T * call:.0f} s for 64 digits of 8x8 pixels")

# %% [markdown] slideshow={"slide_type": "slide"}
# ## 2. Respacing: a shorter chain with the same $\bar\alpha$
#
# The forward process only enters training through $\bar\alpha_t$: $x_t = \sqrt{\bar\alpha_t}\,x_0 +
# \sqrt{1-\bar\alpha_t}\,\epsilon$ (DDPM eq. 4). Pick a subsequence $S = (S_0 < S_1 < \dots < S_{K-1})$ of the
# steps. The chain that visits only the steps of $S$ is again a Gaussian Markov chain with the same marginals, if
# each of its steps carries all the noise of the steps it skips (Improved DDPM section 4):
#
# $$\beta^{S}_i = 1 - \frac{\bar\alpha_{S_i}}{\bar\alpha_{S_{i-1}}}, \qquad \bar\alpha_{S_{-1}} = 1,
#   \qquad \tilde\beta^{S}_i = \frac{1 - \bar\alpha_{S_{i-1}}}{1 - \bar\alpha_{S_i}}\,\beta^{S}_i .$$
#
# The network, trained at every $t$, is simply called at the original steps $S_i$. Its learned variance is an
# interpolation between $\beta$ and $\tilde\beta$ (Improved DDPM eq. 15), which on the respaced chain becomes an
# interpolation between $\beta^S_i$ and $\tilde\beta^S_i$; whether that helps is the question at the end of this
# section.
#
# ### Exercise 1: `respaced_betas`
#
# `betas` is the original schedule (numpy, $T$ values), `kept` the steps to keep, in any order (e.g. the set that
# `space_timesteps` returns). Return the $K$ new betas. Code steps count from 0: `alpha_bar[t]` includes step `t`.

# %% slideshow={"slide_type": "fragment"} tags=["exercise"]
def respaced_betas(betas, kept):
    """beta_i = 1 - alpha_bar[S_i] / alpha_bar[S_{i-1}] over the sorted kept steps S, with alpha_bar[S_{-1}] = 1."""
    ### BEGIN SOLUTION
    alpha_bar = np.cumprod(1 - np.asarray(betas, dtype=np.float64))[sorted(kept)]
    return 1 - alpha_bar / np.append(1.0, alpha_bar[:-1])
    ### END SOLUTION


respaced_betas = check_respaced_betas(respaced_betas)

# %% [markdown]
# The package's `respace` does the same, and the respaced chain reaches every kept step with exactly the original
# $\bar\alpha$:

# %% slideshow={"slide_type": "slide"}
kept = space_timesteps(T, 10)  # 10 evenly spaced steps, the first and the last included
fast10 = respace(diffusion, kept)
assert np.allclose(respaced_betas(diffusion.betas, kept), fast10.betas)
assert np.allclose(fast10.alphas_cumprod, diffusion.alphas_cumprod[sorted(kept)])
print("kept steps:", sorted(kept))
print("new betas: ", np.round(fast10.betas, 4))

fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(8, 3.4), layout="constrained")
ax1.plot(diffusion.alphas_cumprod, label=f"ᾱ of the {T}-step chain")
ax1.plot(sorted(kept), fast10.alphas_cumprod, "o", label="the 10 kept steps")
ax1.set_xlabel("t"), ax1.set_title("ᾱ is the same at the kept steps"), ax1.legend()
ax2.semilogy(diffusion.betas, label="β, original")
ax2.semilogy(sorted(kept), fast10.betas, "o-", label="β, respaced to 10 steps")
ax2.set_xlabel("t"), ax2.set_title("each respaced step carries\nthe noise it skips")
ax2.legend()
plt.show()

# %% [markdown] slideshow={"slide_type": "slide"}
# ### Learned variances with few steps: the paper's result and ours
#
# - **The paper** (Improved DDPM section 4, Figure 8; models trained with $T = 4000$ diffusion steps, for hundreds
#   of thousands of iterations, on CIFAR-10 and ImageNet 64×64): the hybrid-loss model with learned $\Sigma$ stays
#   near its full-chain FID down to about 50-100 sampling steps, better than $L_\text{simple}$ with fixed $\beta$ or
#   $\tilde\beta$; DDIM is better still below about 50 steps.
# - **Our measurement** (`docs/claims.md`, claim 2: 8×8 digits, 2,000 training steps, $T = 1000$ and $T = 4000$,
#   three seeds of 334 samples, FID against the test digits, floor 1.61): with $v$ trained to track $v^*$ (notebook
#   04, section 8), the learned $\Sigma$ beats the same network with the fixed $\beta$ at few steps, as in the
#   paper (at $T = 4000$: 2.45 against 3.31 at 25 steps, 1.95 against 2.10 at 100, significant at 25, 50, 100 and
#   250 steps), and matches the oracle $\Sigma^*$. In this FID it does not beat the fixed $\tilde\beta$: the same
#   network with $\tilde\beta$ is level or better (2.31 at 25 steps, 1.83 at 100), and so is the $L_\text{simple}$
#   model with $\tilde\beta$. In pixel space it does: with six seeds, the Fréchet distance of the raw pixels puts
#   the learned $\Sigma$ closer to the test digits than the same network with $\tilde\beta$ at 25 and 50 steps in
#   every seed ($T = 4000$, 25 steps: 0.887 against 0.925, floor 0.655), and the $\tilde\beta$ samples have less
#   spread, as a perfect model predicts (notebook 04, section 9). DDIM is flat in the number of steps and worse from
#   50 steps on. The paper's claim is reproduced against $\beta$; against $\tilde\beta$ in pixel space, not in the
#   digits-feature FID.
#
# Why the shipped model's learned $\Sigma$ does not help (derived and measured step by step in notebook 04, sections 4
# and 7): its $v$ learns only
# from $L_\text{vlb}$, and its gradient there carries the factor $\log(\beta_t/\tilde\beta_t)$, close to 0 at most
# $t$ of the 1000-step chain the model trains on (a constant weight such as $\lambda = 0.001$ would not matter:
# Adam divides it out of the updates of $v$'s own output weights; a factor near 0 at most $t$ it cannot). On a short
# respaced chain $\beta'$ and $\tilde\beta'$ are far apart at many steps (not at all of them), and there the sampler
# uses a $v$ that training did not shape. The cell measures the gap on each chain, then compares, at the steps of
# the 10-step chain, the model's $v$ with the $v^*$ that step needs: the $v$ whose $\Sigma$ minimises the step's
# term of the bound given the model's own error of $\hat x_0$ (`kl_optimal_variance`, notebook 04 section 7).

# %% slideshow={"slide_type": "slide"}
gap = np.log(diffusion.betas[1:] / diffusion.posterior_variance[1:])  # t = 1..T-1 (beta-tilde_0 = 0)
print(f"{T}-step chain: median log(β/β̃) = {np.median(gap):.4f}; below 0.01 at {np.mean(gap < 0.01):.0%} of the steps")
chains = {f"{k} steps": respace(diffusion, k) for k in [10, 25, 50, 100]}
for label, chain in chains.items():
    ratio = chain.betas[1:] / chain.posterior_variance[1:]
    print(f"{label:>9}: β'/β̃' > 1.1 at {np.mean(ratio > 1.1):.0%} of the steps, median log(β'/β̃') "
          f"{np.median(np.log(ratio)):.3f}")

chain = chains["10 steps"]
digits = load_dataset("digits", "test").images[: pick(64, 16)]
kept = chain.timestep_map.numpy()
errors = xstart_errors(model, diffusion, digits, kept, generator=torch.Generator(device=device).manual_seed(0))
needed = kl_optimal_variance(chain, errors)  # steps 1..9: t, beta, beta_tilde, sigma, v
v_model = interpolation_weights(model, diffusion, digits, needed["t"],
                                generator=torch.Generator(device=device).manual_seed(0))
print("t:        ", needed["t"].tolist())
print("model's v:", np.round(v_model, 2).tolist())
print("needed v*:", np.round(needed["v"], 2).tolist())
fig = plotting.variance_gap_figure(diffusion, chains, {"the model's v": (needed["t"], v_model),
                                                       "v* needed, 10-step chain": (needed["t"], needed["v"])})
plt.show()
assert np.median(gap) < 0.01 and np.mean(chain.betas[1:] > 1.1 * chain.posterior_variance[1:]) > 0.5

# %% [markdown] slideshow={"slide_type": "slide"}
# The gap is wide at most steps of the 10-step chain and only near $t = 0$ on the full chain. At most steps the
# model uses a $v$ well above the $v^*$ its own errors call for: its steps add more noise than they should. That is
# consistent with the FIDs above: the fixed $\tilde\beta$ ($v = 0$, closer to what these steps need) beats it at 10
# steps, and the fixed $\beta$ ($v = 1$) does worse still. Models whose $v$ is trained at every $t$ (notebook 04,
# section 8) fix the first half of that: their learned $\Sigma$ beats the fixed $\beta$ at few steps, as in the
# paper, and $\tilde\beta$ only in pixel space, not in the digits-feature FID (notebook 04, section 9;
# `docs/claims.md`, claim 2). The paper's models were trained
# far longer, on larger images, and with $T = 4000$, where the gap on the training chain is smaller still (median
# $\log(\beta_t/\tilde\beta_t)$ of 0.0008).
#
# ## 3. DDIM: a deterministic sampler for the same model
#
# Song et al. (2021) noticed that the training loss only depends on the marginals $q(x_t \mid x_0)$, and that
# many non-Markovian forward processes share them. Each gives a reverse step that first predicts
# $\hat x_0 = (x_t - \sqrt{1-\bar\alpha_t}\,\epsilon_\theta) / \sqrt{\bar\alpha_t}$, then moves it to the previous
# step (DDIM eq. 12):
#
# $$x_{t-1} = \sqrt{\bar\alpha_{t-1}}\,\hat x_0 + \sqrt{1 - \bar\alpha_{t-1} - \sigma_t^2}\;\epsilon_\theta(x_t, t)
#   + \sigma_t z, \qquad
#   \sigma_t = \eta\,\sqrt{\frac{1-\bar\alpha_{t-1}}{1-\bar\alpha_t}}\,\sqrt{1 - \frac{\bar\alpha_t}{\bar\alpha_{t-1}}}
#   \quad\text{(eq. 16)}.$$
#
# $\eta = 1$ is DDPM's ancestral sampler with the variance $\tilde\beta_t$; $\eta = 0$ adds no noise: $x_T$ decides
# the image. On a respaced chain, $t-1$ means the previous kept step, and $\bar\alpha$ the kept values.
#
# ### Exercise 2: `ddim_step`
#
# `x_t`, `eps` and `noise` are tensors of one shape; `alpha_bar`, `alpha_bar_prev` and `eta` are plain numbers
# (use `** 0.5` or `math.sqrt`, not `torch.sqrt`). Return $x_{t-1}$.

# %% slideshow={"slide_type": "slide"} tags=["exercise"]
def ddim_step(x_t, eps, alpha_bar, alpha_bar_prev, eta, noise):
    """One DDIM step (eq. 12) from x_t, given the predicted noise eps."""
    ### BEGIN SOLUTION
    x0 = (x_t - (1 - alpha_bar) ** 0.5 * eps) / alpha_bar ** 0.5
    sigma = eta * ((1 - alpha_bar_prev) / (1 - alpha_bar)) ** 0.5 * (1 - alpha_bar / alpha_bar_prev) ** 0.5
    return alpha_bar_prev ** 0.5 * x0 + (1 - alpha_bar_prev - sigma ** 2) ** 0.5 * eps + sigma * noise
    ### END SOLUTION


ddim_step = check_ddim_step(ddim_step)

# %% [markdown]
# Your step makes a complete sampler. Run it for 10 steps on the respaced chain, calling the network at the original
# timesteps `fast10.timestep_map[i]` (its first channel is $\epsilon_\theta$, the second the variance, which DDIM
# does not use), and compare with the package's `ddim_sample_loop` from the same $x_T$.
#
# One detail matters in practice: at the first step $\bar\alpha_t$ is nearly 0, and $\hat x_0 = (x_t -
# \sqrt{1-\bar\alpha_t}\,\epsilon_\theta)/\sqrt{\bar\alpha_t}$ multiplies the network's small errors by
# $1/\sqrt{\bar\alpha_t}$. Samplers therefore **clip** $\hat x_0$ to the data range $[-1, 1]$ and recompute the
# $\epsilon$ that goes with it (the package does so by default, `clip_denoised=True`). Remove the two clipping lines
# below to see what happens without.

# %% slideshow={"slide_type": "slide"}
x_T = torch.randn(16, 1, 8, 8, generator=torch.Generator().manual_seed(1)).to(device)
x = x_T
for i in reversed(range(fast10.num_timesteps)):
    t_model = torch.full((len(x),), int(fast10.timestep_map[i]), device=device)
    with torch.no_grad():
        eps = model(x, t_model)[:, :1]
    ab = float(fast10.alphas_cumprod[i])
    x0_hat = ((x - (1 - ab) ** 0.5 * eps) / ab ** 0.5).clamp(-1, 1)  # clip x0 to the data range ...
    eps = (x - ab ** 0.5 * x0_hat) / (1 - ab) ** 0.5  # ... and take the eps that goes with it
    x = ddim_step(x, eps, ab, float(fast10.alphas_cumprod_prev[i]), 0.0, torch.zeros_like(x))
package = fast10.ddim_sample_loop(model, x.shape, noise=x_T, eta=0.0)
print(f"largest difference from the package: {(x - package).abs().max():.1e} (float32 rounding)")
assert torch.allclose(x.float(), package, atol=5e-3)

fig, axes = plt.subplots(1, 2, figsize=(6, 3.2), layout="constrained")
for ax, images, title in zip(axes, [x_T, x], ["x_T (noise)", "your DDIM, 10 steps"]):
    ax.imshow(make_grid(images.cpu()), cmap="gray", vmin=0, vmax=255, interpolation="nearest")
    ax.set_title(title), ax.axis("off")
plt.show()

# %% [markdown] slideshow={"slide_type": "slide"}
# ## 4. Quality against steps
#
# How much is lost with fewer steps? We sample the same starting noise with three samplers at several step counts,
# time each run, and score it with **FID** (notebook 09): the Fréchet distance between Gaussians fitted to features
# of the samples and of the held-out test digits, here with the shipped digits feature network. FID is biased
# upwards by small sample sizes, so every run has the same number of samples; the dashed line is the FID of as many
# *real* training digits (the best a sampler can do at this size), and the grey band its spread over five random
# draws of them: differences smaller than the band are noise.
#
# This is the slow cell of the notebook: the 1000-step ancestral run alone makes 1000 network calls.

# %%
n_samples = pick(128, 32)
step_counts = pick([5, 10, 25, 50, 100, T], [5, 10, 25])
net = load_digits_feature_net(device=device)
reference = reference_statistics("digits", "test", net)  # (mu, sigma) of the test digits' features, cached on disk
train_images = load_dataset("digits", "train").images
sweep = sampling_sweep(model, diffusion, step_counts, n_samples, extractor=net, reference=reference,
                       real_images=train_images, device=device, progress=True,
                       samplers=["ancestral", "DDIM η=0", "DDIM η=1"],  # section 6 adds a fourth
                       skip=[("DDIM η=0", T), ("DDIM η=1", T)])  # DDIM at all 1000 steps: 2000 more calls
print(sweep.table())

# %% slideshow={"slide_type": "slide"}
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(8, 4.0), layout="constrained")
plotting.draw_fid_vs_steps(ax1, sweep, legend=False)
plotting.draw_speed_vs_steps(ax2, sweep, legend=False)
plotting.legend_below(fig, ax1, ax2)  # one legend for both, under them
ax1.set_title("quality: FID (lower is better)")
ax2.set_title(f"cost: samples per second on {device}")
plt.show()

few, many = sweep.get("ancestral", step_counts[0]), sweep.get("ancestral", step_counts[-1])
print(f"ancestral: {few.steps} steps take {few.seconds:.2f} s, {many.steps} steps {many.seconds:.2f} s "
      f"({many.seconds / few.seconds:.0f}x for {many.steps // few.steps}x the network calls)")
assert many.seconds > few.seconds and all(math.isfinite(p.fid) for p in sweep.points)
if not FAST:  # 5 ancestral steps are far outside the noise of real data
    assert sweep.get("ancestral", 5).fid > sweep.real_fid + 3 * sweep.real_fid_std

# %% [markdown] slideshow={"slide_type": "slide"}
# What to look for (the numbers above are measured in this run, so they move a little from run to run):
#
# - **Time is proportional to steps.** Samples per second fall like $1/K$: the dotted line. Every sampler pays one
#   network call per step, and nothing else costs anything. That is the elephant: to be 100× faster you need 100×
#   fewer steps, or a 100× cheaper network. A GAN makes one call.
# - **Very few steps cost quality**, the ancestral sampler first: at 5 steps its digits are still grainy (see the
#   widget) and its FID far above the band. DDIM holds up better with few steps (Song et al. Table 1 find
#   $\eta = 0$ the best there on CIFAR-10; compare with what you measure here).
# - **Beyond a few dozen steps the samplers are indistinguishable** at this sample size: the points sit in the
#   band, and the remaining ~950 steps of the full chain buy nothing measurable. Improved DDPM (Figure 8, models
#   trained with $T = 4000$) finds 50-100 steps enough for near-optimal FID with learned variances (section 2 for
#   what we measure with ours).
# - With $\eta = 0$ the same $x_T$ gives nearly the same digit at every step count; with the ancestral sampler it
#   does not. The next cell shows it.
#
# ### Why DDIM with $\eta = 0$ keeps the digit: an ODE
#
# A trained $\epsilon$ approximates a scaled score, $\epsilon_\theta(x_t, t) \approx -\sqrt{1-\bar\alpha_t}\,
# \nabla \log p_t(x_t)$ ([02 · The score view](02_reverse_process.ipynb)). Besides the noisy reverse process, the
# score defines a deterministic one with the same marginals $p_t$: the **probability-flow ODE** (Song et al. 2021,
# "Score-Based Generative Modeling through SDEs"). DDIM with $\eta = 0$ discretises such an ODE (DDIM section 4.3):
# in the variables $\bar x = x/\sqrt{\bar\alpha}$ and $\sigma = \sqrt{(1-\bar\alpha)/\bar\alpha}$, one DDIM step
# is one Euler step of $d\bar x = \epsilon_\theta\, d\sigma$. An ODE carries each $x_T$ to one $x_0$, and more
# steps only solve it more accurately: the digit drawn from a given $x_T$ hardly depends on the step count. The
# ancestral sampler (like DDIM with $\eta = 1$) adds fresh noise at every step, and the step count changes the
# whole path.
#
# Below, from the sweep above (nothing is recomputed): the first 8 samples at every step count, the same $x_T$ in
# every row; at the right of each row, the share of all the samples whose class (by the digits classifier)
# matches the class that sampler gives at its largest step count.

# %% slideshow={"slide_type": "slide"}
@torch.no_grad()
def digit_classes(images):
    return net.logits(images.to(device)).argmax(1).cpu()


agreement = {}
for sampler in ["ancestral", "DDIM η=0"]:
    ks = sweep.steps_of(sampler)
    final = digit_classes(sweep.get(sampler, ks[-1]).samples)
    agreement[sampler] = [(digit_classes(sweep.get(sampler, k).samples) == final).float().mean().item() for k in ks]
    print(f"{sampler:>9}: same class as at {ks[-1]} steps: "
          + ", ".join(f"{k} steps {a:.0%}" for k, a in zip(ks, agreement[sampler])))
fig = plotting.same_noise_figure(sweep, ["ancestral", "DDIM η=0"], agreement=agreement)
plt.show()
assert agreement["DDIM η=0"][0] > agreement["ancestral"][0] + 0.3  # fewest steps: DDIM keeps most digits

# %% [markdown] slideshow={"slide_type": "slide"}
# ## 5. DDIM inversion: from a digit back to its noise
#
# An ODE can be run both ways. Integrating DDIM's ODE from a real image $x_0$ towards $t = T$ gives the $x_T$ that
# DDIM with $\eta = 0$ decodes back into (nearly) that image: **DDIM inversion**, each step the DDIM step of eq. 12
# with $\sigma_t = 0$ taken forward in time (Song et al. 2021, section 5.4, reconstruct CIFAR-10 test images this
# way; their Table 2 shows the error falling with the number of steps). The package has it under the reference
# code's names, `ddim_reverse_sample` and `ddim_reverse_sample_loop`; `ddim_encode` and `ddim_decode`
# (`ddpm_lite.course.fast_sampling`) run it on $K$ respaced steps, $K$ network calls each way.
#
# Below: real test digits (never seen in training) encoded and decoded with $K$ steps each way, and the RMS error
# of the round trip (the data lie in $[-1, 1]$; one 8-bit grey level is $2/255 \approx 0.008$).

# %% slideshow={"slide_type": "slide"}
test_set = load_dataset("digits", "test")
inv_digits = test_set.images[: pick(64, 8)]
inv_steps = pick([10, 50, 100, 1000], [5, 20])
latents, decoded, rms = {}, {}, {}
for k in inv_steps:
    latents[k] = ddim_encode(model, diffusion, inv_digits, k, device=device)
    decoded[k] = ddim_decode(model, diffusion, latents[k], k, device=device)
    rms[k] = (decoded[k] - inv_digits).pow(2).mean().sqrt().item()
    print(f"{k:>5} steps each way: round-trip RMS {rms[k]:.4f} over {len(inv_digits)} test digits")
fig = plotting.inversion_figure(rms, inv_digits[:8], {k: decoded[k][:8] for k in inv_steps})
plt.show()
assert rms[inv_steps[-1]] < rms[inv_steps[0]]  # more steps, a more exact inverse

# %% [markdown] slideshow={"slide_type": "slide"}
# With few steps the two discretisations do not undo each other: each step assumes $\hat x_0$ constant over a long
# jump, and forwards and backwards make different errors. With more steps both approach the same ODE and the round
# trip approaches the identity: in our run of the full-mode settings (2026-11-30, 64 test digits) the RMS fell
# from 0.28 at 10 steps to 0.066 at 50, 0.054 at 100 and 0.0016 at 1000, a fifth of a grey level.
# So every test digit has a latent $x_T$ from which the sampler draws it.
#
# ### Mixing two digits through their latents: slerp, not lerp
#
# What lies *between* the latents of two digits? Not the straight line. A latent is meant to look like a sample
# of $\mathcal N(0, I)$ in $d = 64$ dimensions, and such samples all have nearly the same norm, $\|x_T\| \approx
# \sqrt d = 8$. The midpoint of two independent ones, $(a + b)/2$, has variance $1/2$ per pixel: norm about
# $8/\sqrt 2 \approx 5.7$, a latent the sampler never starts from. Spherical interpolation (slerp; White 2016,
# "Sampling Generative Networks"; the DDIM authors' code mixes latents with it for section 5.3's interpolations)
# moves along the great circle instead:
#
# $$\operatorname{slerp}(a, b; w) = \frac{\sin((1-w)\,\Omega)}{\sin\Omega}\,a + \frac{\sin(w\,\Omega)}{\sin\Omega}\,b,
#   \qquad \cos\Omega = \frac{\langle a, b\rangle}{\|a\|\,\|b\|},$$
#
# which keeps the norm when $\|a\| = \|b\|$. The numbers, for fresh Gaussians and for our digits' latents:

# %% slideshow={"slide_type": "slide"}
z = torch.randn(2, 10_000, 1, 8, 8, generator=torch.Generator().manual_seed(0))
norm = lambda x: x.flatten(1).norm(dim=1)  # noqa: E731 - one line
k_mid = inv_steps[len(inv_steps) // 2]
a, b = latents[k_mid][0::2], latents[k_mid][1::2]
print(f"N(0, I) in d = 64:   |x_T| = {norm(z[0]).mean():.2f} ± {norm(z[0]).std():.2f}; midpoint: lerp "
      f"{norm(lerp(z[0], z[1], 0.5)).mean():.2f}, slerp {norm(slerp(z[0], z[1], 0.5)).mean():.2f}")
print(f"test digits' x_T ({k_mid} steps): |x_T| = {norm(latents[k_mid]).mean():.2f} ± "
      f"{norm(latents[k_mid]).std():.2f}; midpoint: lerp {norm(lerp(a, b, 0.5)).mean():.2f}, "
      f"slerp {norm(slerp(a, b, 0.5)).mean():.2f}")
assert norm(lerp(z[0], z[1], 0.5)).mean() < 0.75 * norm(slerp(z[0], z[1], 0.5)).mean()

# %% [markdown] slideshow={"slide_type": "slide"}
# The linear midpoint loses about 30% of the norm (a factor $1/\sqrt 2$ for independent latents); slerp keeps it.
# Our encoded digits have latents somewhat shorter than a fresh Gaussian's (norm 7.0 against 8.0 at 100 steps in our
# full run), and the linear midpoint shortens them further still (4.95 there).
#
# Pick two test digits and move $w$: the top row decodes the slerp mixes, the bottom row the linear ones, both with
# DDIM on the same steps; at the right, the norm of the mixed latent. On these 8×8 digits the two rows often look
# alike, but not for the 4 and the 9 shown first: with 50 steps the slerp path goes through 9s, the linear one
# through 0s. The norm shows why: the linear mix leaves the latents the sampler starts from.

# %% slideshow={"slide_type": "slide"}
one_each = [int(torch.nonzero(test_set.labels == c)[0]) for c in range(10)]  # the first test digit of each class
interpolation = LatentInterpolationExplorer(model, diffusion, test_set.images[one_each], test_set.labels[one_each],
                                            steps=pick(50, 10), first=4, second=9, device=device)
interpolation

# %% slideshow={"slide_type": "skip"}
before, decodes = interpolation.image.value, interpolation.decodes
interpolation.weight.value = 0.25
assert interpolation.image.value != before and interpolation.decodes == decodes  # the pair's mixes are kept
interpolation.second.value = 7
assert interpolation.decodes == decodes + 1 and interpolation.titles[0].startswith("#4: a 4 → #7: a 7")
print(interpolation.titles[0])
interpolation.weight.value, interpolation.second.value = 0.5, 9  # back to the view shown above

# %% [markdown] slideshow={"slide_type": "slide"}
# ## 6. What came after the papers: DPM-Solver++
#
# DDIM with $\eta = 0$ is a first-order solver of the probability-flow ODE: over each step it holds the model's
# $\hat x_0$ constant. Later work solved the same ODE more accurately with the same network calls. **DPM-Solver++**
# (Lu et al. 2022, arXiv 2211.01095) writes the exact solution of the step in $\lambda = \log(\sqrt{\bar\alpha} /
# \sqrt{1-\bar\alpha})$ with the data prediction $\hat x_0$; its multistep second-order variant, **(2M)**
# (the paper's Algorithm 2), replaces $\hat x_0$ in the step by a linear extrapolation from the previous step's
# prediction, at no extra call. Its error falls as $1/K^2$ where DDIM's falls as $1/K$. The paper reports
# high-quality *guided* samples in 15 to 20 steps, where DDIM generally needs 100 to 250 (its abstract).
#
# `dpm_solver_sample_loop` (`ddpm_lite.dpm_solver`) runs it on our model unchanged; in the sweep of section 4 it is
# one more sampler, "DPM-Solver++(2M)", on the same starting noise and the same FID reference.

# %% slideshow={"slide_type": "slide"}
solver_steps = pick([5, 10, 15, 25], [5, 10])
solver_sweep = sampling_sweep(model, diffusion, solver_steps, n_samples, samplers=["DPM-Solver++(2M)"],
                              extractor=net, reference=reference, device=device, progress=True)
sweep_all = sweep.merged(solver_sweep)  # the four samplers, one floor
print(sweep_all.table())

fig, ax = plt.subplots(figsize=(6.0, 4.0), layout="constrained")
plotting.draw_fid_vs_steps(ax, sweep_all)
ax.set_title("FID against network calls")
plt.show()

# %% [markdown] slideshow={"slide_type": "slide"}
# The clock: 64 digits with 10 network calls each, every sampler, timed here (the best of a few runs), beside the
# full 1000-step chain estimated from the cost of one call (section 1):

# %%
clock = {}
for name in ["ancestral", "DDIM η=0", "DPM-Solver++(2M)"]:
    clock[name] = min(time_sampler(model, diffusion, 64, 10, name, device=device)[1] for _ in range(pick(3, 1)))
    fid = sweep_all.get(name, 10).fid
    print(f"{name:<17} 10 calls: {clock[name]:.2f} s for 64 digits (FID {fid:.2f} at {n_samples} samples)")
print(f"ancestral, {T} steps: about {T * call:.0f} s for 64 digits; real-data floor FID {sweep_all.real_fid:.2f} "
      f"± {sweep_all.real_fid_std:.2f}")
assert math.isfinite(sweep_all.get("DPM-Solver++(2M)", 10).fid)
if not FAST:  # 10 ancestral steps are far from the floor; the solver's 10 are not
    assert sweep_all.get("DPM-Solver++(2M)", 10).fid < sweep_all.get("ancestral", 10).fid

# %% [markdown] slideshow={"slide_type": "slide"}
# What to look for (one draw of samples per point: differences within the grey band are noise):
#
# - **Few calls.** At 5 and 10 calls the ancestral sampler (with the model's learned variances) is far above the
#   band, DDIM with $\eta = 0$ above it or at its edge, DPM-Solver++(2M) inside it. Our full run (2026-11-30, one
#   thread of a shared 2-core CPU, 128 samples; floor 3.57 ± 0.67) gave at 5 calls FID 14.10, 5.02 and 3.86, at 10
#   calls 6.75, 4.25 and 3.78; the 1000-step ancestral chain scored 4.41. DDIM with $\eta = 1$ (fresh noise of
#   $\tilde\beta$ at each step) reached the band at 10 calls too (2.75, just below it), not at 5 (4.70).
# - **The same clock.** Every sampler pays one network call per step and little else: in that run 64 digits in 10
#   calls took 0.34 to 0.39 s with each of them, and one call 65 ms, so about 65 s for the full chain's 1000.
# - **Small images, small gap.** On 8×8 digits DDIM is not far behind; the paper's gains are measured in guided
#   sampling of large pixel-space and latent-space models (its abstract), where each call costs far more.
#   `tests/test_dpm_solver.py` checks the two orders on data whose ODE is solved exactly: the error falls as
#   $1/K^2$ for DPM-Solver++(2M) and as $1/K$ for DDIM; the solver's docstring records how we chose its timesteps.

# %% [markdown] slideshow={"slide_type": "slide"}
# ## 7. Explore
#
# Move `steps` and switch the sampler: the samples at that setting, its FID and its measured time, all from the
# sweeps above, all four samplers (nothing is recomputed). The red ring marks the point on the curves.

# %% slideshow={"slide_type": "slide"}
explorer = FastSamplingExplorer(sweep_all, sampler="DDIM η=0", steps=step_counts[1])
explorer

# %% slideshow={"slide_type": "skip"}
before = explorer.image.value
explorer.steps.value = step_counts[0]
explorer.sampler.value = "ancestral"
assert explorer.image.value != before and explorer.point is sweep_all.get("ancestral", step_counts[0])
print(explorer.titles[0])
explorer.sampler.value, explorer.steps.value = "DDIM η=0", step_counts[1]  # back to the view shown above

# %% [markdown] slideshow={"slide_type": "slide"}
# ## 8. Likelihood in bits/dim
#
# The variational bound of notebook 03 (DDPM eq. 5) is an upper bound on $-\log p_\theta(x_0)$. Divided by the
# number of dimensions $D$ (64 pixels here) and by $\ln 2$ it is **bits per dimension**: how many bits a code built
# from the model would need, on average, to store one pixel of a test image. It needs the discrete decoder
# $L_0$ (DDPM eq. 13): pixels are 8-bit, so the model gives a probability to each of 256 bins of width $2/255$.
# `bits_per_dim` runs every term of the bound, $T$ network calls per image (the NLL columns of Improved DDPM
# Tables 1-3 are such numbers).
#
# The same bound can be computed on a respaced chain: it is then the bound of the $K$-step model that samples with
# those steps. Fewer steps, looser bound: likelihood wants many steps too. (How the length of the *training* chain,
# $T = 1000$ against 4000, moves the bound is notebook 05, section 6.)

# %%
test_images = load_dataset("digits", "test").images
n_bpd = pick(32, 4)
bpd_steps = pick([10, 50, 100, T], [10, 50])
bpd = {}
for k in bpd_steps:
    chain = diffusion if k == T else respace(diffusion, k)
    bpd[k] = bits_per_dim(chain, model, test_images[:n_bpd], progress=False,
                          generator=torch.Generator(device=device).manual_seed(0))
    print(f"{k:>5} steps: {bpd[k]['mean']:.3f} ± {bpd[k]['stderr']:.3f} bits/dim  "
          f"(L_0 {bpd[k]['decoder_bpd']:.3f}, L_1..L_(K-1) {bpd[k]['kl_bpd']:.3f}, L_T {bpd[k]['prior_bpd']:.5f})")
best = bpd[bpd_steps[-1]]
assert bpd[bpd_steps[0]]["mean"] > best["mean"]  # the bound is looser with fewer steps

# %% [markdown] slideshow={"slide_type": "slide"}
# What is a good number? Compare with codes for the same test pixels that need no diffusion model:
#
# - **8 bits/dim**: storing each 8-bit pixel as it is (a uniform model over 256 values);
# - **a per-pixel histogram**: each of the 64 pixels gets its own distribution over 256 values, counted on the
#   training digits (with a small pseudo-count), ignoring its neighbours;
# - **lzma**, a real compressor, on the raw bytes of all the test digits (it learns while it reads).
#
# And one fact about this data: scikit-learn's digits have only 17 grey levels (0 to 16), so a model that learned
# just that, and nothing else, would pay at most $\log_2 17 = 4.09$ bits/dim.

# %% slideshow={"slide_type": "slide"}
def to_bytes(images):
    return ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).flatten(1).numpy()


train_bytes, test_bytes = to_bytes(train_images), to_bytes(test_images)
counts = np.stack([np.bincount(train_bytes[:, j], minlength=256) for j in range(64)]) + 0.1
log_p = np.log2(counts / counts.sum(1, keepdims=True))
histogram_bpd = -log_p[np.arange(64), test_bytes].mean()
lzma_bpd = 8 * len(lzma.compress(test_bytes.tobytes(), preset=9)) / test_bytes.size
print(f"raw 8-bit pixels:     8.000 bits/dim\nper-pixel histogram:  {histogram_bpd:.3f}\n"
      f"lzma (test set):      {lzma_bpd:.3f}\ndiffusion, {bpd_steps[-1]} steps: {best['mean']:.3f} (an upper bound)")

assert histogram_bpd < best["mean"] < 8  # better than raw pixels, worse than the histogram: see below

fig = plotting.vb_terms_figure(best["vb"], best["prior_bpd"])
plt.show()

# %% [markdown] slideshow={"slide_type": "slide"}
# The diffusion model beats raw pixels but **loses to the per-pixel histogram**, and this is no bug. The digits use
# only 17 of the 256 grey levels; the histogram puts all its probability on those, while the diffusion model's
# decoder $L_0$ is a Gaussian cut into 256 bins (DDPM eq. 13), which spreads probability over neighbouring levels
# that never occur, and the bound adds the cost of the whole chain on top. Bits/dim rewards modelling the exact
# 8-bit values; these toy digits are far from 8-bit photos, where every level occurs and neighbouring pixels are
# strongly correlated. There the order flips: diffusion models reach about 2.9 bits/dim on CIFAR-10 (Improved DDPM
# Tables 2 and 3), where a per-pixel model needs far more.
#
# The figure shows where the bits go: most of the bound is paid in the first, least noisy steps, where the model
# must pin down the exact pixel values; the many noisy steps cost little. Bits/dim and FID measure different things:
# a model can put probability on every test image (good likelihood) and still draw blurry samples, or draw sharp
# samples and miss whole modes. Improved DDPM improves both; Beat GANs targets FID.
#
# ## What to remember
#
# - Sampling costs one network call per step: the time is proportional to the step count, as measured above.
# - **Respacing** keeps a subset $S$ of the steps and recomputes $\beta^S_i = 1 - \bar\alpha_{S_i} /
#   \bar\alpha_{S_{i-1}}$; the trained model is reused as it is.
# - Learned variances are meant to adapt to the longer jumps (Improved DDPM Figure 8: $T = 4000$, long training);
#   on our digits the fixed $\tilde\beta$ samples best at 10 steps (measured above), because the shipped model's
#   $v$ gets almost no gradient where $\beta_t \approx \tilde\beta_t$, most of the 1000-step chain; with $v$
#   trained, the learned $\Sigma$ beats $\beta$, and $\tilde\beta$ only in pixel space (`docs/claims.md`, claim 2).
# - **DDIM** (eq. 12) predicts $\hat x_0$ and jumps; $\eta = 0$ is deterministic, a discretisation of the
#   probability-flow ODE: the same $x_T$ gives nearly the same digit at any step count.
# - Run backwards, the ODE **encodes** a real image into its $x_T$ (DDIM inversion); the round trip gets exact as
#   the steps grow. Mix latents with **slerp**: the linear midpoint of two independent Gaussian latents has
#   $1/\sqrt 2$ of their norm ($\sqrt d$).
# - **DPM-Solver++(2M)** solves the same ODE to second order at one call per step: good samples in about 10 calls.
# - **Bits/dim** is the bound $L_{vlb}$ per pixel in bits, an upper bound on the code length of the test images
#   under the model: 8 is raw pixels, lower is better; fewer steps make it looser.
#
# Next: notebook 11, diffusion beyond images.
