# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/ddpm-lite/ddpm_lite/blob/main/notebooks/exercises/02_reverse_process.ipynb)
#
# > **Exercise version.** Fill in the cells marked `YOUR CODE HERE`; the solutions are in `notebooks/02_reverse_process.ipynb`.
#
# # 02 · The reverse process: from noise back to data, one Gaussian step at a time
#
# Notebook 01 turned data into noise with a fixed process $q$. Generating data means running it **backwards**:
# start from pure noise $x_T \sim \mathcal{N}(0, \mathbf{I})$ and take $T$ small steps $x_t \to x_{t-1}$. This
# notebook's one idea: **each small step back is (nearly) Gaussian**, so a network only has to predict its mean,
# and sampling is a loop of "predict, step, add a little noise" (DDPM, Ho et al. 2020, Algorithm 2).
#
# *About 20 minutes.* Two exercises; each checks itself when you run it, and "Run all" works before you solve them.

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
from ddpm_lite.configs import ExperimentConfig
from ddpm_lite.course import plotting
from ddpm_lite.course.analytic import GaussianMixture
from ddpm_lite.course.exercises import check_p_sample, check_q_posterior
from ddpm_lite.course.reverse_process import nearest_distance, reverse_step_mixture, sample_trajectory
from ddpm_lite.course.widgets import SamplingTrajectoryExplorer
from ddpm_lite.data import toy_2d
from ddpm_lite.runtime import default_device, fast_mode, pick
from ddpm_lite.train import Trainer, load_data

device = default_device()  # training uses it; sampling below runs on the CPU (a small MLP on 2-D points)
FAST = fast_mode()  # True in CI (DDPM_LITE_FAST=1): shorter training, fewer points. Learners get the full run.
print(f"device: {device}, fast mode: {FAST}")
_ = torch.manual_seed(0)
T = 1000
betas = torch.from_numpy(get_betas("linear", T))  # DDPM's schedule, float64, beta_1 .. beta_T

# %% [markdown]
# ## 1. Undoing a small step of noise
#
# Bayes' rule gives the reverse of one forward step,
#
# $$q(x_{t-1} \mid x_t) = \frac{q(x_t \mid x_{t-1})\, q(x_{t-1})}{q(x_t)},$$
#
# but $q(x_{t-1})$ is the data distribution blurred by $t-1$ steps of noise: unknown, since knowing it would mean
# we could already generate data. What saves us is its **shape**. When $\beta_t$ is small, $q(x_t \mid x_{t-1})$
# is a narrow Gaussian bump (width $\sqrt{\beta_t}$); over so short a range the smooth $q(x_{t-1})$ is nearly
# constant, and the product is again close to a Gaussian (Feller 1949; Sohl-Dickstein et al. 2015). So DDPM
# models each reverse step as a Gaussian with a learned mean (DDPM eq. 1):
#
# $$p_\theta(x_{t-1} \mid x_t) = \mathcal{N}\big(x_{t-1};\ \mu_\theta(x_t, t),\ \sigma_t^2 \mathbf{I}\big).$$
#
# We can watch this happen where everything is known exactly: 1-D data made of two bumps at $\pm 1$. Then the true
# reverse of a jump from $x_t$ back to $x_{t-k}$ is a mixture of two Gaussians (`reverse_step_mixture`). Below,
# from $x_{100} = 0$, halfway between the bumps: one step back is a Gaussian; a long jump back is not.

# %%
linear = GaussianDiffusion(betas.numpy())
bumps = GaussianMixture([[-1.0], [1.0]], std=0.15)  # the 1-D data: x_0 ~ N(-1, 0.15^2) or N(1, 0.15^2)
fig = plotting.reverse_step_figure(bumps.means[:, 0], bumps.std, x_t=0.0, t=100, jumps=[1, 10, 30, 100],
                                   diffusion=linear)
plt.show()

ab = np.append(1.0, linear.alphas_cumprod)  # ab[s]: alpha_bar after s steps (ab[0] = 1, the data)
one_step = reverse_step_mixture(0.0, ab[99], ab[100], [-1.0, 1.0], 0.15)
print(f"one step back from x_100 = 0: mixture weights {one_step[0].round(3)}, means {one_step[1].round(4)}: "
      "two nearly equal, nearly coincident Gaussians, i.e. one Gaussian")

