"""The checkers of notebooks 07 (timestep_embedding, res_block_forward), 08 (guided_mean, classifier_grad,
classifier_free_eps) and 09 (frechet_distance_diag, frechet_distance).

The generic properties (the reference passes, every listed mistake gets its own diagnosis, strict mode) are tested
for every registered exercise in tests/test_exercises.py; here: learner-written right answers pass, and the realistic
mistakes (wrong kinds of result included) are rejected with the diagnosis that says what is wrong.
"""
import math

import numpy as np
import pytest
import scipy.linalg
import torch
import torch.nn.functional as F
from exercise_helpers import assert_rejected, learner

from ddpm_lite import GaussianDiffusion
from ddpm_lite.course import exercises
from ddpm_lite.course.exercises import (
    EXERCISES,
    check_classifier_free_eps,
    check_classifier_grad,
    check_frechet_distance,
    check_frechet_distance_diag,
    check_guided_mean,
    check_res_block_forward,
    check_timestep_embedding,
)
from ddpm_lite.guidance import ClassifierFreeGuidance, classifier_cond_fn
from ddpm_lite.metrics.fid import frechet_distance as package_frechet_distance
from ddpm_lite.models import ResBlock
from ddpm_lite.models import timestep_embedding as package_timestep_embedding

NAMES = ("timestep_embedding", "res_block_forward", "guided_mean", "classifier_grad", "classifier_free_eps",
         "frechet_distance_diag", "frechet_distance")


@pytest.fixture(autouse=True)
def friendly(monkeypatch):
    monkeypatch.setenv("DDPM_LITE_STRICT", "0")


def test_registered_with_at_least_three_mistakes():
    for name in NAMES:
        assert len(EXERCISES[name].mistakes) >= 3


def test_references_are_the_package():
    t = torch.tensor([0, 5, 999])
    assert torch.equal(exercises.reference_timestep_embedding(t, 9), package_timestep_embedding(t, 9))
    mu, s = np.zeros(3), np.eye(3)
    assert exercises.reference_frechet_distance(mu, s, mu + 1, 4 * s) == package_frechet_distance(mu, s, mu + 1, 4 * s)


# ---------------------------------------------------------------------- 07: timestep_embedding
def emb_float32(t, dim, max_period=10000):  # the notebook's solution
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32) / half)
    args = t[:, None].float() * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    return F.pad(emb, (0, 1)) if dim % 2 else emb


def emb_power_float64_then_float32(t, dim, max_period=10000):  # numpy in float64, padding by hand, float32 out
    half = dim // 2
    freqs = max_period ** (-np.arange(half) / half)
    args = t.double().numpy()[:, None] * freqs[None]
    out = np.concatenate([np.cos(args), np.sin(args)], axis=1)
    if dim % 2:
        out = np.concatenate([out, np.zeros((len(out), 1))], axis=1)
    return torch.from_numpy(out).float()


def emb_outer(t, dim, max_period=10000):  # torch.outer, torch.zeros for the padding column
    half = dim // 2
    args = torch.outer(t.float(), torch.logspace(0, -math.log10(max_period) * (half - 1) / half, half))
    out = torch.cat([args.cos(), args.sin(), torch.zeros(len(t), dim - 2 * half)], dim=1)
    return out


@pytest.mark.parametrize("fn", [emb_float32, emb_power_float64_then_float32, emb_outer])
def test_timestep_embedding_accepts_correct_answers(fn, capsys):
    assert check_timestep_embedding(fn) is fn
    assert "✅ timestep_embedding: correct" in capsys.readouterr().out


def _emb(t, dim, max_period=10000, sincos=False, denom=None, log=math.log, pad=True):
    half = dim // 2
    freqs = torch.exp(-log(max_period) * torch.arange(half) / (denom(dim) if denom else half))
    args = t[:, None].float() * freqs[None]
    parts = [torch.sin(args), torch.cos(args)] if sincos else [torch.cos(args), torch.sin(args)]
    emb = torch.cat(parts, dim=-1)
    return F.pad(emb, (0, 1)) if pad and dim % 2 else emb


