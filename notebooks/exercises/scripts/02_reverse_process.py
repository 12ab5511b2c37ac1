# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown] slideshow={"slide_type": "slide"}
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
# *About 25 minutes.* Three exercises; each checks itself when you run it, and "Run all" works before you solve them.

# %% slideshow={"slide_type": "skip"} tags=["colab-setup"]
# In Colab: install ddpm_lite from GitHub (Colab's own torch, numpy and ipywidgets are kept). Elsewhere: nothing.
import sys

if "google.colab" in sys.modules:
    from IPython import get_ipython

    get_ipython().run_line_magic("pip", "install -q git+https://github.com/ddpm-lite/ddpm_lite")

# %% slideshow={"slide_type": "skip"}
import copy
import time

import matplotlib.pyplot as plt
import numpy as np
import torch
from tqdm.auto import tqdm

from ddpm_lite import GaussianDiffusion, get_betas
from ddpm_lite.configs import ExperimentConfig
from ddpm_lite.course import plotting
from ddpm_lite.course.analytic import GaussianMixture
from ddpm_lite.course.exercises import check_p_sample, check_q_posterior, check_train_step, hint  # noqa: F401
from ddpm_lite.course.reverse_process import nearest_distance, reverse_step_mixture, sample_trajectory, score_field
from ddpm_lite.course.widgets import SamplingTrajectoryExplorer, ScoreFieldExplorer
from ddpm_lite.data import toy_2d
from ddpm_lite.runtime import default_device, fast_mode, pick, steps_in
from ddpm_lite.train import load_data

device = default_device()  # the package's default; this notebook's small MLP trains and samples on the CPU
FAST = fast_mode()  # True in CI (DDPM_LITE_FAST=1): shorter training, fewer points. Learners get the full run.
print(f"device: {device}, fast mode: {FAST}")
_ = torch.manual_seed(0)
T = 1000
betas = torch.from_numpy(get_betas("linear", T))  # DDPM's schedule, float64, beta_1 .. beta_T

# %% [markdown] slideshow={"slide_type": "slide"}
# ## 1. Undoing a small step of noise
#
# Bayes' rule gives the reverse of one forward step,
#
# $$q(x_{t-1} \mid x_t) = \frac{q(x_t \mid x_{t-1})\, q(x_{t-1})}{q(x_t)},$$
#
# but $q(x_{t-1})$ is the data distribution blurred by $t-1$ steps of noise: unknown, since knowing it would mean
# we could already generate data. What saves us is its **shape** over the short range one step covers. As a
# function of $x_{t-1}$, $q(x_t \mid x_{t-1})$ is a narrow Gaussian bump around $x_t/\sqrt{\alpha_t}$, of width
# $\sqrt{\beta_t/\alpha_t} \approx \sqrt{\beta_t}$. Over so short a range, $\log q(x_{t-1})$ is nearly a straight
# line, $\log q(x_{t-1}) \approx c + g \cdot x_{t-1}$, whose slope $g$ is the **score** $\nabla \log q$. A Gaussian
# times $e^{g \cdot x}$ is again a Gaussian of the same width, with its mean moved by its variance times $g$. So the
# reverse step is close to a Gaussian (Feller 1949; Sohl-Dickstein et al. 2015), centred at $x_t/\sqrt{\alpha_t}$
# **moved along the score** by about $\beta_t \nabla \log q$. That move is what the network learns: if
# $q(x_{t-1})$ were constant there, the mean would be $x_t/\sqrt{\alpha_t}$ and there would be nothing to learn. DDPM
# models each reverse step as a Gaussian with a learned mean (DDPM eq. 1):
#
# $$p_\theta(x_{t-1} \mid x_t) = \mathcal{N}\big(x_{t-1};\ \mu_\theta(x_t, t),\ \sigma_t^2 \mathbf{I}\big).$$
#
# We can watch this happen where everything is known exactly: 1-D data made of two bumps at $\pm 1$. Then the true
# reverse of a jump from $x_t$ back to $x_{t-k}$ is a mixture of two Gaussians (`reverse_step_mixture`). Below,
# from $x_{100} = 0$, halfway between the bumps: one step back is a Gaussian; a long jump back is not.

