# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown] slideshow={"slide_type": "slide"}
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/ddpm-lite/ddpm_lite/blob/main/notebooks/08_classifier_guidance.ipynb)
#
# # 08 · Classifier guidance: steer an unconditional model with a classifier's gradient
#
# Our digits model draws *a* digit. To draw a **3**, we could train a class-conditional model, or, as "Diffusion
# Models Beat GANs" shows (Dhariwal & Nichol 2021, section 4), keep the model and add the gradient of a classifier
# to every sampling step. A **guidance scale** then trades diversity for fidelity. Guidance was not what first put
# diffusion ahead of BigGAN: without it, ADM already has the better FID on ImageNet 64×64 (2.07 against
# BigGAN-deep's 4.06) and 128×128 (5.91 against 6.02); at 256×256 it needed guidance (10.94 unguided, 4.59 guided,
# BigGAN-deep 6.95; all from Table 5).
#
# *About 30 minutes.* Three exercises; each checks itself when you run it, and "Run all" works before you solve them.

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

from ddpm_lite import GaussianDiffusion, get_betas, respace
from ddpm_lite.configs import ExperimentConfig
from ddpm_lite.course import plotting
from ddpm_lite.course.analytic import GaussianMixture
from ddpm_lite.course.evaluate import sample_quality
from ddpm_lite.course.exercises import (  # hint("name") on request
    check_classifier_free_eps,
    check_classifier_grad,
    check_guided_mean,
    hint,  # noqa: F401
)
from ddpm_lite.course.widgets import GuidanceExplorer
from ddpm_lite.data import load_dataset
from ddpm_lite.guidance import ClassifierFreeGuidance, classifier_cond_fn
from ddpm_lite.images import make_grid
from ddpm_lite.metrics import extract_features, load_digits_feature_net
from ddpm_lite.pretrained import load_pretrained
from ddpm_lite.runtime import default_device, fast_mode, pick
from ddpm_lite.train import Trainer

device = default_device()  # sampling with guidance runs the model and the classifier's backward pass at every step
FAST = fast_mode()  # True in CI (DDPM_LITE_FAST=1): fewer samples, scales and steps. Learners get the full run.
print(f"device: {device}, fast mode: {FAST}")
_ = torch.manual_seed(0)

# %% [markdown] slideshow={"slide_type": "slide"}
# ## 1. Bayes' rule, one step at a time
#
# We want samples of $p(x \mid y) \propto p(x)\,p(y \mid x)$. Section 4.1 of the paper applies this to each reverse
# step: the conditional step is $p_\theta(x_t \mid x_{t+1})\,p_\phi(y \mid x_t)$ up to a constant, where
# $p_\theta(x_t \mid x_{t+1}) = \mathcal{N}(\mu, \Sigma)$ is our model's step and $p_\phi(y \mid x_t)$ a classifier
# **trained on noisy images** $x_t$. Steps are small, so $\log p_\phi(y \mid x_t)$ is nearly linear over the width of
# the Gaussian; a Gaussian times the exponential of a linear function is again a Gaussian, with the mean moved
# along the gradient:
#
# $$p_\theta(x_t \mid x_{t+1})\,p_\phi(y \mid x_t) \approx
#   \mathcal{N}\big(\mu + \Sigma\, g,\ \Sigma\big),\qquad g = \nabla_{x_t} \log p_\phi(y \mid x_t).$$
#
# **Algorithm 1** samples from it, with the gradient multiplied by a **scale** $s$:
# $x_{t-1} \sim \mathcal{N}(\mu + s\,\Sigma\,g,\ \Sigma)$. Why a scale? $s\,\nabla \log p(y \mid x) = \nabla \log
# \frac{1}{Z} p(y \mid x)^s$: with $s > 1$ we sample as if the classifier were more confident than it is (section
# 4.3), and get samples that are more clearly of class $y$, and less varied.
#
# ### Exercise 1: the guided mean
#
# Given the model's `mean` $\mu$ and `variance` $\Sigma$ (diagonal: a tensor of the shape of the image, or one that
# broadcasts against it), the classifier's gradient `grad` $g$ and the `scale` $s$, return the mean of Algorithm 1.