@pytest.mark.parametrize("fn, fragments", [
    (lambda t, d, max_period=10000: _emb(t, d, max_period, sincos=True), ["the sines come first"]),
    (lambda t, d, max_period=10000: _emb(t, d, max_period, denom=lambda dim: 1), ["fall far too fast"]),
    (lambda t, d, max_period=10000: _emb(t, d, max_period, denom=lambda dim: dim), ["fall half as fast"]),
    (lambda t, d, max_period=10000: _emb(t, d, max_period, log=math.log10), ["base-10 logarithm"]),
    (lambda t, d, max_period=10000: _emb(t, d, max_period, pad=False), ["one column too few when dim is odd",
                                                                        "an odd dim (7)"]),
    (lambda t, d, max_period=10000: _emb(t, d), ["ignores the max_period argument", "max_period = 100"]),
    # wrong kinds: float64 (the network is float32), numpy, the (B, dim) table transposed
    (lambda t, d, max_period=10000: _emb(t, d, max_period).double(),
     ["returned float64; return float32", "the network's layers are float32"]),
    (lambda t, d, max_period=10000: _emb(t, d, max_period).numpy(), ["returned a numpy array of shape (6, 16)"]),
    (lambda t, d, max_period=10000: _emb(t, d, max_period).T,
     ["the embedding has shape (16, 6); it should have shape (6, 16): one row per timestep"]),
])
def test_timestep_embedding_mistakes(fn, fragments):
    assert_rejected("timestep_embedding", fn, *fragments)


# ---------------------------------------------------------------------- 07: res_block_forward
B_ARGS = "block, x, emb"
B_FIRST = "h = block.in_conv(block.resample(F.silu(block.in_norm(x))))\n"
B_SCALE = "scale, shift = block.emb_proj(emb)[:, :, None, None].chunk(2, dim=1)\n"
B_ADAGN = "h = block.out_norm(h) * (1 + scale) + shift\n"
B_LAST = "h = block.out_conv(block.dropout(F.silu(h)))\n"
B_RETURN = "return block.skip(block.resample(x)) + h"


