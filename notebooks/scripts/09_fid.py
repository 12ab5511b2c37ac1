# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/ddpm-lite/ddpm_lite/blob/main/notebooks/09_fid.ipynb)
#
# # 09 · FID: how far are the samples from the data?
#
# Every table of "Diffusion Models Beat GANs" ranks models by **FID**, the Fréchet Inception Distance (Heusel et al.
# 2017): embed real and generated images with a fixed network, fit a Gaussian to each set of embeddings, and measure
# the distance between the two Gaussians. Lower is better; 0 means the two feature distributions have the same mean
# and covariance. This notebook builds FID from its parts, then watches it respond to damage we control.
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
import scipy.linalg
import torch

from ddpm_lite.course import plotting
from ddpm_lite.course.evaluate import add_noise
from ddpm_lite.course.exercises import check_frechet_distance, check_frechet_distance_diag
from ddpm_lite.course.widgets import FIDExplorer
from ddpm_lite.data import load_dataset
from ddpm_lite.metrics import (
    digits_feature_net_note,
    extract_features,
    feature_statistics,
    fid_from_features,
    load_digits_feature_net,
)
from ddpm_lite.pretrained import load_pretrained
from ddpm_lite.runtime import default_device, fast_mode, pick
from ddpm_lite.sampling import generate

device = default_device()  # sampling from the digits model is the only heavy part
FAST = fast_mode()  # True in CI (DDPM_LITE_FAST=1): fewer samples and step counts. Learners get the full run.
print(f"device: {device}, fast mode: {FAST}")
_ = torch.manual_seed(0)

# %% [markdown]
# ## 1. Features: compare what images show, not their pixels
#
# Two images of the same "3" shifted by one pixel are far apart pixel by pixel. FID compares images in the feature
# space of a trained network instead, where distance tracks content. The standard choice is **Inception-v3**'s
# 2048-d pool features (an ImageNet classifier): the package has it as `metrics.InceptionV3Features`, which resizes
# images to 299×299 and needs its weights (about 100 MB, downloaded once). For CIFAR-10 or ImageNet samples one
# would write (not run here: offline, and Inception features of 8×8 images mostly measure blur):
#
# ```python
# extractor = InceptionV3Features()                                   # torchvision's ImageNet weights
# reference = reference_statistics("cifar10", "train", extractor)    # mu, sigma of 50,000 images, cached on disk
# fid = compute_fid(samples, reference, extractor)                   # samples (N, 3, 32, 32) in [-1, 1]
# ```
#
# (Published FIDs use the TensorFlow Inception graph; torchvision's weights give comparable but not identical
# numbers.) For our 8×8 digits we ship a small CNN trained to classify them, and use its 64-d penultimate layer:

# %%
net = load_digits_feature_net(device=device)
train, test = load_dataset("digits", "train"), load_dataset("digits", "test")
train_features = extract_features(train.images, net)  # (1437, 64), numpy
test_features = extract_features(test.images, net)  # (360, 64)
note = digits_feature_net_note()
print(f"features: train {train_features.shape}, test {test_features.shape}; "
      f"the network classifies {note['test_accuracy']:.1%} of the test digits right")

# %% [markdown]
# ## 2. Two Gaussians and the distance between them
#
# Fit a Gaussian to each set: means $\mu_1, \mu_2$ and covariances $\Sigma_1, \Sigma_2$ of the features. FID is the
# Fréchet (2-Wasserstein) distance between $\mathcal{N}(\mu_1, \Sigma_1)$ and $\mathcal{N}(\mu_2, \Sigma_2)$, which
# has a closed form (Dowson & Landau 1982):
#
# $$\mathrm{FID} = \lVert \mu_1 - \mu_2 \rVert^2 + \operatorname{Tr}\Big(\Sigma_1 + \Sigma_2
#   - 2\,\big(\Sigma_1 \Sigma_2\big)^{1/2}\Big).$$
#
# In one dimension it is $(\mu_1 - \mu_2)^2 + (\sigma_1 - \sigma_2)^2$: the distance between the means plus the
# distance between the spreads. **With diagonal covariances** every dimension is such a 1-D problem, and the
# distance is the sum over dimensions:
#
# $$\lVert \mu_1 - \mu_2 \rVert^2 + \sum_i \big(v_{1,i} + v_{2,i} - 2\sqrt{v_{1,i}\, v_{2,i}}\big),
#   \qquad v = \text{the variances}.$$
#
# ### Exercise 1: the diagonal case
#
# `mu1`, `mu2`, `var1`, `var2` are numpy vectors of length $D$; return one number.

