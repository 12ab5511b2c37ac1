# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown] slideshow={"slide_type": "slide"}
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/ddpm-lite/ddpm_lite/blob/main/notebooks/exercises/09_fid.ipynb)
#
# > **Exercise version.** Fill in the cells marked `YOUR CODE HERE`; the solutions are in `notebooks/09_fid.ipynb`.
#
# # 09 · FID: how far are the samples from the data?
#
# Every table of "Diffusion Models Beat GANs" ranks models by **FID**, the Fréchet Inception Distance (Heusel et al.
# 2017): embed real and generated images with a fixed network, fit a Gaussian to each set of embeddings, and measure
# how far apart the two Gaussians are (the *squared* Fréchet distance). Lower is better; 0 means the two feature
# distributions have the same mean and covariance. This notebook builds FID from its parts, then watches it respond
# to damage we control.
#
# *About 20 minutes.* Two exercises; each checks itself when you run it, and "Run all" works before you solve them.

# %% slideshow={"slide_type": "skip"} tags=["colab-setup"]
# In Colab: install ddpm_lite from GitHub (Colab's own torch, numpy and ipywidgets are kept). Elsewhere: nothing.
import sys

if "google.colab" in sys.modules:
    from IPython import get_ipython

    get_ipython().run_line_magic("pip", "install -q git+https://github.com/ddpm-lite/ddpm_lite")

# %% slideshow={"slide_type": "skip"}
import matplotlib.pyplot as plt
import numpy as np
import scipy.linalg
import torch

from ddpm_lite import respace
from ddpm_lite.course import plotting
from ddpm_lite.course.evaluate import add_noise, degrade
from ddpm_lite.course.exercises import check_frechet_distance, check_frechet_distance_diag, hint  # noqa: F401 - hint() on request
from ddpm_lite.course.widgets import FIDExplorer
from ddpm_lite.data import load_dataset
from ddpm_lite.guidance import ClassifierFreeGuidance
from ddpm_lite.metrics import (
    digits_feature_net_note,
    extract_features,
    feature_statistics,
    fid_from_features,
    inception_score,
    load_digits_feature_net,
)
from ddpm_lite.pretrained import load_pretrained
from ddpm_lite.runtime import default_device, fast_mode, pick
from ddpm_lite.sampling import generate

device = default_device()  # sampling from the digits model is the only heavy part
FAST = fast_mode()  # True in CI (DDPM_LITE_FAST=1): fewer samples and step counts. Learners get the full run.
print(f"device: {device}, fast mode: {FAST}")
_ = torch.manual_seed(0)

# %% [markdown] slideshow={"slide_type": "slide"}
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
# **One reference set.** FID compares a set of images with a *reference* set of real ones. In this course the
# reference is always the **360 held-out test digits**. No network of the course trained on them (the diffusion
# models, the classifier of notebook 08 and this feature network all trained on the 1,437 training digits), so they
# stand for new digits from the data's distribution, as a test set does in supervised learning. Real training
# digits, spoiled digits and model samples are all measured against them, and section 4 shows why a FID is only
# comparable with FIDs against the same reference, of as many samples.

# %% [markdown] slideshow={"slide_type": "slide"}
# ## 2. Two Gaussians and the distance between them
#
# Fit a Gaussian to each set: means $\mu_1, \mu_2$ and covariances $\Sigma_1, \Sigma_2$ of the features. FID is the
# **squared** Fréchet (2-Wasserstein) distance $d^2$ between $\mathcal{N}(\mu_1, \Sigma_1)$ and
# $\mathcal{N}(\mu_2, \Sigma_2)$ (Heusel et al. 2017), which has a closed form (Dowson & Landau 1982):
#
# $$\mathrm{FID} = \lVert \mu_1 - \mu_2 \rVert^2 + \operatorname{Tr}\Big(\Sigma_1 + \Sigma_2
#   - 2\,\big(\Sigma_1 \Sigma_2\big)^{1/2}\Big).$$
#
# In one dimension it is $(\mu_1 - \mu_2)^2 + (\sigma_1 - \sigma_2)^2$: the squared distance between the means
# plus the squared difference of the spreads (so FID has the units of a feature squared: halving every feature
# divides it by 4). **With diagonal covariances** every dimension is such a 1-D problem, and the squared distance is
# the sum over dimensions:
#
# $$\lVert \mu_1 - \mu_2 \rVert^2 + \sum_i \big(v_{1,i} + v_{2,i} - 2\sqrt{v_{1,i}\, v_{2,i}}\big),
#   \qquad v = \text{the variances}.$$
#
# ### Exercise 1: the diagonal case
#
# `mu1`, `mu2`, `var1`, `var2` are numpy vectors of length $D$; return one number.

