# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown] slideshow={"slide_type": "slide"}
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/ddpm-lite/ddpm_lite/blob/main/notebooks/04_learned_variance.ipynb)
#
# # 04 · Learned variances: Σ between β and β̃
#
# DDPM learns only the mean of each reverse step and fixes its variance $\sigma_t^2$ to $\beta_t$ or
# $\tilde\beta_t$; both gave the same samples. Improved DDPM (Nichol & Dhariwal 2021, section 3.1) shows where
# the choice does matter (the log-likelihood, and sampling with few steps) and lets the network **learn** the
# variance: as a weight $v$ between those two values, in log space (eq. 15), trained by a hybrid loss (eq. 16).
#
# *About 30 minutes.* Two exercises; each checks itself when you run it, and "Run all" works before you solve them.

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

from ddpm_lite import GaussianDiffusion, respace
from ddpm_lite.course import plotting
from ddpm_lite.course.analytic import SAMPLER_VARIANCES, gaussian_sampler_moments
from ddpm_lite.course.exercises import (  # hint("name") on request
    check_hybrid_loss,
    check_learned_range_log_variance,
    hint,  # noqa: F401
    make_vlb_term,
)
from ddpm_lite.course.learned_variance import (
    MeanOnly,
    interpolation_weights,
    kl_optimal_variance,
    with_variance,
    xstart_errors,
)
from ddpm_lite.course.widgets import VarianceExplorer
from ddpm_lite.data import load_dataset
from ddpm_lite.metrics import compute_fid, frechet_distance, load_digits_feature_net, reference_statistics
from ddpm_lite.metrics.variance import default_timesteps, variance_fit
from ddpm_lite.pretrained import load_pretrained
from ddpm_lite.runtime import default_device, fast_mode, pick

device = default_device()  # sampling the digits U-Net below is faster on a GPU, and fine on a CPU
FAST = fast_mode()  # True in CI (DDPM_LITE_FAST=1): fewer images and samples. Learners get the full run.
print(f"device: {device}, fast mode: {FAST}")
_ = torch.manual_seed(0)

# %% [markdown] slideshow={"slide_type": "slide"}
# ## 1. Two fixed variances that (almost) agree
#
# The reverse step is $p_\theta(x_{t-1} \mid x_t) = \mathcal{N}(\mu_\theta(x_t, t), \Sigma_\theta(x_t, t))$. DDPM
# (section 3.2) tried two fixed $\Sigma = \sigma_t^2 \mathbf{I}$: the forward step's $\beta_t$, and the posterior
# variance of notebook 02, $\tilde\beta_t = \frac{1-\bar\alpha_{t-1}}{1-\bar\alpha_t}\beta_t$. They are the
# extremes: $\beta_t$ is optimal if the data were $\mathcal{N}(0, \mathbf{I})$, $\tilde\beta_t$ if the data were
# one single point. Their ratio (Improved DDPM Figure 1) is 1 almost everywhere, and far from it only in the first
# steps:

# %% slideshow={"slide_type": "slide"}
fig = plotting.variance_ratio_figure(num_timesteps=(100, 1000, 4000))
plt.show()

model, diffusion, config = load_pretrained("digits", device=device)  # the shipped model: cosine, T = 1000
T = diffusion.num_timesteps
betas = torch.from_numpy(diffusion.betas)  # float64
ratio = diffusion.posterior_variance[1:] / diffusion.betas[1:]
print(f"cosine, T = {T}: beta-tilde / beta < 0.9 for the first {np.argmax(ratio >= 0.9) + 1} steps, "
      f"then between 0.9 and 1; at t = 1 it is {ratio[0]:.3f}")

# %% [markdown] slideshow={"slide_type": "slide"}
# So with $T = 1000$ steps the mean $\mu_\theta$ decides the samples, and $\Sigma$ hardly matters: DDPM's finding.
# But notebook 03 showed that the **first steps carry most of the variational bound**, and that is where the two
# choices differ. A better $\Sigma$ there means a better log-likelihood. With **fewer** sampling steps (section 6)
# every step is larger, and $\beta$ and $\tilde\beta$ differ over more of the chain.
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
# ### Exercise 1: `learned_range_log_variance`
#
# Given $v$ (any shape `(B, ...)`), the timesteps `t` `(B,)` and the `betas`, return $\log\Sigma$ with the shape of
# `v`. Compute $\tilde\beta_t$ from `betas` as in notebook 02, with $\tilde\beta_0$ replaced by $\tilde\beta_1$.