# %% slideshow={"slide_type": "slide"}
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
# At $x_{100} = 0$ the two bumps pull equally hard and the step does not move. From $x_{100} = 0.3$ it does: on the
# left, $\log q(x_{99})$ and the short range of one step, where it is nearly straight; on the right, the step alone
# (dashed, centred at $x_{100}/\sqrt{\alpha_{100}}$) and the exact reverse step (blue): the same shape, moved
# towards the bump at $+1$.

# %% slideshow={"slide_type": "slide"}
fig = plotting.score_shift_figure(bumps.means[:, 0], bumps.std, x_t=0.3, t=100, diffusion=linear)
plt.show()

alpha, beta = ab[100] / ab[99], 1 - ab[100] / ab[99]  # the step's alpha_100 and beta_100
blurred = GaussianMixture(np.sqrt(ab[100]) * bumps.means.numpy(),  # q(x_100): each bump blurred by 100 steps
                          std=float(np.sqrt(ab[100] * bumps.std ** 2 + 1 - ab[100])))
x = torch.tensor([[0.3]], requires_grad=True)
score = torch.autograd.grad(blurred.log_density(x).sum(), x)[0].item()  # d/dx log q(x_100) at 0.3
w, m, s = reverse_step_mixture(0.3, ab[99], ab[100], [-1.0, 1.0], 0.15)
print(f"x_100 / sqrt(alpha) = {0.3 / np.sqrt(alpha):.6f}; the exact reverse step's mean {(w * m).sum():.6f}; "
      f"moved by beta * score / sqrt(alpha): {(0.3 + beta * score) / np.sqrt(alpha):.6f} (score {score:.3f})")
assert np.isclose((w * m).sum(), (0.3 + beta * score) / np.sqrt(alpha), atol=1e-5)

# %% [markdown]
# The score gives the mean to six digits. For the mean this is even exact at any step size (Tweedie's formula:
# $x_t$ given $x_{t-1}$ is Gaussian); what needs the step to be small is the Gaussian *shape*, as the jumps of the
# figure before showed.

# %% [markdown] slideshow={"slide_type": "slide"}
# With $T = 1000$ steps of $\beta_t \le 0.02$, every step is in the regime of the one-step panel. A sampler that takes far
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

# %% slideshow={"slide_type": "slide"} tags=["exercise"]
def q_posterior(x0, x_t, t, betas):
    """Mean and variance of q(x_{t-1} | x_t, x_0) (DDPM eqs. 6-7)."""
    # YOUR CODE HERE
    raise NotImplementedError("exercise: replace this line by your code (run hint('q_posterior') in a cell if you want a hint)")


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

# %% [markdown] slideshow={"slide_type": "slide"}
# How the weights move along the chain: at the very first step the posterior mean is $x_0$ itself; within a few
# steps it leans on $x_t$, and near $t = T$ it is almost $\sqrt{\alpha_t}\,x_t$ ($x_0$ is forgotten). And
# $\tilde\beta_t$ is slightly smaller than $\beta_t$, much smaller only at the start (notebook 04 is about that gap).

# %% slideshow={"slide_type": "slide"}
ts = torch.arange(T)
ones, zeros = torch.ones(T, 1, dtype=torch.float64), torch.zeros(T, 1, dtype=torch.float64)
coef_x0 = q_posterior(ones, zeros, ts, betas)[0].reshape(-1)  # the mean for x0 = 1, x_t = 0
coef_xt = q_posterior(zeros, ones, ts, betas)[0].reshape(-1)
beta_tilde = torch.as_tensor(q_posterior(zeros, zeros, ts, betas)[1]).reshape(-1)

fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(8, 3.4), layout="constrained")
ax1.plot(ts, coef_x0, label="weight of x₀")
ax1.plot(ts, coef_xt, label="weight of xₜ")
ax1.set(xscale="symlog", xlabel="code t (log scale above 1)", title="the posterior mean μ̃ₜ = a·x₀ + b·xₜ")
ax1.legend()
ax2.plot(ts, betas, "k", label="βₜ")
ax2.plot(ts, beta_tilde, "--", label="β̃ₜ")
ax2.set(xscale="symlog", yscale="log", xlabel="code t (log scale above 1)", title="the posterior variance")
ax2.legend()
plt.show()

# %% [markdown] slideshow={"slide_type": "slide"}
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
torch.manual_seed(config.seed)
net = config.build_model()  # the toy MLP, on the CPU
diffusion = config.diffusion.build()
optimizer = torch.optim.AdamW(net.parameters(), lr=config.lr, weight_decay=config.weight_decay)

# %% [markdown] slideshow={"slide_type": "slide"}
# ### Exercise 2: one training step, `train_step` (Algorithm 1)
#
# **Algorithm 1** of DDPM trains the network one batch at a time: for each example, draw a step $t$ uniformly and
# noise $\epsilon \sim \mathcal{N}(0, \mathbf{I})$, make $x_t$ with eq. 4, and take a gradient step on
# $\lVert\epsilon - \epsilon_\theta(x_t, t)\rVert^2$.
#
# Write one step. Draw `t` (one per example, among the code's steps `0..T-1`, with `T = diffusion.num_timesteps`),
# then the noise, both with `generator` (so that the check can replay your step exactly); make `x_t` with
# `diffusion.q_sample(x0, t, noise)`; average the squared error over the batch and the dimensions; then the three
# calls of a PyTorch optimisation step. Return the loss as a plain number. The check trains a tiny network with your
# function and compares its parameters after one and two steps with what Algorithm 1 gives; then **your** function
# trains the MLP below. (`hint("train_step")` if the check says ❌.)

# %% slideshow={"slide_type": "fragment"} tags=["exercise"]
def train_step(model, optimizer, diffusion, x0, generator):
    """One step of DDPM Algorithm 1 on the batch x0 (L_simple, then the optimiser); returns the loss, a number."""
    # YOUR CODE HERE
    raise NotImplementedError("exercise: replace this line by your code (run hint('train_step') in a cell if you want a hint)")


train_step = check_train_step(train_step)

# %% [markdown] slideshow={"slide_type": "slide"}
# **Training cell.** **Your** `train_step`, on random batches of the swiss roll: 3000 steps in the full run, 500 in
# fast mode; the cell prints how long they took on your machine. As the package's `Trainer` does, we keep an
# exponential moving average of the weights (EMA) for sampling.

# %%
points = load_data(config.data)  # the training points
generator = torch.Generator().manual_seed(config.seed)
ema = copy.deepcopy(net).requires_grad_(False)
losses = []
start = time.perf_counter()
for step in tqdm(range(pick(3000, 500)), desc="training with your train_step"):
    batch = points[torch.randint(len(points), (config.batch_size,), generator=generator)]
    losses.append(float(train_step(net, optimizer, diffusion, batch, generator)))
    with torch.no_grad():  # ema <- d * ema + (1 - d) * weights, d = min(ema_decay, (1 + step) / (10 + step))
        decay = min(config.ema_decay, (1 + step) / (10 + step))
        for average, weight in zip(ema.parameters(), net.parameters()):
            average.lerp_(weight, 1 - decay)
print(steps_in(len(losses), time.perf_counter() - start))
losses = np.array(losses)
print(f"loss: {losses[0]:.3f} at the first step, {losses[-100:].mean():.3f} on average over the last 100")
assert losses[-100:].mean() < 0.5 * losses[:10].mean()
model = ema.eval()  # the averaged weights, for sampling
assert np.allclose(diffusion.betas, betas.numpy())

