# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown] slideshow={"slide_type": "slide"}
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/ddpm-lite/ddpm_lite/blob/main/notebooks/03_loss.ipynb)
#
# # 03 · The loss: a bound made of Gaussian KLs, and the simple loss that replaces it
#
# A diffusion model is trained by maximising a lower bound on the log-likelihood. This notebook takes the bound
# apart (DDPM, Ho et al. 2020, eq. 5), measures every one of its terms for a model whose answer we know exactly, and
# arrives at the loss everybody actually uses: predict the noise, squared error (eq. 14).
#
# *About 25 minutes.* Three exercises; each checks itself when you run it, and "Run all" works even before you
# solve them.

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
from ddpm_lite.course.exercises import check_decoder_nll_bits, check_normal_kl, check_simple_loss, hint  # noqa: F401
from ddpm_lite.data import load_dataset
from ddpm_lite.losses import mean_flat
from ddpm_lite.runtime import default_device, fast_mode, pick

device = default_device()  # the model below is a few matrix products: the CPU is plenty
FAST = fast_mode()  # True in CI (DDPM_LITE_FAST=1): fewer test images. Learners get the full run.
print(f"device: {device}, fast mode: {FAST}")
_ = torch.manual_seed(0)
LN2 = math.log(2.0)

# %% [markdown] slideshow={"slide_type": "slide"}
# ## 1. The variational bound, term by term
#
# The reverse process $p_\theta(x_{t-1} \mid x_t) = \mathcal{N}(\mu_\theta(x_t, t), \Sigma_\theta(x_t, t))$ is
# trained like a VAE: minimise an upper bound $L$ on $-\log p_\theta(x_0)$ (DDPM eq. 3). Rewritten with the
# posteriors of the forward process, it is a sum of one term per step (eq. 5):
#
# $$L = \mathbb{E}_q\Big[\underbrace{D_{KL}\big(q(x_T \mid x_0)\,\|\,p(x_T)\big)}_{L_T}
#  + \sum_{t>1} \underbrace{D_{KL}\big(q(x_{t-1} \mid x_t, x_0)\,\|\,p_\theta(x_{t-1} \mid x_t)\big)}_{L_{t-1}}
#  \underbrace{- \log p_\theta(x_0 \mid x_1)}_{L_0}\Big].$$
#
# - $L_T$ compares the end of the forward process with the prior $\mathcal{N}(0, \mathbf{I})$. Nothing in it is
#   learned; a good schedule makes it nearly 0.
# - $L_{t-1}$ compares the model's step with the **forward posterior**, which is Gaussian and known in closed form
#   (eqs. 6–7): $q(x_{t-1} \mid x_t, x_0) = \mathcal{N}(\tilde\mu_t(x_t, x_0), \tilde\beta_t \mathbf{I})$ with
#   $\tilde\beta_t = \frac{1-\bar\alpha_{t-1}}{1-\bar\alpha_t}\beta_t$.
# - $L_0$ is a decoder: the probability of the actual pixel values, each a bin of width $2/255$ (eq. 13).
#
# Every $L_{t-1}$ is a KL divergence between two Gaussians, so it has a closed form. For one coordinate,
#
# $$D_{KL}\big(\mathcal{N}(\mu_1, \sigma_1^2)\,\|\,\mathcal{N}(\mu_2, \sigma_2^2)\big)
#  = \tfrac12\Big[-1 + \log\sigma_2^2 - \log\sigma_1^2 + \frac{\sigma_1^2}{\sigma_2^2}
#  + \frac{(\mu_1-\mu_2)^2}{\sigma_2^2}\Big].$$
#
# ### Exercise 1: `normal_kl`
#
# Implement it **elementwise** (return a tensor of the inputs' shape), taking **log-variances**
# $\log\sigma^2$, as the reference code does: variances span many orders of magnitude across $t$.

# %% slideshow={"slide_type": "slide"} tags=["exercise"]
def normal_kl(mean1, logvar1, mean2, logvar2):
    """KL(N(mean1, exp(logvar1)) || N(mean2, exp(logvar2))), elementwise, in nats."""
    ### BEGIN SOLUTION
    return 0.5 * (-1.0 + logvar2 - logvar1 + torch.exp(logvar1 - logvar2)
                  + (mean1 - mean2) ** 2 * torch.exp(-logvar2))
    ### END SOLUTION


normal_kl = check_normal_kl(normal_kl)

