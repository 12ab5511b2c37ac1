"""Sampling quality and speed against steps (notebook 10): samplers, timing, the sweep and its figures."""
import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

from ddpm_lite import GaussianDiffusion, get_betas, respace, space_timesteps  # noqa: E402
from ddpm_lite.course import plotting  # noqa: E402
from ddpm_lite.course.fast_sampling import (  # noqa: E402
    SAMPLERS,
    Sweep,
    SweepPoint,
    ddim_decode,
    ddim_encode,
    lerp,
    round_trip_rms,
    sample_with,
    sampling_sweep,
    slerp,
    time_sampler,
)
from ddpm_lite.metrics import compute_fid  # noqa: E402

T = 40


class TinyDenoiser(nn.Module):
    """eps and v from a 1x1 convolution and t: cheap, deterministic, learned-variance shaped."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 1)
        with torch.no_grad():
            self.conv.weight.copy_(torch.tensor([[[[0.5]]], [[[0.2]]]]))
            self.conv.bias.zero_()

    def forward(self, x, t):
        return torch.tanh(self.conv(x) + t.float().reshape(-1, 1, 1, 1) / 100)


class Features(nn.Module):
    """A fixed random projection of the pixels: 4 features."""

    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(16, 4)
        with torch.no_grad():
            self.proj.weight.copy_(torch.randn(4, 16, generator=torch.Generator().manual_seed(0)))

    def forward(self, x):
        return self.proj(x.flatten(1))


@pytest.fixture
def setup():
    torch.manual_seed(0)
    return TinyDenoiser(), GaussianDiffusion(get_betas("cosine", T), "eps", "learned_range")


def test_the_samplers():
    assert list(SAMPLERS) == ["ancestral", "DDIM η=0", "DDIM η=1", "DPM-Solver++(2M)"]


@pytest.mark.parametrize("sampler", list(SAMPLERS))
def test_sample_with_is_the_package_sampler_on_the_respaced_chain(setup, sampler):
    model, d = setup
    out = sample_with(model, d, 3, 10, sampler, seed=4, shape=(1, 4, 4))
    assert out.shape == (3, 1, 4, 4) and torch.isfinite(out).all()
    assert torch.equal(out, sample_with(model, d, 3, 10, sampler, seed=4, shape=(1, 4, 4)))  # seeded
    assert not torch.equal(out, sample_with(model, d, 3, 10, sampler, seed=5, shape=(1, 4, 4)))
    if sampler == "DDIM η=0":  # deterministic: the same x_T through the package's DDIM loop on "ddim10"
        noise = torch.randn(3, 1, 4, 4, generator=torch.Generator().manual_seed(4))
        fast = respace(d, space_timesteps(T, "ddim10"))
        expected = fast.ddim_sample_loop(model, (3, 1, 4, 4), noise=noise, eta=0.0)
        torch.testing.assert_close(out, expected)


def test_sample_with_reads_the_shape_from_the_model_config(setup):
    model, d = setup
    with pytest.raises(ValueError, match="shape"):
        sample_with(model, d, 2, 5)
    model.config = type("Config", (), {"in_channels": 1, "image_size": 4})()
    assert sample_with(model, d, 2, 5).shape == (2, 1, 4, 4)


def test_sample_with_checks_the_sampler_and_clips_the_steps(setup):
    model, d = setup
    with pytest.raises(ValueError, match="unknown sampler"):
        sample_with(model, d, 2, 5, "euler", shape=(1, 4, 4))
    assert sample_with(model, d, 2, 10 * T, "ancestral", shape=(1, 4, 4)).shape == (2, 1, 4, 4)


def test_time_sampler(setup):
    model, d = setup
    samples, seconds = time_sampler(model, d, 2, 5, "DDIM η=1", seed=0, shape=(1, 4, 4))
    assert samples.shape == (2, 1, 4, 4) and 0 < seconds < 60
    assert torch.equal(samples, sample_with(model, d, 2, 5, "DDIM η=1", seed=0, shape=(1, 4, 4)))


def test_sampling_sweep(setup):
    model, d = setup
    net = Features()
    reference = torch.rand(64, 1, 4, 4) * 2 - 1
    real = torch.rand(40, 1, 4, 4) * 2 - 1
    sweep = sampling_sweep(model, d, [5, 10, T, 2 * T], 12, extractor=net, reference=reference, real_images=real,
                           shape=(1, 4, 4), skip=[("DDIM η=1", T)])
    assert sweep.samplers == list(SAMPLERS) and sweep.steps == [5, 10, T] and sweep.num_timesteps == T
    assert len(sweep.points) == 4 * 3 - 1 and not sweep.has("DDIM η=1", T) and sweep.has("DDIM η=0", T)
    assert sweep.steps_of("DDIM η=1") == [5, 10] and sweep.steps_of("ancestral") == [5, 10, T]
    p = sweep.get("DDIM η=0", 10)
    assert p.num_samples == 12 and p.network_calls == 10 and p.samples_per_second == pytest.approx(12 / p.seconds)
    assert torch.equal(p.samples, sample_with(model, d, 12, 10, "DDIM η=0", shape=(1, 4, 4)))
    assert p.fid == pytest.approx(compute_fid(p.samples, reference, net))
    assert len(sweep.real_fids) == 5 and len(set(sweep.real_fids)) == 5  # five different draws of real images
    assert sweep.real_fid == pytest.approx(np.mean(sweep.real_fids))
    assert sweep.real_fid_std == pytest.approx(np.std(sweep.real_fids, ddof=1)) and sweep.real_fid_std > 0
    one = sampling_sweep(model, d, [5], 12, samplers=["ancestral"], extractor=net, reference=reference,
                         real_images=real[:12], shape=(1, 4, 4), real_repeats=1)
    assert one.real_fid == pytest.approx(compute_fid(real[:12], reference, net))  # all 12, in another order
    assert math.isnan(one.real_fid_std)
    with pytest.raises(KeyError, match="DDIM η=1"):
        sweep.get("DDIM η=1", T)
    table = sweep.table()
    assert table.splitlines()[0].split() == ["sampler", "steps", "FID", "seconds", "samples/s"]
    assert len(table.splitlines()) == 1 + len(sweep.points) + 1
    assert len({len(line) for line in table.splitlines()[:-1]}) == 1  # columns aligned, long names included
    assert table.splitlines()[-1].split()[:3] == ["real", "data", f"{sweep.real_fid:.2f}"]
    assert "mean ± std of 5 draws" in table


def test_sampling_sweep_without_fid(setup):
    model, d = setup
    sweep = sampling_sweep(model, d, [3], 2, samplers=["ancestral"], shape=(1, 4, 4))
    assert len(sweep.points) == 1 and math.isnan(sweep.points[0].fid) and math.isnan(sweep.real_fid)
    with pytest.raises(ValueError, match="at least n"):
        sampling_sweep(model, d, [3], 8, samplers=["ancestral"], shape=(1, 4, 4), extractor=Features(),
                       reference=torch.zeros(10, 1, 4, 4), real_images=torch.zeros(4, 1, 4, 4))


# ---------------------------------------------------------------------- figures
def fake_sweep():
    g = torch.Generator().manual_seed(0)
    points = []
    for sampler, steps in [("ancestral", [10, 100, 1000]), ("DDIM η=0", [10, 100]), ("DDIM η=1", [10, 100])]:
        for k in steps:
            points.append(SweepPoint(sampler, k, torch.rand(9, 1, 8, 8, generator=g) * 2 - 1, seconds=k / 50,
                                     fid=100 / k + len(sampler)))
    return Sweep(points, 1000, real_fids=[1.0, 2.0])


def test_fid_and_speed_drawers_plot_the_sweep():
    sweep = fake_sweep()
    fig, (a1, a2) = plt.subplots(1, 2)
    plotting.draw_fid_vs_steps(a1, sweep, ("DDIM η=0", 100))
    lines = {line.get_label(): line for line in a1.get_lines()}
    np.testing.assert_allclose(lines["ancestral"].get_xdata(), [10, 100, 1000])
    np.testing.assert_allclose(lines["ancestral"].get_ydata(), [p.fid for p in sweep.points[:3]])
    assert lines["real images"].get_ydata()[0] == 1.5 and a1.get_xscale() == "log"
    patch, std = a1.patches[0], np.std([1, 2], ddof=1)
    if hasattr(patch, "get_height"):  # a Rectangle (matplotlib >= 3.9)
        lo, hi = patch.get_y(), patch.get_y() + patch.get_height()
    else:  # a Polygon
        lo, hi = np.asarray(patch.get_xy())[:, 1].min(), np.asarray(patch.get_xy())[:, 1].max()
    assert (lo, hi) == pytest.approx((1.5 - std, 1.5 + std))
    ring = [line for line in a1.get_lines() if line.get_markeredgecolor() == "red"][0]
    assert ring.get_xdata()[0] == 100 and ring.get_ydata()[0] == sweep.get("DDIM η=0", 100).fid
    plotting.draw_speed_vs_steps(a2, sweep)
    lines = {line.get_label(): line for line in a2.get_lines()}
    np.testing.assert_allclose(lines["DDIM η=1"].get_ydata(), [9 / 0.2, 9 / 2.0])
    np.testing.assert_allclose(lines["∝ 1 / steps"].get_ydata(), 45 * 10 / np.array([10, 100, 1000]))
    assert a2.get_yscale() == "log"
    plt.close(fig)


def test_sampling_sweep_figure():
    sweep = fake_sweep()
    fig = plotting.sampling_sweep_figure(sweep, "DDIM η=1", 100, n_show=4)
    p = sweep.get("DDIM η=1", 100)
    assert fig._suptitle.get_text() == (f"DDIM η=1, 100 steps: FID {p.fid:.1f}, 2.00 s for 9 samples "
                                        f"(4.5 samples/s on this machine)")
    assert fig.axes[0].images[0].get_array().shape == (2 * 9 + 1, 2 * 9 + 1)  # a 2x2 grid of 8x8 with padding
    missing = plotting.sampling_sweep_figure(sweep, "DDIM η=1", 1000)
    assert missing._suptitle.get_text() == "DDIM η=1, 1000 steps: not run" and not missing.axes[0].images
    plt.close(fig), plt.close(missing)


def test_dpm_solver_sampler_is_the_package_solver(setup):
    from ddpm_lite.dpm_solver import dpm_solver_sample_loop

    model, d = setup
    out = sample_with(model, d, 3, 6, "DPM-Solver++(2M)", seed=2, shape=(1, 4, 4))
    noise = torch.randn(3, 1, 4, 4, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(out, dpm_solver_sample_loop(d, model, (3, 1, 4, 4), steps=6, noise=noise))


def test_merged_sweeps():
    a, b = fake_sweep(), Sweep([SweepPoint("DPM-Solver++(2M)", 10, torch.zeros(9, 1, 8, 8), 0.1, 1.5)], 1000, [9.0])
    both = a.merged(b)
    assert both.samplers == ["ancestral", "DDIM η=0", "DDIM η=1", "DPM-Solver++(2M)"]
    assert both.get("DPM-Solver++(2M)", 10) is b.points[0] and both.real_fids == a.real_fids
    assert len(a.points) == 7  # a is left as it was
    with pytest.raises(ValueError, match="both sweeps have points"):
        both.merged(b)
    with pytest.raises(ValueError, match="cannot merge a sweep of 40 timesteps"):
        a.merged(Sweep([], 40))


# ---------------------------------------------------------------------- DDIM inversion and slerp
def _slerp64(a, b, w):
    """slerp written independently, in float64 numpy, one pair at a time."""
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    omega = np.arccos(np.clip(a @ b / np.linalg.norm(a) / np.linalg.norm(b), -1, 1))
    return (np.sin((1 - w) * omega) * a + np.sin(w * omega) * b) / np.sin(omega)


def test_slerp_against_float64():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(5, 1, 8, 8, generator=g), torch.randn(5, 1, 8, 8, generator=g) * 3
    w = torch.tensor([0.0, 0.1, 0.5, 0.9, 1.0])
    out = slerp(a, b, w)
    assert out.shape == a.shape and out.dtype == torch.float32
    for i in range(5):
        np.testing.assert_allclose(out[i].numpy().ravel(), _slerp64(a[i], b[i], float(w[i])), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(slerp(a, b, 0.3), torch.stack([torch.from_numpy(_slerp64(a[i], b[i], 0.3)).float()
                                                               .reshape(1, 8, 8) for i in range(5)]))


def test_slerp_endpoints_and_norm():
    g = torch.Generator().manual_seed(1)
    a, b = torch.randn(4, 64, generator=g, dtype=torch.float64), torch.randn(4, 64, generator=g, dtype=torch.float64)
    torch.testing.assert_close(slerp(a, b, 0.0), a)
    torch.testing.assert_close(slerp(a, b, 1.0), b)
    b = b / b.norm(dim=1, keepdim=True) * a.norm(dim=1, keepdim=True)  # equal norms
    for w in [0.1, 0.25, 0.5, 0.8]:
        torch.testing.assert_close(slerp(a, b, w).norm(dim=1), a.norm(dim=1))
        assert (lerp(a, b, w).norm(dim=1) < a.norm(dim=1)).all()  # the linear mix shrinks it
    # orthogonal latents: the linear midpoint keeps 1/sqrt(2) of the norm, slerp all of it
    e1, e2 = torch.zeros(1, 64, dtype=torch.float64), torch.zeros(1, 64, dtype=torch.float64)
    e1[0, 0], e2[0, 1] = 8.0, 8.0
    assert lerp(e1, e2, 0.5).norm().item() == pytest.approx(8 / math.sqrt(2))
    torch.testing.assert_close(slerp(e1, e2, 0.5), (e1 + e2) / math.sqrt(2))


def test_slerp_of_a_vector_with_itself_and_bad_input():
    a = torch.randn(2, 1, 4, 4, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(slerp(a, a, 0.3), a)  # Omega = 0: no division by sin(0)
    assert torch.isfinite(slerp(a, a.clone(), 0.7)).all()
    with pytest.raises(ValueError, match="two batches of one shape"):
        slerp(a, a[:1], 0.5)
    with pytest.raises(ValueError, match="must be finite"):
        slerp(a, a, float("nan"))


def test_ddim_encode_decode_are_the_package_loops(setup):
    model, d = setup
    x0 = torch.rand(3, 1, 4, 4, generator=torch.Generator().manual_seed(3)) * 2 - 1
    x_T = ddim_encode(model, d, x0, 8)
    spaced = respace(d, 8)
    torch.testing.assert_close(x_T, spaced.ddim_reverse_sample_loop(model, x0))
    torch.testing.assert_close(ddim_decode(model, d, x_T, 8), spaced.ddim_sample_loop(model, x0.shape, noise=x_T))
    torch.testing.assert_close(ddim_encode(model, d, x0, T), d.ddim_reverse_sample_loop(model, x0))  # all steps
    rms = round_trip_rms(model, d, x0, [4, T])
    back = ddim_decode(model, d, ddim_encode(model, d, x0, 4), 4)
    assert set(rms) == {4, T} and rms[4] == pytest.approx((back - x0).pow(2).mean().sqrt().item())
    with pytest.raises(ValueError, match="steps must lie in"):
        ddim_encode(model, d, x0, T + 1)
    assert model.training  # put back as it was