# %% [markdown] slideshow={"slide_type": "slide"}
# ## 4. One step of ancestral sampling
#
# **Algorithm 2** of DDPM: $x_T \sim \mathcal{N}(0, \mathbf{I})$, then for $t = T, \dots, 1$,
#
# $$x_{t-1} = \frac{1}{\sqrt{\alpha_t}}\Big(x_t - \frac{\beta_t}{\sqrt{1-\bar\alpha_t}}\,\epsilon_\theta(x_t, t)
#   \Big) + \sigma_t z,\qquad z \sim \mathcal{N}(0, \mathbf{I}) \text{ if } t > 1, \text{ else } z = 0.$$
#
# ### Exercise 3: `p_sample`
#
# One step: `model(x_t, t)` predicts $\epsilon$; `noise` is $z$ (given, so the result is reproducible); use
# $\sigma_t^2 = \tilde\beta_t$. At the last step (code `t = 0`, the paper's $t = 1$) add no noise: there
# $\tilde\beta = 0$ anyway, but only if $\bar\alpha_{t-1}$ is 1 there.

# %% slideshow={"slide_type": "fragment"} tags=["exercise"]
def p_sample(model, x_t, t, noise, betas):
    """x_{t-1} from x_t: the mean of DDPM eq. 11 plus sigma_t * noise, sigma_t^2 = beta-tilde_t (Algorithm 2)."""
    # YOUR CODE HERE
    raise NotImplementedError("exercise: replace this line by your code (run hint('p_sample') in a cell if you want a hint)")


p_sample = check_p_sample(p_sample)

# %% [markdown] slideshow={"slide_type": "slide"}
# Your step's mean (the step without noise) is the posterior mean of exercise 1 at the network's guess of $x_0$:

# %%
x_t, t = torch.randn(5, 2), torch.tensor([999, 500, 100, 10, 1])
with torch.no_grad():
    eps = model(x_t, t)
    x0_hat = diffusion._predict_xstart_from_eps(x_t, t, eps)  # eq. 4 solved for x_0
    step_mean = p_sample(model, x_t, t, torch.zeros_like(x_t), betas)
post_mean, _ = q_posterior(x0_hat.double(), x_t.double(), t, betas)
assert torch.allclose(torch.as_tensor(step_mean).double(), post_mean, atol=1e-4)

# %% [markdown] slideshow={"slide_type": "slide"}
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

# %% slideshow={"slide_type": "slide"}
package_path = sample_trajectory(diffusion, model, path[0], generator=torch.Generator().manual_seed(1))
assert torch.allclose(package_path, path, atol=1e-3), (package_path - path).abs().max()

data = load_data(config.data)  # the training points
d_noise, d_samples = nearest_distance(path[0], data), nearest_distance(path[-1], data)
d_test = nearest_distance(load_data(config.data, "test")[:n], data)
print(f"mean distance to the nearest data point: noise {d_noise:.3f}, samples {d_samples:.3f}, "
      f"held-out data {d_test:.3f}")
assert d_samples < 0.6 * d_noise

fig, axes = plt.subplots(1, 5, figsize=(8, 2.0), layout="constrained", sharex=True, sharey=True)
for ax, k in zip(axes, [0, 500, 800, 950, T]):
    ax.scatter(data[:2000, 0], data[:2000, 1], s=1, color="0.85")
    ax.scatter(path[k, :, 0], path[k, :, 1], s=2)
    ax.set(title=f"x_{T - k}", xlim=(-3, 3), ylim=(-3, 3), aspect="equal", xticks=[], yticks=[])
plt.show()

# %% [markdown] slideshow={"slide_type": "slide"}
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

