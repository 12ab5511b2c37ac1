"""The checkers of notebooks 10 (respaced betas, one DDIM step) and 11 (the SNR in dB): the references are right,
correct variants pass, realistic mistakes (wrong kinds of result included) get their own diagnosis.
(tests/test_exercises.py also runs its generic checks on them.)"""
import math

import numpy as np
import pytest
import torch
from exercise_helpers import assert_rejected

from ddpm_lite import GaussianDiffusion, get_betas, respace, space_timesteps
from ddpm_lite.course.exercises import (
    EXERCISES,
    ExerciseError,
    check_ddim_step,
    check_respaced_betas,
    reference_ddim_step,
    reference_respaced_betas,
)


@pytest.fixture(autouse=True)
def friendly(monkeypatch):
    monkeypatch.setenv("DDPM_LITE_STRICT", "0")


def test_registered():
    assert {"respaced_betas", "ddim_step"} <= set(EXERCISES)
    assert len(EXERCISES["respaced_betas"].mistakes) >= 3 and len(EXERCISES["ddim_step"].mistakes) >= 3


# ---------------------------------------------------------------------- respaced betas
@pytest.mark.parametrize("schedule", ["linear", "cosine"])
@pytest.mark.parametrize("counts", [10, "ddim25", "5,10,3"])
def test_respaced_betas_reference_is_the_package(schedule, counts):
    betas = get_betas(schedule, 1000)
    kept = space_timesteps(1000, counts)
    fast = respace(GaussianDiffusion(betas), kept)
    np.testing.assert_allclose(reference_respaced_betas(betas, kept), fast.betas)
    # the respaced chain has the original alpha-bar at every kept step
    np.testing.assert_allclose(np.cumprod(1 - reference_respaced_betas(betas, kept)),
                               np.cumprod(1 - betas)[sorted(kept)], rtol=1e-8)


def test_respaced_betas_keeping_every_step_gives_the_original_betas():
    betas = get_betas("cosine", 100)
    np.testing.assert_allclose(reference_respaced_betas(betas, range(100)), betas, rtol=1e-8)


def torch_respaced(betas, kept):
    ab = torch.cumprod(1 - torch.as_tensor(betas), 0)[torch.tensor(sorted(kept))]
    return 1 - ab / torch.cat([ab.new_ones(1), ab[:-1]])


def loop_respaced(betas, kept):
    out, prev = [], 1.0
    for k in sorted(kept):
        ab = float(np.prod(1 - np.asarray(betas)[:k + 1]))
        out.append(1 - ab / prev)
        prev = ab
    return out


@pytest.mark.parametrize("fn", [reference_respaced_betas, torch_respaced, loop_respaced])
def test_respaced_betas_correct_variants_pass(fn, capsys):
    assert check_respaced_betas(fn) is fn
    assert "✅ respaced_betas: correct" in capsys.readouterr().out


@pytest.mark.parametrize("fn, fragment", [
    (lambda b, k: np.asarray(b)[sorted(k)], "one step of the old chain"),
    (lambda b, k: (lambda ab: 1 - ab[1:] / ab[:-1])(np.cumprod(1 - np.asarray(b))[sorted(k)]), "one beta short"),
    (lambda b, k: (lambda ab: 1 - ab / np.roll(ab, 1))(np.cumprod(1 - np.asarray(b))[sorted(k)]), "wrapped around"),
    (lambda b, k: 1 - np.cumprod(1 - np.asarray(b))[sorted(k)], "the whole way from the clean data"),
    (lambda b, k: (lambda ab: 1 - ab / np.append(1.0, ab[:-1]))(np.cumprod(1 - np.asarray(b))[list(k)]),
     "in the order given"),
    (lambda b, k: (lambda ab: 1 - ab / np.append(1.0, ab[:-1]))(np.cumprod(1 - np.asarray(b))[np.array(sorted(k)) - 1]),
     "off by one"),
])
def test_respaced_betas_mistakes(fn, fragment):
    assert_rejected("respaced_betas", fn, fragment)


def test_respaced_betas_first_step_keeps_its_original_beta():
    def wrong(betas, kept):
        b = np.asarray(betas)
        ab_all = np.cumprod(1 - b)
        s = sorted(kept)
        ab = ab_all[s]
        return 1 - ab / np.append(ab_all[s[0] - 1], ab[:-1])

    assert_rejected("respaced_betas", wrong, "the first kept step keeps its old one-step beta")


