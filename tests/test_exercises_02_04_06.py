"""The checkers of notebooks 02, 04 and 06: correct learner variants accepted, realistic mistakes rejected with the
right hint, references equal to the package. (The generic checks of every registered exercise, such as "each known
mistake is diagnosed with its own hint", run in test_exercises.py.)"""
import numpy as np
import pytest
import torch

from ddpm_lite import GaussianDiffusion, LossSecondMomentResampler, get_betas
from ddpm_lite.course import checking, exercises
from ddpm_lite.course.exercises import (
    EXERCISES,
    ExerciseError,
    check_importance_sampler_weights,
    check_learned_range_log_variance,
    check_p_sample,
    check_q_posterior,
)
from ddpm_lite.schedules import cosine_betas


@pytest.fixture(autouse=True)
def friendly(monkeypatch):
    monkeypatch.setenv("DDPM_LITE_STRICT", "0")


def assert_rejected(name, fn, *fragments):
    v = EXERCISES[name].diagnose(checking._pair(fn, name, "(a, b)") if name in PAIRS else fn)
    assert v.status == "wrong", v.message
    assert v.message.startswith(f"❌ {name}") and "\n" not in v.message
    for fragment in fragments:
        assert fragment in v.message, f"{fragment!r} not in {v.message!r}"
    return v.message


PAIRS = {"q_posterior", "importance_sampler_weights"}


def learner(code, args):
    """A learner's cell: ``def f(args): <code>``."""
    namespace = {"torch": torch, "np": np}
    body = "\n".join("    " + line for line in code.splitlines())
    exec(f"def f({args}):\n{body}\n", namespace)  # noqa: S102
    return namespace["f"]


# ---------------------------------------------------------------------- q_posterior (notebook 02)
Q_ARGS = "x0, x_t, t, betas"
Q_PRE = ("alphas = 1 - betas\nab = torch.cumprod(alphas, 0)\n"
         "abp = torch.cat([torch.ones(1, dtype=betas.dtype), ab[:-1]])\ns = (-1, *[1] * (x0.ndim - 1))\n")
Q_MEAN = ("m = (betas * abp.sqrt() / (1 - ab))[t].view(s) * x0 "
          "+ (alphas.sqrt() * (1 - abp) / (1 - ab))[t].view(s) * x_t\n")
Q_RETURN = "return m, ((1 - abp) / (1 - ab) * betas)[t]"


def q_right_loop(x0, x_t, t, betas):
    """A loop over the batch, the variance as (B,): accepted."""
    means, variances = [], []
    for i in range(len(t)):
        s = int(t[i])
        ab = torch.prod(1 - betas[: s + 1])
        abp = torch.prod(1 - betas[:s]) if s > 0 else torch.tensor(1.0, dtype=betas.dtype)
        means.append(betas[s] * abp.sqrt() / (1 - ab) * x0[i] + (1 - betas[s]).sqrt() * (1 - abp) / (1 - ab) * x_t[i])
        variances.append((1 - abp) / (1 - ab) * betas[s])
    return torch.stack(means), torch.stack(variances)


def q_right_full_shape(x0, x_t, t, betas):
    """The variance broadcast to the shape of x0: accepted too."""
    mean, var = exercises.reference_q_posterior(x0, x_t, t, betas)
    return mean, var.expand_as(mean).clone()


@pytest.mark.parametrize("fn", [q_right_loop, q_right_full_shape, exercises.reference_q_posterior])
def test_q_posterior_accepts_correct_variants(fn, capsys):
    assert check_q_posterior(fn) is fn
    assert capsys.readouterr().out.startswith("✅ q_posterior: correct")


@pytest.mark.parametrize("code, fragments", [
    (Q_PRE.replace("torch.cat([torch.ones(1, dtype=betas.dtype), ab[:-1]])", "ab[t - 1]; abp = torch.roll(ab, 1)")
     + Q_MEAN + Q_RETURN, ["wraps around at t = 0", "torch.cat([torch.ones(1)"]),
    (Q_PRE + Q_MEAN.replace("(betas * abp.sqrt()", "(betas * ab.sqrt()") + Q_RETURN,
     ["alpha_bar_t in place of alpha_bar_{t-1}", "x0 coefficient"]),
    (Q_PRE + Q_MEAN.replace("(alphas.sqrt() *", "(alphas *") + Q_RETURN, ["without its square root"]),
    (Q_PRE + Q_MEAN + "return m, betas[t]", ["the variance is beta_t", "beta-tilde_t"]),
    (Q_PRE + Q_MEAN.replace("* x0 +", "* x_t +").replace("* x_t\n", "* x0\n") + Q_RETURN, ["swapped"]),
    (Q_PRE + Q_MEAN + Q_RETURN + ".sqrt()", ["a standard deviation, not a variance"]),
    (Q_PRE + Q_MEAN + "return m", ["must return a pair", "return mean, variance"]),
    (Q_PRE + "m = (betas * abp.sqrt() / (1 - ab))[t] * x0\nreturn m, betas[t]",
     ["raised RuntimeError", "reshape them"]),
    (Q_PRE + Q_MEAN + "x_t += 1\n" + Q_RETURN, ["changed its input `x_t` in place"]),
])
def test_q_posterior_rejects_realistic_mistakes(code, fragments):
    assert_rejected("q_posterior", learner(code, Q_ARGS), *fragments)