# %% [markdown] slideshow={"slide_type": "slide"}
# ## 2. A model whose best answer we know
#
# To measure the terms we need a model $p_\theta$. Notebook 02 trained one on 2-D points; here we take a model we can
# write down. **If the data were Gaussian**, $x_0 \sim \mathcal{N}(\mu, \Sigma)$, the best possible guess of $x_0$
# from $x_t = \sqrt{\bar\alpha_t}x_0 + \sqrt{1-\bar\alpha_t}\epsilon$ is linear (a Wiener filter). In the
# eigenbasis $\Sigma = U \operatorname{diag}(\lambda) U^\top$ it shrinks each coordinate separately:
#
# $$\hat x_0(x_t) = \mu + U \operatorname{diag}\Big(\frac{\sqrt{\bar\alpha_t}\,\lambda_i}{\bar\alpha_t\lambda_i
#   + 1 - \bar\alpha_t}\Big) U^\top (x_t - \sqrt{\bar\alpha_t}\,\mu).$$
#
# We fit $\mu, \Sigma$ to the training digits (8×8, 64 pixels) and plug $\hat x_0$ into the posterior mean:
# $p_\theta(x_{t-1} \mid x_t) = q(x_{t-1} \mid x_t, x_0 = \hat x_0)$, with the fixed variance $\tilde\beta_t$.
# That is a real, if crude, generative model of digits, built on the best denoiser for Gaussian data. We evaluate
# it on held-out test digits, so nothing is memorised.

# %% slideshow={"slide_type": "slide"}
T = 1000
diffusion = GaussianDiffusion(get_betas("linear", T), mean_type="x0", var_type="fixed_small")
alpha_bar = torch.from_numpy(diffusion.alphas_cumprod)

train = load_dataset("digits", "train").images.flatten(1).double()  # (1437, 64) in [-1, 1]
test = load_dataset("digits", "test").images.double()[: pick(360, 64)]  # held out
mu = train.mean(0)
lam, U = torch.linalg.eigh(torch.cov(train.T))
lam = lam.clamp(min=0)  # tiny negative eigenvalues are rounding errors


def x0_model(x_t, t):
    """E[x0 | x_t] for Gaussian data N(mu, U diag(lam) U^T): the best x0-prediction for that model."""
    ab = alpha_bar[t].reshape(-1, 1)
    z = (x_t.flatten(1).double() - ab.sqrt() * mu) @ U
    z = z * ab.sqrt() * lam / (ab * lam + 1 - ab)
    return (mu + z @ U.T).reshape(x_t.shape).to(x_t.dtype)


print(f"{len(test)} test digits; the 5 largest variances of the fit: {lam[-5:].numpy().round(2)}")

# %% [markdown] slideshow={"slide_type": "slide"}
# ### Checking one term by hand, with your `normal_kl`
#
# Take code $t = 100$ (the paper's step from $x_{101}$ back to $x_{100}$, the term $L_{100}$): draw $x_t$, compute the
# true posterior and the model's step, and their KL. For two Gaussians
# with the *same* variance only the means differ, and eqs. 8–12 of the paper turn the KL into a weighted squared
# error on the noise:
#
# $$L_{t-1} = \frac{\beta_t^2}{2\sigma_t^2\alpha_t(1-\bar\alpha_t)}\,
#   \big\|\epsilon - \epsilon_\theta(x_t, t)\big\|^2 \quad\text{(eq. 12)},\qquad
#   \epsilon_\theta = \frac{x_t - \sqrt{\bar\alpha_t}\,\hat x_0}{\sqrt{1-\bar\alpha_t}}.$$

# %%
t = torch.full((len(test),), 100)
noise = torch.randn_like(test)
x_t = diffusion.q_sample(test, t, noise)
true_mean, _, true_logvar = diffusion.q_posterior_mean_variance(test, x_t, t)
step = diffusion.p_mean_variance(x0_model, x_t, t)  # the model's mean, log-variance and predicted x0
L_t = mean_flat(normal_kl(true_mean, true_logvar, step["mean"], step["log_variance"])) / LN2

ab = alpha_bar[100]
eps_hat = (x_t - ab.sqrt() * step["pred_xstart"]) / (1 - ab).sqrt()
weight = plotting.vlb_weight(diffusion)[100]  # beta^2 / (2 sigma^2 alpha (1 - alpha_bar))
eq12 = weight * mean_flat((noise - eps_hat) ** 2) / LN2
print(f"L_t at t = 100: {L_t.mean():.5f} bits/dim by the KL, {eq12.mean():.5f} by eq. 12 (weight {weight:.3g})")
assert torch.allclose(L_t, eq12, rtol=1e-4)

