import numpy as np
import pytest
import torch

from ddpm_lite import GaussianDiffusion, get_betas, respace, space_timesteps


def test_ddim_stride():
    assert space_timesteps(1000, "ddim50") == set(range(0, 1000, 20))
    assert space_timesteps(1000, "ddim1000") == set(range(1000))
    with pytest.raises(ValueError, match="no integer stride"):
        space_timesteps(1000, "ddim999")


def test_sections_are_evenly_spaced_with_both_ends():
    kept = sorted(space_timesteps(1000, [10]))
    assert kept[0] == 0 and kept[-1] == 999 and len(kept) == 10
    np.testing.assert_allclose(np.diff(kept), 999 / 9, atol=1)
    kept = sorted(space_timesteps(300, "10,15,20"))
    assert len(kept) == 45
    assert sum(k < 100 for k in kept) == 10 and sum(100 <= k < 200 for k in kept) == 15
    assert {0, 99, 100, 199, 200, 299} <= set(kept)
    assert space_timesteps(100, 100) == set(range(100))


def test_section_count_too_large():
    with pytest.raises(ValueError, match="cannot take 60 steps from a section of 50"):
        space_timesteps(100, [60, 10])


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_respacing_to_all_steps_reproduces_the_betas(schedule):
    base = GaussianDiffusion(get_betas(schedule, 200))
    spaced = respace(base, range(200))
    np.testing.assert_allclose(spaced.betas, base.betas, rtol=1e-12, atol=1e-15)


def test_kept_alpha_bars_are_the_originals():
    base = GaussianDiffusion(get_betas("cosine", 1000), var_type="learned_range")
    spaced = respace(base, "ddim50")
    assert spaced.num_timesteps == 50 and spaced.var_type == "learned_range"
    np.testing.assert_allclose(spaced.alphas_cumprod, base.alphas_cumprod[::20], rtol=1e-12)


def test_model_sees_original_timesteps_in_sampling_losses_and_guidance():
    base = GaussianDiffusion(get_betas("linear", 1000))
    spaced = respace(base, 10)
    seen, seen_cond = [], []

    def model(x, t):
        seen.append(t.clone())
        return torch.zeros_like(x)

    def cond_fn(x, t):
        seen_cond.append(t.clone())
        return torch.zeros_like(x)

    spaced.p_sample_loop(model, (2, 3), cond_fn=cond_fn)
    expected = sorted(space_timesteps(1000, 10), reverse=True)
    assert [int(t[0]) for t in seen] == expected
    assert [int(t[0]) for t in seen_cond] == expected
    seen.clear()
    spaced.training_losses(model, torch.zeros(2, 3), torch.tensor([0, 9]))
    assert seen[0].tolist() == [0, 999]


def test_respaced_sampling_with_an_oracle_still_recovers_the_point():
    base = GaussianDiffusion(get_betas("cosine", 1000))
    spaced = respace(base, 25)
    x0 = torch.tensor([[0.5, -0.3]]).repeat(8, 1)

    def oracle(x, t):  # eps given the original-chain t
        ab = torch.from_numpy(base.alphas_cumprod).float()[t][:, None]
        return (x - ab.sqrt() * x0) / (1 - ab).sqrt()

    out = spaced.p_sample_loop(oracle, (8, 2), generator=torch.Generator().manual_seed(0))
    assert torch.allclose(out, x0, atol=1e-3)


def test_respace_errors():
    base = GaussianDiffusion(get_betas("linear", 100))
    with pytest.raises(ValueError, match="subset of 0..99"):
        respace(base, [5, 100])
    with pytest.raises(ValueError, match="original diffusion"):
        respace(respace(base, 10), 5)


@pytest.mark.parametrize("spec, problem", [
    ("", "the spec is empty"),
    ("ddimX", "'X' is not an integer count"),
    ("ddim0", "ddimN needs 1 <= N <= 100, got N = 0"),
    ("ddim500", "ddimN needs 1 <= N <= 100, got N = 500"),
    ([], "the list of counts is empty"),
    ([0], "cannot take 0 steps from a section of 100 steps"),
    ("10,abc", "'abc' is not an integer count"),
    ([2.5], "2.5 is not an integer count"),
    ([101], "cannot take 101 steps from a section of 100 steps"),
    (None, "a NoneType is not a spec"),
    (True, "a bool is not a spec"),
])
def test_malformed_specs_give_one_clear_error_listing_the_accepted_forms(spec, problem):
    with pytest.raises(ValueError) as info:
        space_timesteps(100, spec)
    message = str(info.value)
    assert problem in message and "\n" not in message
    assert "accepted forms: 'ddimN'" in message and "'10,15,20'" in message and "[10, 15, 20]" in message


def test_respace_passes_the_clear_error_on():
    with pytest.raises(ValueError, match="accepted forms"):
        respace(GaussianDiffusion(get_betas("linear", 100)), "ddimX")
