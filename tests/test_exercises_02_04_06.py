"""The checkers of notebooks 02 (q_posterior, train_step, p_sample), 04 (learned_range_log_variance, hybrid_loss)
and 06 (importance_sampler_weights): correct learner variants written differently are accepted, realistic mistakes
(wrong kinds of result included) are rejected with the right diagnosis, the references equal the package. (The
generic checks of every registered exercise run in test_exercises.py.)"""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from exercise_helpers import assert_accepted, assert_rejected, learner

from ddpm_lite import GaussianDiffusion, LossSecondMomentResampler, get_betas
from ddpm_lite.course import exercises
from ddpm_lite.course.exercises import (
    ExerciseError,
    check_hybrid_loss,
    check_importance_sampler_weights,
    check_learned_range_log_variance,
    check_p_sample,
    check_q_posterior,
    check_train_step,
)
from ddpm_lite.losses import mean_flat
from ddpm_lite.schedules import cosine_betas


@pytest.fixture(autouse=True)
def friendly(monkeypatch):
    monkeypatch.setenv("DDPM_LITE_STRICT", "0")


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
    """The variance broadcast to the shape of x0, as a list: accepted too."""
    mean, var = exercises.reference_q_posterior(x0, x_t, t, betas)
    return [mean, var.expand_as(mean).clone()]


def q_right_addcmul(x0, x_t, t, betas):
    """torch.addcmul, the variance (B,) in float64 from float32 inputs: accepted."""
    b = betas.double()
    ab = torch.cumprod(1 - b, 0)
    abp = torch.cat([torch.ones(1, dtype=b.dtype), ab[:-1]])
    s = (-1, *[1] * (x0.ndim - 1))
    c0 = (b * abp.sqrt() / (1 - ab))[t].view(s)
    ct = ((1 - b).sqrt() * (1 - abp) / (1 - ab))[t].view(s)
    return torch.addcmul(ct * x_t, c0, x0), ((1 - abp) / (1 - ab) * b)[t]


@pytest.mark.parametrize("fn", [q_right_loop, q_right_full_shape, q_right_addcmul, exercises.reference_q_posterior])
def test_q_posterior_accepts_correct_variants(fn, capsys):
    assert check_q_posterior(fn) is fn
    assert capsys.readouterr().out.startswith("✅ q_posterior: correct")


@pytest.mark.parametrize("code, fragments", [
    (Q_PRE.replace("torch.cat([torch.ones(1, dtype=betas.dtype), ab[:-1]])", "torch.roll(ab, 1)")
     + Q_MEAN + Q_RETURN, ["looks back at the end of the chain"]),
    (Q_PRE + Q_MEAN.replace("(betas * abp.sqrt()", "(betas * ab.sqrt()") + Q_RETURN,
     ["coefficient of x0 uses the noise level of step t", "off by one step"]),
    (Q_PRE + Q_MEAN.replace("(alphas.sqrt() *", "(alphas *") + Q_RETURN, ["coefficient of x_t is too small"]),
    (Q_PRE + Q_MEAN + "return m, betas[t]", ["the variance is the forward step's"]),
    (Q_PRE + Q_MEAN.replace("* x0 +", "* x_t +").replace("* x_t\n", "* x0\n") + Q_RETURN, ["swapped"]),
    (Q_PRE + Q_MEAN + Q_RETURN + ".sqrt()", ["a standard deviation"]),
    (Q_PRE + "m = (betas * abp.sqrt() / (1 - ab))[t] * x0\nreturn m, betas[t]",
     ["raised RuntimeError", "did not broadcast"]),
    (Q_PRE + Q_MEAN + "x_t += 1\n" + Q_RETURN, ["changed its input `x_t` in place"]),
    # float32 arithmetic on the schedule: the coefficients of the first steps lose their digits
    (Q_PRE.replace("alphas = 1 - betas", "betas = betas.float()\nalphas = 1 - betas").replace("betas.dtype",
                                                                                             "torch.float32")
     + Q_MEAN + Q_RETURN, ["the mean is close but not within tolerance", "a precision problem",
                           "only for example 0 (t = 0)"]),
    # the variance right, the mean wrong in an unknown way: which element of the pair
    (Q_PRE + Q_MEAN + "return m + 0.01 * x0 ** 3, ((1 - abp) / (1 - ab) * betas)[t]",
     ["the variance is right, but the mean has wrong values"]),
    (Q_PRE + Q_MEAN + "return m, 2 * ((1 - abp) / (1 - ab) * betas)[t]",
     ["the mean is right, but the variance is 2 times the right value everywhere"]),
    # wrong kinds: one value instead of the pair, the pair swapped, three values, numpy
    (Q_PRE + Q_MEAN + "return m", ["returned a tensor of shape (5, 1, 4, 3) (float64); return 2 values: "
                                   "(mean, variance)"]),
    (Q_PRE + Q_MEAN + "return ((1 - abp) / (1 - ab) * betas)[t], m",
     ["returned the pair in the wrong order: (variance, mean); return (mean, variance)"]),
    (Q_PRE + Q_MEAN + "return m, ((1 - abp) / (1 - ab) * betas)[t], t", ["returned 3 values; return 2"]),
    (Q_PRE + Q_MEAN + "return m.numpy(), ((1 - abp) / (1 - ab) * betas)[t]",
     ["returned a numpy array of shape (5, 1, 4, 3) as the mean; return a torch tensor"]),
])
def test_q_posterior_rejects_realistic_mistakes(code, fragments):
    assert_rejected("q_posterior", learner(code, Q_ARGS), *fragments)