# %% slideshow={"slide_type": "fragment"} tags=["exercise"]
def frechet_distance_diag(mu1, var1, mu2, var2):
    """Frechet distance between N(mu1, diag(var1)) and N(mu2, diag(var2))."""
    # YOUR CODE HERE
    raise NotImplementedError("exercise: replace this line by your code (run hint('frechet_distance_diag') in a cell if you want a hint)")


frechet_distance_diag = check_frechet_distance_diag(frechet_distance_diag)

# %% [markdown] slideshow={"slide_type": "slide"}
# ### Exercise 2: the full formula
#
# Now `sigma1`, `sigma2` are full $D \times D$ covariance matrices. $(\Sigma_1\Sigma_2)^{1/2}$ is a **matrix**
# square root: the matrix $M$ with $MM = \Sigma_1\Sigma_2$, `scipy.linalg.sqrtm(sigma1 @ sigma2)`. Rounding can
# give it tiny imaginary parts: keep `.real`.

# %% slideshow={"slide_type": "fragment"} tags=["exercise"]
def frechet_distance(mu1, sigma1, mu2, sigma2):
    """Frechet distance between N(mu1, sigma1) and N(mu2, sigma2): FID when these are feature statistics."""
    # YOUR CODE HERE
    raise NotImplementedError("exercise: replace this line by your code (run hint('frechet_distance') in a cell if you want a hint)")


frechet_distance = check_frechet_distance(frechet_distance)

# %% [markdown]
# Your function on the real thing: all 1,437 training digits against the test digits. Both are real, so this is a
# **floor**: no model, however good, should expect a lower FID against these test digits. (With fewer images the
# floor is higher: FID is biased upwards by small samples, section 4.) The diagonal version ignores how features
# vary together, and misses part of the distance:

# %%
mu_train, sigma_train = feature_statistics(train_features)
mu_test, sigma_test = feature_statistics(test_features)
floor = frechet_distance(mu_train, sigma_train, mu_test, sigma_test)
diag = frechet_distance_diag(mu_train, np.diag(sigma_train), mu_test, np.diag(sigma_test))
print(f"FID(train, test) = {floor:.3f} (diagonal covariances: {diag:.3f})")
assert abs(floor - fid_from_features(train_features, test_features)) < 1e-4 * max(floor, 1)  # = the package

# %% [markdown] slideshow={"slide_type": "slide"}
# What the Gaussians look like: the features of the test digits (the reference), of the training digits, and of the
# training digits with noise added, on the two main axes of the test features. The features are far from Gaussian (they cluster by
# class), but FID compares only the ellipses: the means and covariances.

# %%
noisy_train = add_noise(train.images, 0.5, torch.Generator().manual_seed(0))
noisy_features = extract_features(noisy_train, net)
fig = plotting.feature_gaussians_figure({"test (reference)": test_features, "train": train_features,
                                         "train + noise σ=0.5": noisy_features})
plt.show()
print(f"FID(noisy train, test) = {fid_from_features(noisy_features, test_features):.2f}")

# %% [markdown] slideshow={"slide_type": "slide"}
# ## 3. What moves FID
#
# Spoil real digits on purpose and watch their FID against the test digits. The real digits are 360 training digits,
# as many as the test set and as the model samples of section 4. The damages: **noise** (what an under-trained or
# too-fast sampler leaves), **blur** (what a model that regresses to the mean draws), and **dropping classes** (a
# model that never draws some digits: mode dropping). The title also gives precision and recall (notebook 08):
# which of the three damages leaves precision intact?