# %% tags=["exercise"]
def frechet_distance_diag(mu1, var1, mu2, var2):
    """Frechet distance between N(mu1, diag(var1)) and N(mu2, diag(var2))."""
    ### BEGIN SOLUTION hint: the squared distance of the means, plus the sum over dimensions of var1 + var2 - 2 sqrt(var1 var2)
    return np.sum((mu1 - mu2) ** 2) + np.sum(var1 + var2 - 2 * np.sqrt(var1 * var2))
    ### END SOLUTION


frechet_distance_diag = check_frechet_distance_diag(frechet_distance_diag)

# %% [markdown]
# ### Exercise 2: the full formula
#
# Now `sigma1`, `sigma2` are full $D \times D$ covariance matrices. $(\Sigma_1\Sigma_2)^{1/2}$ is a **matrix**
# square root: the matrix $M$ with $MM = \Sigma_1\Sigma_2$, `scipy.linalg.sqrtm(sigma1 @ sigma2)`. Rounding can
# give it tiny imaginary parts: keep `.real`.

# %% tags=["exercise"]
def frechet_distance(mu1, sigma1, mu2, sigma2):
    """Frechet distance between N(mu1, sigma1) and N(mu2, sigma2): FID when these are feature statistics."""
    ### BEGIN SOLUTION hint: the mean term as before, then np.trace of each sigma, minus twice the trace of scipy.linalg.sqrtm(sigma1 @ sigma2).real
    covmean = scipy.linalg.sqrtm(sigma1 @ sigma2).real
    return np.sum((mu1 - mu2) ** 2) + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean)
    ### END SOLUTION


frechet_distance = check_frechet_distance(frechet_distance)

# %% [markdown]
# Your function on the real thing: the test digits against the training digits. Both are real, so this is the
# **floor**: the FID of a perfect model with 360 samples (FID is biased upwards by small samples; see section 4).
# The diagonal version ignores how features vary together, and misses part of the distance:

# %%
mu_train, sigma_train = feature_statistics(train_features)
mu_test, sigma_test = feature_statistics(test_features)
floor = frechet_distance(mu_test, sigma_test, mu_train, sigma_train)
diag = frechet_distance_diag(mu_test, np.diag(sigma_test), mu_train, np.diag(sigma_train))
print(f"FID(test, train) = {floor:.3f} (diagonal covariances: {diag:.3f})")
assert abs(floor - fid_from_features(test_features, train_features)) < 1e-4 * max(floor, 1)  # = the package

# %% [markdown]
# What the Gaussians look like: the features of the training digits, of the test digits, and of the test digits with
# noise added, on the two main axes of the training features. The features are far from Gaussian (they cluster by
# class), but FID compares only the ellipses: the means and covariances.

# %%
noisy_test = add_noise(test.images, 0.5, torch.Generator().manual_seed(0))
noisy_features = extract_features(noisy_test, net)
fig = plotting.feature_gaussians_figure({"train": train_features, "test": test_features,
                                         "test + noise σ=0.5": noisy_features})
plt.show()
print(f"FID(noisy test, train) = {fid_from_features(noisy_features, train_features):.2f}")