def block_addcmul(block, x, emb):
    """The package's way: torch.addcmul, unsqueeze, split: accepted."""
    h = block.in_conv(block.resample(F.silu(block.in_norm(x))))
    e = block.emb_proj(emb).unsqueeze(-1).unsqueeze(-1)
    scale, shift = torch.split(e, e.shape[1] // 2, dim=1)
    h = torch.addcmul(shift, block.out_norm(h), 1 + scale)
    return block.skip(block.resample(x)) + block.out_conv(block.dropout(F.silu(h)))


def block_functional(block, x, emb):
    """F.group_norm with the block's parameters and F.silu written out: accepted."""
    norm = block.out_norm
    h = block.in_conv(block.resample(F.silu(block.in_norm(x))))
    y = block.emb_proj(emb)
    c = y.shape[1] // 2
    h = F.group_norm(h, norm.num_groups, norm.weight, norm.bias, norm.eps)
    h = h + h * y[:, :c, None, None] + y[:, c:, None, None]
    h = h * torch.sigmoid(h)
    return block.skip(block.resample(x)) + block.out_conv(h)


@pytest.mark.parametrize("fn", [block_addcmul, block_functional, exercises.reference_res_block_forward])
def test_res_block_accepts_correct_answers(fn, capsys):
    assert check_res_block_forward(fn) is fn


@pytest.mark.parametrize("code, fragments", [
    (B_FIRST + "shift, scale = block.emb_proj(emb)[:, :, None, None].chunk(2, dim=1)\n" + B_ADAGN + B_LAST
     + B_RETURN, ["the other way round"]),
    (B_FIRST + B_SCALE + "h = block.out_norm(h) * scale + shift\n" + B_LAST + B_RETURN, ["by the scale alone"]),
    (B_FIRST + B_SCALE + "h = block.out_norm(h * (1 + scale) + shift)\n" + B_LAST + B_RETURN,
     ["before the GroupNorm"]),
    (B_FIRST + B_SCALE + "h = block.out_norm(h) + shift\n" + B_LAST + B_RETURN, ["shifts the normalised h but"]),
    (B_FIRST + B_SCALE + B_ADAGN + B_LAST + "return h", ["the skip connection is missing"]),
    (B_FIRST + B_SCALE + B_ADAGN + "h = block.out_conv(h)\n" + B_RETURN, ["one activation is missing"]),
    ("h = block.in_conv(block.resample(x))\n" + B_SCALE + B_ADAGN + B_LAST + B_RETURN, ["sees x itself"]),
    # crashes: the embedding not reshaped, the skip of a widening block, the skip not resampled
    (B_FIRST + "scale, shift = block.emb_proj(emb).chunk(2, dim=1)\n" + B_ADAGN + B_LAST + B_RETURN,
     ["raised RuntimeError", "at `h = block.out_norm(h) * (1 + scale) + shift`", "the embedding's shape"]),
    (B_FIRST + B_SCALE + B_ADAGN + B_LAST + "return block.resample(x) + h",
     ["raised RuntimeError", "for a block that widens 8 channels to 16", "the skip path"]),
    (B_FIRST + B_SCALE + B_ADAGN + B_LAST + "return block.skip(x) + h",
     ["raised RuntimeError", "for a downsampling block"]),
    # wrong kinds: float64, numpy
    (B_FIRST + B_SCALE + B_ADAGN + B_LAST + "return (block.skip(block.resample(x)) + h).double()",
     ["returned float64 for a float32 `x`", "the next layers of the U-Net are float32"]),
    (B_FIRST + B_SCALE + B_ADAGN + B_LAST + "return (block.skip(block.resample(x)) + h).numpy()",
     ["returned a numpy array of shape (2, 8, 4, 4); return a torch tensor"]),
])
def test_res_block_mistakes(code, fragments):
    assert_rejected("res_block_forward", learner(code, B_ARGS), *fragments)


def test_res_block_reference_is_the_package_block():
    """The reference is ResBlock.forward, for every kind of block (resampling, widening, DDPM's additive norm)."""
    g = torch.Generator().manual_seed(0)
    blocks = [exercises._random_block(g, 8, 8), exercises._random_block(g, 8, 16),
              exercises._random_block(g, 8, 8, resample="down"), exercises._random_block(g, 8, 8, resample="up"),
              ResBlock(8, 6, 8, use_scale_shift_norm=False).eval()]
    for block in blocks:
        x, emb = torch.randn(2, 8, 4, 4, generator=g), torch.randn(2, 6, generator=g)
        with torch.no_grad():
            assert torch.allclose(exercises.reference_res_block_forward(block, x, emb), block(x, emb), atol=1e-6)


# ---------------------------------------------------------------------- 08: guided_mean
def test_guided_mean_accepts_the_solution_and_matches_condition_mean(capsys):
    def guided_mean(mean, variance, grad, scale):
        return mean + scale * variance * grad

    def guided_addcmul(mean, variance, grad, scale):
        return torch.addcmul(mean, variance, grad, value=scale)

    assert check_guided_mean(guided_mean) is guided_mean
    assert check_guided_mean(guided_addcmul) is guided_addcmul
    # and it is what GaussianDiffusion.condition_mean does inside p_sample(cond_fn=...)
    d = GaussianDiffusion(np.linspace(1e-4, 0.02, 50), var_type="fixed_large")
    x = torch.randn(4, 1, 3, 3)
    t = torch.tensor([1, 10, 20, 49])
    out = d.p_mean_variance(lambda x, t: 0.1 * x, x, t)
    grad = torch.randn_like(x)
    expected = d.condition_mean(lambda x, t: 2.5 * grad, out, x, t)
    assert torch.allclose(guided_mean(out["mean"], out["variance"], grad, 2.5), expected, atol=1e-6)


@pytest.mark.parametrize("fn, fragments", [
    (lambda m, v, g, s: m + s * g, ["not scaled by the step's variance"]),
    (lambda m, v, g, s: m + s * torch.sqrt(v) * g, ["standard deviation instead of its variance"]),
    (lambda m, v, g, s: m - s * v * g, ["moves away from the class"]),
    (lambda m, v, g, s: m + v * g, ["the guidance scale is not applied"]),
    (lambda m, v, g, s: s * v * g, ["the guided mean has wrong values"]),  # forgot the mean: described, not named
    (lambda m, v, g, s: m + 2 * s * v * g, ["the guided mean has wrong values"]),
    # wrong kinds: float64 out of float32 inputs, a tuple
    (lambda m, v, g, s: (m + s * v * g).double(), ["returned float64 for a float32 `mean`"]),
    (lambda m, v, g, s: (m, s * v * g), ["returned a tuple of 2 items; return a torch tensor"]),
])
def test_guided_mean_mistakes(fn, fragments):
    assert_rejected("guided_mean", fn, *fragments)


# ---------------------------------------------------------------------- 08: classifier_grad
G_ARGS = "classifier, x_t, t, y"


def grad_backward(classifier, x_t, t, y):
    """.backward() and .grad, gather: accepted."""
    x = x_t.clone().requires_grad_(True)
    log_p = F.log_softmax(classifier(x, t), dim=1).gather(1, y[:, None])
    log_p.sum().backward()
    return x.grad


def grad_cross_entropy(classifier, x_t, t, y):
    """Minus the gradient of the summed cross-entropy: accepted."""
    with torch.enable_grad():
        x = x_t.detach().requires_grad_()
        loss = F.cross_entropy(classifier(x, t), y, reduction="sum")
        return -torch.autograd.grad(loss, x)[0]


def grad_logsumexp(classifier, x_t, t, y):
    """log p = logit_y - logsumexp(logits), per example in a loop: accepted."""
    grads = []
    for i in range(len(x_t)):
        x = x_t[i:i + 1].detach().requires_grad_(True)
        logits = classifier(x, t[i:i + 1])
        (g,) = torch.autograd.grad(logits[0, y[i]] - torch.logsumexp(logits[0], 0), x)
        grads.append(g)
    return torch.cat(grads)


@pytest.mark.parametrize("fn", [grad_backward, grad_cross_entropy, grad_logsumexp,
                                exercises.reference_classifier_grad])
def test_classifier_grad_accepts_correct_answers(fn):
    assert check_classifier_grad(fn) is fn


G_X = "x = x_t.detach().requires_grad_(True)\n"
G_LOGITS = "logits = classifier(x, t)\n"


@pytest.mark.parametrize("code, fragments", [
    (G_X + G_LOGITS + "return torch.autograd.grad(logits[torch.arange(len(y)), y].sum(), x)[0]",
     ["differentiates the class's logit, not its log-probability"]),
    (G_X + G_LOGITS + "p = logits.softmax(-1)[torch.arange(len(y)), y]\nreturn torch.autograd.grad(p.sum(), x)[0]",
     ["differentiates the class's probability, not its log"]),
    (G_X + G_LOGITS + "lp = logits.log_softmax(-1)[torch.arange(len(y)), y]\n"
     "return torch.autograd.grad(lp.mean(), x)[0]", ["divides each example's gradient by the batch size"]),
    (G_X + G_LOGITS + "loss = F.cross_entropy(logits, y, reduction='sum')\nreturn torch.autograd.grad(loss, x)[0]",
     ["points away from the class"]),
    (G_X + G_LOGITS + "lp = logits.log_softmax(-1)[torch.arange(len(y)), logits.argmax(-1)]\n"
     "return torch.autograd.grad(lp.sum(), x)[0]", ["the class the classifier predicts"]),
    (G_X + G_LOGITS + "lp = logits.log_softmax(0)[torch.arange(len(y)), y]\n"
     "return torch.autograd.grad(lp.sum(), x)[0]", ["the softmax runs over the batch"]),
    (G_X + G_LOGITS + "lp = logits.log_softmax(-1)[:, y].sum()\nreturn torch.autograd.grad(lp, x)[0]",
     ["the gradient has wrong values"]),  # every example's log-prob of every label: described, not named
    ("lp = classifier(x_t, t).log_softmax(-1)[torch.arange(len(y)), y]\n"
     "return torch.autograd.grad(lp.sum(), x_t)[0]", ["raised RuntimeError", "x_t does not require grad"]),
    # wrong kinds: a graph still attached, numpy
    (G_X + G_LOGITS + "lp = logits.log_softmax(-1)[torch.arange(len(y)), y]\n"
     "return torch.autograd.grad(lp.sum(), x, create_graph=True)[0]",
     ["returned a tensor that still requires grad", "inside torch.no_grad()"]),
    (G_X + G_LOGITS + "lp = logits.log_softmax(-1)[torch.arange(len(y)), y]\n"
     "return torch.autograd.grad(lp.sum(), x)[0].numpy()", ["returned a numpy array of shape (4, 1, 3, 3)"]),
])
def test_classifier_grad_mistakes(code, fragments):
    assert_rejected("classifier_grad", learner(code, G_ARGS), *fragments)


def test_classifier_grad_mean_over_the_batch_is_invisible_for_a_batch_of_one():
    """The mean-over-the-batch mistake is caught on the batches of several examples, not on the batch of one: the
    checker's cases include both, and say where."""
    ex = EXERCISES["classifier_grad"]
    wrong = learner(G_X + G_LOGITS + "lp = logits.log_softmax(-1)[torch.arange(len(y)), y]\n"
                    "return torch.autograd.grad(lp.mean(), x)[0]", G_ARGS)
    single = [c for c in ex.make_cases() if c.label == "a batch of one"][0]
    assert ex._all_close(ex._numbers(wrong, single), ex._numbers(ex.reference, single))


# ---------------------------------------------------------------------- 08: classifier_free_eps
def cfg_lerp(eps_cond, eps_uncond, w):
    return torch.lerp(eps_uncond, eps_cond, 1 + w)


def cfg_direction(eps_cond, eps_uncond, w):
    return eps_cond + w * (eps_cond - eps_uncond)


def cfg_in_place_on_a_copy(eps_cond, eps_uncond, w):
    out = eps_cond.clone()
    out.mul_(1 + w).sub_(w * eps_uncond)
    return out


@pytest.mark.parametrize("fn", [cfg_lerp, cfg_direction, cfg_in_place_on_a_copy,
                                exercises.reference_classifier_free_eps])
def test_classifier_free_eps_accepts_correct_answers(fn):
    assert check_classifier_free_eps(fn) is fn


@pytest.mark.parametrize("fn, fragments", [
    (lambda c, u, w: (1 + w) * u - w * c, ["swapped"]),
    (lambda c, u, w: u + w * (c - u), ["reads w as the whole guidance scale"]),
    (lambda c, u, w: w * (c - u), ["only the guidance direction"]),
    (lambda c, u, w: (1 + w) * c + w * u, ["adds the unconditional prediction"]),
    (lambda c, u, w: (1 - w) * c + w * u, ["interpolates towards the unconditional"]),
    (lambda c, u, w: c - w * u, ["do not add up to 1"]),
    (lambda c, u, w: c.mul_(1 + w).sub_(w * u), ["changed its input `eps_cond` in place"]),
    # wrong kinds: float64, a Python number for w = 0 (0 * tensor is fine, but a float returned is not)
    (lambda c, u, w: ((1 + w) * c - w * u).double(), ["returned float64 for a float32 `eps_cond`"]),
    (lambda c, u, w: float(((1 + w) * c - w * u).mean()), ["returned the number", "return a torch tensor"]),
])
def test_classifier_free_eps_mistakes(fn, fragments):
    assert_rejected("classifier_free_eps", fn, *fragments)


def test_classifier_free_eps_is_the_package_mix():
    class Model:
        def __call__(self, x, t, y=None):
            return torch.cat([0.5 * x + y[:, None].float(), 0.1 * x], dim=1)

    x, t, y = torch.randn(4, 2), torch.zeros(4, dtype=torch.long), torch.tensor([0, 1, 2, 1])
    out = ClassifierFreeGuidance(Model(), 2.0, null_label=3)(x, t, y=y)
    cond, uncond = Model()(x, t, y), Model()(x, t, torch.full_like(y, 3))
    assert torch.allclose(out[:, :2], exercises.reference_classifier_free_eps(cond[:, :2], uncond[:, :2], 2.0))


def test_classifier_grad_reference_is_the_package_cond_fn():
    clf = exercises._ToyClassifier(torch.Generator().manual_seed(0), 4)
    x, t, y = torch.randn(3, 4), torch.tensor([1, 2, 3]), torch.tensor([0, 1, 3])
    assert torch.equal(exercises.reference_classifier_grad(clf, x, t, y), classifier_cond_fn(clf, 1.0)(x, t, y=y))


# ---------------------------------------------------------------------- 09: the Frechet distance
def fd_diag(mu1, var1, mu2, var2):
    return np.sum((mu1 - mu2) ** 2) + np.sum(var1 + var2 - 2 * np.sqrt(var1 * var2))


def fd_diag_std(mu1, var1, mu2, var2):  # the same, written with standard deviations, as a Python float
    return float(((mu1 - mu2) ** 2).sum() + ((np.sqrt(var1) - np.sqrt(var2)) ** 2).sum())


def fd_diag_torch(mu1, var1, mu2, var2):  # torch, a 0-d tensor
    m1, v1, m2, v2 = (torch.as_tensor(a) for a in (mu1, var1, mu2, var2))
    return (m1 - m2).pow(2).sum() + (v1.sqrt() - v2.sqrt()).pow(2).sum()


@pytest.mark.parametrize("fn", [fd_diag, fd_diag_std, fd_diag_torch])
def test_frechet_distance_diag_accepts(fn, capsys):
    assert check_frechet_distance_diag(fn) is fn


@pytest.mark.parametrize("fn, fragments", [
    (lambda m1, v1, m2, v2: np.sum((m1 - m2) ** 2) + np.sum(v1 + v2 - np.sqrt(v1 * v2)), ["half what it should"]),
    (lambda m1, v1, m2, v2: np.sum((m1 - m2) ** 2) + np.sum(v1 + v2 - 2 * v1 * v2), ["product of the variances"]),
    (lambda m1, v1, m2, v2: np.linalg.norm(m1 - m2) + np.sum(v1 + v2 - 2 * np.sqrt(v1 * v2)), ["not squared"]),
    (lambda m1, v1, m2, v2: np.sum((m1 - m2) ** 2) + np.sum((v1 - v2) ** 2), ["treated as standard deviations"]),
    # wrong kinds: a vector (not summed), a one-element array, a string
    (lambda m1, v1, m2, v2: (m1 - m2) ** 2 + v1 + v2 - 2 * np.sqrt(v1 * v2),
     ["returned a numpy array of shape (6,) (float64); return one number: the sum over the dimensions"]),
    (lambda m1, v1, m2, v2: np.array([fd_diag(m1, v1, m2, v2)]), ["returned a numpy array of shape (1,)"]),
    (lambda m1, v1, m2, v2: f"{fd_diag(m1, v1, m2, v2):.3f}", ["returned the string", "return one number"]),
])
def test_frechet_distance_diag_mistakes(fn, fragments):
    assert_rejected("frechet_distance_diag", fn, *fragments)


def fd_sqrtm(mu1, sigma1, mu2, sigma2):  # the notebook's solution
    covmean = scipy.linalg.sqrtm(sigma1 @ sigma2).real
    return np.sum((mu1 - mu2) ** 2) + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean)