# %% slideshow={"slide_type": "slide"} tags=["exercise"]
def learned_range_log_variance(v, t, betas):
    """log Sigma_t = v log beta_t + (1 - v) log beta-tilde_t (Improved DDPM eq. 15), beta-tilde_0 -> beta-tilde_1."""
    ### BEGIN SOLUTION
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

# %% [markdown] slideshow={"slide_type": "slide"}
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

# %% [markdown] slideshow={"slide_type": "slide"}
# (`terms["vb"]` is one term $L_t$ of the bound in bits per dimension, at a random $t$. The whole bound is about
# $T$ times its average, so $\lambda L_\text{vlb} \approx 0.001 \cdot T \cdot L_t = L_t$ for $T = 1000$.)
#
# ### Exercise 2: `hybrid_loss`
#
# Write eq. 16 from the network's output. `model_output` is `(B, 2C, ...)`: the noise prediction $\epsilon$ in the
# first `C` channels, the raw $v$ in the other `C`. `vlb_term(eps, v)` (made for the batch by `make_vlb_term`)
# returns one term $L_t$ of the bound per example, in bits/dim, for the output `[eps, v]`; the whole bound is about
# `num_timesteps` times it. Return one loss per example, $L_\text{simple} + \lambda L_\text{vlb}$, with the
# stop-gradient: in the $L_\text{vlb}$ term the mean, i.e. $\epsilon$, must count as a constant. Its *value* is the
# same either way, so the check looks at the gradients your loss sends back into `model_output`.

# %% slideshow={"slide_type": "fragment"} tags=["exercise"]
def hybrid_loss(model_output, noise, vlb_term, num_timesteps, lam=0.001):
    """L_simple + lam * L_vlb per example (Improved DDPM eq. 16), L_vlb ~ num_timesteps * L_t, the mean frozen in it."""
    ### BEGIN SOLUTION
    eps, v = model_output.chunk(2, dim=1)
    l_simple = ((noise - eps) ** 2).mean(dim=tuple(range(1, noise.ndim)))
    return l_simple + lam * num_timesteps * vlb_term(eps.detach(), v)
    ### END SOLUTION


hybrid_loss = check_hybrid_loss(hybrid_loss)

# %% [markdown]
# Your loss on the shipped model's output above: the same values as `training_losses`, and its gradient splits as
# eq. 16 wants, $L_\text{simple}$'s on the $\epsilon$ channel, $L_\text{vlb}$'s on the $v$ channel.

# %%
vlb_term = make_vlb_term(diffusion, x0, diffusion.q_sample(x0, t, noise), t)
yours = hybrid_loss(output, noise, vlb_term, T)
grad = torch.autograd.grad(yours.sum(), output)[0]
print(f"your loss: {yours.mean():.4f} on average, training_losses: {terms['loss'].mean():.4f}; gradient on the eps "
      f"channel {grad[:, 0].abs().sum():.3g}, on the v channel {grad[:, 1].abs().sum():.3g}")
assert torch.allclose(yours, terms["loss"], rtol=1e-4, atol=1e-5)
assert torch.allclose(grad[:, 0], grad_simple[:, 0], atol=1e-6) and torch.allclose(grad[:, 1], grad_vlb[:, 1], atol=1e-6)

# %% [markdown] slideshow={"slide_type": "slide"}
# ### Why the mean is frozen in $L_\text{vlb}$
#
# Without the stop-gradient, $\lambda L_\text{vlb}$ would push the mean too, with the bound's weights of eq. 12: the
# weights that DDPM dropped for better samples (notebook 03). How hard, next to $L_\text{simple}$: the size of each
# loss's gradient on the $\epsilon$ channel for the shipped model, at a few $t$ (code $t$; a diffusion with
# `loss_type="kl"` returns $L_t$ with no stop-gradient):

# %%
t_show = [0, 1, 10, 100, 500, 900]
t_many = torch.tensor(t_show, device=device).repeat_interleave(16)
x0_many, noise_many = x0.repeat(len(t_show), 1, 1, 1), torch.randn(16 * len(t_show), 1, 8, 8, device=device)
with torch.no_grad():
    out_many = model(diffusion.q_sample(x0_many, t_many, noise_many), t_many)
