"""The exercise checkers: accept the reference and correct variants, reject realistic mistakes with the right
diagnosis, formula only on request. Generic checks of every registered exercise here; notebook 01, 03 and 05's
learner-written answers below; the other notebooks' in tests/test_exercises_*.py; feedback and robustness (kinds,
a zoo of strange answers, the hint levels) in tests/test_exercises_feedback.py."""
import linecache
import math
import re

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
    check_decoder_nll_bits,
    check_normal_kl,
    check_q_sample,
    check_simple_loss,
)
from ddpm_lite.losses import discretized_gaussian_log_likelihood, mean_flat, normal_kl
from ddpm_lite.schedules import cosine_betas

ALL = sorted(EXERCISES)
NEW = {"train_step", "decoder_nll_bits", "hybrid_loss", "res_block_forward", "classifier_grad", "classifier_free_eps"}


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
    assert v.message.endswith(f"(run `hint('{name}')` for a hint)"), v.message
    for fragment in fragments:
        assert fragment in v.message, f"{fragment!r} not in {v.message!r}"
    return v.message


def learner(code, args, **names):
    """A learner's cell: ``def f(args): <code>``, with torch, np, F and math in scope; its source registered in
    linecache under a cell name, as IPython does, so that messages can quote the learner's line."""
    namespace = {"torch": torch, "np": np, "F": F, "math": math, "mean_flat": mean_flat, **names}
    body = "\n".join("    " + line for line in code.splitlines())
    source = f"def f({args}):\n{body}\n"
    filename = f"<learner cell {abs(hash(source))}>"
    linecache.cache[filename] = (len(source), None, source.splitlines(keepends=True), filename)
    exec(compile(source, filename, "exec"), namespace)  # noqa: S102 - a learner's cell
    return namespace["f"]


# ---------------------------------------------------------------------- generic, for every registered exercise
def test_the_exercises_are_registered_with_five_new_ones():
    assert {"q_sample", "normal_kl", "simple_loss", "cosine_betas"} <= set(EXERCISES)
    assert NEW <= set(EXERCISES) and len(EXERCISES) == 21


@pytest.mark.parametrize("name", ALL)
def test_reference_is_accepted(name, capsys):
    ex = EXERCISES[name]
    assert ex.check(ex.reference) is ex.reference
    assert capsys.readouterr().out == f"✅ {name}: correct — your function is used from here on\n"


@pytest.mark.parametrize("name", ALL)
def test_every_known_mistake_is_diagnosed_and_its_hints_follow(name, capsys):
    """The first ❌ names the mistake (its diagnosis); hint(name) then gives its level 1, hint(name, 2) its fix."""
    ex = EXERCISES[name]
    assert len(ex.mistakes) >= 3
    for mistake in ex.mistakes:
        assert ex.check(mistake.fn) is ex.reference
        out = capsys.readouterr().out
        assert mistake.what in out and out.count("\n") == 1, (mistake.what, out)
        assert out.rstrip().endswith("— using the reference so the notebook goes on"), out
        assert (mistake.look or ex.look) in checking.hint_text(name)
        assert mistake.fix in checking.hint_text(name, 2)


@pytest.mark.parametrize("name", ALL)
def test_mistakes_are_distinguishable(name):
    """No mistake gives the reference's answer on every case, and no two mistakes give the same answers on the case
    where the first of them is diagnosed: otherwise the diagnosis would be ambiguous."""
    ex = EXERCISES[name]
    cases = ex.make_cases()

    def outputs(fn):
        return [ex._numbers(fn, case) for case in cases]

    ref = outputs(ex.reference)
    outs = {m.what: outputs(m.fn) for m in ex.mistakes}
    for what, out in outs.items():
        first_wrong = next(i for i, (o, r) in enumerate(zip(out, ref)) if o is None or not ex._all_close(o, r))
        for other, out2 in outs.items():
            if other != what and out2[first_wrong] is not None and out[first_wrong] is not None:
                assert not ex._all_close(out[first_wrong], out2[first_wrong]), (what, other)


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
    with pytest.raises(ExerciseError, match=re.escape(ex.mistakes[0].what[:20])):
        ex.check(ex.mistakes[0].fn)
    assert ex.check(ex.reference) is ex.reference  # a right answer passes in strict mode too
    assert "✅" in capsys.readouterr().out