def test_q_posterior_wrong_answer_falls_back_to_the_unpacked_reference(capsys):
    wrong = learner(Q_PRE + "return x0, betas[t]", Q_ARGS)
    assert check_q_posterior(wrong) is exercises.reference_q_posterior
    assert "(using the reference so the notebook goes on)" in capsys.readouterr().out

    def todo(x0, x_t, t, betas):
        raise NotImplementedError("hint: ...")

    assert check_q_posterior(todo) is exercises.reference_q_posterior
    assert "⏳ q_posterior: not implemented yet" in capsys.readouterr().out


def test_q_posterior_strict_mode(monkeypatch):
    monkeypatch.setenv("DDPM_LITE_STRICT", "1")

    def wrong(x0, x_t, t, betas):
        return exercises.reference_q_posterior(x0, x_t, t, betas)[0], betas[t]

    with pytest.raises(ExerciseError, match="the variance is beta_t"):
        check_q_posterior(wrong)
    assert check_q_posterior(q_right_loop) is q_right_loop


def test_q_posterior_reference_is_the_package():
    d = GaussianDiffusion(get_betas("linear", 100))
    g = torch.Generator().manual_seed(0)
    x0, x_t = torch.randn(4, 1, 3, 3, generator=g), torch.randn(4, 1, 3, 3, generator=g)
    t = torch.tensor([0, 1, 50, 99])
    mean, var = exercises.reference_q_posterior(x0, x_t, t, torch.from_numpy(d.betas))
    pkg_mean, pkg_var, _ = d.q_posterior_mean_variance(x0, x_t, t)
    assert torch.allclose(mean.float(), pkg_mean, atol=1e-6) and torch.allclose(var.float(), pkg_var)


# ---------------------------------------------------------------------- p_sample (notebook 02)
P_ARGS = "model, x_t, t, noise, betas"
P_PRE = ("alphas = 1 - betas\nab = torch.cumprod(alphas, 0)\n"
         "abp = torch.cat([torch.ones(1, dtype=betas.dtype), ab[:-1]])\ns = (-1, *[1] * (x_t.ndim - 1))\n"
         "eps = model(x_t, t)\n")
P_MEAN = "mean = (x_t - (betas / (1 - ab).sqrt())[t].view(s) * eps) / alphas[t].sqrt().view(s)\n"
P_SIGMA = "sigma = ((1 - abp) / (1 - ab) * betas)[t].sqrt().view(s)\n"


def p_right_where(model, x_t, t, noise, betas):
    """torch.where for the last step, float32 schedule arithmetic: accepted."""
    b = betas.float()
    ab = torch.cumprod(1 - b, 0)
    abp = torch.cat([torch.ones(1), ab[:-1]])
    s = (-1, *[1] * (x_t.ndim - 1))
    mean = (x_t - (b[t] / (1 - ab[t]).sqrt()).view(s) * model(x_t, t)) / (1 - b[t]).sqrt().view(s)
    sigma = ((1 - abp[t]) / (1 - ab[t]) * b[t]).sqrt().view(s)
    return torch.where((t == 0).view(s), mean, mean + sigma * noise)


def p_right_via_posterior(model, x_t, t, noise, betas):
    """Through the predicted x0 and the posterior of exercise 1: accepted."""
    ab = torch.cumprod(1 - betas, 0)[t].view(-1, *[1] * (x_t.ndim - 1))
    x0 = (x_t - (1 - ab).sqrt() * model(x_t, t)) / ab.sqrt()
    mean, var = exercises.reference_q_posterior(x0, x_t, t, betas)
    return mean + var.sqrt() * noise


@pytest.mark.parametrize("fn", [p_right_where, p_right_via_posterior])
def test_p_sample_accepts_correct_variants(fn):
    assert check_p_sample(fn) is fn