# %% slideshow={"slide_type": "slide"}
real, real_labels = train.images[:360], train.labels[:360]  # stand-ins for 360 samples of a perfect model
explorer = FIDExplorer(real, real_labels, test_features, net)
explorer

# %% slideshow={"slide_type": "slide"}
fids = {}
for name, control, value in [("noise", explorer.noise, 0.5), ("blur", explorer.blur, 1.0), ("drop", explorer.drop, 5)]:
    control.value = value
    fids[name] = (explorer.fid, explorer.precision, explorer.recall)
    control.value = control.min
print("\n".join(f"{k:6s}: FID {f:6.2f}, precision {p:.2f}, recall {r:.2f}" for k, (f, p, r) in fids.items()))
assert all(f > 5 * explorer.floor for f, _, _ in fids.values())  # each damage costs FID
assert fids["drop"][1] > 0.7 > fids["drop"][2]  # dropped classes: precision stays, recall falls

# %% [markdown] slideshow={"slide_type": "slide"}
# Dropped classes keep precision high (every digit left is a real one) and cut recall: FID, through its mean and
# covariance terms, sees what is missing.
#
# ### What FID sees that the Inception Score does not
#
# Before FID, GAN papers ranked samples by the **Inception Score** (Salimans et al. 2016): run a classifier on the
# samples and reward predictions $p(y \mid x)$ that are confident for each image and varied over the set,
# $p(y) = \mathbb{E}_x\, p(y \mid x)$:
#
# $$\mathrm{IS} = \exp\Big(\mathbb{E}_x\, \mathrm{KL}\big(p(y \mid x)\,\big\|\,p(y)\big)\Big),
#   \qquad 1 \le \mathrm{IS} \le \text{the number of classes}.$$
#
# IS looks at the samples only: **no real image enters it**. FID compares the samples' feature statistics with the
# real data's, so it sees what a classifier's confidence cannot: the variety *within* a class, images with the
# wrong statistics that are still classified confidently, artefacts that do not change the label. Dropping whole
# classes is not the difference: it makes $p(y)$ less varied and lowers IS as well.
#
# Below, the package's `inception_score` (computed as the reference evaluator of "Diffusion Models Beat GANs" does)
# with our digits network as the classifier in place of Inception-v3: a **digits IS**, between 1 and 10. It scores
# the 360 real digits of the explorer and three damaged versions. One of them is a "model" that draws **one digit
# per class**: each class's first training digit, 36 times over.

# %% slideshow={"slide_type": "slide"}
first_of_class = torch.stack([real[real_labels == c][0] for c in range(10)])
spoiled = {"real": real,
           "5 classes dropped": degrade(real, real_labels, drop=5)[0],
           "one digit per class": first_of_class[torch.arange(len(real)) % 10],
           "noise σ=0.5": degrade(real, real_labels, noise=0.5)[0]}
scores = {k: (x, fid_from_features(extract_features(x, net), test_features), inception_score(x, net))
          for k, x in spoiled.items()}
print("\n".join(f"{k:>20}: FID {f:6.2f}   digits IS {i:.2f}" for k, (_, f, i) in scores.items()))
fig = plotting.fid_is_figure(scores)
plt.show()
(_, fid_real, is_real), (_, fid_one, is_one) = scores["real"], scores["one digit per class"]
assert scores["5 classes dropped"][2] < is_real  # mode dropping lowers IS too
assert is_one > 0.95 * is_real and fid_one > 5 * fid_real  # IS rates one digit per class as real digits; FID does not

# %% [markdown] slideshow={"slide_type": "slide"}
# Ten distinct images, repeated, get a **higher** digits IS than the real digits (every image is classified
# confidently, and the classes are exactly balanced), while their FID is many times that of the real digits. That is
# the argument for FID: it measures the distance to real data, which IS never sees. (FID has blind spots of its own:
# it only compares means and covariances of features, and only what the feature network encodes.)
#
# ### The same blind spot in our own models: guidance
#
# A model fails in the same way, by degrees. Guidance (notebook 08) pushes each sample towards what makes its class
# recognisable; "Diffusion Models Beat GANs" (§4.4, Figure 4 and Table 4) shows it trading diversity (recall) for
# fidelity (precision, IS). Below, the shipped class-conditional model draws 36 digits of every class, so no class
# is ever missing, with classifier-free guidance weights $w$ from 0 (no guidance) up; each set gets its FID, its
# digits IS and a direct measure of variety: the **spread within a class**, the mean squared distance of a class's
# features from their class mean (averaged over the ten classes; for the test digits, by their true labels).

