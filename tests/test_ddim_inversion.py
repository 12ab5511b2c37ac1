"""DDIM inversion (the deterministic DDIM ODE run forward in time) against float64 and closed-form computations."""
import numpy as np
import pytest
import torch

from ddpm_lite import GaussianDiffusion, get_betas, respace

T = 100


def wavy(x, t):
    """A fixed, smooth 'eps model' with no meaning: its output depends on x and on the timestep it is given."""
    return 0.6 * torch.tanh(1.3 * x) + 0.002 * t.to(x.dtype).reshape(-1, *[1] * (x.ndim - 1))


def reverse_step_float64(alphas_cumprod, x, t, eps, clip):
    """ddim_reverse_sample in numpy float64, from the equations: x0 = (x - sqrt(1 - abar_t) eps) / sqrt(abar_t)
    (clipped), eps re-derived from x0, then x_{t+1} = sqrt(abar_{t+1}) x0 + sqrt(1 - abar_{t+1}) eps'."""
    ab = alphas_cumprod[t].reshape(-1, *[1] * (x.ndim - 1))
    ab_next = np.append(alphas_cumprod[1:], 0.0)[t].reshape(ab.shape)
    x0 = (x - np.sqrt(1 - ab) * eps) / np.sqrt(ab)
    if clip:
        x0 = np.clip(x0, -1, 1)
    eps = (x / np.sqrt(ab) - x0) / np.sqrt(1 / ab - 1)
    return np.sqrt(ab_next) * x0 + np.sqrt(1 - ab_next) * eps, x0


@pytest.mark.parametrize("clip", [True, False])
@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_reverse_step_against_float64(schedule, clip):
    d = GaussianDiffusion(get_betas(schedule, T))
    g = torch.Generator().manual_seed(0)
    x = 1.5 * torch.randn(6, 2, 3, 3, generator=g)
    t = torch.tensor([0, 1, 17, 50, T - 2, T - 1])
    out = d.ddim_reverse_sample(wavy, x, t, clip_denoised=clip)
    expected, x0 = reverse_step_float64(d.alphas_cumprod, x.double().numpy(), t.numpy(),
                                        wavy(x.double(), t).numpy(), clip)
    np.testing.assert_allclose(out["pred_xstart"].double().numpy(), x0, rtol=2e-5, atol=2e-5)
    np.testing.assert_allclose(out["sample"].double().numpy(), expected, rtol=2e-5, atol=2e-5)
    assert set(out) == {"sample", "pred_xstart"}
    # after the last step abar = 0: the sample is the predicted noise itself
    ab = d.alphas_cumprod[T - 1]
    eps_last = (x[-1].double().numpy() / np.sqrt(ab) - x0[-1]) / np.sqrt(1 / ab - 1)
    np.testing.assert_allclose(out["sample"][-1].double().numpy(), eps_last, rtol=2e-5, atol=2e-5)