out_many.requires_grad_(True)
unfrozen = GaussianDiffusion(diffusion.betas, diffusion.mean_type, diffusion.var_type, loss_type="kl")
L_t = unfrozen.training_losses(lambda x, t: out_many, x0_many, t_many, noise_many)["loss"]  # = lambda L_vlb, T = 1000
L_simple = ((out_many[:, :1] - noise_many) ** 2).mean((1, 2, 3))
push_vlb = torch.autograd.grad(L_t.sum(), out_many, retain_graph=True)[0][:, 0].flatten(1).norm(dim=1)
push_simple = torch.autograd.grad(L_simple.sum(), out_many)[0][:, 0].flatten(1).norm(dim=1)
ratio = (push_vlb / push_simple).reshape(len(t_show), 16).median(1).values.cpu()
print("gradient on eps of lambda L_vlb / that of L_simple:", {t: f"{r:.2g}" for t, r in zip(t_show, ratio.tolist())})

# %% [markdown] slideshow={"slide_type": "slide"}
# Left unfrozen, $L_\text{vlb}$ would steer the mean about half as hard as $L_\text{simple}$ at the first steps, and
# 30 to 100 times less from $t = 100$ on: the bound's weighting again. With the stop-gradient (Improved DDPM section 3.1,
# eq. 16) $L_\text{simple}$ stays the main influence on $\mu_\theta$, and $L_\text{vlb}$ only guides $\Sigma_\theta$.
# (Its estimate, one random $t$ per example, is also very noisy: notebook 06.)
#
# ## 4. What the shipped model learned
#
# The shipped `digits` model was trained with this hybrid loss. Below, its $v$ at each $t$, averaged over test
# digits and pixels (`interpolation_weights` noises them with $q(x_t \mid x_0)$ and reads the v channel). In the
# widget, the left panel shows $\Sigma_t / \beta_t$: $\beta_t$ at 1, $\tilde\beta_t$ below it, the learned
# $\Sigma_t$ (blue) and the $\Sigma_t$ of a constant $v$ (the slider, orange). Move `t` (the code's $t$, as on the
# axes) to read the numbers.

# %% slideshow={"slide_type": "slide"}
timesteps = np.unique(np.concatenate([[0], np.geomspace(1, T - 1, pick(40, 16)).astype(int)]))
v_learned = interpolation_weights(model, diffusion, test[: pick(64, 16)], timesteps,
                                  generator=torch.Generator(device=device).manual_seed(0))
print("learned v at t =", dict(zip(timesteps[::4].tolist(), v_learned[::4].round(3).tolist())))

explorer = VarianceExplorer(diffusion, learned=(timesteps, v_learned), v=0.5, t=5)
explorer

# %% slideshow={"slide_type": "skip"}
before = explorer.image.value
explorer.v.value = 0.0
assert explorer.image.value != before and f"Σ(v = 0.00) = {diffusion.posterior_variance[5]:.3g}" in explorer.titles[0]
explorer.t.value = 1
print(explorer.titles[0])
explorer.v.value, explorer.t.value = 0.5, 5  # back to the view shown above

# %% [markdown] slideshow={"slide_type": "slide"}
# ### Why the learned $v(t)$ is flat
#
# The shipped model's $v$ is about the same at every $t$. The bound's term for one pixel, with the model's mean off by
# $e$, is $\tfrac12[\log\Sigma_t - \log\tilde\beta_t + (\tilde\beta_t + e^2)/\Sigma_t - 1]$ (nats), and since
# $\log\Sigma_t = v\log\beta_t + (1-v)\log\tilde\beta_t$,
#
# $$\frac{\partial L_t}{\partial v} = \tfrac12\Big(1 - \frac{\tilde\beta_t + e^2}{\Sigma_t}\Big)\log\frac{\beta_t}
#   {\tilde\beta_t}.$$
#
# The factor $\log(\beta_t/\tilde\beta_t)$ is what starves $v$: it is near 0 wherever $\beta_t \approx \tilde\beta_t$,
# and the first factor, which measures how far $\Sigma_t$ is from its best value, shrinks with it (it is about
# $\log(\beta_t/\tilde\beta_t)$ times the distance of $v$ from its best value). Measured on the shipped model, with
# the mean frozen as in training:

# %%
t_grid = [1, 2, 5, 10, 20, 50, 100, 200, 500, 900]
t_v = torch.tensor(t_grid, device=device).repeat_interleave(16)
x0_v, noise_v = x0.repeat(len(t_grid), 1, 1, 1), torch.randn(16 * len(t_grid), 1, 8, 8, device=device)
with torch.no_grad():
    out_v = model(diffusion.q_sample(x0_v, t_v, noise_v), t_v)
