# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/ddpm-lite/ddpm_lite/blob/main/notebooks/04_learned_variance.ipynb)
#
# # 04 · Learned variances: Σ between β and β̃
#
# DDPM learns only the mean of each reverse step and fixes its variance $\sigma_t^2$ to $\beta_t$ or
# $\tilde\beta_t$; both gave the same samples. Improved DDPM (Nichol & Dhariwal 2021, section 3.1) shows where
# the choice does matter (the log-likelihood, and sampling with few steps) and lets the network **learn** the
# variance: as a weight $v$ between those two values, in log space (eq. 15), trained by a hybrid loss (eq. 16).
#
# *About 20 minutes.* One exercise; it checks itself when you run it, and "Run all" works before you solve it.

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

from ddpm_lite import GaussianDiffusion, respace
from ddpm_lite.course import plotting
from ddpm_lite.course.exercises import check_learned_range_log_variance
from ddpm_lite.course.learned_variance import MeanOnly, interpolation_weights, with_variance
from ddpm_lite.course.widgets import VarianceExplorer
from ddpm_lite.data import load_dataset
from ddpm_lite.metrics import compute_fid, load_digits_feature_net, reference_statistics
from ddpm_lite.pretrained import load_pretrained
from ddpm_lite.runtime import default_device, fast_mode, pick

device = default_device()  # sampling the digits U-Net below is faster on a GPU, and fine on a CPU
FAST = fast_mode()  # True in CI (DDPM_LITE_FAST=1): fewer images and samples. Learners get the full run.
print(f"device: {device}, fast mode: {FAST}")
_ = torch.manual_seed(0)

# %% [markdown]
# ## 1. Two fixed variances that (almost) agree
#
# The reverse step is $p_\theta(x_{t-1} \mid x_t) = \mathcal{N}(\mu_\theta(x_t, t), \Sigma_\theta(x_t, t))$. DDPM
# (section 3.2) tried two fixed $\Sigma = \sigma_t^2 \mathbf{I}$: the forward step's $\beta_t$, and the posterior
# variance of notebook 02, $\tilde\beta_t = \frac{1-\bar\alpha_{t-1}}{1-\bar\alpha_t}\beta_t$. They are the
# extremes: $\beta_t$ is optimal if the data were $\mathcal{N}(0, \mathbf{I})$, $\tilde\beta_t$ if the data were
# one single point. Their ratio (Improved DDPM Figure 1) is 1 almost everywhere, and far from it only in the first
# steps:

# %%
fig = plotting.variance_ratio_figure(num_timesteps=(100, 1000, 4000))
plt.show()

model, diffusion, config = load_pretrained("digits", device=device)  # the shipped model: cosine, T = 1000
T = diffusion.num_timesteps
betas = torch.from_numpy(diffusion.betas)  # float64
ratio = diffusion.posterior_variance[1:] / diffusion.betas[1:]
print(f"cosine, T = {T}: beta-tilde / beta < 0.9 for the first {np.argmax(ratio >= 0.9) + 1} steps, "
      f"then between 0.9 and 1; at t = 1 it is {ratio[0]:.3f}")

# %% [markdown]
# So with $T = 1000$ steps the mean $\mu_\theta$ decides the samples, and $\Sigma$ hardly matters: DDPM's finding.
# But notebook 03 showed that the **first steps carry most of the variational bound**, and that is where the two
# choices differ. A better $\Sigma$ there means a better log-likelihood. With **fewer** sampling steps (section 6)
# every step is large, and $\beta$ and $\tilde\beta$ differ everywhere.
#
# ## 2. Learning Σ: an interpolation in log space (eq. 15)
#
# Predicting $\Sigma$ directly is hard: the right values lie in the thin band between $\tilde\beta_t$ and
# $\beta_t$, and span orders of magnitude along the chain. Improved DDPM lets the network output, per dimension, a
# weight $v$ and sets
#
# $$\Sigma_\theta(x_t, t) = \exp\big(v \log\beta_t + (1 - v)\log\tilde\beta_t\big).$$
#
# $v = 0$ gives $\tilde\beta_t$, $v = 1$ gives $\beta_t$; $v$ is not constrained to $[0, 1]$, but the paper never
# saw the network leave that range. The U-Net outputs twice the image's channels: the noise $\epsilon$, then
# values in about $[-1, 1]$ that the code maps to $v = (\text{output} + 1)/2$ (`var_type="learned_range"`).
#
# One detail: $\tilde\beta$ at the first step is 0 ($\bar\alpha_{t-1} = 1$ there), and $\log 0 = -\infty$. The
# reference code replaces it by $\tilde\beta$ of the second step ("clipped").
#
# ### Exercise: `learned_range_log_variance`
#
# Given $v$ (any shape `(B, ...)`), the timesteps `t` `(B,)` and the `betas`, return $\log\Sigma$ with the shape of
# `v`. Compute $\tilde\beta_t$ from `betas` as in notebook 02, with $\tilde\beta_0$ replaced by $\tilde\beta_1$.