def test_q_posterior_wrong_answer_falls_back_to_the_reference(capsys):
    wrong = learner(Q_PRE + "return x0, betas[t]", Q_ARGS)
    assert check_q_posterior(wrong) is exercises.reference_q_posterior
    assert "— using the reference so the notebook goes on" in capsys.readouterr().out


def test_q_posterior_strict_mode(monkeypatch):
    monkeypatch.setenv("DDPM_LITE_STRICT", "1")

    def wrong(x0, x_t, t, betas):
        return exercises.reference_q_posterior(x0, x_t, t, betas)[0], betas[t]

    with pytest.raises(ExerciseError, match="the variance is the forward step's"):
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


# ---------------------------------------------------------------------- train_step (notebook 02)
S_ARGS = "model, optimizer, diffusion, x0, generator"
S_DRAW = ("t = torch.randint(0, diffusion.num_timesteps, (len(x0),), generator=generator)\n"
          "noise = torch.randn(x0.shape, generator=generator)\n")
S_LOSS = "loss = ((noise - model(diffusion.q_sample(x0, t, noise), t)) ** 2).mean()\n"
S_STEP = "optimizer.zero_grad()\nloss.backward()\noptimizer.step()\n"
S_RETURN = "return loss.item()"


def step_noise_first(model, optimizer, diffusion, x0, generator):
    """The noise drawn before t, F.mse_loss, model.zero_grad(), returns float(loss): accepted."""
    noise = torch.randn_like(x0, generator=generator)
    t = torch.randint(diffusion.num_timesteps, (len(x0),), generator=generator)
    loss = F.mse_loss(model(diffusion.q_sample(x0, t, noise), t), noise)
    model.zero_grad()
    loss.backward()
    optimizer.step()
    return float(loss.detach())


def step_zero_grad_at_the_end(model, optimizer, diffusion, x0, generator):
    """The usual loop order backward, step, zero_grad; training_losses for the loss; a 0-d detached tensor."""
    t = torch.randint(0, diffusion.num_timesteps, (len(x0),), generator=generator)
    noise = torch.randn(x0.shape, generator=generator, dtype=x0.dtype)
    loss = diffusion.training_losses(model, x0, t, noise)["loss"].mean()
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss.detach()


