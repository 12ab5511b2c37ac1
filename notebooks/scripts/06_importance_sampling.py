# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown] slideshow={"slide_type": "slide"}
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/ddpm-lite/ddpm_lite/blob/main/notebooks/06_importance_sampling.ipynb)
#
# # 06 · Importance sampling of t: taming the noise of $L_\text{vlb}$
#
# The variational bound $L_\text{vlb}$ is the objective that measures log-likelihood, yet Improved DDPM (Nichol &
# Dhariwal 2021, section 3.3) found it hard to optimise directly: its gradient is much noisier than that of
# $L_\text{simple}$. This notebook's one idea: **the noise comes from sampling $t$ uniformly while a few steps hold
# most of the bound; sample those steps more often, and reweight** (eq. 18).
#
# *About 20 minutes.* One exercise; it checks itself when you run it, and "Run all" works before you solve it.

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
from IPython.display import display

from ddpm_lite import GaussianDiffusion, LossSecondMomentResampler, get_betas
from ddpm_lite.course import plotting
from ddpm_lite.course.exercises import check_importance_sampler_weights, hint  # noqa: F401 - hint() on request
from ddpm_lite.course.widgets import LiveLossPlot
from ddpm_lite.data import load_dataset
from ddpm_lite.metrics import bits_per_dim
from ddpm_lite.models import MLPDenoiser
from ddpm_lite.pretrained import load_pretrained
from ddpm_lite.runtime import default_device, fast_mode, pick
from ddpm_lite.train import Trainer

device = default_device()  # the bound of the digits U-Net below takes 1000 network calls: faster on a GPU
FAST = fast_mode()  # True in CI (DDPM_LITE_FAST=1): fewer images, shorter training. Learners get the full run.
print(f"device: {device}, fast mode: {FAST}")
_ = torch.manual_seed(0)

# %% [markdown] slideshow={"slide_type": "slide"}
# ## 1. Where the bound lives
#
# $L_\text{vlb} = L_0 + L_1 + \dots + L_{T-1} + L_T$ has one term per step (DDPM eq. 5; notebook 03). Training
# cannot afford all $T$ terms per image, so it estimates the sum from **one** random step:
#
# $$L_\text{vlb} = T\ \mathbb{E}_{t \sim \mathcal{U}\{0..T-1\}}\big[L_t\big] + L_T.$$
#
# That estimate is unbiased, but how noisy is it? Take the shipped `digits` model (learned variances, cosine
# schedule) and compute every term for a few test digits with `calc_bpd_loop` (one network call per $t$: the
# slow cell of this notebook).

# %% slideshow={"slide_type": "slide"}
model, diffusion, config = load_pretrained("digits", device=device)
T = diffusion.num_timesteps
n_images = pick(10, 2)
test = load_dataset("digits", "test").images
out = diffusion.calc_bpd_loop(model, test[:n_images].to(device),
                              generator=torch.Generator(device=device).manual_seed(0))
vb = out["vb"].double().cpu()  # (n_images, T): column t is the term L_t in bits/dim (L_0: the decoder)
terms = vb.mean(0)
print(f"bound: {out['total_bpd'].mean():.3f} bits/dim = L_0 {terms[0]:.3f} + L_1..L_9 {terms[1:10].sum():.3f} "
      f"+ L_10..L_999 {terms[10:].sum():.3f} + L_T {out['prior_bpd'].mean():.1e}")
print(f"largest term / median term: {terms.max() / terms.median():.0f}")

fig = plotting.timestep_importance_figure(vb)
plt.show()

# %% [markdown] slideshow={"slide_type": "slide"}
# The first 1% of the steps hold a large share of the bound (Improved DDPM Figure 2), while a uniform $t$ lands
# there 1% of the time. Most batches miss them: the estimate is small; now and then a batch hits $t = 0$ and the
# estimate jumps. Here is that estimator, $T L_t$ with uniform $t$, drawn many times from the terms above:

# %%
rng = np.random.default_rng(0)
draws = 1_000_000
image, t = rng.integers(0, n_images, draws), rng.integers(0, T, draws)
uniform_estimates = T * vb.numpy()[image, t]
total = vb.sum(1).mean().item()  # the bound without L_T, averaged over the images
print(f"sum of the terms: {total:.3f}; the one-step estimate: mean {uniform_estimates.mean():.3f}, "
      f"standard deviation {uniform_estimates.std():.1f} bits/dim")
assert abs(uniform_estimates.mean() - total) < 0.1 * total and uniform_estimates.std() > 3 * total