# %% [markdown]
# With $T = 1000$ steps of $\beta_t \le 0.02$, every step is in the left-hand regime. A sampler that takes far
# fewer, bigger steps needs more care (notebooks 04 and 10).
#
# ## 2. The reverse step when $x_0$ is known (DDPM eqs. 6–7)
#
# There is one case where the reverse step is **exactly** Gaussian: when we also condition on the data point
# $x_0$. Then every distribution in Bayes' rule is a Gaussian from notebook 01, and
#
# $$q(x_{t-1} \mid x_t, x_0) = \mathcal{N}\big(x_{t-1};\ \tilde\mu_t(x_t, x_0),\ \tilde\beta_t \mathbf{I}\big),$$
# $$\tilde\mu_t(x_t, x_0) = \frac{\sqrt{\bar\alpha_{t-1}}\,\beta_t}{1-\bar\alpha_t}\,x_0
#   + \frac{\sqrt{\alpha_t}\,(1-\bar\alpha_{t-1})}{1-\bar\alpha_t}\,x_t,
#   \qquad \tilde\beta_t = \frac{1-\bar\alpha_{t-1}}{1-\bar\alpha_t}\,\beta_t.$$
#
# This **posterior** is what training matches $p_\theta$ against (the KL terms of notebook 03). The mean is a
# weighted average of where we came from ($x_0$) and where we are ($x_t$).
#
# ### Exercise 1: `q_posterior`
#
# Return the pair `(mean, variance)`: the mean with the shape of `x0`, the variance one number per example (shape
# `(B,)` or `(B, 1, ...)`). Code index `t = 0..T-1` is the paper's $t+1$, so $\bar\alpha_{t-1}$ at code `t = 0`
# is $\bar\alpha_0 = 1$ (no noise yet): prepend a 1 to the cumulative product rather than indexing `[t - 1]`.

# %% tags=["exercise"]
def q_posterior(x0, x_t, t, betas):
    """Mean and variance of q(x_{t-1} | x_t, x_0) (DDPM eqs. 6-7)."""
    # YOUR CODE HERE
    raise NotImplementedError("hint: alpha_bar_prev = torch.cat([torch.ones(1), alpha_bar[:-1]]); reshape per-t values to (B, 1, ...)")


q_posterior = check_q_posterior(q_posterior)

# %% [markdown]
# Two checks. Bayes' rule again: a data distribution that is a single point $x_0$ is a "mixture" of one Gaussian of
# width 0, and `reverse_step_mixture` must give your posterior. And the package's `q_posterior_mean_variance`:

# %%
x0_point, x_t_point, t_check = 0.7, -0.4, 250
w, m, s = reverse_step_mixture(x_t_point, ab[t_check - 1], ab[t_check], [x0_point], std=0.0)
mean, var = q_posterior(torch.tensor([[x0_point]]), torch.tensor([[x_t_point]]), torch.tensor([t_check - 1]), betas)
print(f"Bayes: mean {m[0]:.6f}, variance {s[0] ** 2:.6f};  your q_posterior: mean {mean.item():.6f}, "
      f"variance {var.item():.6f}")
assert np.isclose(m[0], mean.item(), rtol=1e-5) and np.isclose(s[0] ** 2, var.item(), rtol=1e-5)

x0, x_t = toy_2d("moons", 8), torch.randn(8, 2)
t = torch.randint(0, T, (8,))
pkg_mean, pkg_var, _ = linear.q_posterior_mean_variance(x0, x_t, t)
mean, var = q_posterior(x0.double(), x_t.double(), t, betas)
assert torch.allclose(mean.float(), pkg_mean, atol=1e-5)
assert torch.allclose(torch.as_tensor(var).reshape(-1).float(), pkg_var.reshape(-1), rtol=1e-4)

# %% [markdown]
# How the weights move along the chain: at the very first step the posterior mean is $x_0$ itself; within a few
# steps it leans on $x_t$, and near $t = T$ it is almost $\sqrt{\alpha_t}\,x_t$ ($x_0$ is forgotten). And
# $\tilde\beta_t$ is slightly smaller than $\beta_t$, much smaller only at the start (notebook 04 is about that gap).

# %%
ts = torch.arange(T)
ones, zeros = torch.ones(T, 1, dtype=torch.float64), torch.zeros(T, 1, dtype=torch.float64)
coef_x0 = q_posterior(ones, zeros, ts, betas)[0].reshape(-1)  # the mean for x0 = 1, x_t = 0
coef_xt = q_posterior(zeros, ones, ts, betas)[0].reshape(-1)
beta_tilde = torch.as_tensor(q_posterior(zeros, zeros, ts, betas)[1]).reshape(-1)

fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.2), layout="constrained")
ax1.plot(ts, coef_x0, label="weight of x₀")
ax1.plot(ts, coef_xt, label="weight of xₜ")
ax1.set(xscale="symlog", xlabel="t (log scale above 1)", title="the posterior mean μ̃ₜ = a·x₀ + b·xₜ")
ax1.legend()
ax2.plot(ts, betas, "k", label="βₜ")
ax2.plot(ts, beta_tilde, "--", label="β̃ₜ")
ax2.set(xscale="symlog", yscale="log", xlabel="t (log scale above 1)", title="the posterior variance")
ax2.legend()
plt.show()