# ---------------------------------------------------------------------- one DDIM step
class EpsModel(torch.nn.Module):
    """A fixed "network" eps(x, t) = 0.4 x + 0.1 sin(t)."""

    def forward(self, x, t):
        return 0.4 * x + 0.1 * torch.sin(t.float()).reshape(-1, *[1] * (x.ndim - 1))


@pytest.mark.parametrize("eta", [0.0, 0.5, 1.0])
def test_ddim_step_reference_is_the_package_step(eta):
    """On a respaced chain: the package's ddim_sample (no clipping, eps from the model) equals the reference."""
    base = GaussianDiffusion(get_betas("cosine", 200))
    fast = respace(base, space_timesteps(200, 10))
    model = EpsModel()
    x = torch.randn(3, 1, 4, 4, dtype=torch.float64)
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    for i in (9, 5, 1):
        t = torch.full((3,), i)
        out = fast.ddim_sample(model, x, t, clip_denoised=False, eta=eta,
                               generator=torch.Generator().manual_seed(0))["sample"]
        eps = model(x, fast.timestep_map[t])
        ours = reference_ddim_step(x, eps, fast.alphas_cumprod[i], fast.alphas_cumprod_prev[i], eta, noise)
        torch.testing.assert_close(ours, out.double(), rtol=1e-4, atol=1e-4)


def test_ddim_step_eta_one_has_the_posterior_variance():
    base = GaussianDiffusion(get_betas("linear", 100))
    i = 40
    ab, ab_prev = base.alphas_cumprod[i], base.alphas_cumprod_prev[i]
    x = eps = torch.zeros(1, 1, dtype=torch.float64)
    spread = reference_ddim_step(x, eps, ab, ab_prev, 1.0, torch.ones_like(x)) - reference_ddim_step(
        x, eps, ab, ab_prev, 1.0, torch.zeros_like(x))
    assert float(spread) ** 2 == pytest.approx(base.posterior_variance[i], rel=1e-10)


def torch_ddim(x_t, eps, alpha_bar, alpha_bar_prev, eta, noise):
    ab, abp = torch.tensor(alpha_bar), torch.tensor(alpha_bar_prev)
    x0 = (x_t - torch.sqrt(1 - ab) * eps) / torch.sqrt(ab)
    sigma = eta * torch.sqrt((1 - abp) / (1 - ab) * (1 - ab / abp))
    return torch.sqrt(abp) * x0 + torch.sqrt(1 - abp - sigma ** 2) * eps + sigma * noise


def math_ddim(x_t, eps, alpha_bar, alpha_bar_prev, eta, noise):
    x0 = (x_t - math.sqrt(1 - alpha_bar) * eps) / math.sqrt(alpha_bar)
    sigma = eta * math.sqrt((1 - alpha_bar_prev) / (1 - alpha_bar)) * math.sqrt(1 - alpha_bar / alpha_bar_prev)
    return math.sqrt(alpha_bar_prev) * x0 + math.sqrt(1 - alpha_bar_prev - sigma ** 2) * eps + sigma * noise


@pytest.mark.parametrize("fn", [reference_ddim_step, torch_ddim, math_ddim])
def test_ddim_step_correct_variants_pass(fn, capsys):
    assert check_ddim_step(fn) is fn
    assert "✅ ddim_step: correct" in capsys.readouterr().out


def ddim_with(**changes):
    def fn(x_t, eps, ab, abp, eta, noise):
        x0 = (x_t - (1 - ab) ** 0.5 * eps) / ab ** 0.5
        if changes.get("x0_no_sqrt"):
            x0 = (x_t - (1 - ab) ** 0.5 * eps) / ab
        sigma = eta * ((1 - abp) / (1 - ab)) ** 0.5 * (1 - ab / abp) ** 0.5
        if changes.get("short_sigma"):
            sigma = eta * (1 - ab / abp) ** 0.5
        if changes.get("no_eta"):
            sigma = 0.0
        direction = (1 - abp - (0 if changes.get("plain_direction") else sigma ** 2)) ** 0.5 * eps
        scale = sigma ** 2 if changes.get("variance_noise") else sigma
        return abp ** 0.5 * (x_t if changes.get("from_x_t") else x0) + direction + scale * noise
    return fn