out_v.requires_grad_(True)
vb_v = diffusion.training_losses(lambda x, t: out_v, x0_v, t_v, noise_v)["vb"]  # L_t in bits/dim, mean frozen
dv = torch.autograd.grad(vb_v.sum(), out_v)[0][:, 1] * 2 * 64  # per pixel: v = (output + 1) / 2, L_t is a mean of 64
dv = dv.abs().mean((1, 2)).reshape(len(t_grid), 16).mean(1).cpu()
log_ratio = np.log(diffusion.betas[1:] / diffusion.posterior_variance[1:])  # t = 1 .. T-1
for t_, g_ in zip(t_grid, dv.tolist()):
    print(f"t = {t_:3d}: log(beta / beta~) = {log_ratio[t_ - 1]:.4f}, |dL_t/dv| = {g_:.1e} bits per pixel")
print(f"median of log(beta / beta~) over the chain: {np.median(log_ratio):.4f}")

# %% [markdown] slideshow={"slide_type": "slide"}
# Nearly five orders of magnitude between $t = 1$ and $t = 500$. $v$ is one network output for every $t$: it is set where
# it gets a gradient, in the first steps, and carried over to the others. The weight $\lambda = 0.001$ is not what
# starves it. A constant factor on a loss does not change Adam(W)'s steps, which divide each gradient by the root
# of its running square, as long as the gradient stays well above Adam's $\epsilon = 10^{-8}$; and the weights that
# compute $v$ (its output layer) get no gradient from $L_\text{simple}$, so $\lambda$ scales all of theirs:

# %%
target = torch.randn(50, generator=torch.Generator().manual_seed(0))
p1, p2 = torch.zeros(50, requires_grad=True), torch.zeros(50, requires_grad=True)
opt1, opt2 = torch.optim.AdamW([p1], lr=0.01), torch.optim.AdamW([p2], lr=0.01)
for _ in range(100):
    for p, opt, scale in ((p1, opt1, 1.0), (p2, opt2, 0.001)):
        opt.zero_grad()
        (scale * ((p - target) ** 2).sum()).backward()
        opt.step()
print(f"AdamW, 100 steps on a loss and on 0.001 times it: the parameters differ by at most {(p1 - p2).abs().max():.1e}")

model.zero_grad()
batch = test[:128].to(device)
diffusion.training_losses(model, batch, torch.randint(0, T, (128,), device=device))["vb"].mean().backward()
grad_v = model.out[-1].weight.grad[1]  # the output layer's weights for the v channel
print(f"the gradient of lambda L_vlb on v's output weights: {grad_v.pow(2).mean().sqrt():.1e} (root mean square), "
      f"{grad_v.pow(2).mean().sqrt() / 1e-8:.0f} times Adam's epsilon")
model.zero_grad()

# %% [markdown] slideshow={"slide_type": "slide"}
# ## 5. Where Σ pays off: the first terms of the bound
#
# Sample the same network three ways: its learned $\Sigma$, or a fixed $\tilde\beta_t$ or $\beta_t$. For the fixed
# ones we wrap the model to drop its v channel (`MeanOnly`) and switch the diffusion's `var_type`
# (`with_variance`); the mean is the same in all three. First, the terms $L_t$ of the variational bound (in
# bits/dim) at the first 50 steps, where notebook 03 found most of the bound: a diffusion with
# `loss_type="kl"` returns one term per example.

# %% slideshow={"slide_type": "slide"}
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
ax.legend()
plt.show()

# %% [markdown] slideshow={"slide_type": "slide"}
# The learned variance gives the smallest terms, hence the best likelihood: Improved DDPM's main point in section
# 3.1 (their Tables 1 and 2 compare $L_\text{hybrid}$ with $L_\text{simple}$). Our digits models agree: 4.28 bits/dim
# with the hybrid loss against 4.57 with $L_\text{simple}$ and $\tilde\beta$ (docs/claims.md, claim 5). Beyond the
# first few dozen steps $\beta_t \approx \tilde\beta_t$ and the three agree.
#
# ## 6. Sampling with 25 steps
#
# With $K \ll T$ sampling steps (`respace`, Improved DDPM section 4; notebook 10), each step is a bigger jump, and
# the respaced $\beta'$ and $\tilde\beta'$ differ over more of the chain. Not at every step: the share of steps
# where $\beta'/\tilde\beta' > 1.1$, for the shipped model's chain:

# %%
for k in (10, 25, 50, 100, 250, 1000):
    chain = respace(diffusion, k) if k < T else diffusion
    r = chain.betas[1:] / chain.posterior_variance[1:]  # the first step has beta~' = 0
    print(f"{k:4d} steps: beta'/beta~' > 1.1 at {np.mean(r > 1.1):.0%} of the steps, median ratio {np.median(r):.3f}")