def step_by_hand(model, optimizer, diffusion, x0, generator):
    """x_t by hand from alphas_cumprod, mean_flat then mean: accepted."""
    t = torch.randint(0, diffusion.num_timesteps, (len(x0),), generator=generator)
    noise = torch.randn(x0.shape, generator=generator)
    ab = torch.from_numpy(diffusion.alphas_cumprod).float()[t].view(-1, *[1] * (x0.ndim - 1))
    x_t = ab.sqrt() * x0 + (1 - ab).sqrt() * noise
    loss = mean_flat((noise - model(x_t, t)) ** 2).mean()
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return loss.item()


@pytest.mark.parametrize("fn", [step_noise_first, step_zero_grad_at_the_end, step_by_hand,
                                exercises.reference_train_step])
def test_train_step_accepts_correct_variants(fn, capsys):
    assert check_train_step(fn) is fn


@pytest.mark.parametrize("code, fragments", [
    (S_DRAW.replace("randint(0, diffusion.num_timesteps", "randint(1, diffusion.num_timesteps + 1")
     + S_LOSS + S_STEP + S_RETURN, ["t is drawn from 1 to T"]),
    (S_DRAW.replace("randint(0, diffusion.num_timesteps", "randint(1, diffusion.num_timesteps + 1") + "t[0] = 10\n"
     + S_LOSS + S_STEP + S_RETURN, ["raised ValueError: timesteps must lie in [0, 9], got values in",
                                    "t went past the last step"]),
    (S_DRAW.replace("num_timesteps,", "num_timesteps - 1,") + S_LOSS + S_STEP + S_RETURN,
     ["t never reaches the last step"]),
    (S_DRAW + S_LOSS + "loss.backward()\noptimizer.step()\n" + S_RETURN,
     ["the gradients add up from step to step", "for two steps in a row"]),
    (S_DRAW + S_LOSS + "optimizer.zero_grad()\nloss.backward()\n" + S_RETURN, ["the parameters did not change"]),
    (S_DRAW + S_LOSS + "optimizer.zero_grad()\noptimizer.step()\n" + S_RETURN, ["the parameters did not change"]),
    (S_DRAW + S_LOSS + "loss.backward()\noptimizer.zero_grad()\noptimizer.step()\n" + S_RETURN,
     ["the parameters did not change"]),
    (S_DRAW + "loss = ((noise - model(x0, t)) ** 2).mean()\n" + S_STEP + S_RETURN,
     ["the model is given the clean x0"]),
    (S_DRAW + "loss = ((x0 - model(diffusion.q_sample(x0, t, noise), t)) ** 2).mean()\n" + S_STEP + S_RETURN,
     ["compares the model's output with x0"]),
    (S_DRAW + "loss = mean_flat((noise - model(diffusion.q_sample(x0, t, noise), t)) ** 2).sum()\n" + S_STEP
     + S_RETURN, ["grows with the batch size"]),
    (S_DRAW + "loss = ((noise - model(diffusion.q_sample(x0, t, noise), t)) ** 2).sum()\n" + S_STEP + S_RETURN,
     ["far too large"]),
    (S_DRAW.replace(", generator=generator)\nnoise", ")\nnoise") + S_LOSS + S_STEP + S_RETURN,
     ["different results for the same inputs"]),
    (S_DRAW.replace("torch.randint(0, diffusion.num_timesteps, (len(x0),), generator=generator)",
                    "torch.rand(len(x0), generator=generator) * diffusion.num_timesteps")
     + S_LOSS + S_STEP + S_RETURN, ["t must hold whole steps (integers)"]),
    (S_DRAW + "loss = ((noise - model(diffusion.q_sample(x0, t, noise), t)) ** 2).mean()\n" + S_STEP
     + "return 0.5 * loss.item()", ["the parameter update is right, but the loss is 1/2 of the right value"]),
    (S_DRAW + "loss = ((noise - model(diffusion.q_sample(x0, t, noise))) ** 2).mean()\n" + S_STEP + S_RETURN,
     ["raised TypeError", "it was called with the arguments train_step(model, optimizer, diffusion, x0, generator)"]),
    # wrong kinds: the loss tensor with its graph, one loss per example, nothing returned
    (S_DRAW + S_LOSS + S_STEP + "return loss",
     ["returned a tensor that still requires grad", "return a plain number, with .item()"]),
    (S_DRAW + "losses = mean_flat((noise - model(diffusion.q_sample(x0, t, noise), t)) ** 2)\n"
     "loss = losses.mean()\n" + S_STEP + "return losses.detach()",
     ["returned a tensor of shape (8,) (float32); return one number"]),
    (S_DRAW + S_LOSS + S_STEP, ["returned None"]),
])
def test_train_step_rejects_realistic_mistakes(code, fragments):
    assert_rejected("train_step", learner(code, S_ARGS), *fragments)