# %% slideshow={"slide_type": "slide"}
eight = toy_2d("8gaussians", 2000)
exact = GaussianMixture(np.sqrt(2) * np.stack([np.cos(np.arange(8) * np.pi / 4), np.sin(np.arange(8) * np.pi / 4)], 1),
                        std=0.1)  # the distribution toy_2d("8gaussians") samples from
exact_path = sample_trajectory(linear, exact.eps_model(linear), torch.randn(n, 2), generator=torch.Generator())
print(f"8 gaussians, exact denoiser: distance to the data {nearest_distance(exact_path[-1], eight):.3f}")

explorer = SamplingTrajectoryExplorer(
    {"swiss roll: your trained MLP": path, "8 gaussians: the exact denoiser": exact_path},
    data={"swiss roll: your trained MLP": data, "8 gaussians: the exact denoiser": eight}, step=900)
explorer

# %% [markdown] slideshow={"slide_type": "skip"}
# The widget can also be driven from code: every control is a normal ipywidget.

# %% slideshow={"slide_type": "skip"}
before = explorer.image.value
explorer.step.value = T
assert explorer.image.value != before and "after 1000 of 1000 reverse steps" in explorer.titles[1]
explorer.dataset.value = "8 gaussians: the exact denoiser"
print(explorer.titles)
explorer.dataset.value, explorer.step.value = "swiss roll: your trained MLP", 900  # back to the view shown above

# %% [markdown] slideshow={"slide_type": "slide"}
# ## 7. The score view
#
# Section 1 found the mean of a reverse step at $x_t/\sqrt{\alpha_t}$ moved by $\beta_t \nabla \log q(x_t)$;
# eq. 11 moves it by $-\beta_t\, \epsilon_\theta / \sqrt{1-\bar\alpha_t}$. So a network that predicts the noise
# predicts the **score**, the slope of the log-density of the noised data (DDPM section 3.2):
#
# $$\epsilon_\theta(x_t, t) \approx -\sqrt{1-\bar\alpha_t}\;\nabla_{x_t} \log q(x_t),$$
#
# exactly so for the best possible prediction, $\mathbb{E}[\epsilon \mid x_t]$. For the 8 gaussians both sides are
# known in closed form:

# %%
t_check = 100  # code t
ab_t = float(linear.alphas_cumprod[t_check])
noised = GaussianMixture(np.sqrt(ab_t) * exact.means.numpy(), std=float(np.sqrt(ab_t * exact.std ** 2 + 1 - ab_t)))
x = torch.randn(500, 2, requires_grad=True)
grad_log_q = torch.autograd.grad(noised.log_density(x).sum(), x)[0]  # autograd of log q(x_t)
from_eps = score_field(exact.eps_model(linear), linear, t_check, x.detach())  # -eps* / sqrt(1 - alpha_bar_t)
print(f"largest difference between -eps / sqrt(1 - alpha_bar) and grad log q: {(from_eps - grad_log_q).abs().max():.1e} "
      f"(the score's size: {grad_log_q.norm(dim=1).median():.2f})")
assert torch.allclose(from_eps, grad_log_q, atol=1e-3)