@pytest.mark.parametrize("changes, fragment", [
    ({"no_eta": True}, "adds no noise, whatever eta is"),
    ({"plain_direction": True}, "does not make room for the added noise"),
    ({"short_sigma": True}, "sigma is missing one of its two factors"),
    ({"variance_noise": True}, "scaled by sigma squared"),
    ({"x0_no_sqrt": True}, "divided by the wrong power of alpha_bar"),
    ({"from_x_t": True}, "moves x_t itself instead of the predicted x_0"),
])
def test_ddim_step_mistakes(changes, fragment):
    assert_rejected("ddim_step", ddim_with(**changes), fragment)


@pytest.mark.filterwarnings("ignore:Casting complex values")
def test_ddim_step_swapped_alphas():
    fn = ddim_with()
    assert_rejected("ddim_step", lambda x, e, ab, abp, eta, z: fn(x, e, abp, ab, eta, z), "the other way round")


def test_ddim_step_new_noise_is_caught():
    def fresh(x_t, eps, ab, abp, eta, noise):
        return reference_ddim_step(x_t, eps, ab, abp, eta, torch.randn_like(noise))

    assert_rejected("ddim_step", fresh, "different results for the same inputs")


def test_strict_mode_raises(monkeypatch):
    monkeypatch.setenv("DDPM_LITE_STRICT", "1")
    with pytest.raises(ExerciseError, match="ddim_step"):
        check_ddim_step(ddim_with(no_eta=True))
    with pytest.raises(ExerciseError, match="respaced_betas"):
        check_respaced_betas(lambda b, k: np.asarray(b)[sorted(k)])


def test_not_implemented_falls_back(capsys):
    def todo(*args):
        raise NotImplementedError("hint: ...")

    assert check_respaced_betas(todo) is reference_respaced_betas
    assert check_ddim_step(todo) is reference_ddim_step
    assert capsys.readouterr().out.count("not implemented yet") == 2


def test_respaced_betas_in_float32_are_rejected_for_their_precision():
    """The next cell compares with the package's float64 betas (np.allclose, rtol 1e-5): float32 is not enough."""
    def float32(betas, kept):
        ab = torch.cumprod(1 - torch.tensor(betas, dtype=torch.float32), 0)[sorted(kept)]
        return 1 - ab / torch.cat([torch.ones(1), ab[:-1]])

    assert_rejected("respaced_betas", float32, "returned float32; return float64", "lose their digits")
    assert check_respaced_betas(float32) is reference_respaced_betas


def test_ddim_step_swapped_alphas_in_torch_or_math():
    """torch.sqrt of a negative number is NaN, math.sqrt raises: both get a hint about the order of the alpha-bars."""
    assert_rejected("ddim_step", lambda x, e, ab, abp, eta, z: torch_ddim(x, e, abp, ab, eta, z), "NaN or inf",
                    "the right way round")
    assert_rejected("ddim_step", lambda x, e, ab, abp, eta, z: math_ddim(x, e, abp, ab, eta, z),
                    "raised ValueError: math domain error", "the right way round")


# ---------------------------------------------------------------------- 11: the SNR of x_t in decibels
def test_snr_db_reference_is_the_measured_snr():
    """10 log10 of the power of sqrt(alpha_bar) x0 over the power of the noise, measured on a long signal."""
    from ddpm_lite.course.exercises import reference_snr_db
    from ddpm_lite.course.waveforms import sine_tones

    x0 = sine_tones(1, length=200_000, seed=0)
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(0))
    ab = 0.4
    measured = 10 * math.log10(float((math.sqrt(ab) * x0).pow(2).mean() / (math.sqrt(1 - ab) * noise).pow(2).mean()))
    assert float(reference_snr_db(x0, ab)[0]) == pytest.approx(measured, abs=0.02)