# %% [markdown] slideshow={"slide_type": "slide"}
# ### Exercise 2: the last term, the decoder $L_0$, in bits per dimension
#
# $L_0 = -\log p_\theta(x_0 \mid x_1)$ is not a KL: $x_0$ is an image of 8-bit pixels, and DDPM ends the chain with
# a **discrete decoder** (section 3.3, eq. 13). The 256 pixel values, scaled to $[-1, 1]$, are $2/255$ apart; the
# probability of a value $x$ is the mass of the Gaussian $\mathcal{N}(\mu_\theta(x_1, 1), \sigma_1^2)$ over its
# bin, from $x - 1/255$ to $x + 1/255$, except that the bin of $-1$ reaches down to $-\infty$ and the bin of $+1$ up
# to $+\infty$, so that the 256 probabilities add up to 1. The pixels are independent given $x_1$, so $L_0$ is the
# sum of their $-\log$ probabilities. Papers report it **per dimension and in bits**: divided by the number of
# dimensions $D$ and by $\ln 2$.
#
# Write `decoder_nll_bits(x0, mean, log_scale)`: `x0`, `mean` and `log_scale` (the log of the standard deviation)
# share a shape `(B, ...)`; return $L_0$ in bits/dim, one value per example, shape `(B,)`. The standard normal CDF
# is $\Phi(z) = \frac12\big(1 + \mathrm{erf}(z/\sqrt2)\big)$ (`torch.special.ndtr`); keep a probability of 0
# out of the log with `.clamp(min=1e-12)`. (The package uses a tanh approximation of $\Phi$; the check accepts
# either.)

# %% slideshow={"slide_type": "fragment"} tags=["exercise"]
def decoder_nll_bits(x0, mean, log_scale):
    """L_0 = -log p(x0 | x_1) of the discretised Gaussian decoder (DDPM eq. 13), in bits/dim, per example."""
    ### BEGIN SOLUTION
    scale = log_scale.exp()
    upper = torch.special.ndtr((x0 - mean + 1 / 255) / scale)
    lower = torch.special.ndtr((x0 - mean - 1 / 255) / scale)
    p = torch.where(x0 < -0.999, upper, torch.where(x0 > 0.999, 1 - lower, upper - lower))
    return -mean_flat(torch.log(p.clamp(min=1e-12))) / math.log(2)
    ### END SOLUTION


decoder_nll_bits = check_decoder_nll_bits(decoder_nll_bits)

# %% [markdown] slideshow={"slide_type": "slide"}
# Your decoder on the Gaussian model's last step, for the test digits, against the package's (a diffusion with
# `loss_type="kl"` returns the bound's term at each example's $t$: at $t = 0$, $L_0$):

# %%
t0 = torch.zeros(len(test), dtype=torch.long)  # code t = 0 is the paper's last step, x_1 -> x_0
noise = torch.randn_like(test)
step0 = diffusion.p_mean_variance(x0_model, diffusion.q_sample(test, t0, noise), t0, clip_denoised=False)
L_0 = torch.as_tensor(decoder_nll_bits(test, step0["mean"], 0.5 * step0["log_variance"])).double()
kl_terms = GaussianDiffusion(diffusion.betas, "x0", "fixed_small", loss_type="kl")
package_L0 = kl_terms.training_losses(x0_model, test, t0, noise)["loss"].double()
print(f"L_0 = {L_0.mean():.3f} bits/dim with your decoder, {package_L0.mean():.3f} with the package's "
      f"(sigma_1 = {step0['log_variance'][0].exp().sqrt().max():.4f}, a bin is 2/255 = {2 / 255:.4f} wide)")
assert torch.allclose(L_0.mean(), package_L0.mean(), rtol=1e-2)

# %% [markdown] slideshow={"slide_type": "slide"}
# ## 3. All the terms of the bound
#
# `calc_bpd_loop` computes every term for every $t$: $L_T$ (`prior_bpd`), and in `vb[:, t]` the decoder $L_0$ at
# $t = 0$ and $L_{t}$ for $t \ge 1$, all in **bits per dimension** (nats / ln 2, averaged over the 64 pixels).

# %% slideshow={"slide_type": "slide"}
out = diffusion.calc_bpd_loop(x0_model, test, generator=torch.Generator().manual_seed(0))
vb, prior = out["vb"].mean(0), out["prior_bpd"].mean()
print(f"L_T = {prior:.2e}   L_0 = {vb[0]:.3f}   sum of L_t, t >= 1: {vb[1:].sum():.3f}   "
      f"total: {out['total_bpd'].mean():.3f} bits/dim")