def test_train_step_falls_back_and_the_reference_trains():
    """The reference step (what the notebook uses when the answer is wrong) lowers the loss of a small net."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 64), torch.nn.SiLU(), torch.nn.Linear(64, 2))

    def model(x, t):
        return net(torch.cat([x, t[:, None].float() / 100], 1))

    d = GaussianDiffusion(get_betas("linear", 100))
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(0)
    data = torch.randn(512, 2, generator=g) * 0.1 + torch.tensor([1.0, -1.0])
    losses = [exercises.reference_train_step(model, optimizer, d, data[torch.randint(512, (128,), generator=g)], g)
              for _ in range(300)]
    assert all(isinstance(v, float) for v in losses)
    assert np.mean(losses[-50:]) < 0.7 * np.mean(losses[:10])
    assert check_train_step(lambda *a: None) is exercises.reference_train_step


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
    (P_PRE + P_MEAN + "return mean", ["no noise is added at any step"]),
    (P_PRE + P_MEAN + P_SIGMA + "return mean + sigma ** 2 * noise * (t != 0).view(s)",
     ["scaled by the step's variance"]),
    (P_PRE + P_MEAN + "return mean + betas[t].sqrt().view(s) * noise * (t != 0).view(s)",
     ["the forward step's variance"]),
    (P_PRE + "mean = x_t - (betas / (1 - ab).sqrt())[t].view(s) * eps\n" + P_SIGMA
     + "return mean + sigma * noise * (t != 0).view(s)", ["the mean is not rescaled"]),
    (P_PRE + "mean = (x_t - (betas / (1 - ab))[t].view(s) * eps) / alphas[t].sqrt().view(s)\n" + P_SIGMA
     + "return mean + sigma * noise * (t != 0).view(s)", ["removed too strongly"]),
    (P_PRE + "mean = (x_t - (betas / (1 - ab).sqrt())[t].view(s) * eps) / ab[t].sqrt().view(s)\n" + P_SIGMA
     + "return mean + sigma * noise * (t != 0).view(s)", ["all the steps up to t"]),
    (P_PRE.replace("torch.cat([torch.ones(1, dtype=betas.dtype), ab[:-1]])", "torch.roll(ab, 1)") + P_MEAN + P_SIGMA
     + "return mean + sigma * noise", ["the last step (t = 0) adds noise"]),
    (P_PRE + "mean = (x_t + (betas / (1 - ab).sqrt())[t].view(s) * eps) / alphas[t].sqrt().view(s)\n" + P_SIGMA
     + "return mean + sigma * noise * (t != 0).view(s)", ["added to x_t instead of removed"]),
    (P_PRE + P_MEAN + P_SIGMA + "return mean + sigma * torch.randn_like(x_t) * (t != 0).view(s)",
     ["different results", "same inputs"]),
    # only the last step is wrong in an unknown way: which example
    (P_PRE + P_MEAN + P_SIGMA + "return torch.where((t == 0).view(s), x_t, mean + sigma * noise)",
     ["is wrong only for example 0 (t = 0) of the batch"]),
    # wrong kinds: numpy, a list of per-example results
    (P_PRE + P_MEAN + P_SIGMA + "return (mean + sigma * noise * (t != 0).view(s)).numpy()",
     ["returned a numpy array of shape (5, 1, 3, 3); return a torch tensor", "calls .float() on it"]),
    (P_PRE + P_MEAN + P_SIGMA + "return list(mean + sigma * noise * (t != 0).view(s))",
     ["returned a list of 5 items; return a torch tensor"]),
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


def l_right_lerp(v, t, betas):
    """torch.lerp in log space, the package's clipped log-variance, float32: accepted."""
    d = GaussianDiffusion(betas.numpy())
    s = (-1, *[1] * (v.ndim - 1))
    lo = torch.from_numpy(d.posterior_log_variance_clipped).float()[t].view(s)
    hi = torch.from_numpy(np.log(d.betas)).float()[t].view(s)
    return torch.lerp(lo, hi, v.float())