def test_snr_db_correct_variants_pass(capsys):
    from ddpm_lite.course.exercises import check_snr_db

    def mine(x0, alpha_bar):
        power = (x0 ** 2).mean(dim=tuple(range(1, x0.ndim)))
        return 10 * torch.log10(alpha_bar * power / (1 - alpha_bar))

    def in_amplitudes(x0, alpha_bar):
        rms = x0.pow(2).flatten(1).mean(1).sqrt()
        ab = torch.as_tensor(alpha_bar)
        return 20 * torch.log10(ab.sqrt() * rms / (1 - ab).sqrt())

    for fn in (mine, in_amplitudes):
        assert check_snr_db(fn) is fn
    assert capsys.readouterr().out.count("✅ snr_db: correct") == 2


@pytest.mark.parametrize("fn, fragment", [
    (lambda x0, ab: 20 * torch.log10(ab * x0.pow(2).flatten(1).mean(1) / (1 - ab)),
     "twice the right number of decibels"),
    (lambda x0, ab: 10 * torch.log10(torch.as_tensor(ab) / (1 - torch.as_tensor(ab))),
     "ignores the power of the signal"),
    (lambda x0, ab: 10 * torch.log(ab * x0.pow(2).flatten(1).mean(1) / (1 - ab)), "natural logarithm"),
    (lambda x0, ab: 10 * torch.log10(ab * x0.pow(2).mean() / (1 - ab)), "one number for the whole batch"),
    (lambda x0, ab: 10 * torch.log10(ab * x0.pow(2).flatten(1).amax(1) / (1 - ab)), "peak power"),
    (lambda x0, ab: 10 * torch.log10(ab * x0.pow(2).flatten(1).mean(1) / (1 - ab) ** 2),
     "the power of the noise is squared"),
])
def test_snr_db_mistakes(fn, fragment):
    assert_rejected("snr_db", fn, fragment)


def test_ddim_step_reference_keeps_the_dtype():
    x = torch.randn(2, 1, 3, 3)
    assert reference_ddim_step(x, x, 0.3, 0.5, 0.5, x).dtype == torch.float32


# ---------------------------------------------------------------------- wrong kinds of result (10 and 11)
def test_respaced_betas_wrong_kinds():
    ok = reference_respaced_betas
    assert_rejected("respaced_betas", lambda b, k: ok(b, k).astype(np.float32), "returned float32; return float64")
    assert_rejected("respaced_betas", lambda b, k: (ok(b, k) * 1e6).astype(np.int64), "returned integers (int64)")
    assert_rejected("respaced_betas", lambda b, k: dict(zip(sorted(k), ok(b, k))), "returned a dict",
                    "return an array (or a list) of numbers")
    assert_rejected("respaced_betas", lambda b, k: ok(b, k)[:, None], "the new betas have shape (6, 1); it should "
                    "have shape (6,): one beta per kept step")


def test_ddim_step_wrong_kinds():
    assert_rejected("ddim_step", lambda *a: reference_ddim_step(*a).double(), "returned float64 for a float32 `x_t`",
                    "float32 network")
    assert_rejected("ddim_step", lambda *a: reference_ddim_step(*a).numpy(), "returned a numpy array of shape "
                    "(3, 1, 4, 4); return a torch tensor")
    assert_rejected("ddim_step", lambda *a: reference_ddim_step(*a).to("meta"), "on the meta device")


def test_snr_db_wrong_kinds():
    from ddpm_lite.course.exercises import reference_snr_db

    assert_rejected("snr_db", lambda x0, ab: reference_snr_db(x0, ab).numpy(), "returned a numpy array of shape "
                    "(4,); return a torch tensor", ".nonzero()")
    assert_rejected("snr_db", lambda x0, ab: float(reference_snr_db(x0, ab).mean()), "returned the number",
                    "with one value per example of the batch, shape (4,)")
    assert_rejected("snr_db", lambda x0, ab: reference_snr_db(x0, ab)[:, None], "the SNR has shape (4, 1); it "
                    "should have one value per example of the batch, shape (4,)")


def test_snr_db_in_float32_and_with_numpy_powers_passes():
    from ddpm_lite.course.exercises import check_snr_db

    def float32_mean_dims(x0, alpha_bar):
        ab = torch.as_tensor(alpha_bar, dtype=torch.float32)
        power = x0.float().square().mean(dim=tuple(range(1, x0.ndim)))
        return 10 * (torch.log10(ab * power) - torch.log10(1 - ab))

    assert check_snr_db(float32_mean_dims) is float32_mean_dims