def fd_complex_trace(mu1, sigma1, mu2, sigma2):  # .real forgotten: a complex number with a ~0 imaginary part
    return (np.sum((mu1 - mu2) ** 2) + np.trace(sigma1) + np.trace(sigma2)
            - 2 * np.trace(scipy.linalg.sqrtm(sigma1 @ sigma2)))


def fd_symmetric(mu1, sigma1, mu2, sigma2):  # tr sqrt(S1 S2) = tr sqrt(sqrt(S1) S2 sqrt(S1)), symmetric form
    r = scipy.linalg.sqrtm(sigma1).real
    eig = np.linalg.eigvalsh(r @ sigma2 @ r)
    return ((mu1 - mu2) ** 2).sum() + np.trace(sigma1 + sigma2) - 2 * np.sqrt(np.clip(eig, 0, None)).sum()


@pytest.mark.parametrize("fn", [fd_sqrtm, fd_symmetric])
def test_frechet_distance_accepts(fn, capsys):
    with np.errstate(all="ignore"):
        assert check_frechet_distance(fn) is fn


def test_frechet_distance_complex_with_a_rounding_imaginary_part_is_a_wrong_kind():
    """The value is right, but the next cell compares it with real numbers (max(floor, 1) fails on a complex)."""
    def complex_trace(mu1, sigma1, mu2, sigma2):  # what sqrtm gives when rounding makes its result complex
        return fd_sqrtm(mu1, sigma1, mu2, sigma2) + 1e-13j

    assert_rejected("frechet_distance", complex_trace, "returned a complex number (its imaginary part",
                    "is rounding); return its .real part")
    with np.errstate(all="ignore"):
        assert check_frechet_distance(fd_complex_trace) is fd_complex_trace  # scipy's sqrtm is real here