def test_wrong_answer_prints_one_line_and_returns_the_reference(capsys):
    def wrong(x0, t, noise, betas):
        ab = torch.cumprod(1 - betas, 0)[t].reshape(-1, *[1] * (x0.ndim - 1))
        return ab * x0 + (1 - ab) * noise

    assert check_q_sample(wrong) is exercises.reference_q_sample
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and out.startswith("❌ q_sample: both factors are the squares of what they should be")
    assert "(run `hint('q_sample')` for a hint) — using the reference so the notebook goes on" in out


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
    assert "you squared" in ex.diagnose(lambda x: x ** 2).message
    assert "multiply by 2" not in ex.diagnose(lambda x: x ** 2).message  # the fix is a hint, on request
    assert "is one number; it should have one value per example" in ex.diagnose(lambda x: x.sum()).message
    assert "is 3 times the right value everywhere" in ex.diagnose(lambda x: 6 * x).message
    assert "has wrong values (largest error" in ex.diagnose(lambda x: 2 * x + torch.cos(5 * x)).message


def test_the_machinery_lives_in_checking_and_is_importable_from_exercises():
    """course/checking.py holds the checker (Case, Exercise, register, ...); course/exercises.py the exercises,
    and the machinery's names still import from there."""
    for name in ("Case", "Mistake", "Output", "Exercise", "Verdict", "ExerciseError", "register", "EXERCISES",
                 "strict_mode", "hint", "hint_text"):
        assert getattr(exercises, name) is getattr(checking, name), name
    checks = [name for name in exercises.__all__ if name.startswith("check_")]
    assert len(checks) == len(EXERCISES)
    assert all(getattr(exercises, name).__module__ == "ddpm_lite.course.exercises" for name in checks)


# ---------------------------------------------------------------------- 01 q_sample: learner-written answers
def q_right(x0, t, noise, betas):
    alphas = 1 - betas
    ab = torch.stack([torch.prod(alphas[: int(s) + 1]) for s in t])  # a loop, the long way round
    ab = ab.view(-1, *([1] * (x0.dim() - 1)))
    return torch.sqrt(ab) * x0 + torch.sqrt(1 - ab) * noise


def q_in_place_on_a_copy(x0, t, noise, betas):
    ab = torch.cumprod(1 - betas, 0)[t].reshape(-1, *[1] * (x0.ndim - 1))
    out = x0.clone()
    out.mul_(ab.sqrt())
    return out.add_((1 - ab).sqrt() * noise)


def q_float32_schedule(x0, t, noise, betas):
    """The schedule in x0's dtype: float32 in, float32 out (float64 in, float64 out)."""
    ab = torch.cumprod(1 - betas.to(x0.dtype), 0)[t].reshape(-1, *[1] * (x0.ndim - 1))
    return ab.sqrt() * x0 + (1 - ab).sqrt() * noise


def q_lerp_of_variances(x0, t, noise, betas):
    """Written with the package's GaussianDiffusion."""
    return GaussianDiffusion(betas.numpy()).q_sample(x0, t, noise)


@pytest.mark.parametrize("fn", [q_right, q_in_place_on_a_copy, q_float32_schedule, q_lerp_of_variances])
def test_q_sample_accepts_correct_variants(fn, capsys):
    assert check_q_sample(fn) is fn