# %% slideshow={"slide_type": "fragment"} tags=["exercise"]
def guided_mean(mean, variance, grad, scale):
    """The mean of a guided reverse step (Algorithm 1): mu + s * Sigma * grad log p(y | x_t)."""
    ### BEGIN SOLUTION
    return mean + scale * variance * grad
    ### END SOLUTION


guided_mean = check_guided_mean(guided_mean)

# %% [markdown] slideshow={"slide_type": "slide"}
# ## 2. Guidance you can see: three classes in 2-D
#
# For data we know exactly, a mixture of three Gaussians (the classes), `GaussianMixture` gives the **exact**
# unconditional model $\epsilon(x_t, t)$ and the **exact** noisy classifier $p(y \mid x_t)$, so nothing here is
# learned. The loop below is Algorithm 1 with your `guided_mean`; `classifier_cond_fn(classifier, 1.0)` returns
# $\nabla_{x_t} \log p(y \mid x_t)$. Guided towards class 0 (on the right, at $(1, 0)$), watch the samples as $s$
# grows.

# %% slideshow={"slide_type": "slide"}
angles = torch.tensor([0.0, 2 * np.pi / 3, 4 * np.pi / 3])
mixture = GaussianMixture(torch.stack([angles.cos(), angles.sin()], 1), std=0.5)  # 3 overlapping classes
diffusion_2d = GaussianDiffusion(get_betas("cosine", 100))  # 100 steps are plenty in 2-D
eps_2d = mixture.eps_model(diffusion_2d)  # the exact unconditional model: it ignores the class
grad_log_p = classifier_cond_fn(mixture.classifier(diffusion_2d), scale=1.0)


@torch.no_grad()
def guided_sample_2d(scale, n=None, y=0, seed=0):
    """Algorithm 1, written out: x_T ~ N(0, I), then x_{t-1} ~ N(mu + s Sigma grad, Sigma)."""
    n = n or pick(2000, 500)
    g = torch.Generator().manual_seed(seed)
    labels = torch.full((n,), y)
    x = torch.randn(n, 2, generator=g)
    for i in reversed(range(diffusion_2d.num_timesteps)):
        t = torch.full((n,), i)
        out = diffusion_2d.p_mean_variance(lambda x, t: eps_2d(x, t), x, t, clip_denoised=False)
        mean = guided_mean(out["mean"], out["variance"], grad_log_p(x, t, y=labels), scale)
        x = mean + (i > 0) * out["variance"].sqrt() * torch.randn(x.shape, generator=g)
    return x


scales_2d = [0.0, 1.0, 3.0, 10.0]
fig, axes = plt.subplots(1, len(scales_2d), figsize=(8, 3.2), layout="constrained", sharex=True, sharey=True)
t0 = torch.zeros(1, dtype=torch.long)
for ax, s in zip(axes, scales_2d):
    x = guided_sample_2d(s)
    p0 = mixture.log_posterior(diffusion_2d, x, t0.expand(len(x)))[:, 0].exp()  # p(y = 0 | x): exact
    ax.scatter(x[:, 0], x[:, 1], s=2, alpha=0.4)
    ax.scatter(*mixture.means.T, marker="+", c="k", s=80)
    ax.plot(*x.mean(0), "rx", ms=10, mew=2)
    ax.set_title(f"s = {s:g}\np(y=0 | x) = {p0.mean():.2f}\nmean x₁ = {x[:, 0].mean():.2f}")
    ax.set_aspect("equal")
plt.show()

# %% [markdown] slideshow={"slide_type": "slide"}
# - $s = 0$: the unconditional model, all three classes.
# - $s = 1$: mostly class 0, centred near its mean $(1, 0)$ (red cross: the samples' mean): for an exact
#   classifier this is close to the true $p(x \mid y = 0)$.
# - $s > 1$: the samples move to where the classifier is *surest*: away from the other classes, past the class's
#   own centre, and a little tighter. More unmistakably class 0, less representative of it.
#
# ## 3. A classifier of noisy digits
#
# The classifier must work on $x_t$ at every $t$, so it is trained on noised images: `q_sample(x_0, t)` with a
# random $t$, cross-entropy on the label. ADM uses the down half of the U-Net with attention pooling
# (`EncoderUNetModel`). We ship one trained on the digits; it is given the timestep like the denoiser:

# %% slideshow={"slide_type": "slide"}
model, diffusion, config = load_pretrained("digits", device=device)  # the unconditional digits model
classifier, _, classifier_config = load_pretrained("digits_classifier", device=device)
test = load_dataset("digits", "test")
x0, y0 = test.images.to(device), test.labels.to(device)


@torch.no_grad()
def noisy_accuracy(classifier, ts, seed=0):
    """The classifier's accuracy on the test digits noised to each step t."""
    g = torch.Generator().manual_seed(seed)
    accs = []
    for step in ts:
        t = torch.full((len(x0),), step, device=device)
        x_t = diffusion.q_sample(x0, t, torch.randn(x0.shape, generator=g).to(device))
        accs.append((classifier(x_t, t).argmax(1) == y0).float().mean().item())
    return accs


ts = list(range(0, 1000, pick(50, 200)))
shipped_accuracy = noisy_accuracy(classifier, ts)
print(f"accuracy on clean digits {shipped_accuracy[0]:.2f}, at t = {ts[-1]}: {shipped_accuracy[-1]:.2f} "
      f"(chance: 0.10)")

# %% [markdown] slideshow={"slide_type": "slide"}
# ### Exercise 2: the classifier's gradient, `classifier_grad`
#
# Guidance needs $\nabla_{x_t} \log p_\phi(y \mid x_t)$ for a whole batch, each example with its own label: `y` is
# `(B,)`. `classifier(x_t, t)` returns logits `(B, classes)`, and $\log p_\phi(y \mid x_t)$ is their log-softmax over
# the classes, read at each example's label. Autograd gives a gradient with respect to an input that requires
# grad, and one backward pass can give every example its own gradient. Return a plain tensor of the shape of `x_t`
# (no autograd graph attached: the sampler adds it to the mean).

# %% slideshow={"slide_type": "fragment"} tags=["exercise"]
def classifier_grad(classifier, x_t, t, y):
    """grad_x log p(y | x_t) for each example of the batch, through autograd (ADM section 4)."""
    ### BEGIN SOLUTION
    with torch.enable_grad():
        x = x_t.detach().requires_grad_(True)
        log_p = torch.log_softmax(classifier(x, t), dim=-1)[torch.arange(len(y)), y]
        return torch.autograd.grad(log_p.sum(), x)[0]
    ### END SOLUTION


classifier_grad = check_classifier_grad(classifier_grad)

# %% [markdown]
# What the classifier asks of a noisy 3: the gradient of $\log p_\phi(y \mid x_t)$ for each target class $y$, from
# **your** function (red: pixels to brighten, blue: to darken; one colour scale for all), checked against the
# package's `cond_fn`. Where the classifier is already sure of a class, $\log p_\phi(y \mid x_t) \approx 0$ barely
# moves: its gradient is small.

# %% slideshow={"slide_type": "slide"}
digit = x0[y0 == 3][:1]
t_grad = torch.full((10,), 200, device=device)
noise_grad = torch.randn(1, 1, 8, 8, generator=torch.Generator().manual_seed(0)).to(device)
x_grad = diffusion.q_sample(digit.expand(10, -1, -1, -1), t_grad, noise_grad.expand(10, -1, -1, -1))
targets = torch.arange(10, device=device)
grads = torch.as_tensor(classifier_grad(classifier, x_grad, t_grad, targets))
assert torch.allclose(grads, classifier_cond_fn(classifier, 1.0)(x_grad, t_grad, y=targets), atol=1e-5)
with torch.no_grad():
    probs = classifier(x_grad[:1], t_grad[:1]).softmax(-1)[0]
print(f"p(y | x_t) of the classifier: {probs[3]:.3f} for a 3, at most {probs[torch.arange(10) != 3].max():.3f} "
      "for the other classes")