# %% slideshow={"slide_type": "slide"}
def spread_within_class(features, labels):
    """Mean over the classes of the mean squared distance of a class's features from their mean."""
    labels = np.asarray(labels)
    return float(np.mean([((f - f.mean(0)) ** 2).sum(1).mean() for f in (features[labels == c] for c in range(10))]))


cond_model, cond_diffusion, cond_config = load_pretrained("digits_cond", device=device)
cond_sampler = respace(cond_diffusion, 25)  # 25 steps in both modes: at 10 the unguided samples are still noisy
class_labels = torch.arange(10).repeat(36)  # 0, 1, ..., 9, 0, 1, ...: 36 of every class
noise = torch.randn(len(class_labels), 1, 8, 8, generator=torch.Generator().manual_seed(0)).to(device)
guided = {"test digits": (test.images, test.labels)}
for w in pick([0.0, 1.0, 3.0], [0.0, 3.0]):
    guided_model = ClassifierFreeGuidance(cond_model, w, null_label=cond_config.num_classes) if w else cond_model
    samples = cond_sampler.p_sample_loop(guided_model, noise.shape, noise=noise,
                                         model_kwargs={"y": class_labels.to(device)},
                                         generator=torch.Generator(device=device).manual_seed(1)).cpu()
    guided[f"w = {w:g}"] = (samples, class_labels)
guidance = {k: (x, fid_from_features(extract_features(x, net), test_features), inception_score(x, net),
                spread_within_class(extract_features(x, net), y)) for k, (x, y) in guided.items()}
print("\n".join(f"{k:>24}: FID {f:5.2f}   digits IS {i:.2f}   spread within class {v:5.2f}"
                for k, (_, f, i, v) in guidance.items()))
fig = plotting.fid_is_figure(guidance, n_show=20, ncol=5)  # 0-4 and 5-9 in alternate rows
plt.show()
(_, fid_w0, is_w0, spread_w0), (_, fid_w3, is_w3, spread_w3) = guidance["w = 0"], guidance["w = 3"]
is_test = guidance["test digits"][2]
assert is_w3 > is_w0 + 0.2 and is_w3 > is_test  # IS: guidance helps, beyond the real digits' own score
assert fid_w3 > fid_w0 + 0.2 and spread_w3 < 0.85 * spread_w0  # FID: it moves away from the data; variety shrinks

# %% [markdown] slideshow={"slide_type": "slide"}
# Guidance raises the digits IS, above what the real test digits score, and FID says the opposite: the guided
# samples are *further* from the test digits (which, being the reference, score FID 0 by definition). The third
# number shows why: within each class the guided digits are more alike than real digits are. IS rewards that (each
# sample is classified more confidently) and cannot penalise it, since it never compares with real digits; FID's
# covariance term does. Every class is there, 36 of each, so this is not mode dropping.

# %% [markdown] slideshow={"slide_type": "slide"}
# ## 4. Our models, and which FIDs can be compared
#
# FID is biased upwards: the means and covariances estimated from $n$ images are noisy, and the noise adds to the
# distance, so two sets of real images from the same distribution do not score 0. Here is the floor at each $n$:
# $n$ random training digits against the test digits, over several random draws.

# %% slideshow={"slide_type": "slide"}
sizes = [50, 100, 200, 360, 720, len(train_features)]
rng = np.random.default_rng(0)
draws = pick(10, 3)
floors = [[fid_from_features(train_features[rng.choice(len(train_features), k, replace=False)], test_features)
           for _ in range(draws if k < len(train_features) else 1)] for k in sizes]
spread = [np.std(f, ddof=1) if len(f) > 1 else 0.0 for f in floors]  # over the random draws
for k, f, sd in zip(sizes, floors, spread):
    print(f"{k:5d} real training digits against the 360 test digits: FID {np.mean(f):.2f} ± {sd:.2f}")