@pytest.mark.parametrize("code, fragments", [
    ("ab = torch.cumprod(1 - betas, 0)[t].view(-1, *[1] * (x0.ndim - 1))\n"
     "return ab * x0 + (1 - ab) * noise", ["both factors are the squares"]),
    ("ab = torch.cumprod(1 - betas, 0)[t].view(-1, *[1] * (x0.ndim - 1))\n"
     "return ab.sqrt() * x0 + (1 - ab) * noise", ["noise is scaled by its variance", "factor of x0 is right"]),
    ("a = (1 - betas)[t].view(-1, *[1] * (x0.ndim - 1))\n"
     "return a.sqrt() * x0 + (1 - a).sqrt() * noise", ["one single step"]),
    ("ab = torch.cumprod(1 - betas, 0)[t - 1].view(-1, *[1] * (x0.ndim - 1))\n"
     "return ab.sqrt() * x0 + (1 - ab).sqrt() * noise", ["off by one step", "step before t"]),
    ("ab = (1 - torch.cumsum(betas, 0))[t].view(-1, *[1] * (x0.ndim - 1))\n"
     "return ab.sqrt() * x0 + (1 - ab).sqrt() * noise", ["only approximately right"]),
    ("ab = torch.cumprod(1 - betas, 0)[t]\n"
     "return ab.sqrt() * x0 + (1 - ab).sqrt() * noise",
     ["raised RuntimeError", "at `return ab.sqrt() * x0 + (1 - ab).sqrt() * noise`", "did not broadcast"]),
    ("ab = torch.cumprod(1 - betas, 0)[t][:, None, None, None]\n"
     "return ab.sqrt() * x0 + (1 - ab).sqrt() * noise",
     ["x_t has shape (4, 1, 4, 2); it should have the shape of `x0`, (4, 2)", "for t = 0 and t = T-1"]),
    ("ab = torch.cumprod(1 - betas, 0)[t].view(-1, *[1] * (x0.ndim - 1))\n"
     "ab.sqrt() * x0 + (1 - ab).sqrt() * noise", ["returned None", "forget the `return`"]),
    ("ab = torch.cumprod(1 - betas, 0)[t].view(-1, *[1] * (x0.ndim - 1))\n"
     "return ab.sqrt() * x0 + (1 - ab).sqrt() * torch.randn_like(x0)", ["different results", "same inputs"]),
    ("ab = torch.cumprod(1 - betas, 0)[t].view(-1, *[1] * (x0.ndim - 1))\n"
     "x0 *= ab.sqrt()\nreturn x0 + (1 - ab).sqrt() * noise", ["changed its input `x0` in place"]),
    # wrong kinds
    ("ab = np.cumprod(1 - betas.numpy())[t.numpy()].reshape(-1, *[1] * (x0.ndim - 1))\n"
     "return np.sqrt(ab) * x0.numpy() + np.sqrt(1 - ab) * noise.numpy()",
     ["returned a numpy array of shape (5, 1, 4, 3); return a torch tensor", "call .numpy()"]),
    ("ab = torch.cumprod(1 - betas, 0)[t].view(-1, *[1] * (x0.ndim - 1))\n"
     "return (ab.sqrt() * x0 + (1 - ab).sqrt() * noise).float()",
     ["returned float32 for a float64 `x0`", "keep the precision of `x0`", "float64 tensors"]),
    ("ab = torch.cumprod(1 - betas, 0)[t].view(-1, *[1] * (x0.ndim - 1))\n"
     "return (ab.sqrt() * x0 + (1 - ab).sqrt() * noise).tolist()",
     ["returned a list of 5 items; return a torch tensor"]),
    ("ab = torch.cumprod(1 - betas, 0)[t].view(-1, *[1] * (x0.ndim - 1))\n"
     "return (ab.sqrt() * x0 + (1 - ab).sqrt() * noise).half()", ["half precision numbers (float16)"]),
    ("ab = torch.cumprod(1 - betas, 0)[t].view(-1, *[1] * (x0.ndim - 1))\n"
     "return (ab.sqrt() * x0 + (1 - ab).sqrt() * noise).long()", ["returned integers (int64)"]),
])
def test_q_sample_rejects_realistic_mistakes(code, fragments):
    assert_rejected("q_sample", learner(code, "x0, t, noise, betas"), *fragments)


def test_q_sample_wrong_for_one_example_only_names_it():
    def wrong_at_zero(x0, t, noise, betas):
        out = exercises.reference_q_sample(x0, t, noise, betas).clone()
        out[t == 0] = x0[t == 0]  # "no noise at t = 0": a hand-made special case
        return out

    assert_rejected("q_sample", wrong_at_zero, "is wrong only for examples 0 (t = 0), 1 (t = 0) of the batch",
                    "the others are right")


# ---------------------------------------------------------------------- 03 normal_kl
def kl_right(mean1, logvar1, mean2, logvar2):
    """The textbook form with standard deviations."""
    s1, s2 = torch.exp(0.5 * logvar1), torch.exp(0.5 * logvar2)
    return torch.log(s2 / s1) + (s1 ** 2 + (mean1 - mean2) ** 2) / (2 * s2 ** 2) - 0.5


def kl_distributions(mean1, logvar1, mean2, logvar2):
    """torch.distributions, elementwise."""
    p = torch.distributions.Normal(mean1, torch.exp(0.5 * logvar1))
    q = torch.distributions.Normal(mean2, torch.exp(0.5 * logvar2))
    return torch.distributions.kl_divergence(p, q)


@pytest.mark.parametrize("fn", [kl_right, kl_distributions, exercises.reference_normal_kl])
def test_normal_kl_accepts_correct_variants(fn):
    assert check_normal_kl(fn) is fn