fig, axes = plt.subplots(2, 6, figsize=(8, 3.3), layout="constrained")
axes[0, 0].imshow(plotting.to_display(x_grad[0].cpu()), cmap="gray")
axes[0, 0].set_title("x_t, t = 200")
lim = grads.abs().max().item()
for k, ax in enumerate(axes.flat[1:11]):
    ax.imshow(grads[k, 0].cpu(), cmap="RdBu_r", vmin=-lim, vmax=lim)
    ax.set_title(f"towards {k}")
axes.flat[11].axis("off")
for ax in axes.flat[:11]:
    ax.set_xticks([]), ax.set_yticks([])
plt.show()

# %% [markdown] slideshow={"slide_type": "slide"}
# Training one yourself goes through the same `Trainer` as the denoiser, with the `digits_classifier` preset (the
# objective is the cross-entropy of noisy images). **This cell takes time** in the full run on a CPU: 400 steps (the
# shipped classifier had 2000). On a GPU it runs all 2000, in well under a minute (an estimated 15 to 30 seconds on
# a Colab T4: the repository's docs/gpu.md).

# %%
clf_steps = pick(2000 if device.type == "cuda" else 400, 15)  # on a GPU: the shipped classifier's 2000 steps
print(f"{'GPU' if device.type == 'cuda' else 'CPU'} path: {clf_steps} steps of the digits_classifier preset on {device}")
clf_trainer = Trainer.from_config(ExperimentConfig.preset("digits_classifier"), device=device, progress=False)
clf_history = clf_trainer.train(clf_steps)
print(clf_trainer.clock())
loss = np.array(clf_history["loss"])
print(f"cross-entropy: {loss[:5].mean():.2f} -> {loss[-5:].mean():.2f} after {len(loss)} steps")
assert loss[-5:].mean() < loss[:5].mean()

plt.figure(figsize=(6, 3))
plt.plot(ts, shipped_accuracy, "o-", label="shipped classifier (2000 steps)")
plt.plot(ts, noisy_accuracy(clf_trainer.ema, ts), "s-", label=f"yours ({clf_trainer.step} steps)")
plt.axhline(0.1, color="gray", ls=":", label="chance")
plt.xlabel("t"), plt.ylabel("accuracy on noisy test digits"), plt.legend()
plt.show()

# %% [markdown] slideshow={"slide_type": "slide"}
# The classifier is sure at small $t$ and at chance near $t = T$, where no class is visible: guidance does most
# of its work in the middle of the chain.
#
# ## 4. Guided digits
#
# The package does Algorithm 1 inside `p_sample_loop(cond_fn=...)`: `cond_fn(x_t, t, y)` returns
# $s\,\nabla_{x_t}\log p_\phi(y \mid x_t)$, and the labels travel in `model_kwargs`. Two details:
#
# - the labels reach the model too, and our unconditional model takes none, so we wrap it (as guided-diffusion's
#   `classifier_sample.py` does);
# - we sample with 25 respaced steps (Improved DDPM, section 4); the respaced diffusion hands the model **and the
#   classifier** the original timesteps.
#
# Your `guided_mean` gives the same step as the package's `condition_mean`:

# %% slideshow={"slide_type": "slide"}
def unconditional(x, t, y=None):  # the labels are for the classifier only
    return model(x, t)


sampler = respace(diffusion, pick(25, 10))
labels = torch.arange(10, device=device).repeat(2)
x_t, t = torch.randn(20, 1, 8, 8, device=device), torch.full((20,), 5, device=device)
with torch.no_grad():
    out = sampler.p_mean_variance(unconditional, x_t, t, model_kwargs={"y": labels})
    grad = classifier_cond_fn(classifier, 1.0)(x_t, sampler.timestep_map.to(device)[t], y=labels)
    package = sampler.condition_mean(classifier_cond_fn(classifier, 4.0), out, x_t, t, {"y": labels})
assert torch.allclose(guided_mean(out["mean"], out["variance"], grad, 4.0), package, atol=1e-5)