# %% [markdown]
# ## 3. Learning the reverse step
#
# At sampling time there is no $x_0$. The network sees only $x_t$, so it **predicts** $x_0$, or, equivalently and
# better in practice, the noise $\epsilon$ that was added (DDPM eq. 11; $x_0 = (x_t - \sqrt{1-\bar\alpha_t}\,
# \epsilon)/\sqrt{\bar\alpha_t}$ by eq. 4). Putting that prediction into $\tilde\mu_t$ gives
#
# $$\mu_\theta(x_t, t) = \frac{1}{\sqrt{\alpha_t}}\Big(x_t - \frac{\beta_t}{\sqrt{1-\bar\alpha_t}}\,
#   \epsilon_\theta(x_t, t)\Big).$$
#
# For the variance DDPM fixes $\sigma_t^2$ to $\beta_t$ or to $\tilde\beta_t$; both worked about as well (section
# 3.2). We use $\tilde\beta_t$, the `fixed_small` variance.
#
# Training is notebook 03's simple loss, $\lVert\epsilon - \epsilon_\theta(x_t, t)\rVert^2$. Here a small MLP
# learns a 2-D swiss roll with the `toy` preset (under a minute on a laptop CPU; shorter in fast mode).

# %%
config = ExperimentConfig.preset("toy")  # swiss roll, MLP predicting eps, linear schedule, T = 1000, L_simple
print(config.data, config.model, config.diffusion)
trainer = Trainer.from_config(config)  # on `device`

# %% [markdown]
# **Training cell.** Full run: 3000 steps (about 20–40 s on a CPU); fast mode: 500.

# %%
history = trainer.train(pick(3000, 500))
losses = np.array(history["loss"])
print(f"loss: {losses[0]:.3f} at the first step, {losses[-100:].mean():.3f} on average over the last 100")
assert losses[-100:].mean() < 0.5 * losses[:10].mean()
model = trainer.ema.cpu().eval()  # the averaged weights, for sampling
diffusion = trainer.diffusion
assert np.allclose(diffusion.betas, betas.numpy())

# %% [markdown]
# ## 4. One step of ancestral sampling
#
# **Algorithm 2** of DDPM: $x_T \sim \mathcal{N}(0, \mathbf{I})$, then for $t = T, \dots, 1$,
#
# $$x_{t-1} = \frac{1}{\sqrt{\alpha_t}}\Big(x_t - \frac{\beta_t}{\sqrt{1-\bar\alpha_t}}\,\epsilon_\theta(x_t, t)
#   \Big) + \sigma_t z,\qquad z \sim \mathcal{N}(0, \mathbf{I}) \text{ if } t > 1, \text{ else } z = 0.$$
#
# ### Exercise 2: `p_sample`
#
# One step: `model(x_t, t)` predicts $\epsilon$; `noise` is $z$ (given, so the result is reproducible); use
# $\sigma_t^2 = \tilde\beta_t$. At the last step (code `t = 0`, the paper's $t = 1$) add no noise: there
# $\tilde\beta = 0$ anyway, but only if $\bar\alpha_{t-1}$ is 1 there.

# %% tags=["exercise"]
def p_sample(model, x_t, t, noise, betas):
    """x_{t-1} from x_t: the mean of DDPM eq. 11 plus sigma_t * noise, sigma_t^2 = beta-tilde_t (Algorithm 2)."""
    # YOUR CODE HERE
    raise NotImplementedError("hint: eps = model(x_t, t); mean = (x_t - beta_t / sqrt(1 - alpha_bar_t) * eps) / sqrt(alpha_t)")


p_sample = check_p_sample(p_sample)

# %% [markdown]
# Your step's mean (the step without noise) is the posterior mean of exercise 1 at the network's guess of $x_0$:

# %%
x_t, t = torch.randn(5, 2), torch.tensor([999, 500, 100, 10, 1])
with torch.no_grad():
    eps = model(x_t, t)
    x0_hat = diffusion._predict_xstart_from_eps(x_t, t, eps)  # eq. 4 solved for x_0
    step_mean = p_sample(model, x_t, t, torch.zeros_like(x_t), betas)
post_mean, _ = q_posterior(x0_hat.double(), x_t.double(), t, betas)
assert torch.allclose(torch.as_tensor(step_mean).double(), post_mean, atol=1e-4)

# %% [markdown]
# ## 5. The whole loop
#
# Now run Algorithm 2 with **your** `p_sample`, from `n` points of pure noise, keeping every step. The `.float()`
# keeps the points in float32 (float64 betas would otherwise promote them) for the network.