def test_reverse_step_undoes_a_ddim_step_of_an_eps_that_does_not_depend_on_x():
    """With eps independent of x, a DDIM step t+1 -> t and the reverse step t -> t+1 are exact inverses."""
    d = GaussianDiffusion(get_betas("linear", T))
    eps = torch.randn(4, 1, 4, 4, generator=torch.Generator().manual_seed(1)).double()

    def constant_eps(x, t):
        return eps

    x = torch.randn(4, 1, 4, 4, generator=torch.Generator().manual_seed(2)).double()
    t = torch.tensor([3, 10, 40, 90])
    down = d.ddim_sample(constant_eps, x, t + 1, clip_denoised=False)["sample"]
    up = d.ddim_reverse_sample(constant_eps, down, t, clip_denoised=False)["sample"]
    torch.testing.assert_close(up, x, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("mean_type", ["x0", "xprev"])
def test_reverse_step_with_x0_and_xprev_models(mean_type):
    """Whatever the parameterisation, the step uses the predicted x_0 and the eps re-derived from it."""
    d_eps = GaussianDiffusion(get_betas("linear", T))
    d = GaussianDiffusion(get_betas("linear", T), mean_type=mean_type)
    x = torch.randn(5, 1, 3, 3, generator=torch.Generator().manual_seed(3))
    t = torch.tensor([1, 5, 20, 60, 98])

    def as_param(x_t, tt):  # the same prediction as `wavy`, expressed in the other parameterisation
        x0 = d_eps._predict_xstart_from_eps(x_t, tt, wavy(x_t, tt))
        return x0 if mean_type == "x0" else d.q_posterior_mean_variance(x0, x_t, tt)[0]

    a = d_eps.ddim_reverse_sample(wavy, x, t, clip_denoised=False)
    b = d.ddim_reverse_sample(as_param, x, t, clip_denoised=False)
    torch.testing.assert_close(b["sample"], a["sample"], rtol=1e-4, atol=1e-4)


def test_respaced_reverse_step_uses_the_kept_timesteps():
    base = GaussianDiffusion(get_betas("cosine", 1000))
    spaced = respace(base, "ddim10")
    kept = np.array(sorted(int(k) for k in spaced.timestep_map))
    seen = []

    def model(x, t):
        seen.append(t.clone())
        return wavy(x, t)

    x = torch.randn(3, 1, 2, 2, generator=torch.Generator().manual_seed(4))
    t = torch.tensor([0, 4, 9])
    out = spaced.ddim_reverse_sample(model, x, t, clip_denoised=False)
    assert seen[0].tolist() == kept[[0, 4, 9]].tolist()  # the model sees the original chain's timesteps
    alpha_bar = base.alphas_cumprod[kept]  # the kept alpha_bar, from the original chain in float64
    expected, _ = reverse_step_float64(alpha_bar, x.double().numpy(), t.numpy(),
                                       wavy(x.double(), torch.from_numpy(kept[[0, 4, 9]])).numpy(), False)
    np.testing.assert_allclose(out["sample"].double().numpy(), expected, rtol=2e-5, atol=2e-5)


def test_loop_visits_the_states_of_ddim_sampling_backwards():
    """K model calls: step 0 (data -> abar_0) at t = 0, then reverse steps at t = 0 .. K-2; on a respaced chain
    the model sees the kept timesteps."""
    base = GaussianDiffusion(get_betas("linear", 200))
    spaced = respace(base, 8)
    kept = sorted(int(k) for k in spaced.timestep_map)
    seen = []

    def model(x, t):
        seen.append(int(t[0]))
        return wavy(x, t)

    x0 = torch.rand(2, 1, 3, 3, generator=torch.Generator().manual_seed(5)) * 2 - 1
    outs = list(spaced.ddim_reverse_sample_loop_progressive(model, x0))
    assert len(outs) == len(seen) == 8
    assert seen == [kept[0], kept[0], *kept[1:7]]
    # step 0 in float64: sqrt(abar_0) x_0 + sqrt(1 - abar_0) eps(x_0, t_0)
    ab0 = spaced.alphas_cumprod[0]
    eps0 = wavy(x0.double(), torch.tensor([kept[0]] * 2)).numpy()
    first = np.sqrt(ab0) * x0.double().numpy() + np.sqrt(1 - ab0) * eps0
    np.testing.assert_allclose(outs[0]["sample"].double().numpy(), first, rtol=2e-5, atol=2e-5)
    xT = spaced.ddim_reverse_sample_loop(model, x0)
    torch.testing.assert_close(xT, outs[-1]["sample"])


def test_point_mass_round_trip_is_exact_at_any_step_count():
    """For data at one point x*, eps*(x_t, t) = (x_t - sqrt(abar_t) x*) / sqrt(1 - abar_t): the ODE's paths are
    x_t = sqrt(abar_t) x* + sqrt(1 - abar_t) e with e constant, which DDIM follows exactly in both directions."""
    base = GaussianDiffusion(get_betas("cosine", 1000))
    x_star = torch.rand(3, 1, 4, 4, generator=torch.Generator().manual_seed(6)).double() * 1.6 - 0.8
    ab = torch.from_numpy(base.alphas_cumprod)

    def oracle(x, t):
        a = ab[t].reshape(-1, 1, 1, 1)
        return (x - a.sqrt() * x_star) / (1 - a).sqrt()

    for k in (2, 5, 30):
        spaced = respace(base, k)
        xT = spaced.ddim_reverse_sample_loop(oracle, x_star)
        back = spaced.ddim_sample_loop(oracle, x_star.shape, noise=xT)
        torch.testing.assert_close(back, x_star, rtol=0, atol=1e-5)


def gaussian_eps_model(diffusion, mean, std):
    """The exact eps of data ~ N(mean, std^2 I): x_t ~ N(sqrt(abar) mean, abar std^2 + 1 - abar), so
    eps*(x_t, t) = -sqrt(1 - abar) * score = sqrt(1 - abar) (x_t - sqrt(abar) mean) / (abar std^2 + 1 - abar)."""
    ab = torch.from_numpy(diffusion.alphas_cumprod)

    def model(x, t):
        a = ab[t].reshape(-1, *[1] * (x.ndim - 1))
        return (1 - a).sqrt() * (x - a.sqrt() * mean) / (a * std ** 2 + 1 - a)

    return model


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_round_trip_error_shrinks_with_the_number_of_steps(schedule):
    """Encode with K respaced steps, decode with the same K: the error of the discretised ODE falls like 1/K."""
    base = GaussianDiffusion(get_betas(schedule, 1000))
    mean, std = 0.2, 0.3
    model = gaussian_eps_model(base, mean, std)
    x0 = (mean + std * torch.randn(64, 1, 8, 8, generator=torch.Generator().manual_seed(7))).double()
    errors = {}
    for k in (10, 50, 200):
        spaced = respace(base, k)
        xT = spaced.ddim_reverse_sample_loop(model, x0, clip_denoised=False)
        back = spaced.ddim_sample_loop(model, x0.shape, noise=xT, clip_denoised=False)
        errors[k] = (back - x0).abs().max().item()
    assert errors[10] > errors[50] > errors[200]
    assert errors[200] < errors[10] / 10  # first order: 20x the steps, about 15x smaller here
    assert errors[200] < 0.06
    # the latent of Gaussian data is about N(0, 1), as the ODE maps the data distribution onto the prior
    xT = respace(base, 200).ddim_reverse_sample_loop(model, x0, clip_denoised=False)
    assert abs(xT.mean().item()) < 0.1 and abs(xT.std().item() - 1) < 0.1


def test_eta_must_be_zero():
    d = GaussianDiffusion(get_betas("linear", T))
    x = torch.zeros(2, 1, 2, 2)
    t = torch.tensor([1, 2])
    calls = []

    def model(x, t):
        calls.append(1)
        return x

    for eta in (0.5, 1, "0", None, float("nan")):
        with pytest.raises(ValueError, match="eta must be 0"):
            d.ddim_reverse_sample(model, x, t, eta=eta)
        with pytest.raises(ValueError, match="eta must be 0"):
            d.ddim_reverse_sample_loop_progressive(model, x, eta=eta)
        with pytest.raises(ValueError, match="eta must be 0"):
            d.ddim_reverse_sample_loop(model, x, eta=eta)
    assert not calls  # refused before the model runs
    d.ddim_reverse_sample(model, x, t, eta=0.0)
    d.ddim_reverse_sample(model, x, t, eta=torch.tensor(0.0))
    with pytest.raises(ValueError, match="x0 must be a floating-point"):
        d.ddim_reverse_sample_loop(model, torch.zeros(2, 1, 2, 2, dtype=torch.long))


def test_shipped_digits_model_round_trip():
    """The shipped digits model inverts real test digits: the error shrinks as the steps grow."""
    from ddpm_lite.data import load_dataset
    from ddpm_lite.pretrained import load_pretrained

    model, diffusion, _ = load_pretrained("digits")
    x0 = load_dataset("digits", "test").images[:48]
    rms = {}
    for k in (10, 40):
        spaced = respace(diffusion, k)
        back = spaced.ddim_sample_loop(model, x0.shape, noise=spaced.ddim_reverse_sample_loop(model, x0))
        rms[k] = (back - x0).pow(2).mean().sqrt().item()
    assert rms[40] < rms[10] and rms[40] < 0.15, rms