def sample_guided(scale, labels, seed=0):
    """Samples of the digits model for `labels`, guided by the classifier with scale s (0: unguided)."""
    noise = torch.randn(len(labels), 1, 8, 8, generator=torch.Generator().manual_seed(seed)).to(device)
    cond_fn = classifier_cond_fn(classifier, scale) if scale else None
    return sampler.p_sample_loop(unconditional, noise.shape, noise=noise, cond_fn=cond_fn,
                                 model_kwargs={"y": labels}).cpu()


labels = torch.arange(10, device=device).repeat(pick(6, 3))  # 0, 1, ..., 9, 0, 1, ...: one column per class
fig, axes = plt.subplots(1, 2, figsize=(8, 3.4), layout="constrained")
for ax, s in zip(axes, [0.0, 4.0]):
    ax.imshow(make_grid(sample_guided(s, labels), ncol=10, scale=3), cmap="gray")
    ax.set_title(f"s = {s:g}: columns are the classes 0..9" + (" (ignored)" if s == 0 else ""))
    ax.axis("off")
plt.show()

# %% [markdown] slideshow={"slide_type": "slide"}
# ## 5. The trade-off
#
# How good are the samples, as $s$ grows? Three numbers, in the feature space of a digits classifier
# (`load_digits_feature_net`; notebook 09 is about such features):
#
# - **label accuracy**: the share of samples drawn for class $y$ that the feature network classifies as $y$;
# - **precision** (fidelity): the share of samples that fall within the real data's manifold;
# - **recall** (diversity): the share of real test digits that fall within the samples' manifold
#   (Kynkäänniemi et al. 2019; the paper reports precision and recall in Tables 4 and 5 and plots them against
#   the scale in Figure 4);
# - **FID** against the same held-out test digits, the one reference set of the course (notebook 09 says why).
#
# We sample once per scale, with the same noise and the same labels (every class equally often), then explore:
# pick a class and a scale, and see the samples beside the curves.

# %% slideshow={"slide_type": "slide"}
feature_net = load_digits_feature_net(device=device)
real_features = extract_features(test.images, feature_net)  # the real test digits, 64-d features
scales = pick([0.0, 1.0, 2.0, 4.0, 8.0, 16.0], [0.0, 2.0, 8.0])
labels = torch.arange(pick(300, 60), device=device) % 10
guided = {s: sample_guided(s, labels) for s in scales}
explorer = GuidanceExplorer(guided, labels, real_features, feature_net, label=3, scale=scales[-2])
explorer

# %% slideshow={"slide_type": "skip"}
m = explorer.metrics
print("\n".join(f"s = {s:4g}: accuracy {m[s]['accuracy']:.2f}, precision {m[s]['precision']:.2f}, "
                f"recall {m[s]['recall']:.2f}, FID {m[s]['fid']:.2f}" for s in scales))
assert m[scales[-1]]["accuracy"] > m[0.0]["accuracy"] + 0.3  # guidance makes the samples the class we asked for
before = explorer.image.value
explorer.scale.value = scales[-1]
assert explorer.image.value != before
explorer.scale.value = scales[-2]  # back to the view shown above