# your normal_kl gives the same L_T: KL(q(x_T | x_0) || N(0, I))
mean_T, _, logvar_T = diffusion.q_mean_variance(test, torch.full((len(test),), T - 1))
my_prior = mean_flat(normal_kl(mean_T, logvar_T, torch.zeros_like(mean_T), torch.zeros_like(mean_T))) / LN2
assert torch.allclose(my_prior, out["prior_bpd"], rtol=1e-4)

fig = plotting.vb_terms_figure(out["vb"], out["prior_bpd"])
plt.show()

# %% [markdown] slideshow={"slide_type": "slide"}
# Read the picture:
#
# - **$L_T$ is about $10^{-5}$ bits**: the linear schedule ends close enough to $\mathcal{N}(0, \mathbf{I})$.
# - **The first steps carry the bound.** The decoder $L_0$ and the first few percent of the steps hold most of the
#   bits; the terms fall by orders of magnitude as $t$ grows. (8×8 digits only use 17 grey levels but the decoder
#   scores them on 256, so the totals here are not comparable to published numbers.)
#
# ## 4. From the bound to the simple loss
#
# With the noise parameterisation (eq. 11) every $L_{t-1}$ is the weighted error of eq. 12. DDPM found that
# **dropping the weights** (eq. 14) gives better samples:
#
# $$L_\text{simple} = \mathbb{E}_{t, x_0, \epsilon}\Big[\big\|\epsilon - \epsilon_\theta\big(\sqrt{\bar\alpha_t}x_0
#   + \sqrt{1-\bar\alpha_t}\,\epsilon,\ t\big)\big\|^2\Big],\qquad t \sim \mathrm{Uniform}\{1, \dots, T\}.$$
#
# The weight of eq. 12 (plot below) is largest for the first steps and 60 to 120 times smaller from $t = 100$ on.
# Dropping it gives every step the same weight: relative to the bound, the simple loss moves the network's effort
# away from the nearly clean first steps to the noisier, harder ones (DDPM section 3.4). That is better for **sample
# quality**, not for the bound: on CIFAR-10 (DDPM Table 1), $L_\text{simple}$ gives FID 3.17 with NLL $\le$ 3.75
# bits/dim, the true bound (with a fixed isotropic $\Sigma$) FID 13.51 with a better NLL $\le$ 3.70. Improved DDPM
# (section 3) comes back to the likelihood.

# %% slideshow={"slide_type": "slide"}
fig = plotting.vlb_weights(diffusion)
plt.show()

# %% [markdown] slideshow={"slide_type": "slide"}
# ### Exercise 3: the simple loss
#
# `model(x_t, t)` predicts the noise. Return **one loss per example**, shape `(B,)`: the squared error averaged
# over every dimension but the batch (`mean_flat`). Use the `noise` you are given (it is what made `x_t`), and
# `diffusion.q_sample(x0, t, noise)` for eq. 4.

# %% slideshow={"slide_type": "fragment"} tags=["exercise"]
def simple_loss(model, diffusion, x0, t, noise):
    """L_simple per example (DDPM eq. 14)."""
    ### BEGIN SOLUTION
    x_t = diffusion.q_sample(x0, t, noise)
    return mean_flat((noise - model(x_t, t)) ** 2)
    ### END SOLUTION


simple_loss = check_simple_loss(simple_loss)

# %% [markdown]
# Our Gaussian model predicts $x_0$; eq. 4 turns that into a noise prediction. Its simple loss on the test digits,
# at random $t$ as in training, agrees with the package's `training_losses`:

# %%
eps_diffusion = GaussianDiffusion(get_betas("linear", T))  # mean_type="eps": the model predicts the noise


def eps_model(x_t, t):
    ab = alpha_bar[t].reshape(-1, *[1] * (x_t.ndim - 1))
    return (x_t - ab.sqrt() * x0_model(x_t, t)) / (1 - ab).sqrt()


t = torch.randint(0, T, (len(test),))
noise = torch.randn_like(test)
loss = simple_loss(eps_model, eps_diffusion, test, t, noise)
assert torch.allclose(loss, eps_diffusion.training_losses(eps_model, test, t, noise)["loss"], rtol=1e-5)
print(f"L_simple of the Gaussian model: {loss.mean():.3f} (a model that always predicts 0 scores 1)")

# %% [markdown] slideshow={"slide_type": "slide"}
# Where does each loss put its weight? For each term $L_t$, the share of the total that comes from it: the bound
# ($\lambda_t$ times the noise error) against the simple loss (the noise error `mse` alone), for our Gaussian model.