# %% [markdown] slideshow={"slide_type": "slide"}
# An unbiased estimate whose standard deviation is many times the value it estimates: that noise goes straight
# into the gradient of $L_\text{vlb}$.
#
# ## 2. Importance sampling (Improved DDPM eq. 18)
#
# Draw $t$ from a distribution $p_t$ that favours the big terms, and divide by $p_t$ to stay unbiased:
#
# $$L_\text{vlb} = \mathbb{E}_{t \sim p_t}\Big[\frac{L_t}{p_t}\Big],\qquad
#   p_t \propto \sqrt{\mathbb{E}[L_t^2]},\qquad \sum_t p_t = 1.$$
#
# $\sqrt{\mathbb{E}[L_t^2]}$ is the root mean square of the recent values of $L_t$: the paper keeps the last 10
# losses of every $t$ and samples $t$ uniformly until each $t$ has 10 (section 3.3). One more detail is not in the
# paper but in its reference code (improved-diffusion's `LossSecondMomentResampler`, which this package's sampler of
# the same name follows): it mixes in a little of the uniform distribution, $(1 - u)\,p_t + u/T$ with
# $u$ = `uniform_prob` = 0.001, so that no $t$ is ever starved. The package's training loop (`Trainer`) multiplies
# each example's loss by a **weight** $1 / (T p_t)$: then the batch mean estimates $\frac1T \sum_t L_t$, exactly
# as with uniform $t$ and weight 1.
#
# ### Exercise: `importance_sampler_weights`
#
# `loss_history` is `(T, K)`: row `t` holds the last `K` values of $L_t$. Return the pair `(p, weights)`, both
# `(T,)`: $p_t \propto \sqrt{\text{mean}_k\, L_{t,k}^2}$ normalised to sum to 1, then mixed as
# $(1 - u)\,p_t + u / T$ with $u$ = `uniform_prob`; and the weights $1 / (T p_t)$.

# %% slideshow={"slide_type": "slide"} tags=["exercise"]
def importance_sampler_weights(loss_history, uniform_prob=0.001):
    """p_t proportional to sqrt(E[L_t^2]) (Improved DDPM eq. 18), mixed with the uniform (the reference code's
    LossSecondMomentResampler), and weights 1 / (T p_t)."""
    ### BEGIN SOLUTION
    history = torch.as_tensor(loss_history, dtype=torch.float64)
    T = history.shape[0]
    rms = history.pow(2).mean(dim=1).sqrt()
    p = rms / rms.sum()
    p = (1 - uniform_prob) * p + uniform_prob / T
    return p, 1.0 / (T * p)
    ### END SOLUTION


importance_sampler_weights = check_importance_sampler_weights(importance_sampler_weights)

# %% [markdown]
# Use it on the terms of section 1, the images playing the part of the recent losses (`vb.T` is `(T, n_images)`),
# and draw the same estimate with importance-sampled $t$: the same mean, a fraction of the spread.

# %%
p, weights = (torch.as_tensor(a).numpy() for a in importance_sampler_weights(vb.T, 0.001))
t = rng.choice(T, size=draws, p=p / p.sum())
is_estimates = T * weights[t] * vb.numpy()[image, t]
print(f"p_t from {p.min():.1e} to {p.max():.3f} (uniform: {1 / T:.0e}); weights from {weights.min():.3f} to "
      f"{weights.max():.0f}")
print(f"importance-sampled estimate: mean {is_estimates.mean():.3f}, standard deviation {is_estimates.std():.2f} "
      f"(uniform t: {uniform_estimates.std():.1f})")
assert abs(is_estimates.mean() - total) < 0.05 * total and is_estimates.std() < 0.5 * uniform_estimates.std()

# %% [markdown] slideshow={"slide_type": "slide"}
# ## 3. A race: $L_\text{vlb}$ with uniform against importance-sampled $t$
#
# Now train on $L_\text{vlb}$ alone (`loss_type="rescaled_kl"`: the loss is $T L_t$, an estimate of the bound in
# bits/dim), twice from the same start: once with uniform $t$, once with the `loss-second-moment` sampler. To keep
# it quick, the model is an MLP on the digits flattened to 64 numbers (with learned variances, so the bound can
# train $\Sigma$ too), not a U-Net. Both loss curves update live below; the dotted line marks the step where the
# importance sampler has 10 losses for every $t$ and stops sampling uniformly.

# %% [markdown]
# **Training cell.** Full run: 1500 steps per model; fast mode: 150. It prints how long each model took on your
# machine (the live plot's redraws included).

# %% slideshow={"slide_type": "slide"}
train = load_dataset("digits", "train").images.flatten(1)  # (1437, 64) in [-1, 1]
steps, chunk = pick(1500, 150), pick(50, 25)


def make_trainer(sampler):
    torch.manual_seed(0)  # the same initial weights for both
    mlp = MLPDenoiser(data_dim=64, hidden=256, num_layers=3, out_mult=2)  # outputs eps and v: 128 numbers
    vlb = GaussianDiffusion(get_betas("cosine", T), var_type="learned_range", loss_type="rescaled_kl")
    return Trainer(mlp, vlb, train, batch_size=256, lr=1e-3, schedule_sampler=sampler, device=device,
                   progress=False, seed=0)