# %%
n = pick(1000, 200)
x = torch.randn(n, 2, generator=torch.Generator().manual_seed(0))  # x_T
step_noise = torch.Generator().manual_seed(1)
path = [x]
with torch.no_grad():
    for i in reversed(range(T)):
        t = torch.full((n,), i)
        z = torch.randn(x.shape, generator=step_noise)
        x = p_sample(model, x, t, z, betas).float()
        path.append(x)
path = torch.stack(path)  # (T + 1, n, 2): path[k] after k reverse steps, path[-1] = the samples
print(f"{tuple(path.shape)}: x_T has std {path[0].std():.2f}, the samples {path[-1].std():.2f}")

# %% [markdown]
# The package's sampler (`p_sample_loop`, here through `sample_trajectory`, which keeps every step) given the same
# noise must agree. Then the samples against the data: the mean distance from a point to its nearest training
# point is small for the samples, large for the noise they started from.

# %%
package_path = sample_trajectory(diffusion, model, path[0], generator=torch.Generator().manual_seed(1))
assert torch.allclose(package_path, path, atol=1e-3), (package_path - path).abs().max()

data = load_data(config.data)  # the training points
d_noise, d_samples = nearest_distance(path[0], data), nearest_distance(path[-1], data)
d_test = nearest_distance(load_data(config.data, "test")[:n], data)
print(f"mean distance to the nearest data point: noise {d_noise:.3f}, samples {d_samples:.3f}, "
      f"held-out data {d_test:.3f}")
assert d_samples < 0.6 * d_noise

fig, axes = plt.subplots(1, 5, figsize=(13, 2.9), layout="constrained", sharex=True, sharey=True)
for ax, k in zip(axes, [0, 500, 800, 950, T]):
    ax.scatter(data[:2000, 0], data[:2000, 1], s=1, color="0.85")
    ax.scatter(path[k, :, 0], path[k, :, 1], s=2)
    ax.set(title=f"x_{T - k}", xlim=(-3, 3), ylim=(-3, 3), aspect="equal", xticks=[], yticks=[])
plt.show()

# %% [markdown]
# Most of the structure appears in the last few hundred steps: at $t = 500$ the cloud is still nearly Gaussian.
# That is the linear schedule spending many steps on almost-pure noise (notebook 05).
#
# ## 6. Explore
#
# Scrub through sampling: the slider sets how many reverse steps have been taken (0: $x_T$, pure noise; 1000: the
# samples $x_0$). Coloured lines follow single particles; the right panel is the distance of the cloud to the
# data. The menu switches to another run: the **exact** denoiser of the "8 gaussians" data (a Gaussian mixture,
# whose optimal $\epsilon$-prediction is known in closed form, `ddpm_lite.course.analytic`), sampled with the same
# Algorithm 2. Watch the particles commit to a mode: early on they wander, late they barely move.

# %%
eight = toy_2d("8gaussians", 2000)
exact = GaussianMixture(np.sqrt(2) * np.stack([np.cos(np.arange(8) * np.pi / 4), np.sin(np.arange(8) * np.pi / 4)], 1),
                        std=0.1)  # the distribution toy_2d("8gaussians") samples from
exact_path = sample_trajectory(linear, exact.eps_model(linear), torch.randn(n, 2), generator=torch.Generator())
print(f"8 gaussians, exact denoiser: distance to the data {nearest_distance(exact_path[-1], eight):.3f}")

explorer = SamplingTrajectoryExplorer(
    {"swiss roll: your trained MLP": path, "8 gaussians: the exact denoiser": exact_path},
    data={"swiss roll: your trained MLP": data, "8 gaussians: the exact denoiser": eight}, step=900)
explorer

# %% [markdown]
# The widget can also be driven from code: every control is a normal ipywidget.

# %%
before = explorer.image.value
explorer.step.value = T
assert explorer.image.value != before and "after 1000 of 1000 reverse steps" in explorer.titles[1]
explorer.dataset.value = "8 gaussians: the exact denoiser"
print(explorer.titles)

# %% [markdown]
# ## What to remember
#
# - For small $\beta_t$ the reverse step $q(x_{t-1} \mid x_t)$ is nearly Gaussian, so $p_\theta(x_{t-1} \mid
#   x_t)$ is a Gaussian whose mean the network provides.
# - Given $x_0$, the reverse step is exactly Gaussian (eqs. 6–7): mean $\tilde\mu_t(x_t, x_0)$, variance
#   $\tilde\beta_t$.
# - The network predicts $\epsilon$; eq. 11 turns it into the mean. Sampling (Algorithm 2) is $T$ such steps,
#   each adding $\sigma_t z$, except the last.
#
# Next: notebook 03 takes the training loss apart; notebook 04 learns $\sigma_t$ too.
