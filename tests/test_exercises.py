"""The exercise checkers: accept the reference and correct variants, reject realistic mistakes with the right hint."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ddpm_lite import GaussianDiffusion
from ddpm_lite.course import checking, exercises
from ddpm_lite.course.exercises import (
    EXERCISES,
    Case,
    Exercise,
    ExerciseError,
    Mistake,
    check_cosine_betas,
    check_normal_kl,
    check_q_sample,
    check_simple_loss,
)
from ddpm_lite.losses import mean_flat, normal_kl
from ddpm_lite.schedules import cosine_betas

ALL = sorted(EXERCISES)


@pytest.fixture(autouse=True)
def friendly(monkeypatch):
    """Learner mode unless a test turns strict mode on (the notebook runs set DDPM_LITE_STRICT themselves)."""
    monkeypatch.setenv("DDPM_LITE_STRICT", "0")


def verdict(name, fn):
    return EXERCISES[name].diagnose(fn)


def assert_rejected(name, fn, *fragments):
    v = verdict(name, fn)
    assert v.status == "wrong", v.message
    assert v.message.startswith(f"❌ {name}") and "\n" not in v.message
    for fragment in fragments:
        assert fragment in v.message, f"{fragment!r} not in {v.message!r}"
    return v.message


# ---------------------------------------------------------------------- generic, for every registered exercise
def test_the_four_exercises_are_registered():
    assert {"q_sample", "normal_kl", "simple_loss", "cosine_betas"} <= set(EXERCISES)


@pytest.mark.parametrize("name", ALL)
def test_reference_is_accepted(name, capsys):
    ex = EXERCISES[name]
    assert ex.check(ex.reference) is ex.reference
    assert capsys.readouterr().out == f"✅ {name}: correct — your function is used from here on\n"


@pytest.mark.parametrize("name", ALL)
def test_every_known_mistake_is_diagnosed_with_its_own_hint(name):
    ex = EXERCISES[name]
    assert len(ex.mistakes) >= 3
    for mistake in ex.mistakes:
        message = ex.diagnose(mistake.fn).message
        assert mistake.what in message and mistake.hint in message, (mistake.what, message)


@pytest.mark.parametrize("name", ALL)
def test_mistakes_are_distinguishable(name):
    """No mistake gives the reference's answer on every case, and no two mistakes give the same answers on the case
    where the first of them is diagnosed: otherwise the hint would be ambiguous."""
    ex = EXERCISES[name]
    cases = ex.make_cases()

    def outputs(fn):
        out = []
        for case in cases:
            try:
                out.append(checking._to_numpy(fn(*case.args, **case.kwargs)))
            except Exception:  # noqa: BLE001
                out.append(None)
        return out

    ref = outputs(ex.reference)
    outs = {m.what: outputs(m.fn) for m in ex.mistakes}
    for what, out in outs.items():
        first_wrong = next(i for i, (o, r) in enumerate(zip(out, ref)) if o is None or not ex._close(o, r))
        for other, out2 in outs.items():
            if other != what and out2[first_wrong] is not None and out[first_wrong] is not None:
                assert not ex._close(out[first_wrong], out2[first_wrong]), (what, other)


@pytest.mark.parametrize("name", ALL)
def test_not_implemented_falls_back_to_the_reference(name, capsys):
    def todo(*args, **kwargs):
        raise NotImplementedError("hint: ...")

    ex = EXERCISES[name]
    assert ex.check(todo) is ex.reference
    assert capsys.readouterr().out == (f"⏳ {name}: not implemented yet — using the reference so the notebook "
                                       "goes on\n")


@pytest.mark.parametrize("name", ALL)
def test_strict_mode_raises(name, monkeypatch, capsys):
    monkeypatch.setenv("DDPM_LITE_STRICT", "1")
    ex = EXERCISES[name]

    def todo(*args, **kwargs):
        raise NotImplementedError("hint: ...")

    with pytest.raises(NotImplementedError, match="hint"):
        ex.check(todo)
    with pytest.raises(ExerciseError, match=f"❌ {name}: " + ex.mistakes[0].what[:10]):
        ex.check(ex.mistakes[0].fn)
    assert ex.check(ex.reference) is ex.reference  # a right answer passes in strict mode too
    assert "✅" in capsys.readouterr().out


def test_wrong_answer_prints_one_line_and_returns_the_reference(capsys):
    def wrong(x0, t, noise, betas):
        ab = torch.cumprod(1 - betas, 0)[t].reshape(-1, *[1] * (x0.ndim - 1))
        return ab * x0 + (1 - ab) * noise

    assert check_q_sample(wrong) is exercises.reference_q_sample
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and out.startswith("❌ q_sample: missing square roots — ")
    assert out.rstrip().endswith("(using the reference so the notebook goes on)")


def test_register_rejects_a_duplicate_name():
    with pytest.raises(ValueError, match="already registered"):
        exercises.register(Exercise("q_sample", lambda: 0, lambda g: []))


def test_a_new_exercise_needs_no_new_machinery(capsys):
    """How later notebooks add theirs: an Exercise with cases and mistakes, nothing else."""
    ex = Exercise(
        name="double", reference=lambda x: 2 * x,
        cases=lambda g: [Case((torch.randn(3, generator=g),)), Case((torch.zeros(2),), label="zeros")],
        mistakes=[Mistake("you squared", "multiply by 2", lambda x: x ** 2)])
    assert ex.check(lambda x: x + x) is not ex.reference
    assert "you squared — multiply by 2" in ex.diagnose(lambda x: x ** 2).message
    assert "wrong shape" in ex.diagnose(lambda x: x.sum()).message
    assert "wrong values (largest error" in ex.diagnose(lambda x: 3 * x).message


# ---------------------------------------------------------------------- q_sample: learner-written answers
def q_right(x0, t, noise, betas):
    alphas = 1 - betas
    ab = torch.stack([torch.prod(alphas[: int(s) + 1]) for s in t])  # a loop, the long way round
    ab = ab.view(-1, *([1] * (x0.dim() - 1)))
    return torch.sqrt(ab) * x0 + torch.sqrt(1 - ab) * noise


def test_q_sample_accepts_a_correct_variant(capsys):
    assert check_q_sample(q_right) is q_right


@pytest.mark.parametrize("code, fragments", [
    ("ab = torch.cumprod(1 - betas, 0)[t].view(-1, *[1] * (x0.ndim - 1))\n"
     "return ab * x0 + (1 - ab) * noise", ["missing square roots", "sqrt(alpha_bar_t) * x0"]),
    ("ab = torch.cumprod(1 - betas, 0)[t].view(-1, *[1] * (x0.ndim - 1))\n"
     "return ab.sqrt() * x0 + (1 - ab) * noise", ["scaled by the variance", "missing square root"]),
    ("a = (1 - betas)[t].view(-1, *[1] * (x0.ndim - 1))\n"
     "return a.sqrt() * x0 + (1 - a).sqrt() * noise", ["alpha_t used in place of alpha_bar_t", "cumprod"]),
    ("ab = torch.cumprod(1 - betas, 0)[t - 1].view(-1, *[1] * (x0.ndim - 1))\n"
     "return ab.sqrt() * x0 + (1 - ab).sqrt() * noise", ["off by one", "alpha_bar_t includes alpha_t"]),
    ("ab = (1 - torch.cumsum(betas, 0))[t].view(-1, *[1] * (x0.ndim - 1))\n"
     "return ab.sqrt() * x0 + (1 - ab).sqrt() * noise", ["1 - sum of betas", "product"]),
    ("ab = torch.cumprod(1 - betas, 0)[t]\n"
     "return ab.sqrt() * x0 + (1 - ab).sqrt() * noise", ["raised RuntimeError", "reshape it to (B, 1, 1, ...)"]),
    ("ab = torch.cumprod(1 - betas, 0)[t][:, None, None, None]\n"
     "return ab.sqrt() * x0 + (1 - ab).sqrt() * noise",
     ["wrong shape for t = 0 and t = T-1 (2-D points)", "reshape alpha_bar[t] to (B, 1, 1, ...)"]),
    ("ab = torch.cumprod(1 - betas, 0)[t].view(-1, *[1] * (x0.ndim - 1))\n"
     "ab.sqrt() * x0 + (1 - ab).sqrt() * noise", ["returned None", "return"]),
    ("ab = torch.cumprod(1 - betas, 0)[t].view(-1, *[1] * (x0.ndim - 1))\n"
     "return ab.sqrt() * x0 + (1 - ab).sqrt() * torch.randn_like(x0)", ["different results", "noise passed in"]),
    ("ab = torch.cumprod(1 - betas, 0)[t].view(-1, *[1] * (x0.ndim - 1))\n"
     "x0 *= ab.sqrt()\nreturn x0 + (1 - ab).sqrt() * noise", ["changed its input `x0` in place"]),
])
def test_q_sample_rejects_realistic_mistakes(code, fragments):
    namespace = {"torch": torch}
    body = "\n".join("    " + line for line in code.splitlines())
    exec(f"def q_sample(x0, t, noise, betas):\n{body}\n", namespace)  # noqa: S102 - a learner's cell
    assert_rejected("q_sample", namespace["q_sample"], *fragments)


# ---------------------------------------------------------------------- normal_kl
def kl_right(mean1, logvar1, mean2, logvar2):
    """The textbook form with standard deviations."""
    s1, s2 = torch.exp(0.5 * logvar1), torch.exp(0.5 * logvar2)
    return torch.log(s2 / s1) + (s1 ** 2 + (mean1 - mean2) ** 2) / (2 * s2 ** 2) - 0.5


def test_normal_kl_accepts_a_correct_variant():
    assert check_normal_kl(kl_right) is kl_right


@pytest.mark.parametrize("fn, fragments", [
    (lambda m1, lv1, m2, lv2: 0.5 * (-1 + torch.log(lv2 / lv1) + lv1 / lv2 + (m1 - m2) ** 2 / lv2),
     ["NaN", "log of a log-variance", "log sigma^2"]),
    (lambda m1, lv1, m2, lv2: -1 + lv2 - lv1 + torch.exp(lv1 - lv2) + (m1 - m2) ** 2 * torch.exp(-lv2),
     ["factor 1/2 is missing"]),
    (lambda m1, lv1, m2, lv2: 0.5 * (-1 + lv1 - lv2 + torch.exp(lv2 - lv1) + (m1 - m2) ** 2 * torch.exp(-lv1)),
     ["KL(N2 || N1)", "not symmetric"]),
    (lambda m1, lv1, m2, lv2: 0.5 * (-1 + lv2 - lv1 + torch.exp(lv1 - lv2) + (m1 - m2) ** 2 * torch.exp(lv2)),
     ["multiplied by the variance", "exp(-logvar2)"]),
    (lambda m1, lv1, m2, lv2: (0.5 * (-1 + lv2 - lv1 + torch.exp(lv1 - lv2)
                                      + (m1 - m2) ** 2 * torch.exp(-lv2))).sum(),
     ["sum instead of elementwise"]),
    (lambda m1, lv1, m2, lv2: (0.5 * (lv2 - lv1 + torch.exp(lv1 - lv2) + (m1 - m2) ** 2 * torch.exp(-lv2))),
     ["the -1 is missing", "must be 0"]),
    (lambda m1, lv1, m2, lv2: torch.log(torch.exp(lv2) / torch.exp(lv1))
     + (torch.exp(lv1) ** 2 + (m1 - m2) ** 2) / (2 * torch.exp(lv2) ** 2) - 0.5,
     ["used as a standard deviation", "already the variance"]),
])
def test_normal_kl_rejects_realistic_mistakes(fn, fragments):
    assert_rejected("normal_kl", fn, *fragments)


# ---------------------------------------------------------------------- simple loss
def loss_right(model, diffusion, x0, t, noise):
    x_t = diffusion.q_sample(x0, t, noise=noise)
    return F.mse_loss(model(x_t, t), noise, reduction="none").mean(dim=list(range(1, x0.ndim)))


def test_simple_loss_accepts_a_correct_variant_and_matches_training_losses():
    assert check_simple_loss(loss_right) is loss_right
    d = GaussianDiffusion(np.linspace(1e-4, 0.02, 50))
    model = exercises._ToyEpsModel()
    x0, t, noise = torch.randn(3, 1, 4, 4), torch.tensor([0, 20, 49]), torch.randn(3, 1, 4, 4)
    assert torch.allclose(loss_right(model, d, x0, t, noise), d.training_losses(model, x0, t, noise)["loss"])


@pytest.mark.parametrize("fn, fragments", [
    (lambda model, d, x0, t, noise: ((noise - model(d.q_sample(x0, t, noise), t)) ** 2).sum(dim=(1, 2, 3)),
     ["sum over pixels instead of mean", "mean_flat"]),
    (lambda model, d, x0, t, noise: F.mse_loss(model(d.q_sample(x0, t, noise), t), noise),
     ["a single number", "shape (B,)"]),
    (lambda model, d, x0, t, noise: mean_flat((x0 - model(d.q_sample(x0, t, noise), t)) ** 2),
     ["the target is x0", "predicts the noise"]),
    (lambda model, d, x0, t, noise: mean_flat((noise - model(x0, t)) ** 2),
     ["the model is applied to x0", "noisy x_t"]),
    (lambda model, d, x0, t, noise: mean_flat((noise - model(d.q_sample(x0, t), t)) ** 2),
     ["different results", "noise passed in"]),
    (lambda model, d, x0, t, noise: mean_flat((noise - model(d.q_sample(x0, t, noise), t)).abs()),
     ["absolute error", "squared"]),
])
def test_simple_loss_rejects_realistic_mistakes(fn, fragments):
    assert_rejected("simple_loss", fn, *fragments)


# ---------------------------------------------------------------------- cosine betas
def cos_right_torch(num_timesteps, s=0.008, max_beta=0.999):
    """float32 torch, as a learner might write it: accepted (tolerances allow float32)."""
    t = torch.arange(num_timesteps + 1, dtype=torch.float32) / num_timesteps
    f = torch.cos((t + s) / (1 + s) * math.pi / 2) ** 2
    return (1 - f[1:] / f[:-1]).clamp(max=max_beta)


def cos_right_loop(num_timesteps, s=0.008, max_beta=0.999):
    def alpha_bar(tau):
        return math.cos((tau + s) / (1 + s) * math.pi / 2) ** 2 / math.cos(s / (1 + s) * math.pi / 2) ** 2
    return [min(1 - alpha_bar((i + 1) / num_timesteps) / alpha_bar(i / num_timesteps), max_beta)
            for i in range(num_timesteps)]


@pytest.mark.parametrize("fn", [cos_right_torch, cos_right_loop])
def test_cosine_betas_accepts_correct_variants(fn):
    assert check_cosine_betas(fn) is fn


def _f(tau, s=0.008):
    return np.cos((tau + s) / (1 + s) * np.pi / 2) ** 2


@pytest.mark.parametrize("fn, fragments", [
    (lambda T, s=0.008, max_beta=0.999: 1 - _f(np.arange(1, T + 1) / T, s) / _f(np.arange(T) / T, s),
     ["clip at max_beta = 0.999 is missing", "np.minimum"]),
    (lambda T, s=0.008, max_beta=0.999: np.minimum(1 - _f(np.arange(1, T + 1) / T, 0) / _f(np.arange(T) / T, 0),
                                                   max_beta),
     ["offset s is missing", "s = 0.008"]),
    (lambda T, s=0.008, max_beta=0.999: np.minimum(1 - _f(np.arange(T) / T, s) / _f((np.arange(T) - 1) / T, s),
                                                   max_beta),
     ["off by one in t", "1 - alpha_bar(1/T) / alpha_bar(0)"]),
    (lambda T, s=0.008, max_beta=0.999: np.minimum(1 - _f(np.arange(1, T + 1) / T, s) / _f(0, s), max_beta),
     ["beta_t = 1 - alpha_bar_t", "one step"]),
    (lambda T, s=0.008, max_beta=0.999: np.minimum(1 - _f(np.arange(T + 1) / T, s) / _f(np.arange(T + 1) / T, s)
                                                   + 1 - _f(np.arange(T + 1) / T, s) / _f(0, s), max_beta),
     ["wrong shape", "return T betas"]),
    (lambda T, s=0.008, max_beta=0.999: np.clip(1 - _f(np.arange(1, T + 1) / T, s) / _f(np.arange(T) / T, s),
                                                0, 0.999),
     ["max_beta is ignored", "s = 0.02 and max_beta = 0.9"]),
])
def test_cosine_betas_rejects_realistic_mistakes(fn, fragments):
    assert_rejected("cosine_betas", fn, *fragments)


def test_references_are_the_package():
    g = torch.Generator().manual_seed(1)
    m1, lv1, m2, lv2 = (torch.randn(4, 3, generator=g) for _ in range(4))
    assert torch.equal(exercises.reference_normal_kl(m1, lv1, m2, lv2), normal_kl(m1, lv1, m2, lv2))
    assert np.array_equal(exercises.reference_cosine_betas(100), cosine_betas(100))
    betas = torch.from_numpy(np.linspace(1e-4, 0.02, 100))
    x0, noise, t = torch.randn(2, 3, generator=g), torch.randn(2, 3, generator=g), torch.tensor([0, 99])
    expected = GaussianDiffusion(betas.numpy()).q_sample(x0, t, noise)
    assert torch.allclose(exercises.reference_q_sample(x0, t, noise, betas), expected)


def test_the_machinery_lives_in_checking_and_is_importable_from_exercises():
    """course/checking.py holds the checker (Case, Exercise, register, ...); course/exercises.py the exercises,
    and the machinery's names still import from there."""
    for name in ("Case", "Mistake", "Exercise", "Verdict", "ExerciseError", "register", "EXERCISES", "strict_mode"):
        assert getattr(exercises, name) is getattr(checking, name), name
    checks = [name for name in exercises.__all__ if name.startswith("check_")]
    assert len(checks) == len(EXERCISES)
    assert all(getattr(exercises, name).__module__ == "ddpm_lite.course.exercises" for name in checks)
