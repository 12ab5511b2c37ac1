"""The checkers of notebooks 07-09: timestep_embedding, guided_mean, frechet_distance_diag, frechet_distance.

The generic properties (the reference passes, every listed mistake gets its own hint, strict mode) are tested for
every registered exercise in tests/test_exercises.py; here: learner-written right answers pass, and the realistic
mistakes the brief names are rejected with the hint that fixes them.
"""
import math

import numpy as np
import pytest
import scipy.linalg
import torch
import torch.nn.functional as F

from ddpm_lite import GaussianDiffusion
from ddpm_lite.course import exercises
from ddpm_lite.course.exercises import (
    EXERCISES,
    check_frechet_distance,
    check_frechet_distance_diag,
    check_guided_mean,
    check_timestep_embedding,
)
from ddpm_lite.metrics.fid import frechet_distance as package_frechet_distance
from ddpm_lite.models import timestep_embedding as package_timestep_embedding

NAMES = ("timestep_embedding", "guided_mean", "frechet_distance_diag", "frechet_distance")


@pytest.fixture(autouse=True)
def friendly(monkeypatch):
    monkeypatch.setenv("DDPM_LITE_STRICT", "0")


def rejected(name, fn, *fragments):
    v = EXERCISES[name].diagnose(fn)
    assert v.status == "wrong", v.message
    for fragment in fragments:
        assert fragment in v.message, f"{fragment!r} not in {v.message!r}"
    return v.message


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


def emb_power_float64(t, dim, max_period=10000):  # another way to write it, in float64, padding by hand
    half = dim // 2
    freqs = max_period ** (-np.arange(half) / half)
    args = t.double().numpy()[:, None] * freqs[None]
    out = np.concatenate([np.cos(args), np.sin(args)], axis=1)
    if dim % 2:
        out = np.concatenate([out, np.zeros((len(out), 1))], axis=1)
    return torch.from_numpy(out)


@pytest.mark.parametrize("fn", [emb_float32, emb_power_float64])
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
    (lambda t, d, max_period=10000: _emb(t, d, max_period, sincos=True), ["sin and cos swapped", "cosines come first"]),
    (lambda t, d, max_period=10000: _emb(t, d, max_period, denom=lambda dim: 1), ["not divided by half"]),
    (lambda t, d, max_period=10000: _emb(t, d, max_period, denom=lambda dim: dim), ["divided by dim instead of half"]),
    (lambda t, d, max_period=10000: _emb(t, d, max_period, log=math.log10), ["log base 10", "natural log"]),
    (lambda t, d, max_period=10000: _emb(t, d, max_period, pad=False),
     ["no zero column for an odd dim", "an odd dim (7)", "F.pad"]),
    (lambda t, d, max_period=10000: _emb(t, d), ["max_period is ignored", "max_period = 100"]),
])
def test_timestep_embedding_mistakes(fn, fragments):
    rejected("timestep_embedding", fn, *fragments)


# ---------------------------------------------------------------------- 08: guided_mean
def test_guided_mean_accepts_the_solution_and_matches_condition_mean(capsys):
    def guided_mean(mean, variance, grad, scale):
        return mean + scale * variance * grad

    assert check_guided_mean(guided_mean) is guided_mean
    # and it is what GaussianDiffusion.condition_mean does inside p_sample(cond_fn=...)
    d = GaussianDiffusion(np.linspace(1e-4, 0.02, 50), var_type="fixed_large")
    x = torch.randn(4, 1, 3, 3)
    t = torch.tensor([1, 10, 20, 49])
    out = d.p_mean_variance(lambda x, t: 0.1 * x, x, t)
    grad = torch.randn_like(x)
    expected = d.condition_mean(lambda x, t: 2.5 * grad, out, x, t)
    assert torch.allclose(guided_mean(out["mean"], out["variance"], grad, 2.5), expected, atol=1e-6)


