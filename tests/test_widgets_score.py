"""Notebook 02's score view, headless: the ScoreFieldExplorer's controls, and its arrows against the exact score.

Setting a control's value is a user's drag or pick. The last test trains the toy MLP on the 8 gaussians for 300
steps (a few seconds on a CPU) and checks that its arrows point where the exact score of that mixture points.
"""
import dataclasses

import ipywidgets as W
import matplotlib

matplotlib.use("Agg")
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from ddpm_lite import GaussianDiffusion, get_betas  # noqa: E402
from ddpm_lite.course.analytic import GaussianMixture  # noqa: E402
from ddpm_lite.course.reverse_process import score_field, score_from_eps, score_grid  # noqa: E402
from ddpm_lite.course.widgets import InvalidValue, ScoreFieldExplorer  # noqa: E402
from ddpm_lite.data import toy_2d  # noqa: E402

PNG = b"\x89PNG\r\n\x1a\n"
T = 100

pytestmark = pytest.mark.usefixtures("small_pngs")  # tests/conftest.py


def eight_gaussians():
    """The distribution toy_2d("8gaussians") samples from."""
    angles = np.arange(8) * np.pi / 4
    return GaussianMixture(np.sqrt(2) * np.stack([np.cos(angles), np.sin(angles)], 1), std=0.1)


@pytest.fixture
def diffusion():
    return GaussianDiffusion(get_betas("linear", T))


@pytest.fixture
def explorer(diffusion):
    mix = eight_gaussians()
    exact = mix.eps_model(diffusion)
    g = torch.Generator().manual_seed(0)
    trajectory = torch.randn(T + 1, 50, 2, generator=g)
    return ScoreFieldExplorer(diffusion, {"exact": exact, "zero": lambda x, t: torch.zeros_like(x)},
                              exact={"exact": exact}, trajectories={"exact": trajectory},
                              data={"exact": toy_2d("8gaussians", 200)}, t=10, n_grid=9)


def test_score_is_minus_eps_over_sigma(diffusion):
    eps = torch.randn(4, 2, dtype=torch.float64)
    t = torch.tensor([0, 5, 50, 99])
    sigma = torch.from_numpy(np.sqrt(1 - diffusion.alphas_cumprod))[t]
    torch.testing.assert_close(score_from_eps(eps, diffusion, t), -eps / sigma[:, None])


def test_exact_eps_is_the_scaled_gradient_of_the_noised_density(diffusion):
    """eps* = -sqrt(1 - alpha_bar_t) grad log q(x_t): autograd of the noised mixture's log-density."""
    mix, t = eight_gaussians(), 30
    ab = float(diffusion.alphas_cumprod[t])
    noised = GaussianMixture(np.sqrt(ab) * mix.means.numpy(), std=float(np.sqrt(ab * mix.std ** 2 + 1 - ab)))
    x = torch.randn(16, 2, generator=torch.Generator().manual_seed(1)).requires_grad_(True)
    grad = torch.autograd.grad(noised.log_density(x).sum(), x)[0]
    torch.testing.assert_close(score_field(mix.eps_model(diffusion), diffusion, t, x.detach()), grad,
                               rtol=1e-3, atol=1e-3)


def test_initial_render_and_controls(explorer):
    assert explorer.renders == 1 and explorer.image.value[:8] == PNG
    assert [type(c) for c in explorer.controls] == [W.IntSlider, W.Dropdown]
    assert explorer.titles[0].startswith("exact: t = 11 (code t = 10)")
    assert explorer.agreement == pytest.approx(1.0)  # the exact model against itself
    assert len(explorer.fig.axes) == 2


def test_t_slider_redraws_and_moves_the_cloud(explorer):
    before = explorer.image.value
    explorer.t.value = 60
    assert explorer.renders == 2 and explorer.image.value != before
    assert explorer.titles[0].startswith("exact: t = 61 (code t = 60)")
    cloud = explorer.fig.axes[0].collections[1].get_offsets()  # data first, then the samples
    np.testing.assert_allclose(cloud, explorer.trajectories["exact"][T - 1 - 60].numpy())
    explorer.t.value = T - 1
    np.testing.assert_allclose(explorer.cloud().numpy(), explorer.trajectories["exact"][0].numpy())  # x_T


def test_model_dropdown_redraws(explorer):
    before = explorer.image.value
    explorer.model.value = "zero"
    assert explorer.renders == 2 and explorer.image.value != before
    assert explorer.agreement is None and len(explorer.fig.axes) == 1  # no exact score for "zero"
    assert explorer.cloud() is None


def test_refuses_values_it_cannot_show(explorer, diffusion):
    with pytest.raises(InvalidValue, match="t takes an integer from 0 to 99"):
        explorer.t.value = T
    with pytest.raises(InvalidValue, match="model takes one of 'exact', 'zero'"):
        explorer.model.value = "swiss roll"
    with pytest.raises(ValueError, match="no models"):
        ScoreFieldExplorer(diffusion, {})


def test_exact_arrows_point_to_the_data_at_small_t(diffusion):
    """Far from the ring of modes, the score points back towards the data: inwards outside the ring."""
    grid = score_grid(3.0, 9)
    s = score_field(eight_gaussians().eps_model(diffusion), diffusion, 5, grid)
    outside = grid.norm(dim=1) > 2.5
    inward = torch.nn.functional.cosine_similarity(s[outside], -grid[outside], dim=1)
    assert inward.min() > 0.9


def test_a_trained_model_points_where_the_exact_score_points():
    from ddpm_lite.configs import ExperimentConfig
    from ddpm_lite.train import Trainer

    torch.manual_seed(0)
    config = dataclasses.replace(ExperimentConfig.preset("toy"), data="8gaussians")
    trainer = Trainer.from_config(config, device="cpu")
    trainer.train(300)
    model, d = trainer.ema.cpu().eval(), trainer.diffusion
    explorer = ScoreFieldExplorer(d, {"trained": model}, exact={"trained": eight_gaussians().eps_model(d)}, t=10)
    assert explorer.agreement > 0.8, explorer.agreement  # 0.89 when written
    explorer.t.value = 300
    assert explorer.agreement > 0.95, explorer.agreement