trainers = {"uniform t": make_trainer("uniform"),
            "importance-sampled t": make_trainer(LossSecondMomentResampler(T, history_per_term=10))}
live = LiveLossPlot(list(trainers), smoothing=pick(25, 10), title="L_vlb estimates during training",
                    ylabel="loss = T·wₜ·Lₜ (bits/dim)")
sampler = trainers["importance-sampled t"].sampler


def mark_warm_up(trainer, step, logs):
    if sampler.warmed_up() and "importance sampler warm" not in live.markers:
        live.mark("importance sampler warm", step)


trainers["importance-sampled t"].callbacks.append(mark_warm_up)
for trainer in trainers.values():
    trainer.callbacks.append(live.callback(trainers, interval=chunk))
display(live)
for _ in range(steps // chunk):  # take turns, so that both curves grow together
    for trainer in trainers.values():
        trainer.train(chunk)
for name, trainer in trainers.items():
    print(f"{name}: {trainer.clock()}")

# %% [markdown] slideshow={"slide_type": "slide"}
# After the warm-up, the importance-sampled loss is smooth while the uniform one keeps spiking by orders of
# magnitude: both estimate the same bound, but one with a far smaller variance, and so does its gradient.

# %%
losses = {name: np.array(tr.history["loss"]) for name, tr in trainers.items()}
warm = live.markers.get("importance sampler warm", steps)
for name, values in losses.items():
    tail = values[warm:]
    print(f"{name:>21}: after step {warm}, loss mean {tail.mean():.2f}, standard deviation {tail.std():.2f}")
assert sampler.warmed_up() and losses["importance-sampled t"][warm:].std() < 0.5 * losses["uniform t"][warm:].std()
assert live.renders > 2  # the plot was redrawn during training

# %% [markdown] slideshow={"slide_type": "slide"}
# The sampler's $p_t$ comes from its loss history, through the same formula as your exercise:

# %%
p_sampler = sampler.weights()
p_yours, _ = importance_sampler_weights(torch.from_numpy(sampler.loss_history), sampler.uniform_prob)
assert np.allclose(torch.as_tensor(p_yours).numpy(), p_sampler)
fig = plotting.timestep_importance_figure(vb, probs=p_sampler)
fig.axes[1].set_title("pₜ: the U-Net's terms (orange),\nthe MLP's sampler (green)")
plt.show()

# %% [markdown] slideshow={"slide_type": "slide"}
# Finally, the true bound of each model on held-out digits (every $t$, `bits_per_dim`). These runs are far too
# short to rank the two: the paper trains for hundreds of thousands of steps, and its best log-likelihoods come
# from $L_\text{vlb}$ with importance sampling (section 3.3; the learning curves of Figure 6, ImageNet 64×64; the
# $L_\text{vlb}$ rows of the ablations, Table 1 for ImageNet 64×64 and Table 2 for CIFAR-10), while uniform
# $L_\text{vlb}$ stays noisy throughout. Our digits U-Nets trained on $L_\text{vlb}$ for 2,000 steps reproduce both
# halves (`docs/claims.md`, claim 3; importance-sampled against uniform $t$, mean ± spread over two seeds): loss
# noise 0.016 against 0.385, and 4.073 ± 0.033 against 4.163 ± 0.012 bits/dim. Early on, the importance-sampled
# run can even be behind: it spends most of its examples on the first few steps, so the rest of the chain sees
# fewer of them.

# %%
held_out = test[: pick(128, 16)].flatten(1)
for name, trainer in trainers.items():
    result = bits_per_dim(trainer.diffusion, trainer.ema, held_out, progress=False,
                          generator=torch.Generator(device=device).manual_seed(0))
    print(f"{name:>21}: {result['mean']:.3f} ± {result['stderr']:.3f} bits/dim")
    assert np.isfinite(result["mean"])

# %% [markdown] slideshow={"slide_type": "slide"}
# ## What to remember
#
# - $L_\text{vlb}$ estimated from one uniform $t$ is unbiased but very noisy: a few early steps hold much of the
#   bound, and uniform $t$ rarely picks them.
# - Importance sampling draws $t \sim p_t \propto \sqrt{\mathbb{E}[L_t^2]}$ (eq. 18, from the last 10 losses of
#   each $t$) and weights each loss by $1/(T p_t)$: same expectation, much smaller variance.
# - It is what makes $L_\text{vlb}$ trainable on its own. The hybrid loss of notebook 04 avoids the noise another
#   way: its $L_\text{vlb}$ part has a small weight next to $L_\text{simple}$.
#
# Next: notebook 07, the U-Net that plays $\epsilon_\theta$.