@pytest.mark.parametrize("code, fragments", [
    (P_PRE + P_MEAN + "return mean", ["no noise added", "sigma_t z"]),
    (P_PRE + P_MEAN + P_SIGMA + "return mean + sigma ** 2 * noise * (t != 0).view(s)", ["scaled by the variance"]),
    (P_PRE + P_MEAN + "return mean + betas[t].sqrt().view(s) * noise * (t != 0).view(s)",
     ["sigma_t^2 = beta_t", "beta-tilde_t"]),
    (P_PRE + "mean = x_t - (betas / (1 - ab).sqrt())[t].view(s) * eps\n" + P_SIGMA
     + "return mean + sigma * noise * (t != 0).view(s)", ["division by sqrt(alpha_t) is missing"]),
    (P_PRE + "mean = (x_t - (betas / (1 - ab))[t].view(s) * eps) / alphas[t].sqrt().view(s)\n" + P_SIGMA
     + "return mean + sigma * noise * (t != 0).view(s)", ["beta_t / (1 - alpha_bar_t)", "missing square root"]),
    (P_PRE + "mean = (x_t - (betas / (1 - ab).sqrt())[t].view(s) * eps) / ab[t].sqrt().view(s)\n" + P_SIGMA
     + "return mean + sigma * noise * (t != 0).view(s)", ["sqrt(alpha_bar_t) instead of sqrt(alpha_t)"]),
    (P_PRE.replace("torch.cat([torch.ones(1, dtype=betas.dtype), ab[:-1]])", "torch.roll(ab, 1)") + P_MEAN + P_SIGMA
     + "return mean + sigma * noise", ["wraps around at t = 0", "(t != 0)"]),
    (P_PRE + "mean = (x_t + (betas / (1 - ab).sqrt())[t].view(s) * eps) / alphas[t].sqrt().view(s)\n" + P_SIGMA
     + "return mean + sigma * noise * (t != 0).view(s)", ["the predicted noise is added"]),
    (P_PRE + P_MEAN + P_SIGMA + "return mean + sigma * torch.randn_like(x_t) * (t != 0).view(s)",
     ["different results", "noise passed in"]),
])
def test_p_sample_rejects_realistic_mistakes(code, fragments):
    assert_rejected("p_sample", learner(code, P_ARGS), *fragments)


def test_p_sample_reference_is_the_package_sampler():
    """With the same z, the reference step equals GaussianDiffusion.p_sample (eps model, fixed_small)."""
    d = GaussianDiffusion(get_betas("linear", 1000))
    model = exercises._ToyEpsModel()
    x_t, t = torch.randn(6, 2, generator=torch.Generator().manual_seed(0)), torch.tensor([0, 1, 10, 300, 700, 999])
    out = d.p_sample(model, x_t, t, clip_denoised=False, generator=torch.Generator().manual_seed(5))
    z = torch.randn(x_t.shape, generator=torch.Generator().manual_seed(5))
    ours = exercises.reference_p_sample(model, x_t, t, z, torch.from_numpy(d.betas))
    assert torch.allclose(ours.float(), out["sample"], atol=1e-4)


# ---------------------------------------------------------------------- learned_range_log_variance (notebook 04)
L_ARGS = "v, t, betas"
L_PRE = ("ab = torch.cumprod(1 - betas, 0)\nabp = torch.cat([torch.ones(1, dtype=betas.dtype), ab[:-1]])\n"
         "bt = (1 - abp) / (1 - ab) * betas\ns = (-1, *[1] * (v.ndim - 1))\n")
L_CLIP = "bt = torch.cat([bt[1:2], bt[1:]])\n"


def l_right_where(v, t, betas):
    """Clipping with torch.where on t: accepted."""
    d = GaussianDiffusion(betas.numpy())
    bt = torch.from_numpy(d.posterior_variance)
    log_bt = torch.where(t == 0, bt[1].log(), bt[t].log()).view(-1, *[1] * (v.ndim - 1))
    log_b = betas.log()[t].view(-1, *[1] * (v.ndim - 1))
    return log_bt + v * (log_b - log_bt)


def test_learned_range_accepts_a_correct_variant():
    assert check_learned_range_log_variance(l_right_where) is l_right_where


@pytest.mark.parametrize("code, fragments", [
    (L_PRE + "return v * betas.log()[t].view(s) + (1 - v) * bt.log()[t].view(s)", ["-inf", "beta-tilde_1"]),
    (L_PRE + L_CLIP + "return (1 - v) * betas.log()[t].view(s) + v * bt.log()[t].view(s)", ["swapped"]),
    (L_PRE + L_CLIP + "return torch.log(v * betas[t].view(s) + (1 - v) * bt[t].view(s))", ["not their logs"]),
    (L_PRE + L_CLIP + "return torch.exp(v * betas.log()[t].view(s) + (1 - v) * bt.log()[t].view(s))",
     ["returned Sigma instead of log Sigma"]),
    (L_PRE + L_CLIP + "w = (v + 1) / 2\nreturn w * betas.log()[t].view(s) + (1 - w) * bt.log()[t].view(s)",
     ["mapped from [-1, 1]", "already the weight"]),
    (L_PRE + L_CLIP + "return v * betas.log()[t] + (1 - v) * bt.log()[t]", ["raised RuntimeError", "reshape it"]),
    (L_PRE + "return 0.5 * (v * betas.log()[t].view(s) + (1 - v) * bt.log()[t].view(s))",
     ["NaN or inf", "beta-tilde_1 at t = 0"]),
])
def test_learned_range_rejects_realistic_mistakes(code, fragments):
    assert_rejected("learned_range_log_variance", learner(code, L_ARGS), *fragments)