# %% [markdown]
# The paper found that models with learned $\Sigma$ keep their sample quality down to about 50-100 steps, where
# fixed variances degrade (Figure 8, for models trained hundreds of thousands of steps). Below, the three variants
# with the same noise, and the FID of each against the 360 held-out **test** digits, the one reference set of these
# notebooks (in the feature space of the shipped digits classifier). An FID depends on its reference set (which
# images, how many) and on the feature network, so FIDs against different references do not compare; and it is
# biased upwards by few samples, so compare the three with each other, not with published numbers.

# %% [markdown]
# **Sampling cell.** Full run: 1000 samples per variant (a minute or two on a CPU); fast mode: 100.

# %% slideshow={"slide_type": "slide"}
n_samples, steps = pick(1000, 100), 25
feature_net = load_digits_feature_net(device=device)
reference = reference_statistics("digits", "test", feature_net)  # the held-out digits; cached on disk
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

# %% [markdown] slideshow={"slide_type": "slide"}
# Read these numbers together with the learned $v(t)$ of section 4. The shipped model trained 2,000 steps on a CPU
# (the paper's runs: hundreds of thousands), and where $\beta_t \approx \tilde\beta_t$, most of the 1000-step chain,
# the factor $\log(\beta_t/\tilde\beta_t)$ leaves $v$ almost without gradient, so $v$ there is whatever the first steps
# made it, and the fixed $\tilde\beta$ can give the best samples. Section 7 measures what $v$ should have been. The
# likelihood of section 5, which is what the hybrid loss optimises, is where learning $\Sigma$ pays first. Try other
# step counts (`steps = 10`, `50`) to see how each variant degrades.
#
# ## 7. The variance a step should have
#
# Why should a $\Sigma$ learned on the 1000-step chain work for 25 steps at all? Take one reverse step from $x_t$
# back to $x_s$ (the previous step kept), with the model's mean $\tilde\mu(x_t, \hat x_0)$. Its term of the bound,
# $\mathbb{E}\, D_{KL}(q(x_s \mid x_t, x_0) \,\|\, \mathcal{N}(\tilde\mu(x_t, \hat x_0), \Sigma))$, is smallest at
#
# $$\Sigma^* = \tilde\beta' + c^2\, e_t,\qquad e_t = \mathbb{E}\,(\hat x_0 - x_0)^2 \text{ per pixel},$$
#
# with $c$ the weight of $x_0$ in $\tilde\mu$ (DDPM eq. 7): the variance of the true reverse step around the model's
# mean. A perfect $\hat x_0$ gives $\tilde\beta'$; one as bad as guessing for data $\mathcal{N}(0, \mathbf{I})$
# gives $\beta'$. `xstart_errors` measures $e_t$ for the shipped model on the test digits, and
# `kl_optimal_variance` turns it into $\Sigma^*$ and the $v^*$ of eq. 15 that gives it, for any chain:

# %% slideshow={"slide_type": "slide"}
chains = {"1000 steps": diffusion, "25 steps": respace(diffusion, 25), "10 steps": respace(diffusion, 10)}
t_err = np.unique(np.concatenate([np.geomspace(1, T - 1, pick(40, 12)).astype(int)] +
                                 [c.timestep_map.numpy() for c in list(chains.values())[1:]]))
e = xstart_errors(model, diffusion, test[: pick(64, 16)], t_err, generator=torch.Generator(device=device).manual_seed(0))
v_model = interpolation_weights(model, diffusion, test[: pick(64, 16)], t_err,
                                generator=torch.Generator(device=device).manual_seed(0))
optimal = {}
for name, chain in chains.items():
    kept = chain.timestep_map.numpy() if name != "1000 steps" else np.arange(T)
    optimal[name] = kl_optimal_variance(chain, np.interp(kept, t_err, e))  # exact at the measured t

fig, (ax, ax2) = plt.subplots(1, 2, figsize=(8, 4.0), layout="constrained")
k25 = optimal["25 steps"]
ax.plot(k25["t"], k25["beta_tilde"] / k25["beta"], "o-", color="tab:gray", ms=3, label="β̃′")
ax.plot(k25["t"], k25["sigma"] / k25["beta"], "o-", color="tab:green", ms=4, label="Σ*")
ax.plot(k25["t"], np.exp(np.interp(k25["t"], t_err, v_model) * np.log(k25["beta"] / k25["beta_tilde"]))
        * k25["beta_tilde"] / k25["beta"], "o-", color="tab:blue", ms=3, label="the model's Σ")