@pytest.mark.parametrize("fn, fragments", [
    (lambda m, v, g, s: m + s * g, ["Sigma is missing", "scale * variance * grad"]),
    (lambda m, v, g, s: m + s * torch.sqrt(v) * g, ["sqrt(Sigma) used"]),
    (lambda m, v, g, s: m - s * v * g, ["the sign is flipped", "towards the class"]),
    (lambda m, v, g, s: m + v * g, ["the scale is missing"]),
    (lambda m, v, g, s: s * v * g, ["wrong values"]),  # forgot the mean: no known mistake, the general hint
])
def test_guided_mean_mistakes(fn, fragments):
    rejected("guided_mean", fn, *fragments)


# ---------------------------------------------------------------------- 09: the Frechet distance
def fd_diag(mu1, var1, mu2, var2):
    return np.sum((mu1 - mu2) ** 2) + np.sum(var1 + var2 - 2 * np.sqrt(var1 * var2))


def fd_diag_std(mu1, var1, mu2, var2):  # the same, written with standard deviations
    return float(((mu1 - mu2) ** 2).sum() + ((np.sqrt(var1) - np.sqrt(var2)) ** 2).sum())


@pytest.mark.parametrize("fn", [fd_diag, fd_diag_std])
def test_frechet_distance_diag_accepts(fn, capsys):
    assert check_frechet_distance_diag(fn) is fn


@pytest.mark.parametrize("fn, fragments", [
    (lambda m1, v1, m2, v2: np.sum((m1 - m2) ** 2) + np.sum(v1 + v2 - np.sqrt(v1 * v2)), ["factor 2 is missing"]),
    (lambda m1, v1, m2, v2: np.sum((m1 - m2) ** 2) + np.sum(v1 + v2 - 2 * v1 * v2), ["square root is missing"]),
    (lambda m1, v1, m2, v2: np.linalg.norm(m1 - m2) + np.sum(v1 + v2 - 2 * np.sqrt(v1 * v2)),
     ["not squared", "squared norm"]),
    (lambda m1, v1, m2, v2: np.sum((m1 - m2) ** 2) + np.sum((v1 - v2) ** 2), ["used as standard deviations"]),
])
def test_frechet_distance_diag_mistakes(fn, fragments):
    rejected("frechet_distance_diag", fn, *fragments)


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


@pytest.mark.parametrize("fn", [fd_sqrtm, fd_complex_trace, fd_symmetric])
def test_frechet_distance_accepts(fn, capsys):
    with np.errstate(all="ignore"):
        assert check_frechet_distance(fn) is fn


def _fd(cross, two=2.0, square=True):
    def fd(mu1, s1, mu2, s2):
        d = np.linalg.norm(mu1 - mu2)
        return (d ** 2 if square else d) + np.trace(s1) + np.trace(s2) - two * cross(s1, s2)
    return fd


def _root(m):
    return scipy.linalg.sqrtm(m).real


@pytest.mark.parametrize("fn, fragments", [
    (_fd(lambda a, b: np.trace(_root(a @ b)), two=1.0), ["factor 2 is missing"]),
    (_fd(lambda a, b: np.trace(a @ b)), ["matrix square root is missing"]),
    (_fd(lambda a, b: np.trace(np.sqrt(np.abs(a @ b)))), ["elementwise square root"]),  # same diagonal
    (_fd(lambda a, b: np.trace(_root(a) @ _root(b))), ["product of the square roots"]),
    (_fd(lambda a, b: np.trace(_root(a) + _root(b))), ["trace of the sum of the square roots"]),
    (_fd(lambda a, b: np.trace(_root(a @ b)), square=False), ["not squared"]),
])
def test_frechet_distance_mistakes(fn, fragments):
    rejected("frechet_distance", fn, *fragments)


def test_frechet_distance_entrywise_sqrt(recwarn):
    with np.errstate(invalid="ignore"):
        msg = rejected("frechet_distance", _fd(lambda a, b: np.trace(np.sqrt(a @ b))), "elementwise square root")
    assert "scipy.linalg.sqrtm" in msg


def test_strict_mode_raises_for_a_wrong_guided_mean(monkeypatch):
    monkeypatch.setenv("DDPM_LITE_STRICT", "1")
    with pytest.raises(exercises.ExerciseError, match="Sigma is missing"):
        check_guided_mean(lambda m, v, g, s: m + s * g)