def test_learned_range_reference_is_the_package():
    d = GaussianDiffusion(cosine_betas(1000), var_type="learned_range")
    v = torch.rand(5, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([0, 1, 2, 500, 999])
    _, log_var = d._model_variance(2 * v - 1, v, t)
    ours = exercises.reference_learned_range_log_variance(v, t, torch.from_numpy(d.betas))
    assert torch.allclose(ours.float(), log_var, atol=1e-5)


# ---------------------------------------------------------------------- importance_sampler_weights (notebook 06)
I_ARGS = "loss_history, uniform_prob=0.001"


def i_right_numpy(loss_history, uniform_prob=0.001):
    """numpy, returning a list: accepted."""
    h = np.asarray(loss_history)
    p = np.sqrt(np.mean(h ** 2, axis=-1))
    p = p / p.sum() * (1 - uniform_prob) + uniform_prob / len(p)
    return [p, 1 / (len(p) * p)]


def test_importance_accepts_a_correct_variant():
    assert check_importance_sampler_weights(i_right_numpy) is i_right_numpy


@pytest.mark.parametrize("code, fragments", [
    ("m = (loss_history ** 2).mean(1)\np = m / m.sum()\np = (1 - uniform_prob) * p + uniform_prob / len(p)\n"
     "return p, 1 / (len(p) * p)", ["without the square root", "root mean square"]),
    ("m = loss_history.mean(1)\np = m / m.sum()\np = (1 - uniform_prob) * p + uniform_prob / len(p)\n"
     "return p, 1 / (len(p) * p)", ["the mean loss", "sqrt(mean of L_t^2)"]),
    ("p = (loss_history ** 2).mean(1).sqrt()\np = p / p.sum()\nreturn p, 1 / (len(p) * p)",
     ["uniform mixture is missing", "uniform_prob / T"]),
    ("p = (loss_history ** 2).mean(1).sqrt()\np = p / p.sum()\np = (1 - uniform_prob) * p + uniform_prob / len(p)\n"
     "return p, 1 / p", ["weights = 1 / p_t", "1 / (T p_t)"]),
    ("p = (loss_history ** 2).mean(1).sqrt()\np = p / p.sum()\np = (1 - uniform_prob) * p + uniform_prob / len(p)\n"
     "return p, len(p) * p", ["upside down"]),
    ("p = (loss_history ** 2).mean(0).sqrt()\np = p / p.sum()\np = (1 - uniform_prob) * p + uniform_prob / len(p)\n"
     "return p, 1 / (len(p) * p)", ["averaged over t instead of over the history"]),
    ("p = (loss_history ** 2).mean(1).sqrt()\np = p / p.sum()\np = (1 - 0.001) * p + 0.001 / len(p)\n"
     "return p, 1 / (len(p) * p)", ["uniform_prob is ignored", "not the constant 0.001"]),
    ("p = (loss_history ** 2).mean(1).sqrt()\nreturn p / p.sum()", ["must return a pair", "return p, weights"]),
])
def test_importance_rejects_realistic_mistakes(code, fragments):
    assert_rejected("importance_sampler_weights", learner(code, I_ARGS), *fragments)


def test_importance_reference_is_the_package_sampler():
    sampler = LossSecondMomentResampler(50, history_per_term=4, uniform_prob=0.01)
    g = torch.Generator().manual_seed(0)
    for _ in range(100):
        t = torch.randint(0, 50, (16,), generator=g)
        sampler.update_with_local_losses(t, torch.rand(16, generator=g) * (t + 1).float())
    assert sampler.warmed_up()
    p, w = exercises.reference_importance_sampler_weights(torch.from_numpy(sampler.loss_history), 0.01)
    assert np.allclose(p.numpy(), sampler.weights()) and np.allclose(w.numpy(), 1 / (50 * sampler.weights()))
    # the weights keep the loss unbiased: E_{t ~ p}[w_t L_t] = mean_t L_t
    losses = torch.rand(50, generator=g, dtype=torch.float64)
    assert torch.allclose((p * w * losses).sum(), losses.mean())