# %%
share_vb = out["vb"][:, 1:].mean(0) / out["vb"][:, 1:].mean(0).sum()
share_simple = out["mse"][:, 1:].mean(0) / out["mse"][:, 1:].mean(0).sum()
fig, ax = plt.subplots(figsize=(6, 3.2), layout="constrained")
ax.plot(np.arange(1, T), share_vb.numpy(), label="the bound: weights of eq. 12")
ax.plot(np.arange(1, T), share_simple.numpy(), label="L_simple: weight 1")
ax.set(yscale="log", xlabel="t (the term L_t)", ylabel="share of the loss from L_t")
ax.legend()
plt.show()
print(f"the terms L_1 ... L_99 hold {share_vb[:99].sum():.0%} of L_vlb but {share_simple[:99].sum():.0%} of "
      "L_simple")

# %% [markdown] slideshow={"slide_type": "slide"}
# ## 5. Why predict $\epsilon$?
#
# The network could predict $x_0$, the posterior mean $\tilde\mu_t$, or the noise $\epsilon$: each gives the others
# through eq. 4 and eq. 7. Three reasons to choose $\epsilon$:
#
# 1. **$\epsilon$ is the score, scaled.** $\epsilon_\theta(x_t, t) \approx -\sqrt{1-\bar\alpha_t}\,\nabla\log
#    q(x_t)$ (DDPM section 3.2; notebook **02 · The score view**): the noise prediction is the direction in which
#    the noised data get more likely, and $L_\text{simple}$ is denoising score matching at every noise level.
# 2. **A unit-variance target at every $t$.** Below, the variance per pixel of each possible target over the test
#    digits, at every $t$. $\epsilon$ has variance 1 everywhere. $\tilde\mu_t$ is mostly $x_t/\sqrt{\alpha_t}$,
#    which the network already has as its input: the part it would have to learn, $\tilde\mu_t -
#    x_t/\sqrt{\alpha_t} = -\frac{\beta_t}{\sqrt{\alpha_t}\sqrt{1-\bar\alpha_t}}\,\epsilon$, is the same noise
#    scaled down to a variance between $4 \cdot 10^{-5}$ and $4 \cdot 10^{-4}$. Predicting $\tilde\mu_t$ means copying the input to four decimal
#    places and adding a tiny correction; predicting $\epsilon$ learns that correction at unit scale.
# 3. **It worked best** in DDPM's ablation (Table 2, CIFAR-10): with the true bound and fixed variances, predicting
#    $\epsilon$ was about as good as predicting $\tilde\mu_t$, and with $L_\text{simple}$ it was much better;
#    learning a diagonal $\Sigma$ with the bound was unstable (notebook 04 learns it another way).

# %% slideshow={"slide_type": "slide"}
ts = np.unique(np.geomspace(1, T, 40).astype(int)) - 1  # code t, spread over the chain on a log scale
g = torch.Generator().manual_seed(1)
variances = {"ε": [], "x₀": [], "μ̃ₜ": [], "μ̃ₜ − xₜ/√αₜ": []}
for t_code in ts:
    t = torch.full((len(test),), int(t_code))
    eps = torch.randn(test.shape, generator=g, dtype=torch.float64)
    x_t = diffusion.q_sample(test, t, eps)
    mu_tilde = diffusion.q_posterior_mean_variance(test, x_t, t)[0]
    for name, target in zip(variances, [eps, test, mu_tilde, mu_tilde - x_t / np.sqrt(1 - diffusion.betas[t_code])]):
        variances[name].append(target.var(0).mean().item())  # over the test digits, per pixel, averaged
fig, ax = plt.subplots(figsize=(6, 3.4), layout="constrained")
for name, v in variances.items():
    ax.plot(ts + 1, v, lw=2, label=name)
ax.set(xscale="log", yscale="log", xlabel="t", ylabel="variance per pixel",
       title="each target's variance over the test digits")
ax.legend(ncols=2)
plt.show()
small = variances["μ̃ₜ − xₜ/√αₜ"]
print(f"variance of eps: {min(variances['ε']):.2f} to {max(variances['ε']):.2f}; of the part of mu~ that x_t does "
      f"not give: {min(small):.1e} to {max(small):.1e}")

# %% [markdown] slideshow={"slide_type": "slide"}
# ## What to remember
#
# - The bound of eq. 5 is $L_T$ (fixed, ~0) + one Gaussian KL per step + a decoder term $L_0$.
# - A Gaussian KL has a closed form; with equal variances it is a weighted squared error on the noise (eq. 12).
# - $L_\text{simple}$ drops the weights: one plain MSE on $\epsilon$ at a uniformly random $t$. The bound's mass is
#   in the first steps; the simple loss spreads the effort over the noisy ones.
#
# Next: train a network with $L_\text{simple}$ and sample from it.