# %% [markdown]
# ## 3. What moves FID
#
# Spoil the test digits on purpose and watch FID against the training digits: **noise** (what an under-trained or
# too-fast sampler leaves), **blur** (what a model that regresses to the mean draws), and **dropping classes** (a
# model that never draws some digits: mode dropping). The title also gives precision and recall (notebook 08):
# which of the three damages leaves precision intact?

# %%
explorer = FIDExplorer(test.images, test.labels, train_features, net)
explorer

# %%
fids = {}
for name, control, value in [("noise", explorer.noise, 0.3), ("blur", explorer.blur, 1.0), ("drop", explorer.drop, 5)]:
    control.value = value
    fids[name] = (explorer.fid, explorer.precision, explorer.recall)
    control.value = control.min
print("\n".join(f"{k:6s}: FID {f:6.2f}, precision {p:.2f}, recall {r:.2f}" for k, (f, p, r) in fids.items()))
assert all(f > 5 * explorer.floor for f, _, _ in fids.values())  # each damage costs FID
assert fids["drop"][1] > 0.7 > fids["drop"][2]  # dropped classes: precision stays, recall falls

# %% [markdown]
# Mode dropping is why FID beat the Inception Score: samples that all look real but cover half the classes keep a
# perfect precision, and FID (through the covariance term and the mean) still sees what is missing.
#
# ## 4. Our models
#
# Now the shipped digits model, sampled with different numbers of respaced steps (Improved DDPM, section 4), the
# same number of samples as the test set, against the same training features. Two cautions the papers take too:
# compare FIDs computed with **the same number of samples** (here: the floor with as many real images), and **the
# same features** (numbers from different feature networks are not comparable).

# %%
model, diffusion, config = load_pretrained("digits", device=device)
n = pick(len(test), 100)
floor_n = fid_from_features(test_features[:n], train_features)
model_fids = {}
for steps in pick([10, 25, 50, 100], [5, 10]):
    samples = generate(model, diffusion, (n, 1, 8, 8), steps=steps, generator=torch.Generator().manual_seed(steps))
    model_fids[f"digits model, {steps} steps"] = fid_from_features(extract_features(samples.cpu(), net), train_features)
print(f"{n} real test digits (the floor): FID {floor_n:.2f}")
print("\n".join(f"{k}: FID {v:.2f}" for k, v in model_fids.items()))
assert min(model_fids.values()) > floor_n  # no model beats real data
first, last = list(model_fids.values())[0], list(model_fids.values())[-1]
assert last < first  # more sampling steps, better samples

# %% [markdown]
# More steps give better samples, with diminishing returns (with a few hundred samples, differences of a few tenths
# are within the noise of the estimate). How do these compare with spoiled real digits? The bars of the explorer now
# include our models: find the noise level that matches each one.

# %%
explorer.benchmarks.update(model_fids)
explorer.render()
explorer

# %% [markdown]
# Finally, the bias: the FID between two samples of the **same** distribution is not 0 but falls with the sample
# size, roughly as $1/N$ (the covariance estimates are noisy). That is why the papers use 50,000 samples, and why a
# FID is only comparable with FIDs of as many samples.

# %%
sizes = [50, 100, 200, len(test)]
bias = [fid_from_features(test_features[:k], train_features) for k in sizes]
print("\n".join(f"{k:4d} real test digits against the training set: FID {b:.2f}" for k, b in zip(sizes, bias)))
assert bias[0] > bias[-1]

# %% [markdown]
# ## What to remember
#
# - FID = $\lVert \mu_1 - \mu_2 \rVert^2 + \operatorname{Tr}(\Sigma_1 + \Sigma_2 - 2(\Sigma_1\Sigma_2)^{1/2})$
#   between Gaussians fitted to the features of two image sets; the matrix square root couples the covariances.
# - Features decide what FID sees: Inception-v3 for natural images, a digits network here. Never compare FIDs
#   across feature extractors or sample sizes.
# - FID rises with noise, blur and missing modes; precision and recall (notebook 08) tell fidelity from coverage.