@pytest.mark.parametrize("fn, fragments", [
    (lambda m1, lv1, m2, lv2: 0.5 * (-1 + torch.log(lv2 / lv1) + lv1 / lv2 + (m1 - m2) ** 2 / lv2),
     ["NaN or inf", "log of a log-variance"]),
    (lambda m1, lv1, m2, lv2: -1 + lv2 - lv1 + torch.exp(lv1 - lv2) + (m1 - m2) ** 2 * torch.exp(-lv2),
     ["2 times too large"]),
    (lambda m1, lv1, m2, lv2: 0.5 * (-1 + lv1 - lv2 + torch.exp(lv2 - lv1) + (m1 - m2) ** 2 * torch.exp(-lv1)),
     ["the other way round"]),
    (lambda m1, lv1, m2, lv2: 0.5 * (-1 + lv2 - lv1 + torch.exp(lv1 - lv2) + (m1 - m2) ** 2 * torch.exp(lv2)),
     ["multiplied by the second variance"]),
    (lambda m1, lv1, m2, lv2: (0.5 * (-1 + lv2 - lv1 + torch.exp(lv1 - lv2)
                                      + (m1 - m2) ** 2 * torch.exp(-lv2))).sum(),
     ["the sum over every element"]),
    (lambda m1, lv1, m2, lv2: (0.5 * (lv2 - lv1 + torch.exp(lv1 - lv2) + (m1 - m2) ** 2 * torch.exp(-lv2))),
     ["two identical Gaussians is not 0"]),
    (lambda m1, lv1, m2, lv2: torch.log(torch.exp(lv2) / torch.exp(lv1))
     + (torch.exp(lv1) ** 2 + (m1 - m2) ** 2) / (2 * torch.exp(lv2) ** 2) - 0.5,
     ["squared once too often"]),
    # wrong kinds: float64 out of float32 inputs (the next cell compares with float32), numpy
    (lambda m1, lv1, m2, lv2: exercises.reference_normal_kl(m1, lv1, m2, lv2).double(),
     ["returned float64 for a float32 `mean1`", "float32 tensors"]),
    (lambda m1, lv1, m2, lv2: exercises.reference_normal_kl(m1, lv1, m2, lv2).numpy(),
     ["returned a numpy array of shape (6, 5); return a torch tensor"]),
])
def test_normal_kl_rejects_realistic_mistakes(fn, fragments):
    assert_rejected("normal_kl", fn, *fragments)


# ---------------------------------------------------------------------- 03 decoder_nll_bits
def dec_erf(x0, mean, log_scale):
    """The exact CDF through erf, log2."""
    s = log_scale.exp()

    def cdf(z):
        return 0.5 * (1 + torch.erf(z / math.sqrt(2)))

    up, lo = cdf((x0 - mean + 1 / 255) / s), cdf((x0 - mean - 1 / 255) / s)
    p = torch.where(x0 <= -1, up, torch.where(x0 >= 1, 1 - lo, up - lo))
    return -torch.log2(p.clamp(min=1e-12)).flatten(1).mean(1)


def dec_distributions_float64(x0, mean, log_scale):
    """torch.distributions.Normal, computed in float64, returned in float64."""
    normal = torch.distributions.Normal(mean.double(), log_scale.double().exp())
    x = x0.double()
    up, lo = normal.cdf(x + 1 / 255), normal.cdf(x - 1 / 255)
    p = torch.where(x < -0.999, up, torch.where(x > 0.999, 1 - lo, up - lo))
    return -mean_flat(torch.log(p.clamp(min=1e-12))) / math.log(2)


def dec_package(x0, mean, log_scale):
    """The package's own function, in nats, converted."""
    return -mean_flat(discretized_gaussian_log_likelihood(x0, means=mean, log_scales=log_scale)) / math.log(2)


@pytest.mark.parametrize("fn", [dec_erf, dec_distributions_float64, dec_package])
def test_decoder_accepts_correct_variants(fn, capsys):
    assert check_decoder_nll_bits(fn) is fn


D_PRE = ("s = log_scale.exp()\nup = torch.special.ndtr((x0 - mean + 1 / 255) / s)\n"
         "lo = torch.special.ndtr((x0 - mean - 1 / 255) / s)\n"
         "p = torch.where(x0 < -0.999, up, torch.where(x0 > 0.999, 1 - lo, up - lo))\n")