# %% tags=["exercise"]
def learned_range_log_variance(v, t, betas):
    """log Sigma_t = v log beta_t + (1 - v) log beta-tilde_t (Improved DDPM eq. 15), beta-tilde_0 -> beta-tilde_1."""
    ### BEGIN SOLUTION hint: beta_tilde = (1 - alpha_bar_prev) / (1 - alpha_bar) * betas; then beta_tilde[0] = beta_tilde[1]
    alpha_bar = torch.cumprod(1 - betas, dim=0)
    alpha_bar_prev = torch.cat([torch.ones(1, dtype=betas.dtype), alpha_bar[:-1]])
    beta_tilde = (1 - alpha_bar_prev) / (1 - alpha_bar) * betas
    beta_tilde = torch.cat([beta_tilde[1:2], beta_tilde[1:]])  # the clip at t = 0
    shape = (-1, *[1] * (v.ndim - 1))
    log_beta, log_beta_tilde = betas.log()[t].reshape(shape), beta_tilde.log()[t].reshape(shape)
    return v * log_beta + (1 - v) * log_beta_tilde
    ### END SOLUTION


learned_range_log_variance = check_learned_range_log_variance(learned_range_log_variance)

# %% [markdown]
# The package does the same inside `p_mean_variance` when the model outputs $[\epsilon, 2v - 1]$:

# %%
v = torch.rand(6, 1, 8, 8)
t = torch.tensor([0, 1, 5, 50, 500, 999])
fake_model = lambda x, t: torch.cat([torch.zeros_like(x), 2 * v - 1], dim=1)  # noqa: E731 - eps = 0, then 2v - 1
package = diffusion.p_mean_variance(fake_model, torch.zeros(6, 1, 8, 8), t)["log_variance"]
yours = torch.as_tensor(learned_range_log_variance(v.double(), t, betas))
assert torch.allclose(yours.float(), package, rtol=1e-5, atol=1e-5)
print("log Sigma at v = 0.5:", learned_range_log_variance(torch.full((6,), 0.5, dtype=torch.float64), t, betas)
      .numpy().round(2))

# %% [markdown]
# ## 3. Training Σ: the hybrid loss (eq. 16)
#
# $L_\text{simple}$ (notebook 03) only sees the mean, so it cannot train $v$. The variational bound $L_\text{vlb}$
# can, but it is a noisy objective to optimise alone (notebook 06). Improved DDPM combines them:
#
# $$L_\text{hybrid} = L_\text{simple} + \lambda L_\text{vlb},\qquad \lambda = 0.001,$$
#
# with a **stop-gradient** on $\mu_\theta$ in the $L_\text{vlb}$ term: the bound only trains the variance, and
# $L_\text{simple}$ stays the main source of the mean. `training_losses` returns the two parts; their gradients
# with respect to the network's output show the split:

# %%
test = load_dataset("digits", "test").images
x0 = test[:16].to(device)
t = torch.randint(0, T, (16,), device=device)
noise = torch.randn_like(x0)
with torch.no_grad():
    output = model(diffusion.q_sample(x0, t, noise), t)  # (16, 2, 8, 8): eps, then the v channel