# %% [markdown] slideshow={"slide_type": "slide"}
# Read the curves: at $s = 0$ the labels are ignored (accuracy ≈ 0.1, chance) and recall is high; with guidance,
# accuracy soars and precision rises, while recall falls as the samples bunch up on the classifier's favourite
# shapes. The paper (Figure 4, Table 4) finds the same on ImageNet, and chooses $s$ to balance FID against IS; at
# 256×256 that choice is what brought its FID below BigGAN-deep's (Table 5, numbers in the introduction).
#
# ## 6. Without a classifier: classifier-free guidance
#
# Ho & Salimans (2021) drop the classifier: train **one** class-conditional model, replacing the label by a null
# label $\varnothing$ some of the time (our `digits_cond`: 10%), so it is both $\epsilon(x_t, y)$ and
# $\epsilon(x_t) = \epsilon(x_t, \varnothing)$, and sample with a mix of the two predictions:
#
# $$\tilde\epsilon = (1 + w)\,\epsilon(x_t, y) - w\,\epsilon(x_t, \varnothing).$$
#
# **Why this is guidance, with scale $s = 1 + w$.** A trained $\epsilon$ approximates a scaled score (DDPM section
# 3.2; [02 · The score view](02_reverse_process.ipynb)): $\epsilon(x_t) \approx -\sqrt{1-\bar\alpha_t}\,\nabla \log
# p(x_t)$, and the conditional model likewise $\epsilon(x_t, y) \approx -\sqrt{1-\bar\alpha_t}\,\nabla \log p(x_t \mid
# y)$ (both exact at the optimum). Bayes' rule, $\log p(y \mid x_t) = \log p(x_t \mid y) - \log p(x_t) + \log p(y)$,
# turns the difference of the two predictions into a classifier's gradient, with no classifier:
#
# $$\epsilon(x_t, y) - \epsilon(x_t) = -\sqrt{1-\bar\alpha_t}\;\nabla_{x_t} \log p(y \mid x_t).$$
#
# Classifier guidance written on $\epsilon$ (the paper's Algorithm 2) is $\hat\epsilon = \epsilon(x_t) -
# \sqrt{1-\bar\alpha_t}\,s\,\nabla \log p(y \mid x_t) = \epsilon(x_t) + s\,(\epsilon(x_t, y) - \epsilon(x_t)) =
# s\,\epsilon(x_t, y) - (s - 1)\,\epsilon(x_t)$: the mix above with $s = 1 + w$. In scores, CFG samples with $\nabla
# \log p(x_t) + (1 + w)\,\nabla \log p(y \mid x_t)$. So $w = 0$, the plain conditional model, is $s = 1$, and $w = 3$
# is a classifier scale of 4, from the classifier implicit in the model.
#
# For the three Gaussians of section 2 every term is exact, and the identity holds to float32 rounding:

# %% slideshow={"slide_type": "slide"}
x = torch.randn(500, 2, generator=torch.Generator().manual_seed(1))
y = torch.randint(0, 3, (500,), generator=torch.Generator().manual_seed(2))
t = torch.randint(0, diffusion_2d.num_timesteps, (500,), generator=torch.Generator().manual_seed(3))
sqrt_one_minus_abar = torch.from_numpy(1 - diffusion_2d.alphas_cumprod).float()[t][:, None].sqrt()
for w in [0.0, 1.0, 3.0]:
    free_eps = ClassifierFreeGuidance(eps_2d, w, null_label=mixture.num_classes)(x, t, y=y)  # (1+w) eps(x,y) - w eps(x)
    guided_eps = eps_2d(x, t) - sqrt_one_minus_abar * (1 + w) * grad_log_p(x, t, y=y)  # Algorithm 2 with s = 1 + w
    print(f"w = {w:g}: classifier-free against classifier guidance with s = {1 + w:g}: "
          f"largest difference {(free_eps - guided_eps).abs().max():.1e} (eps up to {free_eps.abs().max():.1f})")
    assert torch.allclose(free_eps, guided_eps, atol=1e-3)

# %% [markdown] slideshow={"slide_type": "slide"}
# `ClassifierFreeGuidance` wraps the shipped `digits_cond` model (one batched call for both halves); $w = 0$ is the
# plain conditional model.

# %%
cond_model, cond_diffusion, cond_config = load_pretrained("digits_cond", device=device)
cond_sampler = respace(cond_diffusion, pick(25, 10))
weights = pick([0.0, 0.5, 1.0, 3.0], [0.0, 2.0])
noise = torch.randn(len(labels), 1, 8, 8, generator=torch.Generator().manual_seed(0)).to(device)
free = {}
for w in weights:
    guided_model = ClassifierFreeGuidance(cond_model, w, null_label=cond_config.num_classes)
    free[w] = cond_sampler.p_sample_loop(guided_model, noise.shape, noise=noise, model_kwargs={"y": labels}).cpu()
free_metrics = {w: sample_quality(x, labels, real_features, feature_net) for w, x in free.items()}
fig = plotting.guidance_tradeoff_figure({"classifier guidance (s)": explorer.metrics,  # CFG labelled by s = 1 + w
                                         "classifier-free guidance (1 + w)": {1 + w: m for w, m in free_metrics.items()}})