def _fd(cross, two=2.0, square=True):
    def fd(mu1, s1, mu2, s2):
        d = np.linalg.norm(mu1 - mu2)
        return (d ** 2 if square else d) + np.trace(s1) + np.trace(s2) - two * cross(s1, s2)
    return fd


def _root(m):
    return scipy.linalg.sqrtm(m).real


@pytest.mark.parametrize("fn, fragments", [
    (_fd(lambda a, b: np.trace(_root(a @ b)), two=1.0), ["half what it should be"]),
    (_fd(lambda a, b: np.trace(a @ b)), ["no square root at all"]),
    (_fd(lambda a, b: np.trace(np.sqrt(np.abs(a @ b)))), ["entry by entry"]),  # same diagonal
    (_fd(lambda a, b: np.trace(_root(a) @ _root(b))), ["product of the two square roots"]),
    (_fd(lambda a, b: np.trace(_root(a) + _root(b))), ["adds the two square roots"]),
    (_fd(lambda a, b: np.trace(_root(a @ b)), square=False), ["not squared"]),
    # wrong kind: a complex number with a real imaginary part (the square root of a non-PSD product)
    (lambda m1, s1, m2, s2: fd_sqrtm(m1, s1, m2, s2) + 0.5j, ["a complex number", "imaginary part of 0.5"]),
])
def test_frechet_distance_mistakes(fn, fragments):
    assert_rejected("frechet_distance", fn, *fragments)


def test_frechet_distance_entrywise_sqrt(recwarn):
    with np.errstate(invalid="ignore"):
        msg = assert_rejected("frechet_distance", _fd(lambda a, b: np.trace(np.sqrt(a @ b))), "entry by entry")
    assert "scipy" not in msg  # the fix is for hint("frechet_distance", 2)


def test_strict_mode_raises_for_a_wrong_guided_mean(monkeypatch):
    monkeypatch.setenv("DDPM_LITE_STRICT", "1")
    with pytest.raises(exercises.ExerciseError, match="not scaled by the step's variance"):
        check_guided_mean(lambda m, v, g, s: m + s * g)