output.requires_grad_(True)
terms = diffusion.training_losses(lambda x, t: output, x0, t, noise)  # the hybrid loss at these t
grad_simple = torch.autograd.grad(terms["mse"].sum(), output, retain_graph=True)[0]
grad_vlb = torch.autograd.grad(terms["vb"].sum(), output)[0]
for name, g in [("L_simple", grad_simple), ("L_vlb term", grad_vlb)]:
    print(f"{name:>10}: gradient on the eps channel {g[:, 0].abs().sum():.3g}, on the v channel {g[:, 1].abs().sum():.3g}")
assert grad_simple[:, 1].abs().sum() == 0 and grad_vlb[:, 0].abs().sum() == 0 and grad_vlb[:, 1].abs().sum() > 0

# %% [markdown]
# (`terms["vb"]` is one term $L_t$ of the bound in bits per dimension, at a random $t$. The whole bound is about
# $T$ times its average, so $\lambda L_\text{vlb} \approx 0.001 \cdot T \cdot L_t = L_t$ for $T = 1000$.)
#
# ## 4. What the shipped model learned
#
# The shipped `digits` model was trained with this hybrid loss. Below, its $v$ at each $t$, averaged over test
# digits and pixels (`interpolation_weights` noises them with $q(x_t \mid x_0)$ and reads the v channel). In the
# widget, the left panel shows $\Sigma_t / \beta_t$: $\beta_t$ at 1, $\tilde\beta_t$ below it, the learned
# $\Sigma_t$ (blue) and the $\Sigma_t$ of a constant $v$ (the slider, orange). Move `t` to read the numbers.

# %%
timesteps = np.unique(np.concatenate([[0], np.geomspace(1, T - 1, pick(40, 16)).astype(int)]))
v_learned = interpolation_weights(model, diffusion, test[: pick(64, 16)], timesteps,
                                  generator=torch.Generator(device=device).manual_seed(0))
print("learned v at t =", dict(zip(timesteps[::4].tolist(), v_learned[::4].round(3).tolist())))

explorer = VarianceExplorer(diffusion, learned=(timesteps, v_learned), v=0.5, t=5)
explorer

# %%
before = explorer.image.value
explorer.v.value = 0.0
assert explorer.image.value != before and f"Σ(v = 0.00) = {diffusion.posterior_variance[5]:.3g}" in explorer.titles[0]
explorer.t.value = 1
print(explorer.titles[0])

# %% [markdown]
# ## 5. Where Σ pays off: the first terms of the bound
#
# Sample the same network three ways: its learned $\Sigma$, or a fixed $\tilde\beta_t$ or $\beta_t$. For the fixed
# ones we wrap the model to drop its v channel (`MeanOnly`) and switch the diffusion's `var_type`
# (`with_variance`); the mean is the same in all three. First, the terms $L_t$ of the variational bound (in
# bits/dim) at the first 50 steps, where notebook 03 found most of the bound: a diffusion with
# `loss_type="kl"` returns one term per example.

# %%
variants = {
    "learned Σ": (diffusion, model),
    "fixed β̃ (fixed_small)": (with_variance(diffusion, "fixed_small"), MeanOnly(model)),
    "fixed β (fixed_large)": (with_variance(diffusion, "fixed_large"), MeanOnly(model)),
}
n_images, first = pick(64, 8), 50
x0 = test[:n_images].repeat(first, 1, 1, 1).to(device)  # every image at every t < 50: one batch
t = torch.arange(first, device=device).repeat_interleave(n_images)
noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(0)).to(device)
first_terms = {}
with torch.no_grad():
    for name, (d, m) in variants.items():
        kl = GaussianDiffusion(d.betas, d.mean_type, d.var_type, loss_type="kl")  # L_t alone, in bits/dim
        first_terms[name] = kl.training_losses(m, x0, t, noise)["loss"].reshape(first, n_images).mean(1).cpu()
for name, terms_t in first_terms.items():
    print(f"{name:>22}: L_0 = {terms_t[0]:.3f}, L_1 + ... + L_49 = {terms_t[1:].sum():.3f} bits/dim")