ax.axhline(1, color="k", lw=1)
ax.set(xlabel="t", ylabel="Σ / β′", title="25 steps: Σ between β̃′ and β′")
ax.legend()
dense = optimal["1000 steps"]
on_grid = np.isin(dense["t"], t_err)  # where e_t was measured
ax2.plot(dense["t"][on_grid], dense["v"][on_grid], color="tab:green", lw=2, label="v*, 1000 steps")
for name, marker in (("25 steps", "o"), ("10 steps", "s")):
    ax2.plot(optimal[name]["t"], optimal[name]["v"], marker, color="tab:green", mfc="none", label=f"v*, {name}")
ax2.plot(t_err, v_model, color="tab:blue", lw=2, label="the model's v")
ax2.set(xscale="log", xlabel="t", ylabel="v", ylim=(0, 1.35), title="the best v for each step")
fig.legend(*ax2.get_legend_handles_labels(), loc="outside lower right", ncols=2)
plt.show()
k25_dense = np.interp(k25["t"], dense["t"][on_grid], dense["v"][on_grid])  # the 1000-step chain's v* at those t
print("v* at the 25-step chain's steps, that chain against the 1000-step chain:")
print("   " + ", ".join(f"t = {t_}: {a:.2f} / {b:.2f}" for t_, a, b in zip(k25["t"][:6], k25["v"][:6], k25_dense[:6])))
later = k25["t"] >= 150
print(f"from t = 150 on, the two differ by at most {np.abs(k25['v'] - k25_dense)[later].max():.2f}")
middle = (dense["t"] >= 100) & (dense["t"] <= 900) & on_grid
print(f"the model's v: {v_model.min():.2f} to {v_model.max():.2f}; v* of the 1000-step chain for t = 100 to 900: "
      f"{dense['v'][middle].min():.2f} to {dense['v'][middle].max():.2f}")

# %% [markdown] slideshow={"slide_type": "slide"}
# **Why a learned $\Sigma$ should transfer.** At the same $t$, the 25-step chain wants a larger $v$ than the
# 1000-step chain only in its first few steps (most at the first, a long jump to $x_0$); from $t \approx 150$ on the
# two nearly agree: the best $v$ is set by the noise level, how well $x_0$ can be guessed at $t$, more than by the
# size of the step. (For small steps one can show $v^* \approx e_t/(1-\bar\alpha_t)$, the model's
# error relative to that of the guess for data $\mathcal{N}(0, \mathbf{I})$.) So a $v$ learned on the full chain
# and reused by eq. 15 with the respaced $\beta'$ and $\tilde\beta'$ is close to right: Improved DDPM section 4
# samples its learned-$\Sigma$ models exactly so (Figure 8). (At the very last step, $t = 999$, $v^* > 1$: there the
# model's clipped $\hat x_0$ is worse than the guess $\beta'$ assumes.)
#
# **Why it does not here.** The model's $v$ is flat near 0.77, close to $v^*$ only at the first steps, where it gets
# its gradient (section 4); from $t = 100$ on, $v^*$ is about 0.2 to 0.3 and the model's $\Sigma$ is too large at most
# steps of a respaced chain: further from $\Sigma^*$ than the fixed $\tilde\beta'$ ($v = 0$), closer than $\beta'$
# ($v = 1$). That is the order of the FIDs of section 6. Section 8 asks whether $v$ can be trained, and what that
# changes.
#
# ## 8. Is v trained?
#
# `variance_fit` (`ddpm_lite.metrics.variance`) puts sections 4 and 7 together in one diagnostic. At each $t$ of a
# grid dense at both ends of the chain it noises test digits, reads the model's mean $v$, measures its error $e_t$
# in $\hat x_0$ (clipped, as the sampler does) and turns it into $v^*(t)$, the $v$ that makes the step's term of
# the bound smallest (section 7, full chain). `rms_gap` is the root mean square of $v - v^*$, uniform in $t$: the
# steps a respaced chain of evenly spaced steps visits. A trained $v$ lies on its dashed $v^*$.

# %% slideshow={"slide_type": "slide"}
fit = variance_fit(model, diffusion, test[: pick(256, 32)], default_timesteps(T, pick(40, 12)))
print(fit.summary())
mid = (fit.t >= 300) & (fit.t <= 500)
print(f"v*(1) = {fit.v_star[fit.t == 1][0]:.2f}; v* for t = 300 to 500: {fit.v_star[mid].min():.2f} to "
      f"{fit.v_star[mid].max():.2f}; the model's v for t = 1 to 900: "
      f"{fit.v[(fit.t >= 1) & (fit.t <= 900)].min():.2f} to {fit.v[(fit.t >= 1) & (fit.t <= 900)].max():.2f}")