@pytest.mark.parametrize("code, fragments", [
    (D_PRE + "return -mean_flat(torch.log(p))", ["0.693 times the right value", "nats, not bits"]),
    (D_PRE + "return -torch.log2(p).flatten(1).sum(1)", ["total over the dimensions"]),
    (D_PRE + "return mean_flat(torch.log2(p))", ["is negative", "not a negative log-likelihood"]),
    (D_PRE.replace("torch.where(x0 < -0.999, up, torch.where(x0 > 0.999, 1 - lo, up - lo))", "up - lo")
     + "return -mean_flat(torch.log2(p))", ["wrong for the pixels at -1 and +1 only"]),
    (D_PRE.replace("1 / 255", "2 / 255") + "return -mean_flat(torch.log2(p))", ["twice too wide"]),
    (D_PRE.replace("s = log_scale.exp()", "s = (0.5 * log_scale).exp()") + "return -mean_flat(torch.log2(p))",
     ["log of a variance"]),
    ("normal = torch.distributions.Normal(mean, log_scale.exp())\n"
     "return -mean_flat(normal.log_prob(x0)) / math.log(2)", ["density at x0, not the probability of x0's bin"]),
    # wrong kinds: one number for the batch, numpy
    (D_PRE + "return -torch.log2(p).mean()", ["is one number; it should have one value per example"]),
    (D_PRE + "return (-mean_flat(torch.log2(p))).numpy()", ["returned a numpy array of shape (4,)"]),
])
def test_decoder_rejects_realistic_mistakes(code, fragments):
    assert_rejected("decoder_nll_bits", learner(code, "x0, mean, log_scale"), *fragments)


def test_decoder_reference_is_the_package_decoder():
    """At t = 0 the package's term of the bound is this decoder (in bits/dim)."""
    d = GaussianDiffusion(cosine_betas(50), var_type="fixed_small")
    x0 = torch.randint(0, 256, (3, 1, 4, 4), generator=torch.Generator().manual_seed(0)).float() / 127.5 - 1
    t = torch.zeros(3, dtype=torch.long)
    x_t = d.q_sample(x0, t, torch.randn(x0.shape, generator=torch.Generator().manual_seed(1)))

    def model(x, t):
        return 0.1 * x

    out = d.p_mean_variance(model, x_t, t, clip_denoised=False)
    ours = exercises.reference_decoder_nll_bits(x0, out["mean"], 0.5 * out["log_variance"])
    assert torch.allclose(ours, d._vb_terms_bpd(model, x0, x_t, t, clip_denoised=False)["output"])


# ---------------------------------------------------------------------- 03 simple loss
def loss_right(model, diffusion, x0, t, noise):
    x_t = diffusion.q_sample(x0, t, noise=noise)
    return F.mse_loss(model(x_t, t), noise, reduction="none").mean(dim=list(range(1, x0.ndim)))


def loss_flatten(model, diffusion, x0, t, noise):
    return (model(diffusion.q_sample(x0, t, noise), t) - noise).pow(2).flatten(1).mean(1)


@pytest.mark.parametrize("fn", [loss_right, loss_flatten])
def test_simple_loss_accepts_correct_variants(fn):
    assert check_simple_loss(fn) is fn


def test_simple_loss_matches_training_losses():
    d = GaussianDiffusion(np.linspace(1e-4, 0.02, 50))
    model = exercises._ToyEpsModel()
    x0, t, noise = torch.randn(3, 1, 4, 4), torch.tensor([0, 20, 49]), torch.randn(3, 1, 4, 4)
    assert torch.allclose(loss_right(model, d, x0, t, noise), d.training_losses(model, x0, t, noise)["loss"])