assert first_terms["learned Σ"].sum() < min(first_terms[k].sum() for k in list(variants)[1:])

fig, ax = plt.subplots(figsize=(6, 3.2), layout="constrained")
for name, terms_t in first_terms.items():
    ax.plot(np.arange(first), np.cumsum(terms_t.numpy()), "o-", ms=3, label=name)
ax.set(xlabel="t", ylabel="L₀ + … + Lₜ (bits/dim)", title="the first terms of L_vlb, added up")
ax.legend(fontsize=8)
plt.show()

# %% [markdown]
# The learned variance gives the smallest terms, hence the best likelihood: Improved DDPM's main result (their
# Table 1). Beyond the first few dozen steps $\beta_t \approx \tilde\beta_t$ and the three agree.
#
# ## 6. Sampling with 25 steps
#
# With $K \ll T$ sampling steps (`respace`, Improved DDPM section 4; notebook 10), each step is a big jump:
# the respaced $\beta$ and $\tilde\beta$ differ at *every* step, and the variance shapes the samples. The paper
# found that models with learned $\Sigma$ keep their sample quality down to about 50 steps, where fixed variances
# degrade (Figure 8, for models trained hundreds of thousands of steps). Below, the three variants with the same
# noise, and the FID of each against the training digits (the shipped digits feature network; FID is biased
# upwards by few samples, so compare the three with each other, not with published numbers).

# %% [markdown]
# **Sampling cell.** Full run: 1000 samples per variant (a minute or two on a CPU); fast mode: 100.

# %%
n_samples, steps = pick(1000, 100), 25
feature_net = load_digits_feature_net(device=device)
reference = reference_statistics("digits", "train", feature_net)  # cached on disk after the first time
noise = torch.randn(n_samples, 1, 8, 8, generator=torch.Generator().manual_seed(0)).to(device)
samples, fids = {}, {}
for name, (d, m) in variants.items():
    fast = respace(d, steps)  # 25 evenly spaced steps of the 1000
    samples[name] = fast.p_sample_loop(m, noise.shape, noise=noise,
                                       generator=torch.Generator(device=device).manual_seed(1)).cpu()
    fids[name] = compute_fid(samples[name], reference, feature_net)
    print(f"{name:>22}: FID {fids[name]:.2f}")
assert all(np.isfinite(f) and f >= 0 for f in fids.values())

fig = plotting.sample_grids_figure({k: s[:36] for k, s in samples.items()},
                                   titles={k: f"{k}: FID {fids[k]:.2f}" for k in samples},
                                   suptitle=f"the same network and noise, {steps} sampling steps")
plt.show()
print(f"lowest FID at {steps} steps: {min(fids, key=fids.get)}")

# %% [markdown]
# Read these numbers together with the learned $v(t)$ of section 4. The shipped model trained 2000 steps on a CPU,
# a thousandth of the paper's runs, and $\lambda = 0.001$ makes the variance a slow learner: where $\beta_t \approx
# \tilde\beta_t$ (most of the 1000-step chain) the bound barely cares about $v$, so a short run leaves it near where
# it drifted to, and the fixed $\tilde\beta$ can give the best samples. The likelihood of section 5, which is what
# the hybrid loss optimises, is where learning $\Sigma$ pays first. Try other step counts (`steps = 10`, `50`) to
# see how each variant degrades.
#
# ## What to remember
#
# - $\beta_t$ and $\tilde\beta_t$ are the two natural fixed variances; they differ only in the first steps of a long
#   chain, but those steps dominate the likelihood, and with few sampling steps they differ everywhere.
# - Improved DDPM learns $\Sigma_\theta = \exp(v\log\beta_t + (1-v)\log\tilde\beta_t)$, one $v$ per dimension
#   (eq. 15), trained by $L_\text{simple} + \lambda L_\text{vlb}$ with the mean frozen in the second term (eq. 16).
# - The same network can be sampled with a fixed variance by dropping its v channel.
#
# Next: notebook 05, the cosine schedule; notebook 06, why $L_\text{vlb}$ alone is hard to optimise.