fig = plotting.variance_fit_figure({"shipped digits model": fit})
plt.show()

# %% [markdown] slideshow={"slide_type": "slide"}
# The shipped model's $v$ is flat, about 0.77 at every $t$, while the $v^*$ its own errors ask for falls from about
# 0.7 at $t = 1$ to about 0.2 at $t = 300$ to 500: $v$ is right only at the first steps. The reason is section 4's
# gradient: $\partial L_t/\partial v$ carries the factor $\log(\beta_t/\tilde\beta_t)$, and near $v^*$ the pull
# toward it is $\tfrac12\log^2(\beta_t/\tilde\beta_t)\,(v - v^*)$, about $10^{-5}$ of its strength at $t = 1$ for
# most $t$. What we tried, each from the shipped weights (`bench/variance_training.py`, docs/claims/variance_training.md;
# RMS gap 0.487 for the shipped model): 2,000 more steps of the same loss, 0.414; a 30 times larger step on $v$'s
# output weights, 0.422; dividing the $L_\text{vlb}$ term of step $t$ by $\log^2(\beta_t/\tilde\beta_t)$, so that
# every $t$ pulls $v$ equally hard (its minimum, $v^*$, unchanged), 0.125; the same with the sampler's clipped
# $\hat x_0$ in the term, 0.074, with $v$ from 0.19 to 1.38 along the chain. Training longer does not fix the
# weighting; changing it does.
#
# Does a trained $v$ give the paper's result? Partly. We trained models from scratch with that loss (RMS gap 0.070
# at $T = 1000$, 0.080 at $T = 4000$) and sampled them with 25, 50, 100 and 250 steps (docs/claims.md, claim 2;
# three seeds of 334 samples, floor 1.61). Against the same network sampled with the fixed $\beta$, the learned
# $\Sigma$ wins as Figure 8 says, by a margin that shrinks as the steps grow: at $T = 4000$, FID 2.45, 2.11, 1.95,
# 1.91 against 3.31, 2.39, 2.10, 1.95, significant at every step count. The oracle $\Sigma^*$ ($v^*$ at every step
# of the chain) is within 0.07 of the learned $\Sigma$ everywhere: $v$ has learned what the bound asks of it. But
# the fixed $\tilde\beta$ is level or better (the same network at $T = 4000$: 2.31, 1.98, 1.83, 1.88). The
# best variance for the bound is never below $\tilde\beta'$ (it is $\tilde\beta' + c^2 e_t$, section 7), and on
# these digits FID ranks the variances by size, the smallest best. In this FID the paper's claim against
# $\tilde\beta$ is **not** reproduced on 8×8 digits: the fixed $\tilde\beta$ barely degrades with few steps.
# Section 9 shows where the effect is.
#
# ## 9. Where β̃ falls short
#
# Section 7's best variance, $\Sigma^* = \tilde\beta' + c^2 e_t$, says what $\tilde\beta$ leaves out: the
# uncertainty of $\hat x_0$, carried into $x_{t-1}$. A step with $\tilde\beta'$ adds too little noise, and with
# few steps, where $c^2 e_t$ is a large part of each step's variance, the samples come out with too little spread:
# too alike, too smooth. Figure 8 of Improved DDPM shows what that costs on CIFAR-10 and ImageNet 64×64. Section 8
# found that our digits FID does not show it. Is the effect missing on digits, or does that FID not see it?
#
# A perfect model answers the first half, in closed form. Make the digits Gaussian, with the mean and covariance
# of the 1,437 training digits. Then $\mathbb{E}[x_0 \mid x_t]$ is linear in $x_t$, every step of every sampler
# maps a Gaussian to a Gaussian, and `gaussian_sampler_moments` follows the samples' mean and covariance through the
# chain exactly: no network, no sampling noise. Six reverse steps: $\tilde\beta$, $\beta$, $\Sigma^*$ per step
# (one variance for every pixel, the $v^*(t)$ of section 8), $\Sigma^*$ per pixel (the best a learned $\Sigma$ with
# one $v$ per pixel can do), the full $\Sigma^*$ (the covariance of the true reverse step,
# $\tilde\beta'\mathbf{I} + c^2\,\mathrm{Cov}(x_0 \mid x_t)$) and DDIM. On the right,
# the Fréchet distance to the data: the FID formula, here on the pixels themselves.