@pytest.mark.parametrize("fn", [l_right_where, l_right_lerp])
def test_learned_range_accepts_correct_variants(fn):
    assert check_learned_range_log_variance(fn) is fn


@pytest.mark.parametrize("code, fragments", [
    (L_PRE + "return v * betas.log()[t].view(s) + (1 - v) * bt.log()[t].view(s)", ["is -inf at t = 0"]),
    (L_PRE + L_CLIP + "return (1 - v) * betas.log()[t].view(s) + v * bt.log()[t].view(s)", ["swapped"]),
    (L_PRE + L_CLIP + "return torch.log(v * betas[t].view(s) + (1 - v) * bt[t].view(s))",
     ["not their logarithms"]),
    (L_PRE + L_CLIP + "return torch.exp(v * betas.log()[t].view(s) + (1 - v) * bt.log()[t].view(s))",
     ["is the variance itself, not its logarithm"]),
    (L_PRE + L_CLIP + "w = (v + 1) / 2\nreturn w * betas.log()[t].view(s) + (1 - w) * bt.log()[t].view(s)",
     ["once more", "already the weight"]),
    (L_PRE + L_CLIP + "return v * betas.log()[t] + (1 - v) * bt.log()[t]", ["raised RuntimeError"]),
    (L_PRE + "return 0.5 * (v * betas.log()[t].view(s) + (1 - v) * bt.log()[t].view(s))",
     ["NaN or inf", "the posterior variance is 0"]),
    # wrong kinds: numpy, the (B,) shape of t instead of v's
    (L_PRE + L_CLIP + "return (v * betas.log()[t].view(s) + (1 - v) * bt.log()[t].view(s)).numpy()",
     ["returned a numpy array of shape (4, 1, 3, 3); return a torch tensor", ".numpy() on it"]),
    (L_PRE + L_CLIP + "return (v * betas.log()[t].view(s) + (1 - v) * bt.log()[t].view(s)).flatten(1).mean(1)",
     ["log Sigma has shape (4,); it should have the shape of `v`, (4, 1, 3, 3)"]),
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


# ---------------------------------------------------------------------- hybrid_loss (notebook 04)
H_ARGS = "model_output, noise, vlb_term, num_timesteps, lam=0.001"
H_SPLIT = "eps, v = model_output.chunk(2, dim=1)\n"
H_SIMPLE = "simple = mean_flat((noise - eps) ** 2)\n"


def h_split(model_output, noise, vlb_term, num_timesteps, lam=0.001):
    """torch.split by the channels of the noise, .data as the stop-gradient: accepted."""
    c = noise.shape[1]
    eps, v = torch.split(model_output, c, dim=1)
    return F.mse_loss(eps, noise, reduction="none").flatten(1).mean(1) + lam * num_timesteps * vlb_term(eps.data, v)


def h_indexing(model_output, noise, vlb_term, num_timesteps, lam=0.001):
    """Channel slicing and a detached copy made by hand: accepted."""
    c = noise.shape[1]
    eps, v = model_output[:, :c], model_output[:, c:]
    frozen = eps.detach().clone()
    return (noise - eps).pow(2).flatten(1).mean(1) + (lam * num_timesteps) * vlb_term(frozen, v)


@pytest.mark.parametrize("fn", [h_split, h_indexing, exercises.reference_hybrid_loss])
def test_hybrid_loss_accepts_correct_variants(fn):
    assert check_hybrid_loss(fn) is fn


@pytest.mark.parametrize("code, fragments", [
    (H_SPLIT + H_SIMPLE + "return simple + lam * num_timesteps * vlb_term(eps, v)",
     ["has the right value, but the L_vlb term also trains the mean"]),
    (H_SPLIT + H_SIMPLE + "return simple + lam * num_timesteps * vlb_term(eps.detach(), v.detach())",
     ["the v half of model_output gets no gradient"]),
    (H_SPLIT + H_SIMPLE + "return simple + num_timesteps * vlb_term(eps.detach(), v)", ["1000 times too much"]),
    (H_SPLIT + H_SIMPLE + "return simple + lam * vlb_term(eps.detach(), v)", ["num_timesteps times too small"]),
    ("v, eps = model_output.chunk(2, dim=1)\n" + H_SIMPLE
     + "return simple + lam * num_timesteps * vlb_term(eps.detach(), v)",
     ["reads eps from the v half"]),
    (H_SPLIT + "return lam * num_timesteps * vlb_term(eps.detach(), v)", ["has no L_simple part"]),
    (H_SPLIT + H_SIMPLE + "return (simple + lam * num_timesteps * vlb_term(eps.detach(), v)).mean()",
     ["is one number: averaged over the batch"]),
    (H_SPLIT + H_SIMPLE + "return simple + lam * 1000 * vlb_term(eps.detach(), v)",
     ["as if num_timesteps were always 1000"]),
    (H_SPLIT + H_SIMPLE + "return simple + vlb_term(eps.detach(), v)", ["as if num_timesteps were always 1000"]),
    (H_SPLIT + H_SIMPLE
     + "return simple + lam * num_timesteps * vlb_term(eps.detach(), v) + 0.01 * v.flatten(1).sum(1)",
     ["the loss is wrong"]),
    # wrong kinds: a number (no gradient), a detached loss, the whole output detached
    (H_SPLIT + H_SIMPLE + "return (simple + lam * num_timesteps * vlb_term(eps.detach(), v)).sum().item()",
     ["returned the number", "return a torch tensor with one value per example of the batch, shape (3,)"]),
    (H_SPLIT + H_SIMPLE + "return (simple + lam * num_timesteps * vlb_term(eps.detach(), v)).detach()",
     ["returned a tensor that does not require grad", "no .item(), no .detach()"]),
    ("eps, v = model_output.detach().chunk(2, dim=1)\n" + H_SIMPLE
     + "return simple + lam * num_timesteps * vlb_term(eps, v)", ["does not require grad"]),
])
def test_hybrid_loss_rejects_realistic_mistakes(code, fragments):
    assert_rejected("hybrid_loss", learner(code, H_ARGS), *fragments)


def test_hybrid_loss_reference_is_training_losses():
    """With T = 1000 (lam * T = 1) the reference is training_losses' loss, value and gradient."""
    d = GaussianDiffusion(cosine_betas(1000), var_type="learned_range")
    g = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(4, 1, 4, 4, generator=g).clamp(-1, 1), torch.randn(4, 1, 4, 4, generator=g)
    t = torch.tensor([0, 3, 400, 999])
    output = torch.cat([torch.randn(4, 1, 4, 4, generator=g), torch.rand(4, 1, 4, 4, generator=g) * 2 - 1], 1)
    output.requires_grad_(True)
    terms = d.training_losses(lambda x, t: output, x0, t, noise)
    ours = exercises.reference_hybrid_loss(output, noise, exercises.make_vlb_term(d, x0, d.q_sample(x0, t, noise), t),
                                           1000)
    assert torch.allclose(ours, terms["loss"], atol=1e-5)
    g1 = torch.autograd.grad(ours.sum(), output)[0]
    g2 = torch.autograd.grad(terms["loss"].sum(), output)[0]
    assert torch.allclose(g1, g2, atol=1e-6)


# ---------------------------------------------------------------------- importance_sampler_weights (notebook 06)
I_ARGS = "loss_history, uniform_prob=0.001"


def i_right_numpy(loss_history, uniform_prob=0.001):
    """numpy, returning a list: accepted."""
    h = np.asarray(loss_history)
    p = np.sqrt(np.mean(h ** 2, axis=-1))
    p = p / p.sum() * (1 - uniform_prob) + uniform_prob / len(p)
    return [p, 1 / (len(p) * p)]


def i_right_norm(loss_history, uniform_prob=0.001):
    """torch.linalg.vector_norm (root mean square = norm / sqrt(K)), lists of floats: accepted."""
    h = torch.as_tensor(loss_history, dtype=torch.float64)
    rms = torch.linalg.vector_norm(h, dim=1) / h.shape[1] ** 0.5
    p = torch.lerp(rms / rms.sum(), torch.full_like(rms, 1 / len(rms)), uniform_prob)
    return p.tolist(), (1 / (len(p) * p)).tolist()


@pytest.mark.parametrize("fn", [i_right_numpy, i_right_norm])
def test_importance_accepts_correct_variants(fn):
    assert check_importance_sampler_weights(fn) is fn


I_OK = ("p = (loss_history ** 2).mean(1).sqrt()\np = p / p.sum()\np = (1 - uniform_prob) * p + uniform_prob / len(p)\n")


@pytest.mark.parametrize("code, fragments", [
    ("m = (loss_history ** 2).mean(1)\np = m / m.sum()\np = (1 - uniform_prob) * p + uniform_prob / len(p)\n"
     "return p, 1 / (len(p) * p)", ["without its square root"]),
    ("m = loss_history.mean(1)\np = m / m.sum()\np = (1 - uniform_prob) * p + uniform_prob / len(p)\n"
     "return p, 1 / (len(p) * p)", ["the mean loss"]),
    ("p = (loss_history ** 2).mean(1).sqrt()\np = p / p.sum()\nreturn p, 1 / (len(p) * p)",
     ["p has no uniform part"]),
    (I_OK + "return p, 1 / p", ["the weights are T times too large"]),
    (I_OK + "return p, len(p) * p", ["upside down"]),
    ("p = (loss_history ** 2).mean(0).sqrt()\np = p / p.sum()\np = (1 - uniform_prob) * p + uniform_prob / len(p)\n"
     "return p, 1 / (len(p) * p)", ["averaged over t instead of over the history"]),
    ("p = (loss_history ** 2).mean(1).sqrt()\np = p / p.sum()\np = (1 - 0.001) * p + 0.001 / len(p)\n"
     "return p, 1 / (len(p) * p)", ["ignores the uniform_prob argument"]),
    (I_OK + "return p, 1 / (len(p) * p) + 0.01", ["p is right, but the weights are off by the same amount everywhere "
                                                   "(+0.01)"]),
    (I_OK + "return p, 1 / (len(p) * p) + 0.01 * p", ["p is right, but the weights have wrong values"]),
    # wrong kinds: p alone, the pair swapped, float32 (numpy's choice fails), three values
    ("p = (loss_history ** 2).mean(1).sqrt()\nreturn p / p.sum()",
     ["returned a tensor of shape (40,) (float64); return 2 values: (p, weights)"]),
    (I_OK + "return 1 / (len(p) * p), p", ["returned the pair in the wrong order: (weights, p); return (p, weights)"]),
    (I_OK + "return p.float(), (1 / (len(p) * p)).float()", ["returned float32 as p; return float64",
                                                             "sum to 1 within about 1e-8"]),
    (I_OK + "return p, 1 / (len(p) * p), p.sum()", ["returned 3 values; return 2: (p, weights)"]),
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


def test_accepted_answers_are_accepted_by_diagnose_too():
    assert_accepted("q_posterior", q_right_loop)
    assert_accepted("train_step", step_noise_first)