fig = plotting.fid_floor_figure(sizes, floors, label="n real training digits", reference="the 360 test digits")
plt.show()
assert np.mean(floors[0]) > 4 * np.mean(floors[3])  # 50 images: several times the floor of 360

# %% [markdown] slideshow={"slide_type": "slide"}
# Down to a few hundred images the floor falls roughly as $1/n$; beyond, it levels off, because the reference
# itself has only 360 images and its own noise stays in every FID against it. That is why the papers use 50,000
# samples, and why a FID is only comparable with FIDs **of as many samples, against the same reference, in the
# same features** (numbers from different feature networks are not comparable either).
#
# Now the shipped digits model, sampled with different numbers of respaced steps (Improved DDPM, section 4), with
# as many samples as the test set. Each FID is shown against the test digits (the reference of the course) and, to
# see what a change of reference does, against the training digits.

# %%
model, diffusion, config = load_pretrained("digits", device=device)
n = pick(len(test), 100)
floor_n, floor_sd = np.mean(floors[sizes.index(n)]), spread[sizes.index(n)]  # n training digits against test
floor_train = fid_from_features(test_features[:n], train_features)  # n real (test) digits against the training digits
model_fids, model_fids_train = {}, {}
for steps in pick([10, 25, 50, 100], [5, 10]):
    samples = generate(model, diffusion, (n, 1, 8, 8), steps=steps, generator=torch.Generator().manual_seed(steps))
    features = extract_features(samples.cpu(), net)
    model_fids[f"digits model, {steps} steps"] = fid_from_features(features, test_features)
    model_fids_train[f"digits model, {steps} steps"] = fid_from_features(features, train_features)
print(f"{n} samples each{'':17s}against test digits   against training digits")
print(f"{'real digits (the floor)':>30}: {floor_n:6.2f} ± {floor_sd:.2f}{floor_train:19.2f}")
for k in model_fids:
    print(f"{k:>30}: {model_fids[k]:6.2f}{model_fids_train[k]:26.2f}")
assert min(model_fids.values()) > floor_n - 3 * floor_sd  # no model clearly beats real data
first, last = list(model_fids.values())[0], list(model_fids.values())[-1]
assert last < first  # more sampling steps, better samples

# %% [markdown] slideshow={"slide_type": "slide"}
# More steps give better samples, with diminishing returns (with a few hundred samples, differences of a few tenths
# are within the noise of the estimate: the ± of the floor). The same samples score about the same against either
# reference, but the floors differ: against the 1,437 training digits the floor is about half of what it is against
# the 360 test digits, so the same FID can sit at the floor against one reference and well above it against the
# other. (The FIDs of `docs/claims.md` are measured against the training digits, with its floor of 0.571 for 360
# samples: compare them with that floor, not with this notebook's numbers.)
#
# How do these compare with spoiled real digits? A second explorer has our models among its bars: find the noise
# level that matches each one.

# %% slideshow={"slide_type": "slide"}
models_explorer = FIDExplorer(real, real_labels, test_features, net, benchmarks=model_fids)  # the first keeps its own
models_explorer

# %% [markdown] slideshow={"slide_type": "slide"}
# ## What to remember
#
# - FID = $\lVert \mu_1 - \mu_2 \rVert^2 + \operatorname{Tr}(\Sigma_1 + \Sigma_2 - 2(\Sigma_1\Sigma_2)^{1/2})$,
#   the **squared** Fréchet distance between Gaussians fitted to the features of two image sets; the matrix square
#   root couples the covariances.
# - One reference: here the 360 held-out test digits. A FID is comparable only with FIDs against the same
#   reference, of as many samples, in the same features (Inception-v3 for natural images, a digits network here);
#   the floor (real images against the reference) says what a perfect model would score.
# - FID rises with noise, blur and missing modes; precision and recall (notebook 08) tell fidelity from coverage.
# - The Inception Score never looks at real data: ten digits repeated score as well as real digits on it, not on
#   FID; guidance raises it above the real digits' own while FID worsens and the variety within each class shrinks.