# %% [markdown] slideshow={"slide_type": "slide"}
# Three ways to move along a score:
#
# - **Langevin dynamics**, $x \leftarrow x + \tfrac{\delta}{2}\nabla\log p(x) + \sqrt{\delta}\,z$, draws samples of
#   one fixed $p$ after many small steps. Algorithm 2, $x_{t-1} = (x_t + \beta_t \nabla\log q(x_t))/\sqrt{\alpha_t}
#   + \sigma_t z$, resembles it with $\epsilon_\theta$ as the learned gradient (DDPM section 3.2), but its target
#   moves from noise to data as $t$ falls.
# - **The reverse-time SDE.** For small $\beta_t$ the forward chain is the SDE $dx = -\tfrac12\beta(t)\,x\,dt +
#   \sqrt{\beta(t)}\,dw$, and Algorithm 2 is a discretisation of its reverse in time, $dx = [-\tfrac12\beta(t)\,x
#   - \beta(t)\nabla\log q_t(x)]\,dt + \sqrt{\beta(t)}\,d\bar w$ (Song et al. 2021, score-based generative
#   modelling through SDEs).
# - **The probability-flow ODE**, $dx/dt = f - \tfrac12 g^2\nabla\log q_t = -\tfrac12\beta(t)\,[x +
#   \nabla\log q_t(x)]$ (the same paper), moves each point without noise, and its points have the same
#   distributions $q_t$ at every $t$ as the SDE's. DDIM with $\eta = 0$ is a discretisation of it (Song et al. 2021,
#   DDIM; notebook 10).
#
# To first order in $\beta_t$, one step of Algorithm 2 is one step of the ODE (half of the score term) followed by
# one Langevin step of size $\delta = \beta_t$ (the other half and the noise). Both samplers, with the exact score
# of the 8 gaussians, from the same $x_T$:

# %%
x_T = torch.randn(n, 2, generator=torch.Generator().manual_seed(3))
eps_star = exact.eps_model(linear)
ode = [linear.ddim_sample_loop(eps_star, x_T.shape, noise=x_T, eta=0.0, clip_denoised=False,
                               generator=torch.Generator().manual_seed(k)) for k in (1, 2)]
sde = [linear.p_sample_loop(eps_star, x_T.shape, noise=x_T, clip_denoised=False,
                            generator=torch.Generator().manual_seed(k)) for k in (1, 2)]
print(f"ODE (DDIM, eta = 0), two runs: largest difference {(ode[0] - ode[1]).abs().max():.1e}; distance to the data "
      f"{nearest_distance(ode[0], eight):.3f}")
print(f"SDE (Algorithm 2), two runs:   largest difference {(sde[0] - sde[1]).abs().max():.2f}; distance to the data "
      f"{nearest_distance(sde[0], eight):.3f}")

# %% [markdown] slideshow={"slide_type": "slide"}
# The ODE maps each $x_T$ to one sample; Algorithm 2 draws new noise at every step. Both land on the data.
#
# **Explore.** Below, the score of your trained MLP, $-\epsilon_\theta(x, t)/\sqrt{1-\bar\alpha_t}$, as arrows on a
# grid (all drawn the same length: they show the direction), over the data (grey) and the samples of section 5 at
# that step (blue). On the right, the exact score of the **training points** noised to step $t$: the function the
# loss is minimised by on this training set, so the best any network could do. Move `code t`: at large $t$ every
# arrow points to the centre; as $t$ falls they turn towards the roll. At the smallest $t$ the exact score points at
# single training points, which a smooth network does not resolve (the title's cosine drops). The menu switches to the
# 8 gaussians' exact score.

# %% slideshow={"slide_type": "slide"}
training_points = GaussianMixture(data, std=0.0)  # the training set: 20,000 point masses
score_explorer = ScoreFieldExplorer(
    linear, {"swiss roll: your trained MLP": model, "8 gaussians: the exact denoiser": eps_star},
    exact={"swiss roll: your trained MLP": training_points.eps_model(linear)},
    trajectories={"swiss roll: your trained MLP": path, "8 gaussians: the exact denoiser": exact_path},
    data={"swiss roll: your trained MLP": data, "8 gaussians: the exact denoiser": eight}, t=50)
score_explorer

# %% slideshow={"slide_type": "skip"}
for t_show in (300, 50, 10, 0):
    score_explorer.t.value = t_show
    print(f"code t = {t_show:3d}: mean cosine between your MLP's arrows and the exact ones {score_explorer.agreement:.2f}")
assert score_explorer.agreement is not None and score_explorer.titles[0].startswith("swiss roll")
score_explorer.t.value = 50

# %% [markdown] slideshow={"slide_type": "slide"}
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