# %% slideshow={"slide_type": "slide"}
pixels = load_dataset("digits", "train").images.reshape(-1, 64).double().numpy()  # 1,437 digits, 64 pixels each
mean, cov = pixels.mean(axis=0), np.cov(pixels.T)
step_counts = (10, 25, 50, 100, 250, 1000)
moments = {name: [gaussian_sampler_moments(respace(diffusion, k) if k < T else diffusion, mean, cov, name)
                  for k in step_counts] for name in SAMPLER_VARIANCES}  # the six reverse steps above
fig = plotting.gaussian_sampler_figure(moments, mean, cov, step_counts)
plt.show()
print(f"the data: total variance {np.trace(cov):.2f}; with 25 steps:")
for name, label in SAMPLER_VARIANCES.items():
    m, c = moments[name][step_counts.index(25)]
    print(f"  {label:>27}: total variance {np.trace(c):5.2f}, Fréchet distance {frechet_distance(m, c, mean, cov):.4f}")

# %% [markdown] slideshow={"slide_type": "slide"}
# The effect is there, even for a perfect model. With 25 steps the $\tilde\beta$ samples have 18% less total
# variance than the data (15.3 against 18.7) and are 6.6 times as far from it as with the per-pixel $\Sigma^*$
# (Fréchet distance 0.19 against 0.029); one $\Sigma^*$ per step is in between (0.058), and $\beta$ overshoots
# the spread a little (19.0) and lands close to the per-pixel $\Sigma^*$ (0.043). The full $\Sigma^*$ is exact at
# every step count: for Gaussian data the true reverse step is Gaussian, so nothing is lost by skipping steps. That
# is what learning $\Sigma$ aims at, and Improved DDPM's models come close (Figure 8). DDIM has no noise to get
# wrong, but its discretisation also loses spread (16.6 with 25 steps).
#
# Our trained models show it too, when the samples are measured in pixel space. `bench/claims.py` (profile
# `full-lite-pixel`, docs/claims.md, claim 2) draws the section-8 variants again, six seeds of 334 samples, and
# measures every cell in the digits classifier's features (FID, spread) and in pixel space (the Fréchet distance of
# the raw pixels, the total variance).
# At $T = 4000$ with 25 steps, the same network's samples have a total variance of 17.50 with its learned
# $\Sigma$ and 16.99 with $\tilde\beta$ (test digits: 18.97), and pixel Fréchet distances of 0.887 and 0.925 (floor
# 0.655): the learned $\Sigma$ is closer to the test digits in every one of the six seeds (+0.038, p = 0.0009), and
# the gap shrinks with the steps (+0.038, +0.017, +0.006, +0.001 at 25, 50, 100, 250 steps), the shape of Figure 8.
# The fixed $\beta$ is further still (+0.100), the oracle's one $v^*$ per step in between (+0.019). The digits-feature
# FID of the very same samples ranks $\tilde\beta$ first (2.21 against 2.43, p = 0.01), because in the classifier's
# features the spread goes the other way: the extra per-pixel noise of a larger variance makes the features of the
# samples *less* spread out (total variance of the features 75.1 with $\tilde\beta$, 72.4 learned, 67.2 with
# $\beta$; test digits 80.5). Both measures are significant, in opposite directions: an FID says what its feature
# network sees.
#
#
# ## What to remember
#
# - $\beta_t$ and $\tilde\beta_t$ are the two natural fixed variances; they differ only in the first steps of a long
#   chain, but those steps dominate the likelihood, and with few sampling steps they differ over much more of it.
# - Improved DDPM learns $\Sigma_\theta = \exp(v\log\beta_t + (1-v)\log\tilde\beta_t)$, one $v$ per dimension
#   (eq. 15), trained by $L_\text{simple} + \lambda L_\text{vlb}$ with the mean frozen in the second term (eq. 16).
# - The same network can be sampled with a fixed variance by dropping its v channel.
# - The best variance of a step, $\tilde\beta' + c^2 e_t$, depends on how well $x_0$ is known at $t$, hardly on the
#   step size: why a learned $v$ should carry over to fewer steps, if it has been learned at every $t$.
# - $\tilde\beta$ leaves out $c^2 e_t$: with few steps its samples have too little spread, even with a perfect
#   model. On digits the pixel-space distance shows it; the digits-feature FID does not.
#
# Next: notebook 05, the cosine schedule; notebook 06, why $L_\text{vlb}$ alone is hard to optimise.