@pytest.mark.parametrize("fn, fragments", [
    (lambda model, d, x0, t, noise: ((noise - model(d.q_sample(x0, t, noise), t)) ** 2).sum(dim=(1, 2, 3)),
     ["a sum over the dimensions"]),
    (lambda model, d, x0, t, noise: F.mse_loss(model(d.q_sample(x0, t, noise), t), noise),
     ["is one number: the loss is averaged over the batch too"]),
    (lambda model, d, x0, t, noise: mean_flat((x0 - model(d.q_sample(x0, t, noise), t)) ** 2),
     ["compares the model's prediction with x0"]),
    (lambda model, d, x0, t, noise: mean_flat((noise - model(x0, t)) ** 2), ["the model is given the clean x0"]),
    (lambda model, d, x0, t, noise: mean_flat((noise - model(d.q_sample(x0, t), t)) ** 2),
     ["different results", "same inputs"]),
    (lambda model, d, x0, t, noise: mean_flat((noise - model(d.q_sample(x0, t, noise), t)).abs()),
     ["absolute value"]),
    # wrong kinds: numpy, float64 for float32 inputs, a list
    (lambda model, d, x0, t, noise: loss_right(model, d, x0, t, noise).numpy(),
     ["returned a numpy array of shape (4,); return a torch tensor"]),
    (lambda model, d, x0, t, noise: loss_right(model, d, x0, t, noise).double(),
     ["returned float64 for a float32 `x0`"]),
    (lambda model, d, x0, t, noise: loss_right(model, d, x0, t, noise).tolist(), ["returned a list of 4 items"]),
])
def test_simple_loss_rejects_realistic_mistakes(fn, fragments):
    assert_rejected("simple_loss", fn, *fragments)


# ---------------------------------------------------------------------- 05 cosine betas
def cos_right_torch64(num_timesteps, s=0.008, max_beta=0.999):
    """float64 torch, as a learner might write it."""
    t = torch.arange(num_timesteps + 1, dtype=torch.float64) / num_timesteps
    f = torch.cos((t + s) / (1 + s) * math.pi / 2) ** 2
    return (1 - f[1:] / f[:-1]).clamp(max=max_beta)


def cos_right_loop(num_timesteps, s=0.008, max_beta=0.999):
    def alpha_bar(tau):
        return math.cos((tau + s) / (1 + s) * math.pi / 2) ** 2 / math.cos(s / (1 + s) * math.pi / 2) ** 2
    return np.array([min(1 - alpha_bar((i + 1) / num_timesteps) / alpha_bar(i / num_timesteps), max_beta)
                     for i in range(num_timesteps)])


@pytest.mark.parametrize("fn", [cos_right_torch64, cos_right_loop])
def test_cosine_betas_accepts_correct_variants(fn):
    assert check_cosine_betas(fn) is fn


def _f(tau, s=0.008):
    return np.cos((tau + s) / (1 + s) * np.pi / 2) ** 2


def cos_float32(T, s=0.008, max_beta=0.999):
    t = torch.arange(T + 1, dtype=torch.float32) / T
    f = torch.cos((t + s) / (1 + s) * math.pi / 2) ** 2
    return (1 - f[1:] / f[:-1]).clamp(max=max_beta)


@pytest.mark.parametrize("fn, fragments", [
    (lambda T, s=0.008, max_beta=0.999: 1 - _f(np.arange(1, T + 1) / T, s) / _f(np.arange(T) / T, s),
     ["the last beta is 1"]),
    (lambda T, s=0.008, max_beta=0.999: np.minimum(1 - _f(np.arange(1, T + 1) / T, 0) / _f(np.arange(T) / T, 0),
                                                   max_beta),
     ["first betas are far too small"]),
    (lambda T, s=0.008, max_beta=0.999: np.minimum(1 - _f(np.arange(T) / T, s) / _f((np.arange(T) - 1) / T, s),
                                                   max_beta),
     ["off by one step", "the step before"]),
    (lambda T, s=0.008, max_beta=0.999: np.minimum(1 - _f(np.arange(1, T + 1) / T, s) / _f(0, s), max_beta),
     ["total noise from the start"]),
    (lambda T, s=0.008, max_beta=0.999: np.minimum(1 - _f(np.arange(T + 1) / T, s) / _f(np.arange(T + 1) / T, s)
                                                   + 1 - _f(np.arange(T + 1) / T, s) / _f(0, s), max_beta),
     ["the betas have shape (1001,); it should have shape (1000,): one beta per step"]),
    (lambda T, s=0.008, max_beta=0.999: np.clip(1 - _f(np.arange(1, T + 1) / T, s) / _f(np.arange(T) / T, s),
                                                0, 0.999),
     ["ignores the max_beta argument", "s = 0.02 and max_beta = 0.9"]),
    # wrong kinds: float32 (the smallest betas lose their digits), a list (the next cell compares with 0.999)
    (cos_float32, ["returned float32; return float64", "smallest betas lose their digits"]),
    (lambda T, s=0.008, max_beta=0.999: cos_right_loop(T, s, max_beta).tolist(),
     ["returned a list of 1000 items; return a numpy array or a torch tensor", "compares them with 0.999"]),
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