plt.show()
assert free_metrics[0.0]["accuracy"] > 0.5  # the conditional model alone already follows the labels

# %% [markdown] slideshow={"slide_type": "slide"}
# Both walk the same road (points labelled by the scale, $s$ or $1 + w$): more guidance, higher precision and
# accuracy, lower recall. The conditional model starts much further along (it is trained on the labels, so at
# $w = 0$ it already draws the right class), and needs no second network, which is why classifier-free guidance
# became the standard (GLIDE, Imagen, Stable Diffusion).
#
# ### Exercise 3: the classifier-free mix, `classifier_free_eps`
#
# Given the model's two predictions for the same $x_t$, `eps_cond` $= \epsilon(x_t, y)$ and `eps_uncond`
# $= \epsilon(x_t, \varnothing)$, and the weight `w`, return $\tilde\epsilon$. Your mix then replaces the one inside
# `ClassifierFreeGuidance` to sample digits.

# %% slideshow={"slide_type": "fragment"} tags=["exercise"]
def classifier_free_eps(eps_cond, eps_uncond, w):
    """The classifier-free guided noise prediction (1 + w) eps(x, y) - w eps(x, null) (Ho & Salimans)."""
    ### BEGIN SOLUTION
    return (1 + w) * eps_cond - w * eps_uncond
    ### END SOLUTION


classifier_free_eps = check_classifier_free_eps(classifier_free_eps)

# %% [markdown]
# `ClassifierFreeGuidance` with **your** mix: the model on the batch twice, with the labels and with the null label,
# then `classifier_free_eps` on the noise channels (the learned variance comes from the conditional half). The same
# output as the package's, then samples of each class at $w = 3$:

# %% slideshow={"slide_type": "slide"}
class YourGuidance(ClassifierFreeGuidance):
    def __call__(self, x, t, y=None, **kwargs):
        null = torch.full_like(y, self.null_label)
        cond, uncond = self.model(torch.cat([x, x]), torch.cat([t, t]), y=torch.cat([y, null]), **kwargs).chunk(2)
        c = x.shape[1]
        return torch.cat([classifier_free_eps(cond[:, :c], uncond[:, :c], self.w), cond[:, c:]], dim=1)


yours = YourGuidance(cond_model, 3.0, null_label=cond_config.num_classes)
ten = torch.arange(10, device=device).repeat(2)
x_t, t = torch.randn(20, 1, 8, 8, device=device), torch.full((20,), 500, device=device)
with torch.no_grad():
    package = ClassifierFreeGuidance(cond_model, 3.0, null_label=cond_config.num_classes)(x_t, t, y=ten)
    assert torch.allclose(yours(x_t, t, y=ten), package, atol=1e-5)
start = torch.randn(20, 1, 8, 8, generator=torch.Generator().manual_seed(0)).to(device)
samples = cond_sampler.p_sample_loop(yours, start.shape, noise=start, model_kwargs={"y": ten}).cpu()
plt.figure(figsize=(6, 1.8))
plt.imshow(make_grid(samples, ncol=10, scale=3), cmap="gray")
plt.title("your mix, w = 3: one column per class, 0 to 9")
plt.axis("off")
plt.show()

# %% [markdown] slideshow={"slide_type": "slide"}
# ## What to remember
#
# - Classifier guidance (Algorithm 1): $x_{t-1} \sim \mathcal{N}(\mu + s\,\Sigma\,\nabla_{x_t}\log p_\phi(y \mid
#   x_t),\ \Sigma)$, with a classifier trained on noisy images.
# - The scale $s$ sharpens $p(y \mid x)^s$: fidelity (precision, accuracy) up, diversity (recall) down.
# - Classifier-free guidance gets the same effect from one conditional model: $(1 + w)\,\epsilon(x, y) -
#   w\,\epsilon(x)$ is classifier guidance with scale $s = 1 + w$ and the classifier implicit in the model
#   ($\epsilon$ is a scaled score: 02 · The score view).
# - Guidance was needed to beat BigGAN's FID at ImageNet 256×256, not at 64×64 or 128×128 (ADM Table 5).
#
# Next: how to measure all this with a single number, FID (notebook 09).
